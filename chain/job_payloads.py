"""The compute market's transaction payloads: layouts and a strict decoder.

Pure encoding: no state, no network parameters, so that a transaction's context-free
check (chain/tx.py) can decode a job payload without the market's state rules
(chain/jobs.py). Layouts (docs/PROTOCOL.md, "Compute market"), integers big-endian:

    JOB_SUBMIT     m u32 | k u32 | n u32 | hA 32 | hB 32 | expires u64 | url varbytes
    JOB_CLAIM      job_id 32
    JOB_COMMIT     job_id 32 | hC 32 | url varbytes
    JOB_CHALLENGE  job_id 32 | i u32 | j u32 | row varbytes | col varbytes |
                   chunk varbytes | 4 x (depth u8 | depth x 32-byte hash)
    JOB_RECLAIM    job_id 32
    JOB_PROBE      job_id 32 | row u32 | chunk u32
    JOB_REVEAL     job_id 32 | chunk varbytes | 2 x (depth u8 | depth x 32-byte hash)
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.encoding import DecodeError, Reader, Writer
from chain.txkind import TxKind
from consensus.merkle import MAX_BRANCH_DEPTH
from consensus.params import MAX_K
from consensus.result_layout import ENTRY_BYTES, RESULT_CHUNK, Challenge

MAX_URL = 256  # a hint where the data is served (http://host:port), not consensus data
MAX_CHUNK_BYTES = RESULT_CHUNK * ENTRY_BYTES
_BRANCH_BYTES = 1 + MAX_BRANCH_DEPTH * 32

# A JOB_CHALLENGE carries O(k) data: row i of A and column j of B (k bytes each), one
# chunk of a row of C and four branches. Its cap follows from the protocol's absolute
# limits (MAX_K, MAX_BRANCH_DEPTH), not from a network, because decoding must not
# depend on the network; the state rule then requires the job's exact k.
MAX_CHALLENGE_PAYLOAD = 32 + 4 + 4 + 2 * (4 + MAX_K) + (4 + MAX_CHUNK_BYTES) + 4 * _BRANCH_BYTES
# A JOB_REVEAL carries one chunk (<= 256 bytes) and two branches: 2,342 bytes at most.
MAX_REVEAL_PAYLOAD = 32 + (4 + MAX_CHUNK_BYTES) + 2 * _BRANCH_BYTES


class JobPayloadError(ValueError):
    """A job transaction's payload does not decode for its kind."""


def _write_branch(w: Writer, branch: tuple[bytes, ...]) -> None:
    w.u8(len(branch))
    for h in branch:
        w.bytes_n(h, 32)


def _read_branch(r: Reader, what: str) -> tuple[bytes, ...]:
    depth = r.u8(f"{what} depth")
    if depth > MAX_BRANCH_DEPTH:
        raise DecodeError(f"{what} depth {depth} > {MAX_BRANCH_DEPTH}")
    return tuple(r.bytes_n(32, what) for _ in range(depth))


@dataclass(frozen=True)
class JobSubmit:
    m: int
    k: int
    n: int
    h_a: bytes
    h_b: bytes
    expires: int  # median-time-past (unix seconds) after which no one may claim the job
    url: bytes = b""  # where the buyer serves A and B (blob HTTP endpoint), a hint

    def to_payload(self) -> bytes:
        w = Writer().u32(self.m).u32(self.k).u32(self.n).bytes_n(self.h_a, 32)
        return w.bytes_n(self.h_b, 32).u64(self.expires).varbytes(self.url).getvalue()


@dataclass(frozen=True)
class JobClaim:
    job_id: bytes

    def to_payload(self) -> bytes:
        return Writer().bytes_n(self.job_id, 32).getvalue()


@dataclass(frozen=True)
class JobCommit:
    job_id: bytes
    result_root: bytes
    url: bytes = b""  # where the claimant serves C, a hint

    def to_payload(self) -> bytes:
        w = Writer().bytes_n(self.job_id, 32).bytes_n(self.result_root, 32)
        return w.varbytes(self.url).getvalue()


@dataclass(frozen=True)
class JobChallenge:
    job_id: bytes
    challenge: Challenge

    def to_payload(self) -> bytes:
        c = self.challenge
        w = Writer().bytes_n(self.job_id, 32).u32(c.i).u32(c.j)
        w.varbytes(c.row).varbytes(c.col).varbytes(c.chunk)
        for branch in (c.row_branch, c.col_branch, c.chunk_branch, c.result_branch):
            _write_branch(w, branch)
        return w.getvalue()


@dataclass(frozen=True)
class JobReclaim:
    job_id: bytes

    def to_payload(self) -> bytes:
        return Writer().bytes_n(self.job_id, 32).getvalue()


@dataclass(frozen=True)
class JobProbe:
    """Availability challenge: publish chunk ``chunk`` of row ``row`` of C."""

    job_id: bytes
    row: int
    chunk: int

    def to_payload(self) -> bytes:
        return Writer().bytes_n(self.job_id, 32).u32(self.row).u32(self.chunk).getvalue()


@dataclass(frozen=True)
class JobReveal:
    """The probed chunk, its branch within its row, and the row root's branch in hC."""

    job_id: bytes
    data: bytes  # int32 little-endian entries
    chunk_branch: tuple[bytes, ...]
    result_branch: tuple[bytes, ...]

    def to_payload(self) -> bytes:
        w = Writer().bytes_n(self.job_id, 32).varbytes(self.data)
        _write_branch(w, self.chunk_branch)
        _write_branch(w, self.result_branch)
        return w.getvalue()


JobPayload = JobSubmit | JobClaim | JobCommit | JobChallenge | JobReclaim | JobProbe | JobReveal


def _decode(kind: int, r: Reader) -> JobPayload:
    if kind == TxKind.JOB_SUBMIT:
        return JobSubmit(
            r.u32("m"), r.u32("k"), r.u32("n"), r.bytes_n(32, "h_a"), r.bytes_n(32, "h_b"),
            r.u64("expires"), r.varbytes(MAX_URL, "url"),
        )  # fmt: skip
    job_id = r.bytes_n(32, "job_id")
    if kind == TxKind.JOB_CLAIM:
        return JobClaim(job_id)
    if kind == TxKind.JOB_COMMIT:
        return JobCommit(job_id, r.bytes_n(32, "result_root"), r.varbytes(MAX_URL, "url"))
    if kind == TxKind.JOB_CHALLENGE:
        i, j = r.u32("i"), r.u32("j")
        row = r.varbytes(MAX_K, "row")
        col = r.varbytes(MAX_K, "column")
        chunk = r.varbytes(MAX_CHUNK_BYTES, "chunk")
        branches = [_read_branch(r, w) for w in ("row branch", "column branch",
                                                  "chunk branch", "result branch")]  # fmt: skip
        return JobChallenge(job_id, Challenge(i, j, row, col, chunk, *branches))
    if kind == TxKind.JOB_RECLAIM:
        return JobReclaim(job_id)
    if kind == TxKind.JOB_PROBE:
        return JobProbe(job_id, r.u32("row"), r.u32("chunk"))
    if kind == TxKind.JOB_REVEAL:
        data = r.varbytes(MAX_CHUNK_BYTES, "chunk")
        return JobReveal(
            job_id, data, _read_branch(r, "chunk branch"), _read_branch(r, "result branch")
        )
    raise JobPayloadError(f"kind {kind} is not a job kind")


def decode_job_payload(kind: int, payload: bytes) -> JobPayload:
    """Strict decode of a job kind's payload; raises JobPayloadError."""
    if kind == TxKind.TRANSFER or kind not in TxKind._value2member_map_:
        raise JobPayloadError(f"kind {kind} is not a job kind")
    r = Reader(payload)
    try:
        out = _decode(kind, r)
        r.finish()
    except DecodeError as exc:
        raise JobPayloadError(str(exc)) from None
    return out
