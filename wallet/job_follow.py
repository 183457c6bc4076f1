"""A buyer's side of following products: a job's record on the node (a submit the node
lost with its pool sent again), a product's state part by part, the products this
datadir submitted, and reclaims of parts nobody claimed. ``Following`` is the part of
``wallet.jobs.JobClient`` that does this; the client holds the state."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain.keys import PrivateKey
from chain.network import Network
from wallet.job_terms import DEFAULT_JOB_FEE, DEFAULT_LIST_LIMIT, JobError
from wallet.job_txs import reclaim_tx
from wallet.products import Manifest, PlanError

ID_HEX = 64  # a product or job id: 32 bytes in hex
MIN_ID_PREFIX = 8  # the shortest start of an id looked up in the manifests (logs show 16)


def check_id(product_id: str) -> str:
    """A product or job id as `pouw job submit` printed it (64 hex digits); JobError
    otherwise (it also names a manifest file: nothing else may reach the path)."""
    text = product_id.strip().lower()
    if len(text) != ID_HEX or any(ch not in "0123456789abcdef" for ch in text):
        raise JobError(
            f"{product_id!r} is not a product or job id (64 hex digits, as `pouw job submit` "
            "printed it; `pouw job list` shows this datadir's products)"
        )
    return text


class UnknownJobError(JobError):
    """The node knows no such job (and the client has no submit of it to send again)."""


class Following:
    """Reading jobs and products back, and reclaiming (mixed into JobClient)."""

    network: Network
    rpc: Any
    address: str | None
    manifest_dir: Path | None
    _submits: dict[str, Any]
    _products: dict[str, Manifest]
    manifest: Callable[[str], Manifest | None]
    _remember_submits: Callable[[Manifest], None]
    _mtp: Callable[[], int]
    _send: Callable[[Any], str]
    _signer: Callable[[], PrivateKey]
    _nonce: Callable[..., int]

    def _job(self, job_id: str, resend: bool = False) -> dict[str, Any]:
        """The node's record of a job (or of its pooled submit). With ``resend``, a
        submit the node no longer knows (it restarted before a block took it, and its
        pool went with it) is sent again from the manifest, with the same id: only
        while its nonce is still the account's next free one or later (so it replaces
        no other transaction of ours) and it has not expired (else the chain would fail
        it and keep its fee)."""
        from wallet.rpc import NOT_FOUND, RpcError
        from wallet.rpc_calls import get_account

        try:
            return dict(self.rpc.call("getjob", job_id))
        except RpcError as exc:
            if exc.code != NOT_FOUND:
                raise
        tx = self._submits.get(job_id) if resend else None
        lost = (
            f"the node knows no job {job_id}: check the id (`pouw job list` shows this "
            "datadir's products); a submit that was not in a block when the node restarted "
            "is gone with its pool"
        )
        if tx is None:
            raise UnknownJobError(f"{lost}: submit the product again")
        from chain.job_payloads import JobSubmit, decode_job_payload

        submit = decode_job_payload(tx.kind, tx.payload)
        assert isinstance(submit, JobSubmit)
        from chain.address import encode_address

        sender = get_account(self.rpc, encode_address(self.network.hrp, tx.sender))
        if tx.nonce < sender.pending_nonce or submit.expires <= self._mtp():
            raise UnknownJobError(
                f"{lost}, and its nonce has been used since or it has expired: submit the "
                "product again"
            )
        try:
            self._send(tx)
        except RpcError as exc:
            try:  # taken meanwhile (another client sent it again)?
                return dict(self.rpc.call("getjob", job_id))
            except RpcError:
                pass
            raise JobError(
                f"job {job_id[:16]}'s submit was lost by the node (a restart before a block "
                f"took it) and it refuses it again ({exc.message}): `pouw job status` once "
                "more, then submit the product again if it is still unknown"
            ) from None
        return dict(self.rpc.call("getjob", job_id))

    def full_id(self, text: str) -> str:
        """A product or job id from its 64 hex digits, or from a prefix of at least
        MIN_ID_PREFIX (as progress lines and logs show them) that names one product of
        this client's manifests, or one part of one; JobError otherwise."""
        short = text.strip().lower()
        if len(short) == ID_HEX or not MIN_ID_PREFIX <= len(short) < ID_HEX:
            return check_id(text)
        if any(ch not in "0123456789abcdef" for ch in short):
            return check_id(text)  # (its error)
        found: set[str] = set()
        if self.manifest_dir is not None and self.manifest_dir.is_dir():
            for path in self.manifest_dir.glob(f"{short}*.json"):
                if len(path.stem) == ID_HEX and all(c in "0123456789abcdef" for c in path.stem):
                    found.add(path.stem)  # (a stray file is no product's)
            for path in self.manifest_dir.glob("*.json"):
                if len(found) > 1:
                    break
                try:
                    plan = Manifest.from_json(path.read_text())
                except (OSError, UnicodeDecodeError, PlanError):
                    continue
                found.update(j for j in plan.job_ids if j.startswith(short))
        if len(found) == 1:
            return check_id(found.pop())
        raise JobError(
            f"{text!r} is the start of "
            + ("more than one id here" if found else "no product or part this datadir holds")
            + ": give the whole id (64 hex digits; `pouw job list` shows them)"
        )

    def status(
        self, product_id: str, known: dict[str, dict[str, Any]] | None = None,
        resend: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        """A product's state: one status when every part agrees, else "mixed", and each
        part's job. A one-job product, or a bare job id, answers that job. ``known``:
        parts' answers just received (not asked again). ``resend``: a submit the node
        lost is sent again (``_job``)."""
        known = known or {}
        plan = self.manifest(product_id)
        if plan is None or len(plan.job_ids) == 1:  # one job: its state is the product's
            job_id = plan.job_ids[0] if plan is not None else product_id
            return known[job_id] if job_id in known else self._job(job_id, resend)
        jobs = [known[j] if j in known else self._job(j, resend) for j in plan.job_ids]
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        overall = next(iter(counts)) if len(counts) == 1 else "mixed"
        return {
            "product_id": product_id, "status": overall, "counts": counts,
            "m": plan.m, "k": plan.k, "n": plan.n, "parts": jobs,
        }  # fmt: skip

    def products(self, limit: int = DEFAULT_LIST_LIMIT) -> list[dict[str, Any]]:
        """The products submitted from this client's manifest folder, newest first (at
        most ``limit``), each with its shape, parts, total bounty (base units), when it
        was submitted (the manifest's time, Unix seconds) and its state on chain as
        ``status`` gives it. A manifest that cannot be read, or a product the node does
        not know, is listed with a ``status`` that says so instead of failing the list."""
        from wallet.rpc import RpcConnectionError, RpcError

        if limit < 1:
            raise JobError("the list limit must be at least 1")
        if self.manifest_dir is None or not self.manifest_dir.is_dir():
            return []
        found = []
        for path in self.manifest_dir.glob("*.json"):
            try:
                found.append((path.stat().st_mtime, path))
            except OSError:  # removed meanwhile
                continue
        out: list[dict[str, Any]] = []
        unreachable = False  # said in full once, then "as above" (not asked again)
        for mtime, path in sorted(found, reverse=True)[:limit]:
            row: dict[str, Any] = {"product_id": path.stem, "submitted": int(mtime)}
            try:
                plan = Manifest.from_json(path.read_text())
            except (OSError, UnicodeDecodeError, PlanError) as exc:
                out.append({**row, "status": f"unreadable manifest: {exc}"})
                continue
            pid = plan.product_id
            self._products[pid] = plan
            self._remember_submits(plan)
            row.update(product_id=pid, m=plan.m, k=plan.k, n=plan.n, parts=len(plan.job_ids),
                       bounty=sum(plan.bounties))  # fmt: skip
            if unreachable:
                out.append({**row, "status": "node not reachable (as above)"})
                continue
            try:
                info = self.status(pid, resend=False)  # listing sends nothing
            except UnknownJobError:  # e.g. a submit lost with the node's pool
                out.append({**row, "status": "unknown to the node (job not found)"})
                continue
            except RpcError as exc:
                out.append({**row, "status": f"unknown to the node ({exc.message})"})
                continue
            except RpcConnectionError as exc:  # the node is down: the local list still shows
                out.append({**row, "status": f"node not reachable ({exc})"})
                unreachable = True
                continue
            row["status"] = info["status"]
            row["counts"] = info.get("counts", {info["status"]: 1})
            out.append(row)
        return out

    def reclaim(self, product_id: str, fee: int = DEFAULT_JOB_FEE) -> list[str]:
        """Cancel every part nobody has claimed yet, on chain or in the node's pool;
        returns the reclaim txids."""
        plan = self.manifest(product_id)
        job_ids = plan.job_ids if plan is not None else [product_id]
        out = []
        pending = 0
        reclaimable = []
        for job_id in job_ids:
            job = self._job(job_id)
            pending += job["status"] == "pending"
            # a claim on its way would most likely win: a miner is computing that part
            if job["status"] == "open" and not job.get("pending_claims"):
                reclaimable.append(job)
        if reclaimable:
            self._can_pay_reclaims(reclaimable, fee)
        for job in reclaimable:
            tx = reclaim_tx(self.network, self._signer(), self._nonce(),
                            bytes.fromhex(job["job_id"]), fee)  # fmt: skip
            out.append(self._send(tx))
        if not out and pending:
            raise JobError(
                f"{product_id[:16]}: {pending} part(s) still wait in the pool for their "
                "submit's block; a part can be reclaimed once it is open on chain and "
                "unclaimed: ask again after the next block"
            )
        if not out:
            raise JobError(
                f"{product_id[:16]}: no part is open and unclaimed, so none can be reclaimed "
                "(`pouw job status` shows each part's state)"
            )
        return out

    def _can_pay_reclaims(self, jobs: list[dict[str, Any]], fee: int) -> None:
        """A clear error, before anything is signed, when the account cannot pay the
        reclaims' fees (a buyer who spent the whole balance on bounties): the bounties
        come back without any fee when the parts expire."""
        from wallet.amount import format_coins
        from wallet.rpc_calls import get_account

        cost = fee * len(jobs)
        info = get_account(self.rpc, self.address)  # type: ignore[arg-type]
        if cost <= info.spendable:
            return
        expires = max(int(j["expires"]) for j in jobs)
        left = max(0, expires - int(jobs[0].get("mtp", expires)))
        raise JobError(
            f"reclaiming {len(jobs)} part(s) costs {format_coins(cost)} coins in fees but "
            f"{self.address} can spend {format_coins(info.spendable)}: the bounties come "
            f"back by themselves, with no fee, once the parts expire (in about {left} s of "
            "chain time, if nobody claims them first); or send coins to that address (a "
            "transfer counts once it is in a block)"
        )
