"""The compute market on chain: job payloads, the job record and its state transitions.

A buyer posts a product A (m x k) . B (k x n) by its commitments hA, hB with a bounty
(JOB_SUBMIT: the tx amount is escrowed in the job). A miner names the job in a block
header (job_id = txid of the submit); that block must carry exactly the job's shape and
commitments, and its block reward is *held* with the job instead of maturing. The
miner then commits the Merkle root of C (JOB_COMMIT) within ``commit_blocks``. During
``challenge_blocks`` after the commit anyone may prove one entry wrong with O(k) data
(JOB_CHALLENGE, consensus/result.py): the buyer gets the bounty back, the challenger
gets the held reward, and the miner's ledger counts a lost challenge. Otherwise, at
the end of the window, the miner is paid the bounty plus the held reward and the
multiply-adds count as delivered. The buyer may cancel an open job, or reclaim one
whose miner did not commit in time (JOB_RECLAIM). Details: docs/MARKET.md.

State keys:

    b"J" + job_id       the job record (``Job``)
    b"Q" + u64 height   the first job due to settle at the end of that block; the
                        rest follow through each job's ``next_due`` (a linked list, so
                        every state value stays small however many jobs settle)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from chain.encoding import DecodeError, Reader, Writer
from chain.tx import Transaction, TxKind
from consensus.merkle import MAX_BRANCH_DEPTH
from consensus.params import MAX_K, MarketParams, PouwParams
from consensus.result import RESULT_CHUNK, Challenge, verify_challenge
from consensus.seal import check_shape

if TYPE_CHECKING:
    from chain.header import Header
    from chain.state import Overlay

PREFIX_JOB = b"J"
PREFIX_DUE = b"Q"
MAX_URL = 256  # a hint where the data is served (http://host:port), not consensus data
ZERO_ADDRESS = bytes(20)
ZERO_HASH = bytes(32)


def job_key(job_id: bytes) -> bytes:
    return PREFIX_JOB + job_id


def due_key(height: int) -> bytes:
    return PREFIX_DUE + height.to_bytes(8, "big")


class JobStatus(enum.IntEnum):
    OPEN = 1  # escrowed, waiting for a miner
    MINED = 2  # a block named it; the miner must commit C
    COMMITTED = 3  # C's root is on chain; the challenge window runs
    PAID = 4  # the window closed: bounty and held reward paid to the miner
    REFUNDED = 5  # a challenge proved C wrong: bounty back to the buyer
    RECLAIMED = 6  # cancelled while open, or the miner never committed


class JobPayloadError(ValueError):
    """A job transaction's payload does not decode for its kind."""


# --- payloads --------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSubmit:
    m: int
    k: int
    n: int
    h_a: bytes
    h_b: bytes
    expiry: int  # last height at which a block may name the job
    url: bytes = b""  # where the buyer serves A and B (blob HTTP endpoint), a hint

    def to_payload(self) -> bytes:
        w = Writer().u32(self.m).u32(self.k).u32(self.n).bytes_n(self.h_a, 32)
        return w.bytes_n(self.h_b, 32).u64(self.expiry).varbytes(self.url).getvalue()


@dataclass(frozen=True)
class JobCommit:
    job_id: bytes
    result_root: bytes
    url: bytes = b""  # where the miner serves C, a hint

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
            w.u8(len(branch))
            for h in branch:
                w.bytes_n(h, 32)
        return w.getvalue()


@dataclass(frozen=True)
class JobReclaim:
    job_id: bytes

    def to_payload(self) -> bytes:
        return self.job_id


JobPayload = JobSubmit | JobCommit | JobChallenge | JobReclaim


def _branch(r: Reader, what: str) -> tuple[bytes, ...]:
    depth = r.u8(f"{what} depth")
    if depth > MAX_BRANCH_DEPTH:
        raise DecodeError(f"{what} depth {depth} > {MAX_BRANCH_DEPTH}")
    return tuple(r.bytes_n(32, what) for _ in range(depth))


def decode_job_payload(kind: int, payload: bytes) -> JobPayload:
    """Strict decode of a job kind's payload; raises JobPayloadError."""
    r = Reader(payload)
    out: JobPayload
    try:
        if kind == TxKind.JOB_SUBMIT:
            out = JobSubmit(
                r.u32("m"), r.u32("k"), r.u32("n"), r.bytes_n(32, "h_a"), r.bytes_n(32, "h_b"),
                r.u64("expiry"), r.varbytes(MAX_URL, "url"),
            )  # fmt: skip
        elif kind == TxKind.JOB_COMMIT:
            out = JobCommit(
                r.bytes_n(32, "job_id"), r.bytes_n(32, "result_root"), r.varbytes(MAX_URL, "url")
            )
        elif kind == TxKind.JOB_CHALLENGE:
            job_id = r.bytes_n(32, "job_id")
            i, j = r.u32("i"), r.u32("j")
            row = r.varbytes(MAX_K, "row")
            col = r.varbytes(MAX_K, "column")
            chunk = r.varbytes(RESULT_CHUNK * 4, "chunk")
            branches = [_branch(r, w) for w in ("row branch", "column branch",
                                                  "chunk branch", "result branch")]  # fmt: skip
            out = JobChallenge(job_id, Challenge(i, j, row, col, chunk, *branches))
        elif kind == TxKind.JOB_RECLAIM:
            out = JobReclaim(r.bytes_n(32, "job_id"))
        else:
            raise JobPayloadError(f"kind {kind} is not a job kind")
        r.finish()
    except DecodeError as exc:
        raise JobPayloadError(str(exc)) from None
    return out


# --- the job record --------------------------------------------------------------------


def _job_status(value: int) -> JobStatus:
    try:
        return JobStatus(value)
    except ValueError:
        raise DecodeError(f"job status {value} is not a job status") from None


@dataclass(frozen=True)
class Job:
    buyer: bytes
    m: int
    k: int
    n: int
    h_a: bytes
    h_b: bytes
    bounty: int
    expiry: int
    submitted: int  # height of the block that carried the submit
    status: JobStatus = JobStatus.OPEN
    miner: bytes = ZERO_ADDRESS
    mined_height: int = 0
    held_reward: int = 0  # the job block's reward, held until the job settles
    result_root: bytes = ZERO_HASH
    committed_height: int = 0
    next_due: bytes = ZERO_HASH  # next job settling at the same height (linked list)
    data_url: bytes = b""
    result_url: bytes = b""

    @property
    def multiply_adds(self) -> int:
        return self.m * self.n * self.k

    def to_bytes(self) -> bytes:
        w = Writer().bytes_n(self.buyer, 20).u32(self.m).u32(self.k).u32(self.n)
        w.bytes_n(self.h_a, 32).bytes_n(self.h_b, 32).u64(self.bounty).u64(self.expiry)
        w.u64(self.submitted).u8(int(self.status)).bytes_n(self.miner, 20)
        w.u64(self.mined_height).u64(self.held_reward).bytes_n(self.result_root, 32)
        w.u64(self.committed_height).bytes_n(self.next_due, 32)
        return w.varbytes(self.data_url).varbytes(self.result_url).getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Job:
        r = Reader(data)
        job = cls(
            buyer=r.bytes_n(20, "buyer"), m=r.u32("m"), k=r.u32("k"), n=r.u32("n"),
            h_a=r.bytes_n(32, "h_a"), h_b=r.bytes_n(32, "h_b"), bounty=r.u64("bounty"),
            expiry=r.u64("expiry"), submitted=r.u64("submitted"),
            status=_job_status(r.u8("status")), miner=r.bytes_n(20, "miner"),
            mined_height=r.u64("mined_height"), held_reward=r.u64("held_reward"),
            result_root=r.bytes_n(32, "result_root"), committed_height=r.u64("committed"),
            next_due=r.bytes_n(32, "next_due"), data_url=r.varbytes(MAX_URL, "data_url"),
            result_url=r.varbytes(MAX_URL, "result_url"),
        )  # fmt: skip
        r.finish()
        return job


def get_job(get: object, job_id: bytes) -> Job | None:
    """The job record from a state getter (``Overlay.get`` or ``ChainState.state_get``)."""
    raw = get(job_key(job_id))  # type: ignore[operator]
    return None if raw is None else Job.from_bytes(raw)


# --- transitions (called by chain/state.py, inside apply_block) ------------------------


def _err(reason: str, detail: str = "") -> Exception:
    from chain.state import StateError, StateReject

    return StateError(StateReject(reason), detail)


def _put(state: Overlay, job_id: bytes, job: Job) -> None:
    state.put(job_key(job_id), job.to_bytes())


def _credit(state: Overlay, address: bytes, amount: int) -> None:
    from chain.state import Account, StateError, StateReject
    from consensus.ints import U64_MAX

    acct = state.account(address)
    if acct.balance + amount > U64_MAX:
        raise StateError(StateReject.BALANCE_OVERFLOW)
    state.set_account(address, Account(acct.balance + amount, acct.nonce))


def name_job(state: Overlay, header: Header) -> Job:
    """Check that the block may mine the job its header names, and mark it mined.

    Runs before the block's own transactions, so none of them can cancel the job
    from under its miner. Raises StateError with a named reason.
    """
    job = get_job(state.get, header.job_id)
    if job is None:
        raise _err("job-unknown", header.job_id.hex())
    if job.status == JobStatus.RECLAIMED:
        raise _err("job-closed", "the buyer cancelled it")
    if job.status != JobStatus.OPEN:
        raise _err("job-taken", f"mined at height {job.mined_height}")
    if header.height > job.expiry:
        raise _err("job-expired", f"expired after height {job.expiry}")
    if (header.m, header.k, header.n, header.h_a, header.h_b) != (
        job.m,
        job.k,
        job.n,
        job.h_a,
        job.h_b,
    ):
        raise _err("job-mismatch", "the header's shape or commitments are not the job's")
    job = replace(job, status=JobStatus.MINED, miner=header.miner, mined_height=header.height)
    _put(state, header.job_id, job)
    return job


def hold_job_reward(state: Overlay, header: Header, reward: int) -> None:
    """Hold the job block's reward (subsidy + fees) with the job: the miner's bond."""
    job = get_job(state.get, header.job_id)
    assert job is not None
    _put(state, header.job_id, replace(job, held_reward=reward))


def apply_job_tx(
    state: Overlay, tx: Transaction, height: int, pouw: PouwParams, market: MarketParams
) -> None:
    """The job-specific effect of a context-free-valid job tx whose sender already paid
    amount + fee and used its nonce. Raises StateError with a named reason."""
    from chain.state import add_contribution

    payload = decode_job_payload(tx.kind, tx.payload)
    if isinstance(payload, JobSubmit):
        shape = check_shape(pouw, payload.m, payload.k, payload.n)
        if not shape.ok:
            assert shape.reason is not None
            raise _err("job-bad-shape", shape.reason.value)
        if not height <= payload.expiry <= height + market.max_expiry_blocks:
            raise _err("job-bad-expiry", f"expiry {payload.expiry} at height {height}")
        _put(state, tx.txid, Job(
            buyer=tx.sender, m=payload.m, k=payload.k, n=payload.n, h_a=payload.h_a,
            h_b=payload.h_b, bounty=tx.amount, expiry=payload.expiry, submitted=height,
            data_url=payload.url,
        ))  # fmt: skip
        return
    job = get_job(state.get, payload.job_id)
    if job is None:
        raise _err("job-unknown", payload.job_id.hex())
    if isinstance(payload, JobCommit):
        if job.status != JobStatus.MINED:
            raise _err("job-not-mined", f"status {job.status.name.lower()}")
        if tx.sender != job.miner:
            raise _err("job-commit-not-miner", "only the job's miner may commit")
        if height == job.mined_height:
            # The job block's reward is held with the job only after its transactions
            # run; a commit (and so a challenge) in that same block would see none of it.
            raise _err("job-commit-same-block", "commit in a block after the job's block")
        if height > job.mined_height + market.commit_blocks:
            raise _err(
                "job-commit-late",
                f"commit window closed at {job.mined_height + market.commit_blocks}",
            )
        due = height + market.challenge_blocks
        head = state.get(due_key(due)) or ZERO_HASH
        state.put(due_key(due), payload.job_id)
        _put(state, payload.job_id, replace(
            job, status=JobStatus.COMMITTED, result_root=payload.result_root,
            committed_height=height, next_due=head, result_url=payload.url,
        ))  # fmt: skip
    elif isinstance(payload, JobChallenge):
        if job.status != JobStatus.COMMITTED:
            raise _err("job-not-committed", f"status {job.status.name.lower()}")
        if height > job.committed_height + market.challenge_blocks:
            raise _err("job-challenge-late", "the challenge window is closed")
        reject = verify_challenge(
            job.m, job.k, job.n, job.h_a, job.h_b, job.result_root, payload.challenge
        )
        if reject is not None:
            raise _err(reject.value)
        _credit(state, job.buyer, job.bounty)
        _credit(state, tx.sender, job.held_reward)
        add_contribution(state, job.miner, challenges_lost=1)
        _put(state, payload.job_id, replace(job, status=JobStatus.REFUNDED))
    else:
        if tx.sender != job.buyer:
            raise _err("job-reclaim-not-buyer", "only the buyer may reclaim a job")
        late = job.status == JobStatus.MINED and height > job.mined_height + market.commit_blocks
        if job.status != JobStatus.OPEN and not late:
            raise _err("job-not-reclaimable", f"status {job.status.name.lower()}")
        # A miner that never committed forfeits its held reward to the buyer.
        _credit(state, job.buyer, job.bounty + job.held_reward)
        _put(state, payload.job_id, replace(job, status=JobStatus.RECLAIMED))


def settle_due(state: Overlay, height: int) -> None:
    """End of block ``height``: pay every job whose challenge window closes here."""
    from chain.state import add_contribution

    head = state.get(due_key(height))
    if head is None:
        return
    state.put(due_key(height), None)
    job_id = head
    while job_id != ZERO_HASH:
        job = get_job(state.get, job_id)
        assert job is not None, "a due job must exist"
        if job.status == JobStatus.COMMITTED:
            _credit(state, job.miner, job.bounty + job.held_reward)
            add_contribution(state, job.miner, delivered=job.multiply_adds, bounties=job.bounty)
            _put(state, job_id, replace(job, status=JobStatus.PAID))
        job_id = job.next_due


def escrow_total(jobs: list[Job]) -> int:
    """Coins held by jobs (open or unsettled): part of the supply invariant."""
    held = (JobStatus.OPEN, JobStatus.MINED, JobStatus.COMMITTED)
    return sum(j.bounty + j.held_reward for j in jobs if j.status in held)
