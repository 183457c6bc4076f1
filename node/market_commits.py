"""The in-node miner's commits and how each job it held ended.

C is stored and its root committed, but never once the claim has lapsed or another
claimant holds the job (the commit would fail and cost its fee on top of the bond; C
stays, and a job that reopens is claimed again with it). A claim that lapsed stays
held, marked ``ended`` (after a restart it is taken back so), until the tip stops
showing it as ours: in the blocks before the timer reopens the job it is neither
computed nor counted again, and it holds no claim slot. A commit of ours that is neither in
the pool nor on chain while our claim holds (evicted from the pool, refused when it
was sent, or lost with a pool that a restart did not keep) is sent again, so that the
bond is not lost at the deadline for a product we have. Every job that leaves our
hands is told plainly: paid, or the bond lost and how.

``CommitKeeping`` is a part of node/market_miner.MarketMiner, which owns the state it
reads (declared below). The standalone miner says the same things in
node/remote_results.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from chain.chainstate import ChainState
from chain.job_record import Job, JobStatus, get_job
from chain.jobs import BlockClock, claim_lapsed
from chain.tx import Transaction
from chain.txkind import TxKind
from compute.blobs import BlobStore
from node.bond_messages import LAPSED_BEFORE_COMMIT, LAPSED_UNCOMMITTED, REFUNDED
from node.market_claims import MarketCounters, MarketSettings
from node.market_operands import Held

log = logging.getLogger("pouw.market")

MAX_RESULTS = 65536  # roots of computed C remembered (32 bytes each, oldest dropped)
# A commit of ours missing from the pool is sent again at most this often (each try
# that the pool refuses is logged).
RESEND_COMMIT_S = 2.0
_HELD = (JobStatus.CLAIMED, JobStatus.COMMITTED)


class CommitKeeping:
    chain: ChainState
    store: BlobStore
    settings: MarketSettings
    address: bytes
    held: dict[bytes, Held]
    counters: MarketCounters
    pending_nonce: Callable[[bytes], int]
    _results: dict[bytes, bytes]
    _computed: set[bytes]
    _clock_cache: tuple[bytes, BlockClock] | None = None  # (tip, the next block's clock)
    _send: Callable[[Transaction, str], bool]
    _our_pooled: Callable[[bytes, TxKind], Transaction | None]

    def commit_result(self, job_id: bytes, c: npt.NDArray[np.integer]) -> Transaction | None:
        """Store C and send the JOB_COMMIT for it (tests call it with a wrong C). C is
        stored and remembered even when no commit can count any more (our claim lapsed,
        or the job is another's): a job that opens again is claimed again with it."""
        started = time.monotonic()
        root = self.store_result(job_id, c)
        stored_s = time.monotonic() - started
        held = self.held.get(job_id)
        if held is not None:
            held.result_root = root
        if not self._can_commit(job_id, held, LAPSED_BEFORE_COMMIT):
            return None
        tx = self._send_commit(job_id, root, held)
        if tx is not None:
            log.info(
                "sent the commit of job %s, result root %s (C hashed and stored in %.3f s)",
                job_id.hex(), root.hex(), stored_s,
            )  # fmt: skip
        return tx

    def store_result(self, job_id: bytes, c: npt.NDArray[np.integer]) -> bytes:
        """Store C (the blob store serves it) and remember its root for the job."""
        root = self.store.put("c", c)
        self._results[job_id] = root
        while len(self._results) > MAX_RESULTS:
            self._results.pop(next(iter(self._results)))
        return root

    def _send_commit(self, job_id: bytes, root: bytes, held: Held | None) -> Transaction | None:
        """Sign and send a JOB_COMMIT of ``root``; None (logged) if the pool refused it.
        ``held``: the job's, to note the commit in (checked on later tips)."""
        from wallet.job_txs import commit_tx

        tx = commit_tx(
            self.chain.network, self.settings.key, self.pending_nonce(self.address), job_id,
            root, url=self.settings.serve_url, fee=self.settings.fee,
        )  # fmt: skip
        if held is not None:
            held.commit_sent_at = time.monotonic()
        if not self._send(tx, f"commit of {job_id.hex()[:16]}"):
            return None
        self.counters.commits += 1
        if held is not None:
            held.commit_txid, held.commit_failed = tx.txid, ""
        return tx

    def _can_commit(self, job_id: bytes, held: Held | None, why: str) -> bool:
        """A commit of ours can still count: our claim holds the job on the tip and has
        not lapsed, or a claim of ours is on its way (pooled) to a job still open. A
        claim that lapsed (said as ``why``), a job another claimant holds, or one that
        settled: no commit (it would fail and cost its fee)."""
        job = get_job(self.chain.state_get, job_id)
        if job is None:  # its submit is still pooled: our claim follows it
            return True
        if job.claimant == self.address:  # claimed, or committed already (no lapse)
            return job.status == JobStatus.CLAIMED and not self._lapsed_now(job_id, held, job, why)
        if job.status == JobStatus.OPEN and self._our_pooled(job_id, TxKind.JOB_CLAIM):
            return True  # our claim on its way: the commit follows it
        # our claim failed (on_tip claims again with C), was dropped from the pool, or
        # took the job and lapsed (the job reopened or another holds it): a commit fails
        if held is not None and self._took_it(held):
            self._lapse(job_id, held, self._bond(held, job), LAPSED_UNCOMMITTED)
        return False

    def _took_it(self, held: Held) -> bool:
        """Our claim took the job on the active chain: we saw the job as ours on the
        tip, or our claim transaction is in a block and did not fail (seen or not: a
        node suspended or behind meanwhile may never see the job as ours)."""
        return self._was_ours(held) or (
            bool(held.claim_txid) and self.chain.db.get_tx_failure(held.claim_txid) == ""
        )

    def _bond(self, held: Held | None, job: Job) -> int:
        """The bond our claim escrowed: as we saw it on the tip, else what the job asks."""
        if held is not None and held.job.bond:
            return held.job.bond
        return self.chain.network.market.bond_for(job.bounty)

    def _lapsed_now(self, job_id: bytes, held: Held | None, job: Job, why: str) -> bool:
        """Our claim of ``job`` (claimed on the tip) lapsed for the next block: no
        commit counts any more, and the timer reopens the job and gives the bond to the
        buyer (at that block or a few later). Said and counted once."""
        if not claim_lapsed(job, self._next_clock()):
            return False
        self._lapse(job_id, held, job.bond, why)
        return True

    def _next_clock(self) -> BlockClock:
        """The next block's clock, computed once per tip (on_tip asks it of every claim
        we hold)."""
        tip = self.chain.tip.hash
        if self._clock_cache is None or self._clock_cache[0] != tip:
            self._clock_cache = (tip, self.chain.clock_after(self.chain.tip))
        return self._clock_cache[1]

    def _lapse(self, job_id: bytes, held: Held | None, bond: int, why: str) -> None:
        """Our ``bond`` for the job is lost (``why``): a warning and ``bonds_lost``, once per
        claim; ``held`` stays (``ended``) until the tip no longer shows the job as ours,
        so that it is neither taken back nor computed again meanwhile."""
        if held is not None:
            if held.ended:
                return
            held.ended = held.bond_counted_lost = True
            held.a = held.b = held.b_t = held.leaves = None  # no product of it is wanted now
        self.counters.bonds_lost += 1
        log.warning("job %s: %s (bond %d)", job_id.hex()[:16], why, bond)

    def _keep_commit(self, job_id: bytes, held: Held) -> None:
        """Our claim holds the job on the tip and C is done (``held.computed``): make
        sure our commit is on its way. One included as failed is said once; one that
        is not in the pool is sent again (at most every RESEND_COMMIT_S), unless the
        claim lapsed or C is gone from the blob store (then C is computed again)."""
        if held.ended or held.restore or not held.computed or held.result_root is None:
            return
        if held.commit_txid and not held.commit_failed:
            failure = self.chain.db.get_tx_failure(held.commit_txid)
            if failure:  # ("" if it succeeded; None while not in a block)
                held.commit_failed = str(failure)
                log.warning(
                    "job %s: our commit %s was included as failed (%s)",
                    job_id.hex()[:16], held.commit_txid.hex()[:16], held.commit_failed,
                )  # fmt: skip
        if self._our_pooled(job_id, TxKind.JOB_COMMIT) is not None:
            return
        now = time.monotonic()
        if now - held.commit_sent_at < RESEND_COMMIT_S:
            return
        if not self._can_commit(job_id, held, LAPSED_UNCOMMITTED):
            return
        if self.store.find(held.result_root) is None:
            # lost with the store (not a product computed twice by the market's doing):
            # counted as restored, as a committed C computed again is
            held.computed, held.result_root = False, None
            held.download = None  # a finished download's operands were dropped with C
            held.lost_c = True  # counted as restored when done, not as computed twice
            self._results.pop(job_id, None)
            log.warning(
                "job %s: our commit is not in the pool and C is gone from the blob store: "
                "computing C again", job_id.hex()[:16],
            )  # fmt: skip
            return
        if self._send_commit(job_id, held.result_root, held) is not None:
            log.warning(
                "job %s: our commit was neither in the pool nor on chain: sent again",
                job_id.hex()[:16],
            )  # fmt: skip

    def _claim_back(self, job_id: bytes, held: Held) -> None:
        """A reorg put the tip on a branch where our claim still holds the job: a bond
        counted as lost is ours again (it is counted again if the claim lapses there)."""
        if held.bond_counted_lost:
            self.counters.bonds_lost -= 1
            log.warning(
                "job %s: a reorg brought our claim back: its bond is not lost", job_id.hex()[:16]
            )  # fmt: skip
        held.ended = held.bond_counted_lost = False
        if held.download is not None and held.download.done():
            held.download = None  # the lapse dropped the operands: fetched again if needed

    def _ended(self, job_id: bytes, held: Held, job: Job) -> bool:
        """The tip no longer shows the job as ours: True if our claim of it is over,
        paid or with the bond lost (said and counted here, once), so that it can be
        forgotten; False if we never held it on chain or a reorg took our claim back
        to the pool."""
        if held.ended:
            return True
        seen = self._was_ours(held)
        if not (seen or self._took_it(held)):
            return False
        ours = job.claimant == self.address
        if ours and job.status == JobStatus.PAID:
            held.ended = True
            log.info("job %s paid: its bounty and our bond are ours", job_id.hex()[:16])
        elif ours and job.status == JobStatus.REFUNDED:
            self._lapse(job_id, held, self._bond(held, job), REFUNDED)
        elif self._our_pooled(job_id, TxKind.JOB_CLAIM) is None and (
            not seen or self.chain.mtp_after(self.chain.tip) >= held.job.claim_deadline
        ):  # reopened (then maybe claimed by another, expired or reclaimed): it lapsed
            self._lapse(job_id, held, self._bond(held, job), LAPSED_UNCOMMITTED)
        return held.ended

    def _was_ours(self, held: Held) -> bool:
        """The job as we last saw it on the tip was ours: claimed or committed by us."""
        return held.job.claimant == self.address and held.job.status in _HELD
