"""The miner's side of the compute market: claim jobs, fetch A and B, compute each
product once, commit C, serve it, answer probes.

Flow (docs/MARKET.md): the miner keeps up to ``claim_ahead`` jobs in hand. It claims the
best-paying open job (bounty per multiply-add, at least ``min_bounty_per_mac``), on the
tip or still a submit in the pool, with a JOB_CLAIM escrowing the required bond, and
fetches its operands (the claim rounds: node/market_claims.py). ``next_work`` hands the
job to the mining loop at once, without waiting for any block ("Delivery before
confirmation"): while the claim is in the pool the product is mined as our own work,
once the tip shows the claim as ours the header names the job; either way the product is
computed once with the block lottery riding on it. ``deliver`` stores C in the blob
store (served over HTTP and announced to peers) and sends the JOB_COMMIT, which follows
the claim in nonce order: a buyer sees it in its pool and can fetch and check C before
any of it confirms. On every new tip ``on_tip`` answers probes of our committed jobs
with a JOB_REVEAL built from the stored C, claims again a job whose claim failed while
it is still open and we hold its C, and forgets jobs that ended or whose claim we lost
(a claim that lost a race is included as failed: it costs its fee, never a later
transaction).

Sources of A and B: the job's URL, ``extra_sources``, then the blob endpoints of peers
that announced the root with the job's shape (``BlobPeers``: the P2P service). Every
row is checked (compute/blobs.py); a peer source that sends data not matching what it
announced is reported back and discouraged, one that is just unreachable is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.address import address_from_pubkey
from chain.chainstate import ChainState
from chain.job_payloads import JobCommit, decode_job_payload
from chain.job_record import ZERO_ADDRESS, Job, JobStatus, get_job
from chain.keys import PrivateKey
from chain.tx import Transaction
from chain.txkind import TxKind
from compute.blobs import BlobStore
from node.bond_messages import LAPSED_UNCOMMITTED
from node.claim_order import Crossings, Sightings
from node.market_claims import (
    ClaimRounds,
    LiveJobs,
    MarketCounters,
    MarketSettings,
)
from node.market_commits import CommitKeeping
from node.market_operands import BlobPeers, Held, OperandFetcher
from node.template import JobRef

log = logging.getLogger("pouw.market")

RIVAL_SCAN_S = 0.02  # rival claims are read from the pool at most this often
CLAIM_CONFIRM_S = 60.0  # a claim not on chain after this long is given up
PICKS_PER_CALL = 4  # next_work's choices made again as blocks arrive, at most
RESTORE_WAIT_S = 0.05  # a restore's operands waited for per pick (our own store: at once)
RESTORE_RETRY_S = 30.0  # a restore whose operands no source served is tried again after


class MarketMiner(CommitKeeping, ClaimRounds):
    def __init__(
        self,
        chain: ChainState,
        store: BlobStore,
        settings: MarketSettings,
        submit_tx: Callable[[Transaction], object],
        pending_nonce: Callable[[bytes], int],
        peers: BlobPeers | None = None,
        pool_txs: Callable[[], Iterable[Transaction | None]] = tuple,
        in_pool: Callable[[bytes], bool] = lambda txid: False,
        job_actions: Callable[[bytes], Iterable[Transaction]] | None = None,
    ) -> None:
        self.chain = chain
        self.peers = peers
        self.store = store
        self.operands = OperandFetcher(store, settings, peers)  # A and Bᵀ of held jobs
        self.settings = settings
        self.submit_tx = submit_tx
        self.pending_nonce = pending_nonce
        self.pool_txs = pool_txs  # the pool's submits and market actions (claims on their way)
        self.in_pool = in_pool  # is this txid in our mempool
        # the pooled txs acting on one job (Mempool.job_actions); None: scan the pool
        self.job_actions = job_actions
        self.address = address_from_pubkey(settings.key.public_key)
        self.held: dict[bytes, Held] = {}
        self.counters = MarketCounters()
        self.rate = 0.0  # our multiply-adds per second (the mining loop keeps it current)
        self._failed: dict[bytes, float] = {}
        self._computed: set[bytes] = set()
        # job id -> the root of the C we computed (in the blob store): a job we lost
        # and that opens again is claimed and committed with it, never computed again
        self._results: dict[bytes, bytes] = {}
        self._live_cache: LiveJobs | None = None
        # txid -> (its job, when we first saw it): decoded once
        self._pooled_submits: dict[bytes, tuple[Job | None, float]] = {}
        self._quick_round_at: float | None = None  # a submit arrived: claim at this time
        self._behind: set[bytes] = set()  # held jobs whose claim another claim races ahead of
        self._more_open = False  # the last claim round left candidates unclaimed
        self._rivals: tuple[float, dict[bytes, bytes]] = (0.0, {})  # (read at, last scan)
        self._seen_tip: bytes | None = None
        self._last_round = 0.0
        self._sightings = Sightings(self.address)  # other miners seen claiming
        self._crossings = Crossings()  # how late rival claims of our jobs arrive
        self._first_seen: dict[bytes, float] = {}  # candidate job id -> first seen open
        self._was_pooled: set[bytes] = set()  # candidates we first saw as pooled submits
        # jobs a pooled claim of our key goes for that we do not hold (sent before a
        # restart): never claimed again (one of the two would fail, its fee lost); taken
        # back once the claim is on chain
        self._own_pooled_claims: set[bytes] = set()
        self._submit_arrived: OrderedDict[bytes, float] = OrderedDict()  # job id -> when
        # job id -> (its first claimant, when its submit arrived): claims of fresh jobs
        self._fresh_claims: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        # Called when a claim round outside the mining loop claimed a job (Miner: cut
        # the filler product in flight short, so the job starts now).
        self.wake: Callable[[], None] = lambda: None
        self._wake_due: float | None = None  # a wake set for a held job's rival wait

    # --- the mining loop's side -------------------------------------------------------

    def _ours(self, job_id: bytes) -> Job | None:
        """The job as the tip has it, if our claim holds it."""
        job = get_job(self.chain.state_get, job_id)
        if job is None or job.claimant != self.address:
            return None
        return job

    async def next_work(self) -> tuple[JobRef, npt.NDArray[np.int8], npt.NDArray[np.int8]] | None:
        """A job we claimed, with its operands, to compute now; claims more jobs when
        fewer than ``claim_ahead`` are in hand. None: mine something else.

        A job whose claim is on chain comes first (the header names it); else one whose
        claim is still on its way (``JobRef.named`` False: mined as our own work), so
        that C reaches the buyer without waiting for a block.

        Fetching operands awaits; should a block arrive meanwhile, the choice is made
        again on it (a pooled claim chosen on the old tip may have just lost: its
        rival's claim left our pool with that block, so it would look unrivalled).
        Should blocks keep coming that fast, the mining loop gets None (filler) and
        asks again."""
        for _ in range(PICKS_PER_CALL):
            tip = self.chain.tip.hash
            if self._seen_tip != tip:  # held jobs only change with it
                self._seen_tip = tip
                self._rivals = (0.0, {})  # the pool changed with the tip: read it again
                self.on_tip()
            work = await self._pick_work()
            if self.chain.tip.hash == tip:
                return work
        return None

    async def _pick_work(self) -> tuple[JobRef, npt.NDArray[np.int8], npt.NDArray[np.int8]] | None:
        """``next_work`` on the tip as it is when called."""
        self._claim_round(time.monotonic())
        waiting: list[tuple[bytes, Held]] = []
        restores: list[tuple[bytes, Held]] = []
        for job_id, held in sorted(self.held.items(), key=lambda kv: kv[1].claimed_at):
            if held.computed or held.ended:
                continue
            job = self._ours(job_id)
            if held.restore:  # committed on chain, or by our commit waiting in the pool
                if job is not None and job.status in (JobStatus.COMMITTED, JobStatus.CLAIMED):
                    restores.append((job_id, held))
                continue
            if job is not None and job.status == JobStatus.COMMITTED:
                continue  # by a commit of ours we no longer knew of: on_tip takes it
            if job is None or job.status != JobStatus.CLAIMED:
                waiting.append((job_id, held))  # not confirmed yet (or lost: on_tip drops it)
                continue
            # (a claim that lapsed is ``ended``: next_work's on_tip saw it on this tip)
            if await self.operands.fetch(job_id, held):
                assert held.a is not None and held.b is not None
                return JobRef(job_id, job.h_a, job.h_b), held.a, held.b
        # after the claims on chain (their deadlines run), before the pooled ones: a
        # committed job's C to serve again (mined as our own work: its commit stands)
        for job_id, held in restores:
            if await self._restore_operands(job_id, held):
                assert held.a is not None and held.b is not None
                return JobRef(job_id, held.job.h_a, held.job.h_b, named=False), held.a, held.b
        if not waiting:
            return None
        ready = []
        for job_id, held in waiting:  # fetching overlaps the wait for rival claims
            if not self._claim_failed(held) and await self.operands.fetch(job_id, held):
                ready.append((job_id, held))
        now = time.monotonic()
        if now - self._rivals[0] >= RIVAL_SCAN_S:  # the mining loop calls often: pool
            self._rivals = (now, self._rival_claims({jid: h.job for jid, h in waiting}))
        rivals = self._rivals[1]
        self._behind = {jid for jid, h in waiting if rivals.get(jid, h.claim_txid) < h.claim_txid}
        rival_wait = self._crossings.rival_wait(now)
        for job_id, held in ready:
            # Another claim races ours: the one with the lower txid computes it now
            # (every miner seeing both agrees; consensus gives the job to the lowest
            # txid of a block); the other waits for the tip to say. A claim younger
            # than the rival wait may have rivals still on their way.
            settled = held.unrivalled or now - held.claimed_at >= rival_wait
            if job_id not in self._behind and settled:
                assert held.a is not None and held.b is not None
                return JobRef(job_id, held.job.h_a, held.job.h_b, named=False), held.a, held.b
            if job_id not in self._behind:  # not a filler product's length: wake then
                self._wake_at(held.claimed_at + rival_wait)
        return None

    def _wake_at(self, when: float) -> None:
        """Call ``wake`` at ``when`` (monotonic): a held job becomes ready then, and the
        filler product the mining loop starts meanwhile must not keep it waiting."""
        if self._wake_due is not None and self._wake_due <= when:
            return  # an earlier wake is set: next_work runs then and sets the next one
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._wake_due = when

        def fire() -> None:
            self._wake_due = None
            self.wake()

        loop.call_later(max(0.0, when - time.monotonic()), fire)

    def known_of(self, job_id: bytes) -> dict[str, Any]:
        """What MiningEngine.mine need not compute again for a held job: the checked
        leaves of its operands and B^T as downloaded."""
        held = self.held.get(job_id)
        if held is None:
            return {}
        return {"operand_leaves": held.leaves, "b_t": held.b_t}

    def _claim_failed(self, held: Held) -> bool:
        """Our claim's transaction is in a block, included as failed (a job taken back
        at start has no claim txid: its claim was on chain)."""
        return bool(held.claim_txid) and self.chain.db.get_tx_failure(held.claim_txid) is not None

    def _on_its_way(self, job_id: bytes, held: Held, now: float) -> bool:
        """Our claim is neither on the tip nor failed: it waits in our mempool (however
        long its job's submit takes to confirm), or was sent recently. A job taken back
        from the chain learns its claim's txid here, should a reorg return the claim
        to the pool."""
        if not held.claim_txid:
            held.claim_txid = self._our_pooled_claim(job_id) or b""
            return bool(held.claim_txid)
        if self._claim_failed(held):
            return False
        return self.in_pool(held.claim_txid) or now - held.claimed_at < CLAIM_CONFIRM_S

    def _our_pooled_claim(self, job_id: bytes) -> bytes | None:
        """The txid of a claim of ours for the job in our mempool, if any."""
        tx = self._our_pooled(job_id, TxKind.JOB_CLAIM)
        return None if tx is None else tx.txid

    def _our_pooled(self, job_id: bytes, kind: TxKind) -> Transaction | None:
        """A tx of ours of ``kind`` acting on the job that waits in our mempool."""
        if self.job_actions is not None:
            pooled: Iterable[Transaction | None] = self.job_actions(job_id)
        else:
            pooled = self.pool_txs()
        for tx in pooled:
            if (tx is not None and tx.kind == kind and tx.sender == self.address
                    and tx.payload[:32] == job_id):  # fmt: skip
                return tx
        return None

    def deliver(self, job_id: bytes, c: npt.NDArray[np.integer]) -> Transaction | None:
        """The product of a job we hold is done: store C, commit its root."""
        held = self.held.get(job_id)
        restore = held is not None and (held.restore or held.lost_c)
        if job_id in self._computed and not restore:  # (a restore is counted as one)
            self.counters.recomputed += 1
        if held is not None and held.lost_c:
            held.lost_c = False
            self.counters.restored += 1
        self._computed.add(job_id)
        self.counters.products += 1
        if held is None:  # forgotten meanwhile (its claim lapsed, the job reopened): C is
            # kept for the claim rounds, which claim an open job again with it
            job = get_job(self.chain.state_get, job_id)
            if job is not None and job.status == JobStatus.OPEN:
                self.store_result(job_id, c)
            return None
        self.counters.multiply_adds += held.job.multiply_adds
        held.computed = True
        held.a = held.b = held.b_t = held.leaves = None  # C is what we need from now on
        if held.restore:
            self._restored(job_id, held, c)
            return None
        return self.commit_result(job_id, c)

    def _take_back(self) -> None:
        """Hold every job the tip says our key holds: after a restart or a crash with
        claims and commits in flight, and as a node that started behind catches up to
        its claims, so that a claimed job is computed and committed before its deadline
        and a committed one's probes are answered from the stored C (else each would
        cost its bond). Read with the tip's jobs in flight, which the claim round reads
        anyway."""
        counts = {JobStatus.CLAIMED: 0, JobStatus.COMMITTED: 0}
        for job_id, job in self._live_jobs()[0]:
            if job.claimant != self.address or job.status not in counts or job_id in self.held:
                continue
            # on chain as ours: never "on its way" should a reorg reopen it
            held = Held(job, time.monotonic() - CLAIM_CONFIRM_S, b"", unrivalled=True)
            root = job.result_root if job.status == JobStatus.COMMITTED else None
            if root is None and (pooled := self._our_pooled(job_id, TxKind.JOB_COMMIT)):
                # our commit waits in the pool (kept across a restart in mempool.dat):
                # computing C again would only send a second one
                payload = decode_job_payload(pooled.kind, pooled.payload)
                root = payload.result_root if isinstance(payload, JobCommit) else None
                held.commit_txid = pooled.txid
            if root is not None:
                self._committed_as(job_id, held, root)
            self.held[job_id] = held
            counts[job.status] += 1
            if job.status == JobStatus.CLAIMED:
                self._lapsed_now(job_id, held, job, LAPSED_UNCOMMITTED)  # (while we were away)
        if any(counts.values()):
            log.info(
                "took back the jobs our key holds on chain: %d claimed (computed next), "
                "%d committed (probes answered from the stored C)",
                counts[JobStatus.CLAIMED], counts[JobStatus.COMMITTED],
            )  # fmt: skip

    def _committed_as(self, job_id: bytes, held: Held, root: bytes) -> None:
        """A commit of ours under ``root`` stands (on chain, or pooled): the job counts
        as computed, and C is computed again if the blob store lost it."""
        held.computed, held.result_root = True, root
        self._results[job_id] = root
        if self.store.find(root) is None:
            self._restore(job_id, held, "committed by us but C is not in the blob store")

    def _restore(self, job_id: bytes, held: Held, why: str) -> None:
        """A committed job's C is gone from the blob store (a crash within the
        write-behind's few tens of ms, a deleted ``blobs`` directory): compute it again
        from A and B (the mining loop's next products, the lottery riding on it), so
        that buyers can fetch it and probes are answered before the bond is lost."""
        if held.restore or held.unservable:
            return
        held.restore, held.computed = True, False
        held.lost_c = False  # (counted as restored once, by _restored)
        held.download = None  # a finished download's operands were dropped with C
        # a file that is there but does not read back (cut short by a crash) would make
        # the store take the new C for one it has: it goes first
        if held.result_root is not None:
            self.store.delete(held.result_root)
        log.warning("job %s: %s: computing C again to serve it", job_id.hex()[:16], why)

    async def _restore_operands(self, job_id: bytes, held: Held) -> bool:
        """A restore's operands in hand, without holding up the mining loop: their
        download runs in the background (waited for RESTORE_WAIT_S at most: from our
        own store it is done by then), and one that failed is tried again only after
        RESTORE_RETRY_S (the job's buyer may be offline for the rest of its window)."""
        now = time.monotonic()
        if held.a is not None and held.b is not None:
            return True
        if held.download is None:
            if now < held.restore_after:
                return False
            self.operands.prefetch(job_id, held)
            if held.download is None:  # no event loop (a test driving the miner directly)
                return await self.operands.fetch(job_id, held)
        task = held.download
        await asyncio.wait({task}, timeout=RESTORE_WAIT_S)
        if not task.done():
            return False  # still coming: a later call takes it
        held.download = None
        if task.cancelled() or task.exception() is not None or not task.result():
            held.restore_after = now + RESTORE_RETRY_S
            return False
        return held.a is not None and held.b is not None

    def _restored(self, job_id: bytes, held: Held, c: npt.NDArray[np.integer]) -> None:
        """C computed again (``_restore``): stored if it is the committed one, and a
        probe that waits for it answered now."""
        held.restore = False
        self.counters.restored += 1
        job = get_job(self.chain.state_get, job_id) or held.job
        root = self.store.put("c", c)
        # committed on chain, or by our commit still in the pool (the job claimed)
        committed = job.result_root if job.status == JobStatus.COMMITTED else held.result_root
        if root != committed:
            held.unservable = True  # (the retention deletes the stray C)
            log.error(
                "job %s: C computed again has root %s, not the committed %s: its probes "
                "cannot be answered", job_id.hex()[:16], root.hex()[:16],
                (committed or b"").hex()[:16],
            )  # fmt: skip
            return
        log.info("job %s: C computed again and stored: served again", job_id.hex()[:16])
        if job.claimant == self.address and job.status == JobStatus.COMMITTED and job.probe_open:
            held.job = job
            self._reveal(job_id, held, job)

    def on_tip(self) -> None:
        """After a tip change: answer probes, forget jobs that ended or were lost."""
        self._take_back()
        now = time.monotonic()
        for job_id, held in list(self.held.items()):
            job = get_job(self.chain.state_get, job_id)
            if job is None:
                if not self._on_its_way(job_id, held, now):  # the submit never confirmed
                    self.held.pop(job_id)
                continue
            if job.claimant != self.address or job.status not in (
                JobStatus.CLAIMED, JobStatus.COMMITTED
            ):  # fmt: skip
                if self._ended(job_id, held, job):  # paid, or our bond lost (said there)
                    # (a job open again is claimed again with its C by the claim rounds)
                    self.held.pop(job_id)
                    continue
                if job.status == JobStatus.OPEN:
                    if self._on_its_way(job_id, held, now):
                        continue  # our claim is still on its way
                    if held.result_root is not None and self._claim_again(job_id, held, job):
                        continue  # C is done: a fee is worth more than the product
                if job.status in (JobStatus.PAID, JobStatus.REFUNDED):
                    log.info("job %s %s", job_id.hex()[:16], job.status.name.lower())
                elif not held.computed:
                    if job.claimant != ZERO_ADDRESS:
                        self._sightings.saw(job.claimant, now)  # its claim won
                    self.counters.claims_lost += 1
                    log.info("lost the claim of job %s", job_id.hex()[:16])
                self.held.pop(job_id)
                continue
            held.job = job
            if job.status == JobStatus.CLAIMED:
                if not self._lapsed_now(job_id, held, job, LAPSED_UNCOMMITTED):
                    if held.ended:  # a reorg onto a branch where the claim holds
                        self._claim_back(job_id, held)
                    self._keep_commit(job_id, held)
                continue
            if held.ended:  # committed by us on the branch a reorg brought: no lapse
                self._claim_back(job_id, held)
            if not held.computed and not held.restore:  # committed by a commit of ours
                # that we no longer knew of (a pool lost with a crash, kept by peers)
                self._committed_as(job_id, held, job.result_root)
            if job.probe_open:
                self._reveal(job_id, held, job)

    def _reveal(self, job_id: bytes, held: Held, job: Job) -> None:
        from consensus.result import RESULT_CHUNK, result_proof
        from wallet.job_txs import reveal_tx

        probe = (job.probe_row, job.probe_chunk)
        if probe in held.revealed:
            return
        c = self.store.get(job.result_root)
        if c is None:
            self._restore(job_id, held, "probed but C is not in the blob store")
            return
        data, chunk_branch, result_branch = result_proof(c, probe[0], probe[1] * RESULT_CHUNK)
        tx = reveal_tx(
            self.chain.network, self.settings.key, self.pending_nonce(self.address), job_id,
            data, tuple(chunk_branch), tuple(result_branch), fee=self.settings.fee,
        )  # fmt: skip
        if self._send(tx, f"reveal for {job_id.hex()[:16]}"):
            held.revealed.add(probe)
            self.counters.reveals += 1
            log.info("revealed chunk %s of job %s", probe, job_id.hex()[:16])


def market_miner_for(node: object, key: PrivateKey, **settings: object) -> MarketMiner:
    """A MarketMiner wired to a Node: its chain, its blob service's store and URL,
    ``submit_transaction``, its mempool's pending nonces, and its P2P service (if any)
    for blob sources that peers announced. The node must run node/blobs.BlobService."""
    blobs = next(s for s in node.services if getattr(s, "name", "") == "blobs")  # type: ignore[attr-defined]
    p2p = next(
        (s for s in node.services if getattr(s, "name", "") == "p2p"  # type: ignore[attr-defined]
         and hasattr(s, "blob_sources")),
        None,
    )  # fmt: skip
    miner = MarketMiner(
        node.chain,  # type: ignore[attr-defined]
        blobs.store,
        MarketSettings(key=key, serve_url=blobs.url, **settings),  # type: ignore[arg-type]
        node.submit_transaction,  # type: ignore[attr-defined]
        node.mempool.pending_nonce,  # type: ignore[attr-defined]
        peers=p2p,
        # (a submit behind a nonce gap of its buyer is left out: a claim of it would fail)
        pool_txs=lambda: node.mempool.market_txs(queued_submits=False),  # type: ignore[attr-defined]
        in_pool=node.mempool.__contains__,  # type: ignore[attr-defined]
        job_actions=node.mempool.job_actions,  # type: ignore[attr-defined]
    )
    node.events.tx_accepted.connect(miner.notice_tx)  # type: ignore[attr-defined]
    # the first job's C and operands are hashed by kernels compiled (or loaded) now;
    # imported here, so that a node that does not mine starts without Numba (0.2-0.3 s)
    from compute.fast_commit import warm_up

    threading.Thread(target=warm_up, name="blob-hash-warm-up", daemon=True).start()
    return miner
