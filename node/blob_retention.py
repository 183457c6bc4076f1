"""Which blobs a node keeps: the store (compute/blobs.py) would otherwise grow until its
quota and then refuse every blob, and with it every job (a 512x4096x4096 job stores
26 MiB: A, Bᵀ and C; the default 8 GiB holds about 300).

A blob is *needed* while a job in flight refers to it: A and B of an unsettled job on
the tip or of a submit in the mempool, and C of a committed job or of a pooled
commit (miners compute from A and B and challengers cite their rows; probes and
buyers read C). Any other blob goes once it was stored more than ``keep_s`` ago (a
sweep every SWEEP_S, or a quarter of ``keep_s`` when that is shorter): C stays that
long after its commit, for a buyer who comes back late. When a blob does not
fit under the quota, unneeded blobs are deleted oldest first, however young, save
those stored within FRESH_S: a buyer's upload waits that long for its submit, a
miner's C for its commit. (A ``keep_s`` under FRESH_S, for tests, shortens both
promises to ``keep_s``.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Collection, Iterable
from typing import Protocol

from chain.chainstate import ChainState
from chain.job_payloads import JobCommit, JobPayloadError, decode_job_payload
from chain.job_record import Job, live_jobs
from chain.jobs import pooled_submit_job
from chain.mempool import Mempool
from chain.tx import Transaction
from chain.txkind import TxKind
from compute.blobs import BlobStore

log = logging.getLogger("pouw.blobs")

SWEEP_S = 600.0  # between sweeps of blobs older than keep_s
FRESH_S = 600.0  # a blob this young is never deleted to make room
NEEDED_WAIT_S = 10.0  # a store call on another thread waits this long for the roots


class ChainView(Protocol):
    """What the retention reads of the node."""

    chain: ChainState
    mempool: Mempool


def needed_roots(jobs: Iterable[Job], pooled: Iterable[Transaction]) -> set[bytes]:
    """The roots of the blobs that jobs in flight need: ``jobs`` unsettled on the tip,
    ``pooled`` the mempool's market transactions."""
    roots: set[bytes] = set()
    for job in jobs:
        roots.update((job.h_a, job.h_b))
        if job.committed_height:
            roots.add(job.result_root)
    for tx in pooled:
        if tx.kind == TxKind.JOB_SUBMIT:
            pooled_job = pooled_submit_job(tx)
            if pooled_job is not None:
                roots.update((pooled_job.h_a, pooled_job.h_b))
        elif tx.kind == TxKind.JOB_COMMIT:
            try:
                payload = decode_job_payload(tx.kind, tx.payload)
            except JobPayloadError:
                continue
            if isinstance(payload, JobCommit):
                roots.add(payload.result_root)
    return roots


def prune(
    store: BlobStore, needed: Collection[bytes], keep_s: float, room: int = 0,
    fresh_s: float = FRESH_S, now: float | None = None,
) -> tuple[int, int]:  # fmt: skip
    """Delete the store's blobs that ``needed`` lacks and that were stored more than
    ``keep_s`` ago (``keep_s`` <= 0: none by age); then, while ``room`` bytes are still
    to be freed, the oldest other unneeded ones stored more than ``fresh_s`` ago.
    Each blob's age is checked again as it is deleted (``delete_stale``): one stored
    again or touched since ``needed`` was read stays. Returns (blobs, bytes) deleted."""
    now = time.time() if now is None else now
    count = freed = 0
    spare = []
    for root, stored_at, _ in store.stored():
        if root in needed:
            continue
        if keep_s > 0 and stored_at < now - keep_s:
            size = store.delete_stale(root, now - keep_s)
            count, freed = count + (size > 0), freed + size
        elif stored_at < now - fresh_s:
            spare.append(root)
    for root in spare:  # oldest first
        if freed >= room:
            break
        size = store.delete_stale(root, now - fresh_s)
        count, freed = count + (size > 0), freed + size
    return count, freed


class BlobRetention:
    """Runs ``prune`` for the node's blob service: a sweep every SWEEP_S on the event
    loop, and the store's ``make_room`` when a blob does not fit under the quota."""

    def __init__(self, node: ChainView, store: BlobStore, keep_s: float) -> None:
        self.node = node
        self.store = store
        self.keep_s = keep_s
        self.sweep_s = min(SWEEP_S, keep_s / 4) if keep_s > 0 else SWEEP_S
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def needed(self) -> set[bytes]:
        """The roots jobs in flight need (on the event loop: it reads the chain)."""
        chain, mempool = self.node.chain, self.node.mempool
        jobs = [job for _, job in live_jobs(chain.db.iter_state, chain.state_get)]
        return needed_roots(jobs, mempool.market_txs())

    def _needed_from_any_thread(self) -> set[bytes] | None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return self.needed()

        async def read() -> set[bytes]:
            return self.needed()

        try:
            return asyncio.run_coroutine_threadsafe(read(), loop).result(NEEDED_WAIT_S)
        except Exception:  # noqa: BLE001 - the loop is stopping or busy: delete nothing
            return None

    def make_room(self, size: int) -> None:
        """A blob of ``size`` bytes does not fit under the store's quota: delete unneeded
        blobs, oldest first (one call at a time: each sees what the last one freed)."""
        # read before the lock: a call on the event loop must not wait for one on a
        # thread that waits for the loop (a late snapshot is safe: each deletion checks
        # the blob's age again)
        needed = self._needed_from_any_thread()
        if needed is None:
            return
        with self._room_lock:
            short = self.store.used() + size - self.store.quota
            if short <= 0:
                return
            count, freed = prune(self.store, needed, self.keep_s, room=short)
        if count:
            log.info(
                "blob store full: deleted %d blobs (%.1f MiB) that no job in flight needs",
                count, freed / 2**20,
            )  # fmt: skip

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.make_room = self.make_room
        if self.keep_s > 0:
            self._task = asyncio.create_task(self._sweeps())

    async def stop(self) -> None:
        self.store.make_room = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sweeps(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                needed = self.needed()
                count, freed = await asyncio.to_thread(prune, self.store, needed, self.keep_s)
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next
                log.exception("blob sweep failed")
                continue
            if count:
                log.info(
                    "blob store: deleted %d blobs (%.1f MiB) that no job in flight needs, "
                    "stored over %.0f s ago", count, freed / 2**20, self.keep_s,
                )  # fmt: skip
