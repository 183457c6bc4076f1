"""The compute market from a buyer's side: quote, submit a product of any size, follow
it, collect a checked C, reclaim.

    from wallet.jobs import JobClient
    client = JobClient(key, network, rpc, blob_url="http://127.0.0.1:29335", blob_auth=auth)
    client.quote(m, k, n)                           # going rate, suggested bounty, wait
    pid = client.submit(a, b, bounty=10_000)         # cut into jobs, upload, one tx each
    client.status(pid)                               # pending / open / claimed / ... per part
    c = client.result(pid).c                         # fetch, check, challenge, reassemble
    c = client.compute(a, b, bounty=10_000)          # all of the above, waiting for C

A product is cut into jobs by wallet/products.py (each a JOB_SUBMIT; miners claim them
in parallel). ``result`` downloads each part's C from the claimant's URL and the
buyer's own node (every row checked against the committed root), checks it against
A and B with Freivalds' test, and acts on its own: a wrong C gets a wrong-entry
challenge, a C that cannot be downloaded gets a probe (the claimant must publish a
chunk on chain or lose its bond). Nothing here raises anything but ``JobError`` (and
the RPC client's errors), each message saying what to do next.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.keys import PrivateKey
from chain.network import Network
from compute.blobs import BlobError, blob_root, bt_root_of, fetch_blob
from compute.freivalds import PreparedCheck, freivalds_check, prepare_check
from compute.priority import lower_thread_priority
from compute.transpose import transposed
from consensus.result import chunk_count
from wallet.job_txs import (
    DEFAULT_EXPIRY_S,
    DEFAULT_JOB_FEE,
    JobError,
    build_challenge,
    challenge_tx,
    check_operand,
    find_wrong_entry,
    probe_tx,
    reclaim_tx,
    submit_tx,
)
from wallet.products import (
    DEFAULT_PART_MULTIPLY_ADDS,
    Manifest,
    PlanError,
    assemble,
    plan_parts,
    split_bounty,
)

__all__ = ["DEFAULT_EXPIRY_S", "DEFAULT_JOB_FEE", "JobClient", "JobError", "JobResult", "Quote"]

DONE = ("paid", "committed")  # a part whose C can be collected
FAILED = ("refunded", "expired", "reclaimed")  # a part that will never deliver
POLL_S = 0.05  # how often wait() polls a node that has no waitforjob
UPLOADS_PARALLEL = 2  # blobs in flight to the node while the next one is hashed
COLLECT_PARALLEL = 4  # ready parts' C downloaded at once while wait() goes on
COLLECT_TIMEOUT_S = 30.0
MAX_COLLECTED = 256  # downloaded Cs held for result() at most (the oldest dropped)
WAIT_CALL_S = 10.0  # the longest waitforjob call (then wait() asks again)
METHOD_NOT_FOUND = -32601  # JSON-RPC: the node does not serve the method
MAX_PROBES = 3  # probes of one part before the client reports it as withheld


def _deliverable(job: dict[str, Any]) -> bool:
    """C can be fetched: committed on chain, or its commit waits in the node's pool."""
    return job["status"] in DONE or "pending_commit" in job


def _committed(job: dict[str, Any]) -> dict[str, Any]:
    """Where a deliverable job's result root and URL are: on chain, or its pooled commit."""
    return job if "result_root" in job else dict(job["pending_commit"])


def upload_blob(blob_url: str, kind: str, matrix: npt.NDArray[Any], auth: tuple[str, str],
                timeout: float = 60.0) -> bytes:  # fmt: skip
    """POST a matrix to a node's blob endpoint (authenticated with its RPC cookie)."""
    mat = np.ascontiguousarray(matrix)
    head = io.BytesIO()  # the .npy header, then the matrix's bytes as they are (no copy)
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(mat))
    body = [head.getvalue(), memoryview(mat.reshape(-1).view(np.uint8))]
    req = urllib.request.Request(
        f"{blob_url.rstrip('/')}/blob?kind={kind}", data=body, method="POST"
    )
    req.add_header("Content-Length", str(len(body[0]) + mat.nbytes))
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    req.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes.fromhex(json.loads(resp.read())["root"])
    except (OSError, ValueError, KeyError) as exc:
        raise JobError(
            f"upload to {blob_url} failed ({exc}): is the node running with its blob "
            "endpoint on, and is --blob-url its address (rpc port + 3 by default)?"
        ) from None


@dataclass
class Quote:
    multiply_adds: int
    parts: int
    going_bounty_per_multiply_add: float  # median of open (else recently delivered) jobs
    suggested_bounty: int  # base units: the going rate times this product's work
    network_multiply_adds_per_s: float
    expected_wait_s: float | None  # queued work plus this product over the network's rate


@dataclass
class JobResult:
    c: npt.NDArray[np.int64]  # the product, m x n (exact; int64 so any k fits)
    verified: bool  # every part matched its committed root and passed Freivalds' test
    challenge_txid: str | None = None  # the first challenge or probe sent, if any
    actions: list[str] = field(default_factory=list)  # what the client did, part by part
    timings: dict[str, float] = field(default_factory=dict)


class JobClient:
    """Submit products and collect verified results through a node (RPC + blob endpoint)."""

    def __init__(
        self,
        key: PrivateKey | None,
        network: Network,
        rpc: Any,
        blob_url: str,
        blob_auth: tuple[str, str] | None = None,
        manifest_dir: Path | None = None,
    ) -> None:
        from chain.address import address_from_pubkey, encode_address

        self.key = key
        self.network = network
        self.rpc = rpc
        self.blob_url = blob_url
        self.blob_auth = blob_auth
        self.manifest_dir = manifest_dir
        # A client without a key can read (status); submitting and challenging sign.
        self.address = (
            encode_address(network.hrp, address_from_pubkey(key.public_key))
            if key is not None
            else None
        )
        self._pending_nonce: int | None = None
        self._products: dict[str, Manifest] = {}
        self._operands: dict[str, tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]] = {}
        self._probes: dict[str, int] = {}
        self._uploaded: set[bytes] = set()  # blob roots this client already gave the node
        # Freivalds' A (B X) of parts not collected yet, computed while miners work by
        # a low-priority thread that leaves the cores to the nodes (job id -> check;
        # each is used once)
        self._checks: dict[str, Future[PreparedCheck]] = {}
        self._preparer: ThreadPoolExecutor | None = None
        self._long_poll = True  # the node serves waitforjob (until it says otherwise)
        # (job id, result root) -> a download (and check) of that C started by wait()
        # as soon as the part was ready, while other parts were still being computed
        self._collecting: dict[tuple[str, str], Future[tuple[Any, bool | None]]] = {}
        self._collector: ThreadPoolExecutor | None = None
        self._uploads: ThreadPoolExecutor | None = None  # uploads (and Bᵀ made for them)

    # --- plumbing --------------------------------------------------------------------

    def _signer(self) -> PrivateKey:
        if self.key is None:
            raise JobError("this needs the wallet's key: unlock a wallet to sign")
        return self.key

    def _nonce(self) -> int:
        from wallet.rpc import get_account

        info = get_account(self.rpc, self.address)  # type: ignore[arg-type]
        nonce = max(info.pending_nonce, self._pending_nonce or 0)
        self._pending_nonce = nonce + 1
        return nonce

    def _send(self, tx: Any) -> str:
        from wallet.rpc import send_raw_transaction

        return send_raw_transaction(self.rpc, tx.to_bytes())

    def _mtp(self) -> int:
        """The chain's median time past (the market's clock), from a job-less call."""
        info = self.rpc.call("getblockchaininfo")
        return int(info.get("mediantime", time.time()))

    def manifest(self, product_id: str) -> Manifest | None:
        if product_id in self._products:
            return self._products[product_id]
        if self.manifest_dir is not None:
            path = self.manifest_dir / f"{product_id}.json"
            if path.is_file():
                try:
                    found = Manifest.from_json(path.read_text())
                except (OSError, PlanError) as exc:
                    raise JobError(f"cannot read {path}: {exc}") from None
                self._products[product_id] = found
                return found
        return None

    def _plan(self, m: int, k: int, n: int, max_part: int, min_parts: int) -> Manifest:
        try:
            parts = plan_parts(m, k, n, self.network.pouw, max_part, min_parts)
        except PlanError as exc:
            raise JobError(str(exc)) from None
        return Manifest(m, k, n, parts, network=self.network.name)

    # --- buying ----------------------------------------------------------------------

    def quote(
        self, m: int, k: int, n: int, max_part_multiply_adds: int = DEFAULT_PART_MULTIPLY_ADDS
    ) -> Quote:
        """What a product of this shape costs at the going rate, and how long it waits."""
        plan = self._plan(m, k, n, max_part_multiply_adds, 1)
        info = self.rpc.call("getmarketinfo")
        work = sum(p.multiply_adds for p in plan.parts)
        rate = float(info["going_bounty_per_multiply_add"])
        net_rate = float(info["network_multiply_adds_per_s"])
        queued = int(info["open_demand_multiply_adds"]) + int(info["in_progress_multiply_adds"])
        return Quote(
            multiply_adds=work, parts=len(plan.parts), going_bounty_per_multiply_add=rate,
            suggested_bounty=max(len(plan.parts), int(rate * work + 0.999999)),
            network_multiply_adds_per_s=net_rate,
            expected_wait_s=(queued + work) / net_rate if net_rate > 0 else None,
        )  # fmt: skip

    def submit(
        self,
        a: npt.NDArray[Any],
        b: npt.NDArray[Any],
        bounty: int,
        expiry_s: int = DEFAULT_EXPIRY_S,
        fee: int = DEFAULT_JOB_FEE,
        max_part_multiply_adds: int = DEFAULT_PART_MULTIPLY_ADDS,
        min_parts: int = 1,
    ) -> str:
        """Check A and B, cut the product into jobs, upload each part's operands and
        send one JOB_SUBMIT per part (consecutive nonces, one key). Returns the
        product id (the job id when the product is one job)."""
        a8, b8 = check_operand(a, "A"), check_operand(b, "B")
        if a8.shape[1] != b8.shape[0]:
            raise JobError(f"A is {a8.shape}, B is {b8.shape}: inner dimensions differ")
        if self.blob_auth is None:
            raise JobError(
                "uploading A and B needs the node's RPC cookie: pass --datadir of the node "
                "(or blob_auth=read_cookie(datadir, network))"
            )
        signer = self._signer()
        (m, k), n = a8.shape, b8.shape[1]
        plan = self._plan(m, k, n, max_part_multiply_adds, min_parts)
        try:
            plan.bounties = split_bounty(bounty, plan.parts)
        except PlanError as exc:
            raise JobError(str(exc)) from None
        txs = []
        expires = self._mtp() + expiry_s
        known: dict[tuple[Any, ...], bytes] = {}  # parts share slices of A (or of B)
        first_nonce = self._nonce()
        # uploads run beside the hashing of the next blob (the node checks each one)
        if self._uploads is None:
            self._uploads = ThreadPoolExecutor(UPLOADS_PARALLEL, thread_name_prefix="upload")
        uploads = self._uploads
        sent: list[tuple[bytes, Future[bytes]]] = []
        for i, (part, part_bounty) in enumerate(zip(plan.parts, plan.bounties, strict=True)):
            pa, pb = part.operands(a8, b8)
            roots = []
            for kind, where, matrix in (
                ("a", (part.r0, part.r1, part.k0, part.k1, pa.shape), pa),
                ("bt", (part.k0, part.k1, part.c0, part.c1, pb.shape), pb),
            ):
                root = known.get((kind, where))
                if root is None:  # the blob of A is stored by hA, of Bᵀ by hB
                    blob: Any = matrix
                    if kind == "a":
                        root = blob_root(kind, matrix)
                    else:  # Bᵀ: made by a worker while B's columns are hashed here
                        blob = uploads.submit(transposed, matrix)
                        root = bt_root_of(matrix)
                    known[kind, where] = root
                    if root not in self._uploaded:
                        sent.append((root, uploads.submit(self._upload, kind, blob)))
                roots.append(root)
            txs.append(submit_tx(self.network, signer, first_nonce + i, pa, pb, part_bounty,
                                 expires, url=self.blob_url, fee=fee,
                                 roots=(roots[0], roots[1])))  # fmt: skip
        self._send_after_uploads(txs, sent, first_nonce)
        plan.job_ids = [tx.txid.hex() for tx in txs]
        pid = plan.product_id
        self._products[pid] = plan
        self._operands[pid] = (a8, b8)
        if self.manifest_dir is not None:
            plan.save(self.manifest_dir)
        return pid

    def _send_after_uploads(
        self, txs: list[Any], uploads: list[tuple[bytes, Future[bytes]]], first_nonce: int
    ) -> None:
        """Send the submits, in nonce order, once every operand is stored (an upload
        that fails sends nothing). They go out together so that idle miners deal the
        batch one part each (node/claim_order.py): sending each part as soon as its own
        operands were stored dealt the early parts before the rest arrived, two parts
        often to one miner (measured, three miners: 0.41-0.46 s to a verified C
        against 0.29-0.33 s). A send refused after the first part went out says which
        jobs are live (their bounties are escrowed until computed, reclaimed or
        expired)."""
        try:
            for root, upload in uploads:
                if upload.result() != root:  # raises the upload's JobError
                    raise JobError(
                        f"the node at {self.blob_url} stored a blob under another root "
                        f"than {root.hex()}: is it a pouw node of this network?"
                    )
                self._uploaded.add(root)
        except Exception:
            for _, upload in uploads:
                upload.cancel()  # what is still queued uploads nothing more
            self._pending_nonce = first_nonce  # nothing went out: the nonces are free
            raise
        for i, tx in enumerate(txs):
            try:
                self._send(tx)
            except Exception as exc:  # the node refused it (RpcError) or is gone
                self._pending_nonce = first_nonce + i  # the next submit fills the gap
                if i == 0:
                    raise
                live = ", ".join(t.txid.hex() for t in txs[:i])
                raise JobError(
                    f"{exc}\nonly {i} of the product's {len(txs)} parts went out; their "
                    f"jobs are live: {live}. `pouw job reclaim JOB_ID` takes back the "
                    "bounty of one nobody has claimed yet; submit the product again once "
                    "the node takes it"
                ) from None
            self._pending_nonce = first_nonce + i + 1

    def _upload(self, kind: str, blob: npt.NDArray[Any] | Future[npt.NDArray[Any]]) -> bytes:
        matrix = blob.result() if isinstance(blob, Future) else blob
        return upload_blob(self.blob_url, kind, matrix, self.blob_auth)  # type: ignore[arg-type]

    def _job(self, job_id: str) -> dict[str, Any]:
        return dict(self.rpc.call("getjob", job_id))

    def status(
        self, product_id: str, known: dict[str, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """A product's state: one status when every part agrees, else "mixed", and each
        part's job. A one-job product, or a bare job id, answers that job. ``known``:
        parts' answers just received (not asked again)."""
        known = known or {}
        plan = self.manifest(product_id)
        if plan is None or len(plan.job_ids) == 1:  # one job: its state is the product's
            job_id = plan.job_ids[0] if plan is not None else product_id
            return known[job_id] if job_id in known else self._job(job_id)
        jobs = [known[j] if j in known else self._job(j) for j in plan.job_ids]
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        overall = next(iter(counts)) if len(counts) == 1 else "mixed"
        return {
            "product_id": product_id, "status": overall, "counts": counts,
            "m": plan.m, "k": plan.k, "n": plan.n, "parts": jobs,
        }  # fmt: skip

    def reclaim(self, product_id: str, fee: int = DEFAULT_JOB_FEE) -> list[str]:
        """Cancel every part nobody has claimed yet, on chain or in the node's pool;
        returns the reclaim txids."""
        plan = self.manifest(product_id)
        job_ids = plan.job_ids if plan is not None else [product_id]
        out = []
        for job_id in job_ids:
            job = self._job(job_id)
            # a claim on its way would most likely win: a miner is computing that part
            if job["status"] == "open" and not job.get("pending_claims"):
                tx = reclaim_tx(self.network, self._signer(), self._nonce(),
                                bytes.fromhex(job_id), fee)  # fmt: skip
                out.append(self._send(tx))
        if not out:
            raise JobError(f"{product_id}: no open part to reclaim (see `pouw job status`)")
        return out

    # --- collecting ------------------------------------------------------------------

    def _operands_of(self, product_id: str, a: Any, b: Any) -> tuple[Any, Any]:
        if a is not None and b is not None:
            return check_operand(np.asarray(a), "A"), check_operand(np.asarray(b), "B")
        if product_id in self._operands:
            return self._operands[product_id]
        raise JobError("pass A and B (the client needs them to check C)")

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

    def wait(self, product_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Block until every part is committed, paid or failed; returns the status.

        Each part is waited on with the node's ``waitforjob`` long poll (it answers as
        soon as the commit reaches the node's pool); a node without it is polled."""
        deadline = time.monotonic() + timeout
        self._prepare_checks(product_id)
        plan = self.manifest(product_id)
        answers: dict[str, dict[str, Any]] = {}
        for job_id in plan.job_ids if plan is not None else [product_id]:
            while True:
                job = answers[job_id] = self._wait_job(job_id, deadline - time.monotonic())
                if _deliverable(job):
                    self._collect(job)
                    break
                if job["status"] in FAILED:
                    break
                if time.monotonic() > deadline:
                    self._timed_out(product_id, timeout)
        return self.status(product_id, answers)  # as each part last answered

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
                if getattr(exc, "code", None) != METHOD_NOT_FOUND:
                    raise
                self._long_poll = False  # an older node: poll it
        job = self._job(job_id)
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
        plan = self.manifest(product_id)
        if plan is None:  # a bare job: the whole product is one part
            plan = self._plan(a8.shape[0], a8.shape[1], b8.shape[1], 2**62, 1)
            plan.job_ids = [product_id]
        jobs = [self._job(j) for j in plan.job_ids]
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
        for part, job, got, came in zip(plan.parts, jobs, results, collected, strict=True):
            # a challenge or probe needs the commit on chain, not only in a pool
            act = challenge and job["status"] == "committed"
            later = "; ask again once its commit is in a block to challenge it"
            if isinstance(got, str):  # the download failed: an availability probe
                out.verified = False
                out.actions.append(f"{job['job_id'][:16]}: C unavailable ({got})")
                if act:
                    self._probe(job, out)
                elif challenge:
                    out.actions[-1] += later
                continue
            # prepared while waiting, for the operands this client submitted (and maybe
            # already run by the background download)
            mine = a is None and b is None
            ok = came[1] if mine and isinstance(came, tuple) else None
            check = self._checks.pop(job["job_id"], None) if mine and ok is None else None
            if check is not None:
                ok = check.result().check(got)
            if ok is None:
                ok = freivalds_check(*part.operands(a8, b8), got)
            if not ok:
                out.verified = False
                out.actions.append(f"{job['job_id'][:16]}: C is wrong")
                if act:
                    self._challenge(job, *part.operands(a8, b8), got, out)
                elif challenge:
                    out.actions[-1] += later
        t2 = time.perf_counter()
        out.timings["check_s"] = t2 - t1
        if out.verified:
            out.c = assemble(plan.m, plan.n, plan.parts, results)  # type: ignore[arg-type]
            out.timings["assemble_s"] = time.perf_counter() - t2
        return out

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

    def compute(
        self, a: npt.NDArray[Any], b: npt.NDArray[Any], bounty: int, timeout: float = 600.0,
        **submit_args: Any,
    ) -> npt.NDArray[np.int64]:  # fmt: skip
        """Submit A . B, wait for every part, return the checked product. Raises
        JobError when a part fails (its bounty is refunded; the message says which)."""
        pid = self.submit(a, b, bounty, **submit_args)
        self.wait(pid, timeout)
        res = self.result(pid)
        if not res.verified:
            raise JobError(f"product {pid[:16]} did not check out: " + "; ".join(res.actions))
        return res.c
