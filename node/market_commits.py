"""The in-node miner's commits and how each job it held ended.

C is stored and its root committed, but never once the claim has lapsed (the commit
would fail and cost its fee on top of the bond). A commit of ours that is neither in
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
from chain.jobs import claim_lapsed
from chain.tx import Transaction
from chain.txkind import TxKind
from compute.blobs import BlobStore
from node.market_claims import MarketCounters, MarketSettings
from node.market_operands import Held
from node.remote_results import LAPSED_BEFORE_COMMIT, LAPSED_UNCOMMITTED, REFUNDED

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
    _send: Callable[[Transaction, str], bool]
    _our_pooled: Callable[[bytes, TxKind], Transaction | None]

    def commit_result(self, job_id: bytes, c: npt.NDArray[np.integer]) -> Transaction | None:
        """Store C and send the JOB_COMMIT for it (tests call it with a wrong C); not
        once our claim lapsed."""
        if not self._can_commit(job_id):
            return None
        started = time.monotonic()
        root = self.store.put("c", c)
        stored_s = time.monotonic() - started
        self._results[job_id] = root
        while len(self._results) > MAX_RESULTS:
            self._results.pop(next(iter(self._results)))
        held = self.held.get(job_id)
        if held is not None:
            held.result_root = root
        tx = self._send_commit(job_id, root)
        if tx is not None:
            log.info(
                "sent the commit of job %s, result root %s (C hashed and stored in %.3f s)",
                job_id.hex(), root.hex(), stored_s,
            )  # fmt: skip
        return tx

    def _send_commit(self, job_id: bytes, root: bytes) -> Transaction | None:
        """Sign and send a JOB_COMMIT of ``root``; None (logged) if the pool refused it."""
        from wallet.job_txs import commit_tx

        tx = commit_tx(
            self.chain.network, self.settings.key, self.pending_nonce(self.address), job_id,
            root, url=self.settings.serve_url, fee=self.settings.fee,
        )  # fmt: skip
        held = self.held.get(job_id)
        if held is not None:
            held.commit_sent_at = time.monotonic()
        if not self._send(tx, f"commit of {job_id.hex()[:16]}"):
            return None
        self.counters.commits += 1
        if held is not None:
            held.commit_txid = tx.txid
        return tx

    def _can_commit(self, job_id: bytes) -> bool:
        """A commit of ours can still count: our claim holds the job on the tip and has
        not lapsed, or it is still on its way (pooled). A claim that lapsed (the next
        block reopens the job) or a job that the tip shows reopened since we held it
        is dropped, with the bond lost said (``_ended``)."""
        job = get_job(self.chain.state_get, job_id)
        held = self.held.get(job_id)
        if job is not None and job.claimant == self.address and job.status == JobStatus.CLAIMED:
            if not claim_lapsed(job, self.chain.clock_after(self.chain.tip)):
                return True
            self.held.pop(job_id, None)
            self._bond_lost(job_id, job, LAPSED_BEFORE_COMMIT)
            return False
        if job is not None and held is not None and self._ended(job_id, held, job):
            self.held.pop(job_id, None)
            return False
        return True

    def _bond_lost(self, job_id: bytes, job: Job, why: str) -> None:
        self.counters.bonds_lost += 1
        log.warning("job %s: %s (bond %d)", job_id.hex()[:16], why, job.bond)

    def _keep_commit(self, job_id: bytes, held: Held) -> None:
        """Our claim holds the job on the tip and C is done (``held.computed``): make
        sure our commit is on its way. One included as failed is said once; one that
        is not in the pool is sent again (at most every RESEND_COMMIT_S), unless the
        claim lapsed or C is gone from the blob store (then C is computed again)."""
        if held.restore or not held.computed or held.result_root is None:
            return
        if held.commit_txid and not held.commit_failed:
            failure = self.chain.db.get_tx_failure(held.commit_txid)
            if failure is not None:
                held.commit_failed = str(failure)
                log.warning(
                    "job %s: our commit %s was included as failed (%s)",
                    job_id.hex()[:16], held.commit_txid.hex()[:16], held.commit_failed,
                )  # fmt: skip
        if self._our_pooled(job_id, TxKind.JOB_COMMIT) is not None:
            return
        now = time.monotonic()
        if now - held.commit_sent_at < RESEND_COMMIT_S or not self._can_commit(job_id):
            return
        if self.store.find(held.result_root) is None:
            held.computed, held.result_root = False, None
            held.download = None  # a finished download's operands were dropped with C
            log.warning(
                "job %s: our commit is not in the pool and C is gone from the blob store: "
                "computing C again", job_id.hex()[:16],
            )  # fmt: skip
            return
        if self._send_commit(job_id, held.result_root) is not None:
            log.warning(
                "job %s: our commit was neither in the pool nor on chain: sent again",
                job_id.hex()[:16],
            )  # fmt: skip

    def _ended(self, job_id: bytes, held: Held, job: Job) -> bool:
        """The job is no longer ours on the tip: if we held it on chain and the chain
        took our bond (a claim that lapsed, a refund), say so and count it. True if
        the job ended paid or with our bond lost; ``held.job`` then is the tip's."""
        was_ours = held.job.claimant == self.address and held.job.status in _HELD
        if not was_ours:
            return False
        if job.status == JobStatus.PAID:
            log.info("job %s paid: its bounty and our bond are ours", job_id.hex()[:16])
        elif job.status == JobStatus.REFUNDED:
            self._bond_lost(job_id, held.job, REFUNDED)
        elif (
            job.status in (JobStatus.OPEN, JobStatus.EXPIRED, JobStatus.RECLAIMED)
            and self.chain.mtp_after(self.chain.tip) >= held.job.claim_deadline
            and self._our_pooled(job_id, TxKind.JOB_CLAIM) is None
        ):  # (else a reorg took our claim back to the pool)
            self._bond_lost(job_id, held.job, LAPSED_UNCOMMITTED)
        else:
            return False
        held.job = job
        return True
