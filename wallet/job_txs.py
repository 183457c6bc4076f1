"""The compute market's transactions, built and signed on the client's side (the key
never leaves the process), and the proofs a challenge carries. Payload layouts:
chain/job_payloads.py. The client that uses them: wallet/jobs.py.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from chain.job_record import ZERO_ADDRESS
from chain.keys import PrivateKey
from chain.network import Network
from chain.tx import Transaction, TxKind, sign
from compute.transpose import transposed
from consensus.commitments import ENTRY_MAX, ENTRY_MIN, commit_cols, commit_rows, row_tree
from consensus.merkle import branch_from_levels
from consensus.result import Challenge, result_proof
from wallet.job_terms import DEFAULT_JOB_FEE, JobError


def check_operand(x: npt.NDArray[Any], name: str) -> npt.NDArray[np.int8]:
    """The operand as int8 if every entry is an integer in [-64, 63]; else JobError."""
    if not isinstance(x, np.ndarray):
        raise JobError(
            f"{name} must be a NumPy matrix (numpy.asarray(x, dtype=numpy.int8)), "
            f"not {type(x).__name__}"
        )
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


def whole_number(value: Any, name: str, least: int = 0) -> int:
    """``value`` if it is an int of at least ``least`` (an amount in base units, a
    count, a size); else JobError (a float such as 1.5 coins is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise JobError(
            f"{name} must be a whole number of at least {least}, not {value!r}"
            + (" (amounts are in base units: 1 coin = 10^8)" if isinstance(value, float) else "")
        )
    return int(value)


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
    fee: int = DEFAULT_JOB_FEE, roots: tuple[bytes, bytes] | None = None,
) -> Transaction:  # fmt: skip
    """JOB_SUBMIT for A . B, claimable until median time past ``expires`` (unix
    seconds); the job id is the returned tx's txid. ``roots`` (hA, hB) skips hashing
    A and B again when the caller already has them."""
    m, k = a.shape
    n = b.shape[1]
    h_a, h_b = roots if roots is not None else (commit_rows(a), commit_cols(b))
    payload = JobSubmit(m, k, n, h_a, h_b, expires, url.encode())
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
    if b_levels is None:
        b_levels = row_tree(transposed(b))
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
