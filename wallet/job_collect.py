"""A buyer's side of collecting a product: wait for every part's commit, download
each C as soon as its part is ready, check it (root, Freivalds' test) and act on a bad
one (a wrong-entry challenge, or a probe for a withheld C), then reassemble.
``Collecting`` is the part of ``wallet.jobs.JobClient`` that does this; the client
holds the state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.keys import PrivateKey
from chain.network import Network
from compute.blob_fetch import fetch_blob
from compute.blobs import BlobError, blob_root, bt_root_of
from compute.freivalds import PreparedCheck, freivalds_check, prepare_check
from compute.priority import lower_thread_priority
from consensus.result import chunk_count
from wallet.job_txs import (
    JobError,
    build_challenge,
    challenge_tx,
    check_operand,
    find_wrong_entry,
    probe_tx,
)
from wallet.products import Manifest, assemble
from wallet.rpc import METHOD_NOT_FOUND, NOT_FOUND, RpcConnectionError, RpcError

DONE = ("paid", "committed")  # a part whose C can be collected
FAILED = ("refunded", "expired", "reclaimed")  # a part that will never deliver
POLL_S = 0.05  # how often wait() polls a node that has no waitforjob
COLLECT_PARALLEL = 4  # ready parts' C downloaded at once while wait() goes on
COLLECT_TIMEOUT_S = 30.0
MAX_COLLECTED = 256  # downloaded Cs held for result() at most (the oldest dropped)
WAIT_CALL_S = 10.0  # the longest waitforjob call (then wait() asks again)
# wait() says where things stand at least this often, changes or not: a buyer waiting
# minutes for a miner sees the client is alive and what each part waits for
HEARTBEAT_S = 15.0
NODE_DOWN_RETRY_S = 1.0  # wait() asks a node that stopped answering again this often
MAX_PROBES = 3  # probes of one part before the client reports it as withheld


def _deliverable(job: dict[str, Any]) -> bool:
    """C can be fetched: committed on chain, or its commit waits in the node's pool."""
    return job["status"] in DONE or "pending_commit" in job


def _may_heal(rpc: Any, exc: Exception) -> bool:
    """An RPC failure a node restart explains, worth asking again: no HTTP answer at
    all, or a refused cookie while the restarted node writes its new one (a client of
    explicit credentials refused is told so at once)."""
    status = getattr(exc, "status", None)
    return status is None or (status == 401 and getattr(rpc, "_cookie", None) is not None)


def _committed(job: dict[str, Any]) -> dict[str, Any]:
    """Where a deliverable job's result root and URL are: on chain, or its pooled commit."""
    return job if "result_root" in job else dict(job["pending_commit"])


def _check_submitted(job: dict[str, Any], a: Any, b: Any) -> None:
    """A part's operands are the ones its job was submitted with (their roots match the
    job's hA and hB): else a C that is right for the job would look wrong, and a
    challenge of it fail on chain, costing its fee."""
    if blob_root("a", a).hex() != job["h_a"] or bt_root_of(b).hex() != job["h_b"]:
        raise JobError(
            f"the A or B given is not what job {job['job_id'][:16]} was submitted with (its "
            "hash differs from the job's): pass the A.npy and B.npy you submitted; nothing "
            "was challenged"
        )


@dataclass
class JobResult:
    c: npt.NDArray[np.int64]  # the product, m x n (exact; int64 so any k fits)
    verified: bool  # every part matched its committed root and passed Freivalds' test
    challenge_txid: str | None = None  # the first challenge or probe sent, if any
    actions: list[str] = field(default_factory=list)  # what the client did, part by part
    timings: dict[str, float] = field(default_factory=dict)


class Collecting:
    """Waiting for, downloading and checking a product's parts (state initialised by
    JobClient)."""

    network: Network
    rpc: Any
    blob_url: str
    _operands: dict[str, tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]]
    _probes: dict[str, int]
    _checks: dict[str, Future[PreparedCheck]]
    _preparer: ThreadPoolExecutor | None
    _long_poll: bool
    _collecting: dict[tuple[str, str], Future[tuple[Any, bool | None]]]
    _collector: ThreadPoolExecutor | None
    manifest: Callable[[str], Manifest | None]
    status: Callable[..., dict[str, Any]]
    _plan: Callable[[int, int, int, int, int], Manifest]
    _job: Callable[..., dict[str, Any]]
    _send: Callable[[Any], str]
    _signer: Callable[[], PrivateKey]
    _nonce: Callable[[], int]

    def _operands_of(self, product_id: str, a: Any, b: Any) -> tuple[Any, Any]:
        if a is not None and b is not None:
            return check_operand(np.asarray(a), "A"), check_operand(np.asarray(b), "B")
        if product_id in self._operands:
            return self._operands[product_id]
        raise JobError("pass A and B (the client needs them to check C)")

    def check_operands(self, product_id: str, a: Any, b: Any) -> None:
        """JobError if A and B cannot be the product's operands (checked as ``result``
        checks them, before a long wait for it)."""
        self._plan_for(product_id, *self._operands_of(product_id, a, b))

    def _plan_for(self, product_id: str, a8: Any, b8: Any) -> Manifest:
        """The product's plan, A and B's shapes checked against it (a bare job id: a
        plan of one part made from them)."""
        plan = self.manifest(product_id)
        if plan is None:  # a bare job: the whole product is one part
            if a8.shape[1] != b8.shape[0]:
                raise JobError(f"A is {a8.shape}, B is {b8.shape}: inner dimensions differ")
            plan = self._plan(a8.shape[0], a8.shape[1], b8.shape[1], 2**62, 1)
            plan.job_ids = [product_id]
        elif (a8.shape, b8.shape) != ((plan.m, plan.k), (plan.k, plan.n)):
            raise JobError(
                f"A is {a8.shape} and B {b8.shape}, but product {product_id[:16]} is "
                f"{plan.m}x{plan.k} by {plan.k}x{plan.n}: pass the A and B it was submitted "
                "with (--a A.npy --b B.npy)"
            )
        return plan

    def _prepare_checks(self, product_id: str) -> None:
        """The A and B side of every part's Freivalds check, for a product this client
        submitted: done while the miners compute, it is off the path to a checked C."""
        plan, operands = self.manifest(product_id), self._operands.get(product_id)
        if plan is None or operands is None:
            return
        for part, job_id in zip(plan.parts, plan.job_ids, strict=True):
            if job_id not in self._checks:
                if self._preparer is None:
                    self._preparer = ThreadPoolExecutor(
                        1, thread_name_prefix="prepare-check", initializer=lower_thread_priority
                    )
                job = self._preparer.submit(prepare_check, *part.operands(*operands))
                self._checks[job_id] = job

    def wait(
        self, product_id: str, timeout: float = 600.0,
        progress: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Block until every part is committed, paid or failed; returns the status.

        Each part is waited on with the node's ``waitforjob`` long poll (it answers as
        soon as the commit reaches the node's pool); a node without it is polled.
        ``progress`` (the CLI: a line on stderr) hears of each part as it settles and
        of each change of the part waited on (open, claimed, ...), with the states of
        all the parts of a product of several (a part found ready meanwhile has its C
        collected at once)."""
        started = time.monotonic()
        deadline = started + timeout
        self._prepare_checks(product_id)
        plan = self.manifest(product_id)
        job_ids = plan.job_ids if plan is not None else [product_id]
        answers: dict[str, dict[str, Any]] = {}
        settled = 0

        said = started

        def say(what: str) -> None:
            nonlocal said
            said = time.monotonic()
            if progress is not None:
                progress(f"[{said - started:5.1f} s] {what}")

        say(f"waiting up to {timeout:.0f} s for {len(job_ids)} part(s) to deliver")
        down = False  # the node stopped answering (a restart): tried again until the end
        answered = False  # (a node that never answered: a wrong URL or port, said at once)
        for number, job_id in enumerate(job_ids, 1):
            seen = None
            while True:
                now = time.monotonic()  # (each call ends in time for the next heartbeat)
                left = min(deadline - now, said + HEARTBEAT_S - now)
                try:
                    job = answers[job_id] = self._wait_job(job_id, max(left, 0.0))
                except RpcConnectionError as exc:
                    if time.monotonic() >= deadline or not answered or not _may_heal(self.rpc, exc):
                        raise
                    if not down:
                        say(f"the node does not answer ({exc}); trying again until the "
                            "wait ends")  # fmt: skip
                        down = True
                    time.sleep(max(0.0, min(NODE_DOWN_RETRY_S, deadline - time.monotonic())))
                    continue
                answered = True
                if down:
                    say("the node answers again")
                    down = False
                name = f"part {number}/{len(job_ids)} ({job_id[:16]})"
                beat = time.monotonic() - said >= HEARTBEAT_S  # said again, changed or not
                if _deliverable(job):
                    self._collect(job)
                    settled += 1
                    say(f"{name} delivered (C committed): {settled} of {len(job_ids)} done")
                    break
                if job["status"] in FAILED:
                    settled += 1
                    say(f"{name} {job['status']}: its bounty goes back")
                    break
                if job["status"] != seen or beat:
                    still = "still " if job["status"] == seen else ""
                    seen = job["status"]
                    say(f"{name} {still}{seen}{self._all_parts(job_ids, answers)}")
                if time.monotonic() > deadline:
                    self._timed_out(product_id, timeout)
        return self.status(product_id, answers)  # as each part last answered

    def _all_parts(self, job_ids: list[str], answers: dict[str, dict[str, Any]]) -> str:
        """For a product of several parts, how many are in each state, asking the node
        again about every part not yet settled (empty for one part). A part that became
        deliverable meanwhile starts its collection now rather than when its turn in
        ``wait`` comes."""
        if len(job_ids) < 2:
            return ""
        counts: dict[str, int] = {}
        for job_id in job_ids:
            job = answers.get(job_id)
            if job is None or not (_deliverable(job) or job["status"] in FAILED):
                try:
                    job = answers[job_id] = self._job(job_id)
                except (JobError, RpcError, RpcConnectionError):  # said by the wait itself
                    job = None
            if job is None:
                state = "unknown"
            elif _deliverable(job):
                state = "delivered"
                self._collect(job)
            else:
                state = job["status"]
            counts[state] = counts.get(state, 0) + 1
        shown = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"; of the {len(job_ids)} parts: {shown}"

    def _collect(self, job: dict[str, Any]) -> None:
        """Start downloading (and checking, with the prepared check) a ready part's C
        in the background; ``result`` picks it up."""
        key = (job["job_id"], _committed(job)["result_root"])
        if key in self._collecting:
            return
        if self._collector is None:
            self._collector = ThreadPoolExecutor(COLLECT_PARALLEL, thread_name_prefix="collect")
        self._collecting[key] = self._collector.submit(self._download_and_check, job)
        while len(self._collecting) > MAX_COLLECTED:  # waited for, never collected
            self._collecting.pop(next(iter(self._collecting)))

    def _download_and_check(self, job: dict[str, Any]) -> tuple[Any, bool | None]:
        """C (or why it could not be had) and, where this client prepared the check of
        that part, whether C passed it."""
        got = asyncio.run(self._fetch_all([job], COLLECT_TIMEOUT_S))[0]
        if isinstance(got, str):
            return got, None
        check = self._checks.pop(job["job_id"], None)
        return got, None if check is None else check.result().check(got)

    def _wait_job(self, job_id: str, left: float) -> dict[str, Any]:
        """The job once it settles (or after at most ``left`` seconds, WAIT_CALL_S per
        call so that no RPC outlives the client's HTTP timeout)."""
        if self._long_poll:
            limit = min(WAIT_CALL_S, float(getattr(self.rpc, "timeout", 30.0)) / 2)
            ms = max(1, int(min(max(left, 0.0), limit) * 1000))
            try:
                return dict(self.rpc.call("waitforjob", job_id, ms))
            except Exception as exc:  # an RPC client's error carries the JSON-RPC code
                code = getattr(exc, "code", None)
                if code == NOT_FOUND:  # a lost submit: sent again from the manifest
                    return self._job(job_id, True)
                if code != METHOD_NOT_FOUND:
                    raise
                self._long_poll = False  # an older node: poll it
        job = self._job(job_id, True)
        if not (_deliverable(job) or job["status"] in FAILED) and left > 0:
            time.sleep(min(POLL_S, left))
        return job

    def _timed_out(self, product_id: str, timeout: float) -> None:
        status = self.status(product_id)
        parts = status.get("parts", [status])
        waiting = [p["job_id"][:16] for p in parts
                   if not _deliverable(p) and p["status"] not in FAILED]  # fmt: skip
        raise JobError(
            f"{len(waiting)} part(s) not delivered after {timeout:.0f} s "
            f"({', '.join(waiting[:4])}...): check `pouw job status`, raise the "
            "bounty on a new submit, or wait longer"
        )

    def result(
        self, product_id: str, a: npt.NDArray[Any] | None = None,
        b: npt.NDArray[Any] | None = None, challenge: bool = True, timeout: float = 30.0,
    ) -> JobResult:  # fmt: skip
        """Download every part's C, check it (root, Freivalds), act on a bad one
        (challenge a wrong entry, probe a withheld C) and reassemble the product.

        Raises JobError when a part has not delivered yet or failed (refunded, expired,
        reclaimed), naming the parts and what to do."""
        a8, b8 = self._operands_of(product_id, a, b)
        plan = self._plan_for(product_id, a8, b8)
        jobs = [self._job(j, True) for j in plan.job_ids]
        for part, job in zip(plan.parts, jobs, strict=True):
            if part.shape != (job["m"], job["k"], job["n"]):
                raise JobError(
                    f"job {job['job_id'][:16]} is {job['m']}x{job['k']}x{job['n']}, not the "
                    f"{'x'.join(map(str, part.shape))} of the A and B given: pass the A and B "
                    "it was submitted with (--a A.npy --b B.npy)"
                )
        failed = [j for j in jobs if j["status"] in FAILED]
        if failed:
            raise JobError(
                f"{len(failed)} part(s) will not deliver ("
                + ", ".join(f"{j['job_id'][:16]} {j['status']}" for j in failed[:4])
                + "): their bounty is back with you; submit those rows again"
            )
        pending = [j for j in jobs if not _deliverable(j)]
        if pending:
            raise JobError(
                f"{len(pending)} of {len(jobs)} part(s) have no committed result yet "
                f"(status {pending[0]['status']}): wait (`pouw job status`) and ask again"
            )
        t0 = time.perf_counter()
        started = [self._collecting.pop((j["job_id"], _committed(j)["result_root"]), None)
                   for j in jobs]  # fmt: skip
        rest = iter(asyncio.run(self._fetch_all(
            [j for j, f in zip(jobs, started, strict=True) if f is None], timeout)))  # fmt: skip
        collected = [next(rest) if f is None else f.result() for f in started]
        results = [got[0] if isinstance(got, tuple) else got for got in collected]
        t1 = time.perf_counter()
        out = JobResult(np.zeros((0, 0), np.int64), True, timings={"transfer_s": t1 - t0})
        mine = a is None and b is None  # the operands this client submitted
        checked = []  # (part, job, C or why it could not be had, C checks out)
        for part, job, got, came in zip(plan.parts, jobs, results, collected, strict=True):
            ok: bool | None = None
            if not isinstance(got, str):
                # prepared while waiting, for the operands this client submitted (and
                # maybe already run by the background download)
                ok = came[1] if mine and isinstance(came, tuple) else None
                check = self._checks.pop(job["job_id"], None) if mine and ok is None else None
                if check is not None:
                    ok = check.result().check(got)
                if ok is None:
                    ok = freivalds_check(*part.operands(a8, b8), got)
                if not ok and not mine:  # the caller's operands may not be the submitted
                    _check_submitted(job, *part.operands(a8, b8))  # ones: before any action
            checked.append((part, job, got, ok))
        for part, job, got, ok in checked:
            # a challenge or probe needs the commit on chain, not only in a pool
            act = challenge and job["status"] == "committed"
            later = (
                "; its challenge window has closed (the job is paid)" if job["status"] == "paid"
                else "; ask again once its commit is in a block to challenge it"
            )  # fmt: skip
            if isinstance(got, str):  # the download failed: an availability probe
                out.verified = False
                out.actions.append(f"{job['job_id'][:16]}: C unavailable ({got})")
                if act:
                    self._act(self._probe, job, out)
                elif challenge:
                    out.actions[-1] += later
            elif not ok:
                out.verified = False
                out.actions.append(f"{job['job_id'][:16]}: C is wrong")
                if act:
                    self._act(self._challenge, job, *part.operands(a8, b8), got, out)
                elif challenge:
                    out.actions[-1] += later
        t2 = time.perf_counter()
        out.timings["check_s"] = t2 - t1
        if out.verified:
            out.c = assemble(plan.m, plan.n, plan.parts, results)  # type: ignore[arg-type]
            out.timings["assemble_s"] = time.perf_counter() - t2
        return out

    def _act(self, action: Callable[..., None], *args: Any) -> None:
        """A challenge or probe; one that cannot be made (no key, a wallet that does not
        unlock, a transaction the node refuses) is reported with the part, not instead
        of the other parts' results."""
        from wallet.keystore import WalletError
        from wallet.rpc import RpcError

        out: JobResult = args[-1]
        try:
            action(*args)
        except (WalletError, JobError, RpcError) as exc:
            out.actions[-1] += f"; nothing sent: {exc}"

    async def _fetch_all(self, jobs: list[dict[str, Any]], timeout: float) -> list[Any]:
        async def one(job: dict[str, Any]) -> Any:
            where = _committed(job)
            urls = [where.get("result_url", ""), self.blob_url]
            try:
                return await fetch_blob(urls, bytes.fromhex(where["result_root"]), "c",
                                        job["m"], job["n"], timeout=timeout)  # fmt: skip
            except BlobError as exc:
                return str(exc)

        return list(await asyncio.gather(*(one(j) for j in jobs)))

    def _challenge(self, job: dict[str, Any], a: Any, b: Any, c: Any, out: JobResult) -> None:
        where = find_wrong_entry(a, b, c)
        if where is None:  # Freivalds saw C != A.B, so an entry differs
            raise JobError("Freivalds rejected C but no wrong entry was found")
        proof = build_challenge(a, b, c, *where)
        txid = self._send(challenge_tx(self.network, self._signer(), self._nonce(),
                                       bytes.fromhex(job["job_id"]), proof))  # fmt: skip
        out.challenge_txid = out.challenge_txid or txid
        out.actions.append(f"{job['job_id'][:16]}: challenged entry {where} (tx {txid[:16]})")

    def _probe(self, job: dict[str, Any], out: JobResult) -> None:
        job_id = job["job_id"]
        if "probe" in job:
            out.actions.append(f"{job_id[:16]}: a probe is open; the claimant must answer")
            return
        if self._probes.get(job_id, 0) >= MAX_PROBES:
            out.actions.append(f"{job_id[:16]}: probed {MAX_PROBES} times; C stays withheld")
            return
        rng = np.random.default_rng()
        row = int(rng.integers(job["m"]))
        chunk = int(rng.integers(chunk_count(job["n"])))
        deposit = self.network.market.probe_deposit
        txid = self._send(probe_tx(self.network, self._signer(), self._nonce(),
                                   bytes.fromhex(job_id), row, chunk, deposit))  # fmt: skip
        self._probes[job_id] = self._probes.get(job_id, 0) + 1
        out.challenge_txid = out.challenge_txid or txid
        out.actions.append(f"{job_id[:16]}: probed row {row} chunk {chunk} (tx {txid[:16]})")
