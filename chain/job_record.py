"""The compute market's job record: its state keys, statuses and encoding, and reading
jobs from the state. The rules that change it are in chain/jobs.py.

State keys:

    b"J" + job_id               the job record (``Job``)
    b"w" + u64 height           u32 count of timer entries at that height
    b"W" + u64 height + u32 i   job_id of timer entry i at that height
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chain.encoding import DecodeError, Reader, Writer
from chain.job_payloads import MAX_URL
from chain.state import StateGet

PREFIX_JOB = b"J"
PREFIX_TIMER = b"W"
PREFIX_TIMER_COUNT = b"w"
ZERO_ADDRESS = bytes(20)
ZERO_HASH = bytes(32)
NO_PROBE = 0xFFFFFFFF  # probe_row when no probe is open


def job_key(job_id: bytes) -> bytes:
    return PREFIX_JOB + job_id


def timer_count_key(height: int) -> bytes:
    return PREFIX_TIMER_COUNT + height.to_bytes(8, "big")


def timer_key(height: int, index: int) -> bytes:
    return PREFIX_TIMER + height.to_bytes(8, "big") + index.to_bytes(4, "big")


class JobStatus(enum.IntEnum):
    OPEN = 1  # escrowed, waiting for a claim
    CLAIMED = 2  # one worker holds it until its deadline
    COMMITTED = 3  # C's root is on chain; the challenge window runs
    PAID = 4  # the window closed: bounty and bond paid to the claimant
    REFUNDED = 5  # C proven wrong or withheld: bounty back to the buyer
    RECLAIMED = 6  # the buyer cancelled it while open
    EXPIRED = 7  # nobody delivered before it expired: bounty back to the buyer


HELD_STATUSES = (JobStatus.OPEN, JobStatus.CLAIMED, JobStatus.COMMITTED)


@dataclass(frozen=True)
class Job:
    buyer: bytes
    m: int
    k: int
    n: int
    h_a: bytes
    h_b: bytes
    bounty: int
    expires: int  # MTP after which it can no longer be claimed
    submitted: int  # height of the block that carried the submit
    status: JobStatus = JobStatus.OPEN
    claimant: bytes = ZERO_ADDRESS
    bond: int = 0
    claim_deadline: int = 0  # MTP by which the claimant must commit
    claim_min_height: int = 0
    result_root: bytes = ZERO_HASH
    committed_height: int = 0
    window_end: int = 0  # MTP at which the challenge window closes
    window_min_height: int = 0
    probe_by: bytes = ZERO_ADDRESS
    probe_deposit: int = 0
    probe_row: int = NO_PROBE
    probe_chunk: int = 0
    probe_deadline: int = 0
    probe_min_height: int = 0
    wake_height: int = 0  # the height whose timer list holds this job's live entry
    claims: int = 0  # claims made so far (a reopened job counts each)
    data_url: bytes = b""
    result_url: bytes = b""

    @property
    def multiply_adds(self) -> int:
        return self.m * self.n * self.k

    @property
    def probe_open(self) -> bool:
        return self.probe_row != NO_PROBE

    @property
    def held(self) -> int:
        """Coins this job holds: part of the supply invariant."""
        if self.status not in HELD_STATUSES:
            return 0
        return self.bounty + self.bond + self.probe_deposit

    def to_bytes(self) -> bytes:
        w = Writer().bytes_n(self.buyer, 20).u32(self.m).u32(self.k).u32(self.n)
        w.bytes_n(self.h_a, 32).bytes_n(self.h_b, 32).u64(self.bounty).u64(self.expires)
        w.u64(self.submitted).u8(int(self.status)).bytes_n(self.claimant, 20).u64(self.bond)
        w.u64(self.claim_deadline).u64(self.claim_min_height).bytes_n(self.result_root, 32)
        w.u64(self.committed_height).u64(self.window_end).u64(self.window_min_height)
        w.bytes_n(self.probe_by, 20).u64(self.probe_deposit).u32(self.probe_row)
        w.u32(self.probe_chunk).u64(self.probe_deadline).u64(self.probe_min_height)
        w.u64(self.wake_height).u32(self.claims)
        return w.varbytes(self.data_url).varbytes(self.result_url).getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Job:
        """Decode a stored record; raises DecodeError (never another error)."""
        r = Reader(data)
        job = cls(
            buyer=r.bytes_n(20, "buyer"), m=r.u32("m"), k=r.u32("k"), n=r.u32("n"),
            h_a=r.bytes_n(32, "h_a"), h_b=r.bytes_n(32, "h_b"), bounty=r.u64("bounty"),
            expires=r.u64("expires"), submitted=r.u64("submitted"),
            status=_status(r.u8("status")), claimant=r.bytes_n(20, "claimant"),
            bond=r.u64("bond"), claim_deadline=r.u64("claim_deadline"),
            claim_min_height=r.u64("claim_min_height"),
            result_root=r.bytes_n(32, "result_root"), committed_height=r.u64("committed"),
            window_end=r.u64("window_end"), window_min_height=r.u64("window_min_height"),
            probe_by=r.bytes_n(20, "probe_by"), probe_deposit=r.u64("probe_deposit"),
            probe_row=r.u32("probe_row"), probe_chunk=r.u32("probe_chunk"),
            probe_deadline=r.u64("probe_deadline"),
            probe_min_height=r.u64("probe_min_height"), wake_height=r.u64("wake_height"),
            claims=r.u32("claims"), data_url=r.varbytes(MAX_URL, "data_url"),
            result_url=r.varbytes(MAX_URL, "result_url"),
        )  # fmt: skip
        r.finish()
        return job


def _status(value: int) -> JobStatus:
    try:
        return JobStatus(value)
    except ValueError:
        raise DecodeError(f"job status {value} is not defined") from None


def get_job(get: StateGet, job_id: bytes) -> Job | None:
    """The job record from a state getter (``Overlay.get`` or ``ChainState.state_get``)."""
    raw = get(job_key(job_id))
    return None if raw is None else Job.from_bytes(raw)


def live_jobs(
    iter_state: Callable[[bytes], Iterable[tuple[bytes, bytes]]], get: StateGet
) -> list[tuple[bytes, Job]]:
    """Every job not settled yet (open, claimed or committed), as (job id, job), found
    through the timer lists instead of every job record ever made: such a job has one
    live timer entry at a height above the tip's (entries are deleted as they fire),
    and stale entries of rescheduled jobs are skipped. Costs the jobs in flight, not
    the market's whole history (a miner reads this at every tip)."""
    out: list[tuple[bytes, Job]] = []
    seen: set[bytes] = set()
    for _key, job_id in iter_state(PREFIX_TIMER):
        if job_id in seen:
            continue
        seen.add(job_id)
        job = get_job(get, job_id)
        if job is not None and job.status in HELD_STATUSES:
            out.append((job_id, job))
    return out


def escrow_total(jobs: list[Job]) -> int:
    """Coins held by jobs (bounties, bonds, probe deposits): part of the supply."""
    return sum(j.held for j in jobs)
