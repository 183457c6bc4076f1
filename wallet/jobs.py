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

import base64
import functools
import io
import json
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.keys import PrivateKey
from chain.network import Network
from compute.blobs import blob_root, bt_root_of
from compute.freivalds import PreparedCheck
from compute.transpose import transposed
from wallet.job_collect import Collecting, JobResult
from wallet.job_follow import Following, UnknownJobError, check_id
from wallet.job_terms import (
    DEFAULT_EXPIRY_S,
    DEFAULT_JOB_FEE,
    DEFAULT_LIST_LIMIT,
    LEAST_PART_BOUNTY,
    MINER_TXS_PER_PART,
    JobError,
)
from wallet.job_txs import check_operand, submit_tx, whole_number
from wallet.products import (
    DEFAULT_PART_MULTIPLY_ADDS,
    Manifest,
    Part,
    PlanError,
    least_total_bounty,
    plan_parts,
    split_bounty,
)

__all__ = [
    "DEFAULT_EXPIRY_S", "DEFAULT_JOB_FEE", "DEFAULT_LIST_LIMIT", "JobClient", "JobError",
    "JobResult", "Quote", "UnknownJobError",
]  # fmt: skip

UPLOADS_PARALLEL = 2  # blobs in flight to the node while the next one is hashed
# How long an upload may wait on the node's socket: the node reads a few uploads at
# once (node/blobs.py MAX_UPLOADS_AT_ONCE) and lets the rest wait their turn, up to its
# own 300 s limit for a body.
UPLOAD_WAIT_S = 300.0
# A blob given to the node is not given again within this long (a product's parts, back
# to back submits): shorter than the node's retention keeps even an unneeded blob
# (node/blob_retention.FRESH_S, 10 minutes), so the node still has it.
UPLOAD_REUSE_S = 60.0
# A job must stay claimable at least this long: its submit has to reach a block and a
# miner has to claim it (an expiry the chain's clock passes first fails on chain).
MIN_EXPIRY_S = 60


def upload_blob(blob_url: str, kind: str, matrix: npt.NDArray[Any], auth: tuple[str, str],
                timeout: float = UPLOAD_WAIT_S) -> bytes:  # fmt: skip
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


def _cut_bt(part: Part, bt_whole: Future[npt.NDArray[np.int8]]) -> npt.NDArray[np.int8]:
    """A part's Bᵀ, once the worker has transposed the whole of B (one transpose of B
    on every core for all the parts: transposing each part's columns one by one took
    13 ms against 7 ms for three parts of 4096 x 4096, and held an upload thread)."""
    return part.operand_bt(bt_whole.result())


@dataclass
class Quote:
    multiply_adds: int
    parts: int
    going_bounty_per_multiply_add: float  # median of open (else recently delivered) jobs
    suggested_bounty: int  # base units: the going rate times this product's work
    network_multiply_adds_per_s: float
    expected_wait_s: float | None  # queued work plus this product over the network's rate
    # seconds since the tip's timestamp: with no block for long, no miner runs now and
    # expected_wait_s is None (the node's getmarketinfo judges it: STALE_TIP_SPACINGS)
    tip_age_s: int | None = None


class JobClient(Collecting, Following):
    """Submit products and collect verified results through a node (RPC + blob endpoint)."""

    def __init__(
        self,
        key: PrivateKey | Callable[[], PrivateKey] | None,
        network: Network,
        rpc: Any,
        blob_url: str,
        blob_auth: tuple[str, str] | None = None,
        manifest_dir: Path | None = None,
    ) -> None:
        self.network = network
        self.rpc = rpc
        self.blob_url = blob_url
        self.blob_auth = blob_auth
        self.manifest_dir = manifest_dir
        # A client without a key can read (status); submitting and challenging sign.
        # ``key`` may be a callable that unlocks it when first needed (the CLI's
        # `result`: a C that checks out needs no password).
        self.key: PrivateKey | None = None
        self.address: str | None = None
        self._unlock: Callable[[], PrivateKey] | None = None
        if callable(key):
            self._unlock = key
        elif key is not None:
            self._set_key(key)
        self._pending_nonce: int | None = None
        self._submits: dict[str, Any] = {}  # job id -> its signed JOB_SUBMIT (Transaction)
        self._products: dict[str, Manifest] = {}
        self._operands: dict[str, tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]] = {}
        self._probes: dict[str, int] = {}
        # blob root -> when this client last gave it to the node: not sent again
        # within UPLOAD_REUSE_S (the node's retention keeps a blob that long at
        # least; later it may be gone, node/blob_retention.py)
        self._uploaded: dict[bytes, float] = {}
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

    def _set_key(self, key: PrivateKey) -> None:
        from chain.address import address_from_pubkey, encode_address

        self.key = key
        self.address = encode_address(self.network.hrp, address_from_pubkey(key.public_key))

    def _signer(self) -> PrivateKey:
        if self.key is None and self._unlock is not None:
            self._set_key(self._unlock())
        if self.key is None:
            raise JobError("this needs the wallet's key: unlock a wallet to sign")
        return self.key

    def _nonce(self, spend: int = 0) -> int:
        """The next nonce to sign with; with ``spend`` (base units: bounties and fees),
        first a clear error when the account's spendable balance (confirmed, less what
        its pooled txs spend) cannot cover it, before
        anything is hashed or uploaded (the node would refuse the first submit)."""
        from wallet.amount import format_coins
        from wallet.rpc_calls import get_account

        info = get_account(self.rpc, self.address)  # type: ignore[arg-type]
        if spend > info.spendable:  # (less what our txs still in the pool spend)
            waiting = (
                f" ({format_coins(info.immature)} more is mined but not mature yet)"
                if info.immature else ""
            )  # fmt: skip
            pooled = (
                f", {format_coins(info.pending_spend)} of it spent by txs not yet in a block"
                if info.pending_spend else ""
            )  # fmt: skip
            raise JobError(
                f"the bounty and fees come to {format_coins(spend)} coins but {self.address} "
                f"holds {format_coins(info.balance)}{pooled}{waiting}, "
                f"{format_coins(spend - info.spendable)} short: send coins to that address "
                "(`pouw wallet balance` shows them), or lower --bounty"
                + (", or wait for those txs to confirm" if pooled else "")
            )
        nonce = max(info.pending_nonce, self._pending_nonce or 0)
        self._pending_nonce = nonce + 1
        return nonce

    def _send(self, tx: Any) -> str:
        from wallet.rpc_calls import send_raw_transaction

        return send_raw_transaction(self.rpc, tx.to_bytes())

    def _expiry(self, expiry_s: int, max_open_s: int) -> int:
        """A job's ``expires`` (median time past seconds) ``expiry_s`` from now: from
        the wall clock or the chain's median time past, whichever is later, within
        what the chain allows (the MTP + max_open_s). JobError when no block came for
        so long that any expiry the chain allows has passed in wall time (no miner
        runs: the job would expire as soon as blocks resume, its bounty locked until
        then)."""
        info = self.rpc.call("getblockchaininfo")
        mtp = int(info.get("mediantime", time.time()))
        now = int(time.time())
        expires = min(max(mtp, now) + expiry_s, mtp + max_open_s)
        if expires - now < MIN_EXPIRY_S:
            blocks, headers = int(info.get("blocks", 0)), int(info.get("headers", 0))
            if headers > blocks:
                raise JobError(
                    f"the node is still syncing (height {blocks} of {headers}): its chain "
                    "time is behind, and a job would expire as soon as it caught up; "
                    "submit once it has"
                )
            raise JobError(
                f"the chain's median time is {now - mtp} s behind this machine's clock (no "
                "block for that long: is any miner running? Or is this clock wrong?). A "
                f"job expires in chain time, at most {max_open_s} s after it, so this one "
                "would expire as soon as blocks come again: start a miner (`pouw node "
                "--mine`, or `pouw miner`), then submit"
            )
        return expires

    def _mtp(self) -> int:
        """The chain's median time past (the market's clock), from a job-less call."""
        info = self.rpc.call("getblockchaininfo")
        return int(info.get("mediantime", time.time()))

    def manifest(self, product_id: str) -> Manifest | None:
        product_id = check_id(product_id)
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
                self._remember_submits(found)
                return found
        return None

    def _remember_submits(self, plan: Manifest) -> None:
        from chain.tx import Transaction

        for job_id, raw in zip(plan.job_ids, plan.submits, strict=False):
            try:
                tx = Transaction.from_bytes(bytes.fromhex(raw))
            except ValueError:  # a damaged manifest: nothing to send again
                continue
            if tx.txid.hex() == job_id:  # (a job's id is its submit's txid)
                self._submits[job_id] = tx

    def _plan(self, m: int, k: int, n: int, max_part: int, min_parts: int) -> Manifest:
        m, k, n = (whole_number(v, name, 1) for v, name in ((m, "m"), (k, "k"), (n, "n")))
        max_part = whole_number(max_part, "max_part_multiply_adds", 1)
        min_parts = whole_number(min_parts, "min_parts", 1)
        try:
            parts = plan_parts(m, k, n, self.network.pouw, max_part, min_parts)
        except PlanError as exc:
            raise JobError(str(exc)) from None
        return Manifest(m, k, n, parts, network=self.network.name)

    # --- buying ----------------------------------------------------------------------

    def quote(
        self, m: int, k: int, n: int, max_part_multiply_adds: int = DEFAULT_PART_MULTIPLY_ADDS,
        min_parts: int = 1,
    ) -> Quote:
        """What a product of this shape costs at the going rate, and how long it waits,
        cut as ``submit`` with the same ``min_parts`` cuts it."""
        plan = self._plan(m, k, n, max_part_multiply_adds, min_parts)
        info = self.rpc.call("getmarketinfo")
        work = sum(p.multiply_adds for p in plan.parts)
        rate = float(info["going_bounty_per_multiply_add"])
        net_rate = float(info["network_multiply_adds_per_s"])
        queued = int(info["open_demand_multiply_adds"]) + int(info["in_progress_multiply_adds"])
        waits = net_rate > 0 and info.get("expected_wait_s") is not None
        from wallet.rpc import RpcError
        from wallet.rpc_calls import estimate_fee

        # at least what a miner pays to take each part (its claim's and its commit's
        # fee, DEFAULT_JOB_FEE each, more when the node's estimate is higher): a going
        # rate of nothing (no job in the window) must not suggest less
        try:
            fee = max(estimate_fee(self.rpc).fee, DEFAULT_JOB_FEE)
        except (RpcError, ValueError, TypeError):  # a node without the estimate
            fee = DEFAULT_JOB_FEE
        floor = least_total_bounty(plan.parts, MINER_TXS_PER_PART * fee)
        return Quote(
            multiply_adds=work, parts=len(plan.parts), going_bounty_per_multiply_add=rate,
            suggested_bounty=max(floor, len(plan.parts), int(rate * work + 0.999999)),
            network_multiply_adds_per_s=net_rate,
            expected_wait_s=(queued + work) / net_rate if waits else None,
            tip_age_s=info.get("tip_age_s"),
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
        bounty, fee = whole_number(bounty, "bounty"), whole_number(fee, "fee")
        # any int here: its range, 0 and negatives included, is checked below with one message
        expiry_s = whole_number(expiry_s, "expiry_s", least=-(2**63))
        if a8.shape[1] != b8.shape[0]:
            raise JobError(f"A is {a8.shape}, B is {b8.shape}: inner dimensions differ")
        if self.blob_auth is None:
            raise JobError(
                "uploading A and B needs the node's RPC cookie: pass --datadir of the node "
                "(or blob_auth=read_cookie(datadir, network))"
            )
        max_open = self.network.market.max_open_s
        if not MIN_EXPIRY_S <= expiry_s <= max_open:
            raise JobError(
                f"an expiry of {expiry_s} s is outside {MIN_EXPIRY_S}-{max_open} s (the "
                "longest this network lets a job stay open): pass --expiry within it"
            )
        signer = self._signer()
        (m, k), n = a8.shape, b8.shape[1]
        plan = self._plan(m, k, n, max_part_multiply_adds, min_parts)
        expires = self._expiry(expiry_s, max_open)
        try:
            plan.bounties = split_bounty(bounty, plan.parts)
        except PlanError as exc:
            raise JobError(str(exc)) from None
        if min(plan.bounties) < LEAST_PART_BOUNTY:
            from wallet.amount import format_coins

            least = least_total_bounty(plan.parts, LEAST_PART_BOUNTY)
            raise JobError(
                f"a bounty of {format_coins(bounty)} coins over {len(plan.parts)} part(s) pays "
                f"a part less than its miner's two fees ({format_coins(LEAST_PART_BOUNTY)} "
                f"coins): no miner takes it. Pass --bounty {format_coins(least)} or more "
                "(`pouw job quote` suggests one at the going rate)"
            )
        now = time.monotonic()
        self._uploaded = {r: t for r, t in self._uploaded.items() if now - t < UPLOAD_REUSE_S}
        first_nonce = self._nonce(spend=bounty + fee * len(plan.parts))
        sent: list[tuple[bytes, Future[bytes]]] = []
        try:
            txs = self._sign_parts(a8, b8, plan, signer, first_nonce, expires, fee, sent)
        except BaseException:  # (Ctrl-C included) nothing went out: the nonces are free
            for _, upload in sent:
                upload.cancel()
            self._pending_nonce = first_nonce
            raise
        self._send_after_uploads(txs, sent, first_nonce)
        plan.job_ids = [tx.txid.hex() for tx in txs]
        plan.submits = [tx.to_bytes().hex() for tx in txs]
        self._remember_submits(plan)
        pid = plan.product_id
        self._products[pid] = plan
        self._operands[pid] = (a8, b8)
        if self.manifest_dir is not None:
            plan.save(self.manifest_dir)
        return pid

    def _sign_parts(
        self, a8: npt.NDArray[np.int8], b8: npt.NDArray[np.int8], plan: Manifest,
        signer: PrivateKey, first_nonce: int, expires: int, fee: int,
        sent: list[tuple[bytes, Future[bytes]]],
    ) -> list[Any]:  # fmt: skip
        """One signed JOB_SUBMIT per part, consecutive nonces from ``first_nonce``; each
        operand blob not uploaded lately starts uploading meanwhile (added to ``sent``)."""
        # uploads run beside the hashing of the next blob (the node checks each one)
        if self._uploads is None:
            self._uploads = ThreadPoolExecutor(UPLOADS_PARALLEL, thread_name_prefix="upload")
        uploads = self._uploads
        known: dict[tuple[Any, ...], bytes] = {}  # parts share slices of A (or of B)
        txs = []
        bt_whole: Future[npt.NDArray[np.int8]] | None = None  # B transposed once, for all parts
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
                    else:  # Bᵀ: cut from B transposed by a worker while B's columns are hashed here
                        if bt_whole is None:
                            bt_whole = uploads.submit(transposed, b8)
                        blob = functools.partial(_cut_bt, part, bt_whole)
                        root = bt_root_of(matrix)
                    known[kind, where] = root
                    if root not in self._uploaded:  # (none older than UPLOAD_REUSE_S)
                        sent.append((root, uploads.submit(self._upload, kind, blob)))
                roots.append(root)
            txs.append(submit_tx(self.network, signer, first_nonce + i, pa, pb, part_bounty,
                                 expires, url=self.blob_url, fee=fee,
                                 roots=(roots[0], roots[1])))  # fmt: skip
        return txs

    def _send_after_uploads(
        self, txs: list[Any], uploads: list[tuple[bytes, Future[bytes]]], first_nonce: int
    ) -> None:
        """Send the submits, in nonce order, once every operand is stored (an upload
        that fails sends nothing), so that idle miners deal the batch one part each
        (node/claim_order.py). Sending each part as soon as its own operands were
        stored was measured, three miners: 0.41-0.46 s to a verified C against
        0.29-0.33 s while the dealing gave two early parts to one miner, 0.34 s against
        0.31 s once it counted claimed parts: no gain. A send refused after the first
        part went out says which jobs are live (their bounties are escrowed until
        computed, reclaimed or expired)."""
        try:
            for root, upload in uploads:
                if upload.result() != root:  # raises the upload's JobError
                    raise JobError(
                        f"the node at {self.blob_url} stored a blob under another root "
                        f"than {root.hex()}: is it a pouw node of this network?"
                    )
                self._uploaded[root] = time.monotonic()
        except BaseException:  # (Ctrl-C included)
            for _, upload in uploads:
                upload.cancel()  # what is still queued uploads nothing more
            self._pending_nonce = first_nonce  # nothing went out: the nonces are free
            raise
        for i, tx in enumerate(txs):
            try:
                self._send(tx)
            except Exception as exc:  # the node refused it (RpcError) or is gone
                self._pending_nonce = first_nonce + i  # the next submit fills the gap
                # our nonce, taken by another tx of ours (pooled, or in a block since)
                taken = "replacement" in str(exc) or "nonce-too-low" in str(exc)
                hint = (
                    f" (another transaction of this wallet took nonce {tx.nonce} meanwhile: "
                    "a second `pouw job submit` or `pouw wallet send` at the same time? "
                    "Submit again once it is sent)" if taken else ""
                )  # fmt: skip
                if i == 0:
                    if taken:
                        raise JobError(f"{exc}{hint}") from None
                    raise
                live = ", ".join(t.txid.hex() for t in txs[:i])
                raise JobError(
                    f"{exc}{hint}\nonly {i} of the product's {len(txs)} parts went out; their "
                    f"jobs are live: {live}. `pouw job reclaim JOB_ID` takes back the "
                    "bounty of one nobody has claimed yet; submit the product again once "
                    "the node takes it"
                ) from None
            self._pending_nonce = first_nonce + i + 1

    def _upload(self, kind: str, blob: npt.NDArray[Any] | Callable[[], npt.NDArray[Any]]) -> bytes:
        matrix = blob() if callable(blob) else blob
        return upload_blob(self.blob_url, kind, matrix, self.blob_auth)  # type: ignore[arg-type]

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
