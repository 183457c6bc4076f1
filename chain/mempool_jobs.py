"""The mempool's index of the market's transactions: actions by the job they act on,
and the pooled submits.

A buyer's getjob or waitforjob and a miner's rival scan read one job's pooled claims
and commits; a miner's claim round and `listjobs pending` read the pooled submits and
claims. Without this index each walked the whole pool, which a standalone miner asks
for every 0.25 s (chain/mempool.py keeps it in step with every insert and removal, and
its consistency check rebuilds it).
"""

from __future__ import annotations

from collections.abc import Iterable

from chain.tx import Transaction
from chain.txkind import TxKind

# Market actions whose payload starts with the 32-byte id of the job they act on.
JOB_ACTION_KINDS = frozenset({
    TxKind.JOB_CLAIM, TxKind.JOB_COMMIT, TxKind.JOB_CHALLENGE, TxKind.JOB_RECLAIM,
    TxKind.JOB_PROBE, TxKind.JOB_REVEAL,
})  # fmt: skip


def job_of(tx: Transaction) -> bytes | None:
    """The job a market action acts on; None for any other transaction."""
    if tx.kind in JOB_ACTION_KINDS and len(tx.payload) >= 32:
        return tx.payload[:32]
    return None


class JobIndex:
    """job id -> txids of the pooled transactions acting on it; txids of the pooled
    submits."""

    def __init__(self) -> None:
        self.by_job: dict[bytes, set[bytes]] = {}
        self.submits: set[bytes] = set()

    def add(self, tx: Transaction, txid: bytes) -> None:
        if tx.kind == TxKind.JOB_SUBMIT:
            self.submits.add(txid)
            return
        job_id = job_of(tx)
        if job_id is not None:
            self.by_job.setdefault(job_id, set()).add(txid)

    def remove(self, tx: Transaction, txid: bytes) -> None:
        if tx.kind == TxKind.JOB_SUBMIT:
            self.submits.discard(txid)
            return
        job_id = job_of(tx)
        txids = self.by_job.get(job_id) if job_id is not None else None
        if txids is not None:
            txids.discard(txid)
            if not txids:
                del self.by_job[job_id]  # type: ignore[arg-type]

    def txids(self, job_id: bytes) -> set[bytes]:
        return self.by_job.get(job_id, set())

    def market_txids(self) -> set[bytes]:
        """Every pooled submit and market action."""
        return self.submits.union(*self.by_job.values())

    def same_as(self, other: JobIndex) -> bool:
        return self.by_job == other.by_job and self.submits == other.submits

    @staticmethod
    def rebuilt(pooled: Iterable[tuple[Transaction, bytes]]) -> JobIndex:
        """The index as it should be for these (tx, txid) pairs (consistency checks)."""
        fresh = JobIndex()
        for tx, txid in pooled:
            fresh.add(tx, txid)
        return fresh
