"""The compute market from a client's side: build job transactions, submit, fetch, check.

    from wallet.jobs import JobClient
    client = JobClient(key, network, rpc, blob_url="http://127.0.0.1:29334")
    job_id = client.submit(a, b, bounty=10_000)           # uploads A, B; sends JOB_SUBMIT
    client.status(job_id)                                  # getjob
    c = client.result(job_id)                              # download C, check, challenge if wrong

Transactions are built and signed here (the key never leaves the process); their
payload layouts are chain/jobs.py's. ``result`` checks every downloaded row against
the committed root (compute/blobs.py), then C against A and B with Freivalds' test;
when that fails it finds a wrong entry and files the challenge by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.job_payloads import (
    JobChallenge,
    JobClaim,
    JobCommit,
    JobProbe,
    JobReclaim,
    JobReveal,
    JobSubmit,
)
from chain.jobs import ZERO_ADDRESS
from chain.keys import PrivateKey
from chain.network import Network
from chain.tx import Transaction, TxKind, sign
from consensus.commitments import ENTRY_MAX, ENTRY_MIN, commit_cols, commit_rows, row_tree
from consensus.hashing import TAG_MERKLE_NODE
from consensus.merkle import branch_from_levels, merkle_levels
from consensus.result import Challenge, result_proof

DEFAULT_JOB_FEE = 1000
DEFAULT_EXPIRY_BLOCKS = 200


class JobError(Exception):
    """A job operation failed; the message says why and what to do."""


def check_operand(x: npt.NDArray[Any], name: str) -> npt.NDArray[np.int8]:
    """The operand as int8 if every entry is an integer in [-64, 63]; else JobError."""
    if x.ndim != 2:
        raise JobError(f"{name} must be a 2-D matrix, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise JobError(
            f"{name} has dtype {x.dtype}: entries must be integers in [{ENTRY_MIN}, {ENTRY_MAX}]."
            f" Quantize first, e.g. scale = 63 / abs(x).max(); q = np.clip(np.rint(x * scale),"
            f" {ENTRY_MIN}, {ENTRY_MAX}).astype(np.int8), and divide C by scale_a * scale_b"
        )
    if x.size and (int(x.min()) < ENTRY_MIN or int(x.max()) > ENTRY_MAX):
        raise JobError(
            f"{name} has entries in [{int(x.min())}, {int(x.max())}], outside"
            f" [{ENTRY_MIN}, {ENTRY_MAX}] (7-bit operands). Quantize: scale = 63 / abs(x).max();"
            f" q = np.clip(np.rint(x * scale), {ENTRY_MIN}, {ENTRY_MAX}).astype(np.int8)"
        )
    return np.ascontiguousarray(x, dtype=np.int8)


def _job_tx(
    network: Network, key: PrivateKey, nonce: int, kind: int, payload: bytes, fee: int,
    amount: int = 0,
) -> Transaction:  # fmt: skip
    tx = Transaction(
        chain_id=network.chain_id, kind=kind, sender_pubkey=key.public_key, nonce=nonce,
        fee=fee, recipient=ZERO_ADDRESS, amount=amount, payload=payload,
    )  # fmt: skip
    return sign(tx, key)


def submit_tx(
    network: Network, key: PrivateKey, nonce: int, a: npt.NDArray[np.int8],
    b: npt.NDArray[np.int8], bounty: int, expires: int, url: str = "",
    fee: int = DEFAULT_JOB_FEE,
) -> Transaction:  # fmt: skip
    """JOB_SUBMIT for A . B, claimable until median time past ``expires`` (unix
    seconds); the job id is the returned tx's txid."""
    m, k = a.shape
    n = b.shape[1]
    payload = JobSubmit(m, k, n, commit_rows(a), commit_cols(b), expires, url.encode())
    return _job_tx(network, key, nonce, TxKind.JOB_SUBMIT, payload.to_payload(), fee, bounty)


def claim_tx(
    network: Network, key: PrivateKey, nonce: int, job_id: bytes, bond: int,
    fee: int = DEFAULT_JOB_FEE,
) -> Transaction:  # fmt: skip
    """JOB_CLAIM escrowing ``bond`` (at least ``network.market.bond_for(bounty)``)."""
    payload = JobClaim(job_id).to_payload()
    return _job_tx(network, key, nonce, TxKind.JOB_CLAIM, payload, fee, bond)


def commit_tx(
    network: Network, key: PrivateKey, nonce: int, job_id: bytes, result_root: bytes,
    url: str = "", fee: int = DEFAULT_JOB_FEE,
) -> Transaction:  # fmt: skip
    payload = JobCommit(job_id, result_root, url.encode()).to_payload()
    return _job_tx(network, key, nonce, TxKind.JOB_COMMIT, payload, fee)


def probe_tx(
    network: Network, key: PrivateKey, nonce: int, job_id: bytes, row: int, chunk: int,
    deposit: int, fee: int = DEFAULT_JOB_FEE,
) -> Transaction:  # fmt: skip
    """JOB_PROBE: the claimant must publish chunk ``chunk`` of row ``row`` of C."""
    payload = JobProbe(job_id, row, chunk).to_payload()
    return _job_tx(network, key, nonce, TxKind.JOB_PROBE, payload, fee, deposit)


def reveal_tx(
    network: Network, key: PrivateKey, nonce: int, job_id: bytes, data: bytes,
    chunk_branch: tuple[bytes, ...], result_branch: tuple[bytes, ...],
    fee: int = DEFAULT_JOB_FEE,
) -> Transaction:  # fmt: skip
    payload = JobReveal(job_id, data, chunk_branch, result_branch).to_payload()
    return _job_tx(network, key, nonce, TxKind.JOB_REVEAL, payload, fee)


def reclaim_tx(
    network: Network, key: PrivateKey, nonce: int, job_id: bytes, fee: int = DEFAULT_JOB_FEE
) -> Transaction:
    return _job_tx(network, key, nonce, TxKind.JOB_RECLAIM, JobReclaim(job_id).to_payload(), fee)


def build_challenge(
    a: npt.NDArray[np.int8], b: npt.NDArray[np.int8], c: npt.NDArray[np.integer], i: int, j: int,
    a_levels: Sequence[Sequence[bytes]] | None = None,
    b_levels: Sequence[Sequence[bytes]] | None = None,
) -> Challenge:  # fmt: skip
    """The proof about entry C[i, j] (wrong or not: the chain decides)."""
    a_levels = a_levels if a_levels is not None else row_tree(a)
    b_levels = b_levels if b_levels is not None else row_tree(np.ascontiguousarray(b.T))
    chunk, chunk_branch, result_branch = result_proof(c, i, j)
    return Challenge(
        i=i, j=j, row=a[i].tobytes(), col=np.ascontiguousarray(b[:, j]).tobytes(), chunk=chunk,
        row_branch=tuple(branch_from_levels(a_levels, i)),
        col_branch=tuple(branch_from_levels(b_levels, j)),
        chunk_branch=tuple(chunk_branch), result_branch=tuple(result_branch),
    )  # fmt: skip


def challenge_tx(
    network: Network, key: PrivateKey, nonce: int, job_id: bytes, challenge: Challenge,
    fee: int = DEFAULT_JOB_FEE,
) -> Transaction:  # fmt: skip
    payload = JobChallenge(job_id, challenge).to_payload()
    return _job_tx(network, key, nonce, TxKind.JOB_CHALLENGE, payload, fee)


def find_wrong_entry(
    a: npt.NDArray[np.int8], b: npt.NDArray[np.int8], c: npt.NDArray[np.integer]
) -> tuple[int, int] | None:
    """One (i, j) with C[i, j] != (A . B)[i, j], or None. Row by row, exact (float64 of
    int8 products is exact for k < 2^37 / 127^2... we use int64 to be plain)."""
    a64 = a.astype(np.int64)
    b64 = b.astype(np.int64)
    step = max(1, (1 << 22) // max(1, b.shape[1] * a.shape[1]))
    for i0 in range(0, a.shape[0], step):
        exact = a64[i0 : i0 + step] @ b64
        diff = np.nonzero(exact != c[i0 : i0 + step])
        if diff[0].size:
            return i0 + int(diff[0][0]), int(diff[1][0])
    return None


@dataclass(frozen=True)
class Levels:
    """Merkle levels of A's rows and B's columns (to cut challenge branches)."""

    a: list[list[bytes]]
    b: list[list[bytes]]

    @classmethod
    def of(cls, a: npt.NDArray[np.int8], b: npt.NDArray[np.int8]) -> Levels:
        from consensus.commitments import row_leaves

        return cls(
            merkle_levels(row_leaves(a), TAG_MERKLE_NODE),
            merkle_levels(row_leaves(np.ascontiguousarray(b.T)), TAG_MERKLE_NODE),
        )


# --- the client -------------------------------------------------------------------------


def upload_blob(blob_url: str, kind: str, matrix: npt.NDArray[Any], auth: tuple[str, str],
                timeout: float = 60.0) -> bytes:  # fmt: skip
    """POST a matrix to a node's blob endpoint (authenticated with its RPC cookie)."""
    import base64
    import io
    import json
    import urllib.request

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(matrix))
    req = urllib.request.Request(
        f"{blob_url.rstrip('/')}/blob?kind={kind}", data=buf.getvalue(), method="POST"
    )
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    req.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes.fromhex(json.loads(resp.read())["root"])
    except OSError as exc:
        raise JobError(f"upload to {blob_url} failed: {exc}") from None


@dataclass
class JobResult:
    c: npt.NDArray[np.int32]
    verified: bool  # matches the committed root and passed Freivalds' test
    challenge_txid: str | None = None  # set when a wrong entry was found and challenged
    timings: dict[str, float] | None = None


class JobClient:
    """Submit jobs and collect verified results through a node (RPC + blob endpoint)."""

    def __init__(
        self,
        key: PrivateKey | None,
        network: Network,
        rpc: Any,
        blob_url: str,
        blob_auth: tuple[str, str] | None = None,
    ) -> None:
        from chain.address import address_from_pubkey, encode_address

        self.key = key
        self.network = network
        self.rpc = rpc
        self.blob_url = blob_url
        self.blob_auth = blob_auth
        # A client without a key can read (status); submitting and challenging sign.
        self.address = (
            encode_address(network.hrp, address_from_pubkey(key.public_key))
            if key is not None
            else None
        )
        self._pending_nonce: int | None = None
        self._operands: dict[str, tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]] = {}

    def _signer(self) -> PrivateKey:
        if self.key is None:
            raise JobError("this needs the wallet's key: unlock a wallet to sign")
        return self.key

    def _nonce(self) -> int:
        from wallet.rpc import get_account

        info = get_account(self.rpc, self.address)
        nonce = max(info.pending_nonce, self._pending_nonce or 0)
        self._pending_nonce = nonce + 1
        return nonce

    def _send(self, tx: Transaction) -> str:
        from wallet.rpc import send_raw_transaction

        return send_raw_transaction(self.rpc, tx.to_bytes())

    def submit(
        self,
        a: npt.NDArray[Any],
        b: npt.NDArray[Any],
        bounty: int,
        expiry_blocks: int = DEFAULT_EXPIRY_BLOCKS,
        fee: int = DEFAULT_JOB_FEE,
    ) -> str:
        """Check and upload A and B, send JOB_SUBMIT; returns the job id (hex)."""
        a8, b8 = check_operand(a, "A"), check_operand(b, "B")
        if a8.shape[1] != b8.shape[0]:
            raise JobError(f"A is {a8.shape}, B is {b8.shape}: inner dimensions differ")
        from consensus.seal import check_shape

        shape = check_shape(self.network.pouw, a8.shape[0], a8.shape[1], b8.shape[1])
        if not shape.ok:
            assert shape.reason is not None
            raise JobError(
                f"shape {a8.shape[0]}x{a8.shape[1]}x{b8.shape[1]} is not allowed on"
                f" {self.network.name}: {shape.reason.value} (pad to multiples)"
            )
        if self.blob_auth is None:
            raise JobError("uploading A and B needs the node's RPC cookie")
        upload_blob(self.blob_url, "a", a8, self.blob_auth)
        upload_blob(self.blob_url, "bt", b8.T, self.blob_auth)
        height = int(self.rpc.call("getblockcount"))
        tx = submit_tx(self.network, self._signer(), self._nonce(), a8, b8, bounty,
                       height + expiry_blocks, url=self.blob_url, fee=fee)  # fmt: skip
        self._send(tx)
        self._operands[tx.txid.hex()] = (a8, b8)
        return tx.txid.hex()

    def status(self, job_id: str) -> dict[str, Any]:
        return dict(self.rpc.call("getjob", job_id))

    def reclaim(self, job_id: str, fee: int = DEFAULT_JOB_FEE) -> str:
        return self._send(reclaim_tx(self.network, self._signer(), self._nonce(),
                                     bytes.fromhex(job_id), fee))  # fmt: skip

    def result(self, job_id: str, a: npt.NDArray[np.int8] | None = None,
               b: npt.NDArray[np.int8] | None = None, challenge: bool = True,
               timeout: float = 30.0) -> JobResult:  # fmt: skip
        """Download C, check it against the committed root (each row) and A, B
        (Freivalds); on a wrong C, find a wrong entry and challenge it."""
        import asyncio
        import time

        from compute.blobs import fetch_blob
        from compute.freivalds import freivalds_check

        info = self.status(job_id)
        if "result_root" not in info:
            raise JobError(f"job {job_id} has no committed result yet (status {info['status']})")
        if a is None or b is None:
            if job_id not in self._operands:
                raise JobError("pass A and B (the client needs them to check C)")
            a, b = self._operands[job_id]
        t0 = time.perf_counter()
        urls = [info.get("result_url", ""), self.blob_url]
        c = asyncio.run(fetch_blob(urls, bytes.fromhex(info["result_root"]), "c",
                                   info["m"], info["n"], timeout=timeout))  # fmt: skip
        t1 = time.perf_counter()
        ok = freivalds_check(a, b, c)
        t2 = time.perf_counter()
        timings = {"transfer_s": t1 - t0, "check_s": t2 - t1}
        if ok:
            return JobResult(c, True, None, timings)
        txid = None
        if challenge:
            where = find_wrong_entry(a, b, c)
            if where is None:  # Freivalds cannot be wrong this way: C != A.B was seen
                raise JobError("Freivalds rejected C but no wrong entry was found")
            ch = build_challenge(a, b, c, *where)
            txid = self._send(challenge_tx(self.network, self._signer(), self._nonce(),
                                           bytes.fromhex(job_id), ch))  # fmt: skip
        timings["find_s"] = time.perf_counter() - t2
        return JobResult(c, False, txid, timings)
