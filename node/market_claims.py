"""The market miner's claim rounds: which open jobs to claim, when, and how many.

A miner keeps up to ``claim_ahead`` jobs, or WORK_AHEAD_S of its rate, in hand. A
submit reaching our pool starts a quick round (one job, for an idle miner) after
QUICK_ROUND_SETTLE_S; busy miners claim ahead in timer rounds every CLAIM_ROUND_S.
Fresh jobs are dealt out among the miners we know by node/claim_order (each idle
miner its own first), a backlog the same way in BACKLOG_STEP_S steps, and jobs that
others' claims in our pool already go for are skipped. ``ClaimRounds`` is the part of
``node.market_miner.MarketMiner`` that does this; the miner holds the state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chain.chainstate import ChainState
from chain.job_record import Job, JobStatus, get_job, live_jobs
from chain.jobs import pooled_submit_job
from chain.keys import PrivateKey
from chain.tx import Transaction
from chain.txkind import TxKind
from compute.blobs import BlobStore
from consensus.seal import check_shape
from node.claim_order import (
    BACKLOG_STEP_S,
    FALLBACK_STEP_S,
    PENDING_MIN_LEFT_S,
    RETRY_FAILED_S,
    Crossings,
    Sightings,
    claimable_after,
    horizon,
    lowest_standing,
    price_band,
)
from node.market_operands import Held, OperandFetcher
from wallet.job_terms import DEFAULT_JOB_FEE, MINER_TXS_PER_PART

log = logging.getLogger("pouw.market")

CLAIM_AHEAD = 2  # jobs in hand at least: one computing, the next one's operands fetched
# Claimed work is computed at once (its claim need not confirm first), so a miner only
# holds enough to stay busy until its next claim round: about this many seconds at its
# measured rate. Holding more would take jobs that idle miners could start right away
# (a product split into parts is then computed by several miners in parallel).
WORK_AHEAD_S = 1.0
MAX_HELD = 256  # jobs in hand at most (each a claim transaction and a bond)
# Claims go out in small rounds, each skipping the jobs that claims already in our pool
# (other miners', relayed within milliseconds) go for: miners that all claimed a
# block's worth at once on a new tip would mostly race each other for the same jobs.
CLAIM_BATCH = 16
CLAIM_ROUND_S = 0.25
# A submit reaching our pool triggers a quick round after SETTLE: a batch's other
# submits arrive meanwhile. Which idle miner claims which fresh job: node/claim_order.
QUICK_ROUND_SETTLE_S = 0.01
# A job whose submit arrived this recently is left to idle miners' quick rounds: busy
# miners' timer rounds take it only after this (a busy miner claiming a batch of new
# jobs ahead would keep them from idle miners, which then compute nothing).
IDLE_FIRST_S = 0.16
# Submits whose arrival time we keep, to measure how soon other miners claim (the
# oldest dropped first): far more than the jobs a burst of blocks brings.
MAX_ARRIVALS = 4096
# Only claims of jobs whose submits arrived this recently are noted for the count (a
# backlog job claimed late is not): the notes then come in about their submits' order,
# and those older than the fresh window by this much are not read again.
LOADS_SLACK_S = 2.0


@dataclass
class MarketSettings:
    key: PrivateKey  # signs claims, commits and reveals; its address is the miner address
    serve_url: str = ""  # where this node serves C (its blob endpoint), put in the commit
    min_bounty_per_mac: float = 0.0  # base units per multiply-add
    fetch_timeout: float = 20.0
    fee: int = DEFAULT_JOB_FEE  # fee of each market transaction
    claim_ahead: int = CLAIM_AHEAD
    extra_sources: tuple[str, ...] = ()  # other blob endpoints to try for A and B


@dataclass
class MarketCounters:
    claims_sent: int = 0
    claims_lost: int = 0  # claims another worker won first (included as failed)
    products: int = 0  # job products computed
    multiply_adds: int = 0
    recomputed: int = 0  # job products computed a second time (must stay 0)
    restored: int = 0  # committed C lost from the blob store and computed again
    commits: int = 0
    reveals: int = 0
    bonds_lost: int = 0  # claims that lapsed, products refunded (each logged)


# (tip, the jobs in flight, the open ones): read once per tip
LiveJobs = tuple[bytes, list[tuple[bytes, Job]], list[tuple[bytes, Job]]]


def open_jobs(chain: ChainState, live: list[tuple[bytes, Job]]) -> list[tuple[bytes, Job]]:
    """Of the jobs in flight (``live_jobs``), those a claim on the next block could take
    (open and not yet expired)."""
    mtp = chain.mtp_after(chain.tip)
    return [
        (job_id, job) for job_id, job in live if job.status == JobStatus.OPEN and mtp < job.expires
    ]  # fmt: skip


class ClaimRounds:
    """Claim rounds of the market miner (state initialised by MarketMiner)."""

    chain: ChainState
    store: BlobStore
    settings: MarketSettings
    address: bytes
    held: dict[bytes, Held]
    counters: MarketCounters
    operands: OperandFetcher
    rate: float
    submit_tx: Callable[[Transaction], object]
    pending_nonce: Callable[[bytes], int]
    pool_txs: Callable[[], Iterable[Transaction | None]]
    job_actions: Callable[[bytes], Iterable[Transaction]] | None
    wake: Callable[[], None]
    _send_commit: Callable[[bytes, bytes, Held | None], Transaction | None]  # market_commits
    _failed: dict[bytes, float]
    _results: dict[bytes, bytes]
    _live_cache: LiveJobs | None
    _pooled_submits: dict[bytes, tuple[Job | None, float]]
    _quick_round_at: float | None
    _behind: set[bytes]
    _more_open: bool
    _last_round: float
    _sightings: Sightings
    _crossings: Crossings
    _first_seen: dict[bytes, float]
    _submit_arrived: OrderedDict[bytes, float]
    _fresh_claims: OrderedDict[bytes, tuple[bytes, float]]
    _was_pooled: set[bytes]
    _own_pooled_claims: set[bytes]

    def _competing(self, now: float) -> bool:
        """Another miner claimed a job within ALONE_AFTER_S."""
        return not self._sightings.alone(now)

    # --- choosing and claiming --------------------------------------------------------

    def _live_jobs(self) -> tuple[list[tuple[bytes, Job]], list[tuple[bytes, Job]]]:
        """(the jobs in flight, the open ones) on the tip, read once per tip (every
        job in flight is read)."""
        tip = self.chain.tip.hash
        if self._live_cache is None or self._live_cache[0] != tip:
            live = live_jobs(self.chain.db.iter_state, self.chain.state_get)
            self._live_cache = (tip, live, open_jobs(self.chain, live))
        return self._live_cache[1], self._live_cache[2]

    def _open_jobs(self) -> list[tuple[bytes, Job]]:
        return self._live_jobs()[1]

    def notice_tx(self, tx: Transaction) -> None:
        """A transaction entered our pool (NodeEvents.tx_accepted): a new submit makes
        the next ``next_work`` run a claim round at once."""
        now = time.monotonic()
        if tx.kind == TxKind.JOB_CLAIM:  # how long after its submit: the miner's lateness
            held = self.held.get(tx.payload)
            if held is not None and held.claim_txid and tx.sender != self.address:
                if self.standing_rival([(tx.txid, tx.amount)], held.job) is not None:
                    self._crossings.crossed(now - held.claimed_at, now)  # it crossed ours
            arrived = self._submit_arrived.get(tx.payload)
            self._sightings.saw(tx.sender, now, None if arrived is None else now - arrived)
            noted = tx.payload in self._fresh_claims
            if arrived is not None and now - arrived < LOADS_SLACK_S and not noted:
                # the first claim of a job whose submit we saw lately: its miner's load
                self._fresh_claims[tx.payload] = (tx.sender, arrived)
                while len(self._fresh_claims) > MAX_ARRIVALS:
                    self._fresh_claims.popitem(last=False)
        if tx.kind == TxKind.JOB_SUBMIT:
            self._submit_arrived[tx.txid] = now  # the txid is the job id
            while len(self._submit_arrived) > MAX_ARRIVALS:
                self._submit_arrived.popitem(last=False)
            at = now + QUICK_ROUND_SETTLE_S  # the rest of a batch arrives meanwhile
            if self._quick_round_at is None or self._quick_round_at > at:
                # (a later turn for an earlier job is set again by that round)
                self._quick_round(at)

    def _quick_round(self, at: float) -> None:
        """Claim at ``at`` (monotonic): the mining loop's next call does, or a timer on
        the event loop does it first, so that the claim never waits for a filler
        product to end (``wake`` then cuts the filler short)."""
        self._quick_round_at = at
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a test driving the miner directly)
            return
        loop.call_later(max(0.0, at - time.monotonic()), self._on_quick_timer)

    def _on_quick_timer(self) -> None:
        if self._quick_round_at is None or time.monotonic() < self._quick_round_at:
            return  # the mining loop ran the round already, or a later turn replaced it
        if self._claim_round(time.monotonic()):
            self.wake()  # a job of ours waits: the filler product in flight gives way

    def _has_unfinished(self) -> bool:
        return any(
            not (h.computed or h.ended) and jid not in self._behind for jid, h in self.held.items()
        )  # (an ended claim is over: it holds no slot)

    def _claim_round(self, now: float) -> bool:
        """A claim round if one is due (quick: a submit arrived, or we are idle and jobs
        are open; else every CLAIM_ROUND_S). True if it claimed a job."""
        quick = self._quick_round_at is not None and now >= self._quick_round_at
        idle = self._more_open and not self._has_unfinished()  # claim the next one now
        if not (quick or idle or now - self._last_round >= CLAIM_ROUND_S):
            return False
        if quick:  # (a timer round leaves a quick round still to come in place: it
            self._quick_round_at = None  # skips fresh jobs, which that round is for)
        if not (quick or idle):
            self._last_round = now
        sent = self.counters.claims_sent
        self._claim_more(quick or idle)
        return self.counters.claims_sent > sent

    def _scan_pool(
        self,
    ) -> tuple[
        list[tuple[bytes, Job]], dict[bytes, list[tuple[bytes, int]]], dict[bytes, set[bytes]]
    ]:
        """One pass over our mempool: jobs whose submit waits there (not on the tip
        yet); others' claims there, by job, as (txid, bond) (a claim of ours would most
        likely lose the race: ``standing_rival``); and the senders of the reclaims
        there, by job (a buyer cancelling: see ``candidates``)."""
        pending: list[tuple[bytes, Job]] = []
        rivals: dict[bytes, list[tuple[bytes, int]]] = {}
        reclaims: dict[bytes, set[bytes]] = {}
        seen: dict[bytes, tuple[Job | None, float]] = {}
        ours: set[bytes] = set()
        now = time.monotonic()
        for tx in self.pool_txs():
            if tx is None:
                continue
            if tx.kind == TxKind.JOB_CLAIM and len(tx.payload) == 32:
                if tx.sender != self.address:
                    rivals.setdefault(tx.payload, []).append((tx.txid, tx.amount))
                    self._sightings.saw(tx.sender, now)
                else:
                    ours.add(tx.payload)
            elif tx.kind == TxKind.JOB_RECLAIM and len(tx.payload) == 32:
                reclaims.setdefault(tx.payload, set()).add(tx.sender)
            elif tx.kind == TxKind.JOB_SUBMIT:
                txid = tx.txid
                known = self._pooled_submits.get(txid)
                job, first_seen = known if known is not None else (pooled_submit_job(tx), now)
                seen[txid] = (job, first_seen)
                if job is not None:
                    pending.append((txid, job))
        self._pooled_submits = seen
        self._own_pooled_claims = ours
        return pending, rivals, reclaims

    def standing_rival(self, claims: Iterable[tuple[bytes, int]], job: Job) -> bytes | None:
        """The lowest txid among others' claims of ``job`` (txid, bond) that escrow the
        bond it needs: a claim with less fails on its own and takes no job from us
        (consensus counts only standing claims, chain/jobs.lowest_claims)."""
        return lowest_standing(claims, self.chain.network.market.bond_for(job.bounty))

    def _rival_claims(self, jobs: dict[bytes, Job]) -> dict[bytes, bytes]:
        """Others' standing pooled claims of these jobs: job id -> the lowest txid
        among them (read from the pool's job index where there is one, else a scan)."""
        if self.job_actions is None:
            claims = self._scan_pool()[1]
        else:
            claims = {}
            for job_id in jobs:
                for tx in self.job_actions(job_id):
                    if tx.kind == TxKind.JOB_CLAIM and tx.payload == job_id:
                        if tx.sender != self.address:
                            claims.setdefault(job_id, []).append((tx.txid, tx.amount))
                            self._sightings.saw(tx.sender, time.monotonic())
        rivals = {jid: self.standing_rival(claims.get(jid, ()), job) for jid, job in jobs.items()}
        return {jid: txid for jid, txid in rivals.items() if txid is not None}

    def candidates(self) -> list[tuple[bytes, Job]]:
        now = time.monotonic()
        rate = self.settings.min_bounty_per_mac
        pending, taken, reclaims = self._scan_pool()
        open_now = self._open_jobs()
        on_tip = {jid for jid, _ in open_now}
        mtp = self.chain.mtp_after(self.chain.tip)
        pending = [
            (jid, job) for jid, job in pending
            if jid not in on_tip and job.expires > mtp + PENDING_MIN_LEFT_S
            and get_job(self.chain.state_get, jid) is None
        ]  # fmt: skip
        jobs = [
            (jid, job) for jid, job in [*open_now, *pending]
            if jid not in self.held and self._failed.get(jid, 0.0) <= now
            and jid not in self._own_pooled_claims  # an earlier run's claim: taken back
            and self.standing_rival(taken.get(jid, ()), job) is None
            and job.buyer not in reclaims.get(jid, ())  # its buyer is cancelling it
            and job.bounty >= rate * job.multiply_adds
            and job.bounty >= MINER_TXS_PER_PART * self.settings.fee  # not paid at a loss
            and check_shape(self.chain.network.pouw, job.m, job.k, job.n).ok
        ]  # fmt: skip
        # Best paying first (in PRICE_BAND steps); within a band an order of our own (a
        # hash of our address and the job), so that miners racing for the same jobs
        # mostly claim different ones instead of all losing fees on the first.
        jobs.sort(key=lambda item: (
            -price_band(item[1].bounty, item[1].multiply_adds),
            hashlib.sha256(self.address + item[0]).digest(),
        ))  # fmt: skip
        return jobs

    def forget(self, job_id: bytes) -> None:
        self._failed[job_id] = time.monotonic() + RETRY_FAILED_S
        self.held.pop(job_id, None)

    def _send(self, tx: Transaction, what: str) -> bool:
        result = self.submit_tx(tx)
        ok = bool(getattr(result, "ok", True))
        if not ok:
            log.warning("%s not accepted by the mempool: %s", what, result)
        return ok

    def _wanted_work(self) -> int:
        """Multiply-adds of unfinished claims to hold (WORK_AHEAD_S of our rate)."""
        return int(self.rate * WORK_AHEAD_S)

    def _claim_more(self, quick: bool = False) -> None:
        """Claim the best candidates up to ``claim_ahead`` jobs or WORK_AHEAD_S of work
        in hand; a ``quick`` round (a submit just arrived, or we are idle and jobs are
        open) claims one job, and only when we have none in hand: busy miners leave new
        jobs to idle ones, and take what is left at their next round."""
        unfinished = [
            h for jid, h in self.held.items()
            if not (h.computed or h.ended) and jid not in self._behind
        ]  # fmt: skip
        count, work = len(unfinished), sum(h.job.multiply_adds for h in unfinished)
        ahead = 1 if quick else self.settings.claim_ahead
        candidates = self.candidates()
        now = time.monotonic()  # after the scan: a submit it saw first is fresh, not future
        self._more_open = len(candidates) > ahead - count
        turns, backlog_turns = self._turns(candidates, now)
        for job_id, job in candidates[:CLAIM_BATCH]:
            root = self._results.get(job_id)
            if root is not None and not self.store.touch(root):
                del self._results[job_id]  # its C was deleted since: computed anew
                root = None
            if root is not None:  # computed once already: claim and commit that C
                done = Held(job, time.monotonic(), b"", computed=True, result_root=root)
                self.held[job_id] = done  # (before the commit: it notes the commit there)
                if not self._claim_again(job_id, done, job):
                    del self.held[job_id]
                continue
            if count >= MAX_HELD or (
                count >= ahead and (quick or work >= self._wanted_work())
            ):  # fmt: skip
                break
            turn = turns.get(job_id)
            if turn is not None and (not quick or turn > now):
                continue  # fresh: idle miners' quick rounds have it, each in its turn
            if not quick and backlog_turns.get(job_id, now) > now:
                continue  # another busy miner's share of the backlog, for now
            tx = self._claim_tx(job_id, job)
            if not self._send(tx, f"claim of {job_id.hex()[:16]}"):
                self.forget(job_id)
                continue
            # designated, and claiming before the next miner's turn: no rival to wait for
            seen = self._first_seen.get(job_id, 0.0)
            first_turn = turn == seen and now - seen < 0.8 * FALLBACK_STEP_S
            held = Held(
                job, time.monotonic(), tx.txid, unrivalled=first_turn or not self._competing(now)
            )  # fmt: skip
            self.held[job_id] = held
            self._crossings.claimed(now)
            if count == 0:  # the next job we compute: its operands start coming now
                self.operands.prefetch(job_id, held)
            count, work = count + 1, work + job.multiply_adds
            self.counters.claims_sent += 1
            log.info(
                "claimed job %s (%dx%dx%d, bounty %d, bond %d)%s",
                job_id.hex()[:16], job.m, job.k, job.n, job.bounty, tx.amount,
                "" if job.submitted else ", its submit still pooled",
            )  # fmt: skip

    def _turns(
        self, candidates: list[tuple[bytes, Job]], now: float
    ) -> tuple[dict[bytes, float], dict[bytes, float]]:
        """When our turn to claim each candidate comes (node/claim_order), as two maps:
        fresh pooled jobs (left to idle miners' quick rounds) and, where other miners
        are known, the backlog (claimed ahead by busy miners, each its share first).
        A job in neither map is anyone's now."""
        others = self._sightings.others(now)
        for jid, _ in candidates:  # turns count from when we first saw the job
            pooled = self._pooled_submits.get(jid)
            if pooled is not None:
                self._was_pooled.add(jid)
            self._first_seen.setdefault(jid, now if pooled is None else pooled[1])
        if len(self._first_seen) > 4 * len(candidates) + MAX_HELD:
            keep = {jid for jid, _ in candidates}
            self._first_seen = {j: t for j, t in self._first_seen.items() if j in keep}
            self._was_pooled &= keep
        # fresh for at least IDLE_FIRST_S: a busy miner's timer round leaves a new job to
        # idle miners' quick rounds that long, even where no other miner is known yet
        fresh_since = now - max(horizon(others) + QUICK_ROUND_SETTLE_S, IDLE_FIRST_S)
        fresh: list[tuple[bytes, int]] = []
        backlog: list[tuple[bytes, int]] = []
        for jid, job in candidates:  # fresh: a submit we saw pooled, still once in a block
            band = price_band(job.bounty, job.multiply_adds)
            is_fresh = jid in self._was_pooled and self._first_seen[jid] > fresh_since
            (fresh if is_fresh else backlog).append((jid, band))
        fresh_turns: dict[bytes, float] = {}
        if fresh:
            loads = self._loads(fresh_since, {j for j, _ in fresh})
            after = claimable_after(self.address, others, fresh,
                                    lateness=self._sightings.lateness, loads=loads)  # fmt: skip
            fresh_turns = {jid: self._first_seen[jid] + w for jid, w in after.items()}
            later = [t for t in fresh_turns.values() if t > now]
            if later and (self._quick_round_at is None or self._quick_round_at > min(later)):
                self._quick_round(min(later))  # wake for our next turn
        backlog_turns: dict[bytes, float] = {}
        if backlog and others:
            after = claimable_after(self.address, others, backlog, step=BACKLOG_STEP_S)
            backlog_turns = {jid: self._first_seen[jid] + w for jid, w in after.items() if w}
        return fresh_turns, backlog_turns

    def _loads(self, since: float, dealt: set[bytes]) -> dict[bytes, int]:
        """Fresh jobs each miner claimed (ourselves included; by the first claim we saw
        of each) whose submits arrived after ``since``: the dealing of the other fresh
        jobs (``dealt``, open to claims still) counts them (claim_order)."""
        loads: dict[bytes, int] = {}
        for job_id, (claimant, arrived) in reversed(self._fresh_claims.items()):
            if arrived <= since - LOADS_SLACK_S:
                break  # every note before it is of a submit before ``since``
            if arrived > since and job_id not in dealt:
                loads[claimant] = loads.get(claimant, 0) + 1
        return loads

    def _claim_tx(self, job_id: bytes, job: Job) -> Transaction:
        from wallet.job_txs import claim_tx

        bond = self.chain.network.market.bond_for(job.bounty)
        return claim_tx(
            self.chain.network, self.settings.key, self.pending_nonce(self.address), job_id,
            bond, fee=self.settings.fee,
        )  # fmt: skip

    def _claim_again(self, job_id: bytes, held: Held, job: Job) -> bool:
        """Our claim failed (in a block before the job's submit, or behind another
        claim that then lapsed) but the job is open again and we hold its C: claim it
        again and commit the same root. Also for a job we computed, lost, and see open
        again (``_claim_more``)."""
        assert held.result_root is not None
        if job.expires <= self.chain.mtp_after(self.chain.tip):
            return False
        # C stays (the retention sees it as new) unless it was deleted already:
        # committing a root whose C is gone would cost the bond
        if not self.store.touch(held.result_root):
            return False
        claim = self._claim_tx(job_id, job)
        if not self._send(claim, f"claim of {job_id.hex()[:16]} (again)"):
            return False
        held.claim_txid, held.claimed_at = claim.txid, time.monotonic()
        self._crossings.claimed(held.claimed_at)
        self.counters.claims_sent += 1
        held.ended = held.bond_counted_lost = False  # a new claim, a new bond (the old
        # one's loss stays counted)
        self._send_commit(job_id, held.result_root, held)
        log.info("claimed job %s again: its C is done", job_id.hex()[:16])
        return True
