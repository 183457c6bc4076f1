"""The market's running tallies, kept in memory beside the chain: jobs by status, and
the jobs committed in recent blocks.

``getmarketinfo`` used to decode every job record ever made at every call (20 µs a
record: two seconds per call at 100,000 jobs, on the node's event loop, and the
dashboard asks once a second). The tallies are built once when the chain opens, from
one pass over the job records that reads two fixed fields of each, then follow every
connected and disconnected block through its state changes (a job record's value
before and after the block), so a call costs the jobs in flight and the recent
commits, never the market's history. Nothing here is consensus: the tallies are
derived from the state and rebuilt at every start.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from chain.encoding import DecodeError
from chain.job_record import PREFIX_JOB, JobStatus

# Offsets in the job record (chain/job_record.Job.to_bytes): buyer 20 bytes, m, k, n 4
# each, h_a and h_b 32 each, bounty, expires and submitted 8 each, then the status byte;
# then claimant 20, bond, claim_deadline and claim_min_height 8 each, result_root 32,
# then committed_height (u64, big-endian as every integer of the encoding).
STATUS_OFFSET = 20 + 3 * 4 + 2 * 32 + 3 * 8
COMMITTED_HEIGHT_OFFSET = STATUS_OFFSET + 1 + 20 + 3 * 8 + 32
_U64 = struct.Struct(">Q")
# Commits remembered: those of this many blocks below the tip (getmarketinfo looks at
# the last 60, node/rpc/market.RATE_BLOCKS).
RECENT_COMMIT_BLOCKS = 64
_STATUSES = {int(s): s for s in JobStatus}


def peek_status(record: bytes) -> JobStatus:
    """The status of a stored job record, read without decoding the rest."""
    if len(record) <= COMMITTED_HEIGHT_OFFSET + 8:
        raise DecodeError(f"job record of {len(record)} bytes is too short")
    status = _STATUSES.get(record[STATUS_OFFSET])
    if status is None:
        raise DecodeError(f"job status {record[STATUS_OFFSET]} is not defined")
    return status


def peek_committed_height(record: bytes) -> int:
    """The height of a stored job record's commit (0: not committed)."""
    peek_status(record)  # the length check
    return int(_U64.unpack_from(record, COMMITTED_HEIGHT_OFFSET)[0])


class JobTally:
    """Jobs on chain by status, and the jobs committed in the last
    RECENT_COMMIT_BLOCKS blocks (job id -> commit height)."""

    def __init__(self) -> None:
        self.counts: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        self.recent_commits: dict[bytes, int] = {}
        self._pruned_at = 0

    @classmethod
    def build(cls, records: Iterable[tuple[bytes, bytes]], tip_height: int) -> JobTally:
        """From every job record, as (state key, record) pairs."""
        tally = cls()
        for key, record in records:
            tally._add(key[len(PREFIX_JOB) :], record, tip_height)
        return tally

    def apply(
        self, before: Mapping[bytes, bytes | None], after: Mapping[bytes, bytes | None],
        tip_height: int,
    ) -> None:  # fmt: skip
        """A block's state changes: each changed key's value before and after it (a
        connect: the undo data and the changes; a disconnect: the other way round),
        ``tip_height`` the tip's height after it."""
        for key, new in after.items():
            if not key.startswith(PREFIX_JOB):
                continue
            job_id = key[len(PREFIX_JOB) :]
            old = before.get(key)
            if old is not None:
                self.counts[peek_status(old)] -= 1
                self.recent_commits.pop(job_id, None)
            if new is not None:
                self._add(job_id, new, tip_height)
        if tip_height - self._pruned_at >= RECENT_COMMIT_BLOCKS:  # now and then, not per block
            self._pruned_at = tip_height
            floor = tip_height - RECENT_COMMIT_BLOCKS
            self.recent_commits = {j: h for j, h in self.recent_commits.items() if h > floor}

    def committed_after(self, height: int) -> list[bytes]:
        """Ids of the jobs whose commit is in a block above ``height`` (at most
        RECENT_COMMIT_BLOCKS below the tip), whatever their status now."""
        return [j for j, h in self.recent_commits.items() if h > height]

    def _add(self, job_id: bytes, record: bytes, tip_height: int) -> None:
        self.counts[peek_status(record)] += 1
        committed = peek_committed_height(record)
        if committed and committed > tip_height - RECENT_COMMIT_BLOCKS:
            self.recent_commits[job_id] = committed
