"""RPC methods of the compute market: jobs, the market's state, the network's rate.

A mixin of node/rpc/methods.Methods (it uses ``self.node`` and ``self.net``); its params
models are here, next to their methods.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, StringConstraints

from chain.address import encode_address
from chain.job_payloads import JobCommit, JobPayloadError, decode_job_payload
from chain.job_record import (
    HELD_STATUSES,
    PREFIX_JOB,
    ZERO_ADDRESS,
    Job,
    JobStatus,
    get_job,
    live_jobs,
)
from chain.job_tally import RECENT_COMMIT_BLOCKS
from chain.jobs import BlockClock, claim_lapsed, pooled_submit_job
from chain.txkind import TxKind
from consensus.difficulty import block_work
from node.rpc.errors import INVALID_ADDRESS_OR_KEY, INVALID_PARAMETER, RpcError
from node.rpc.protocol import MAX_WAIT_MS, CallContext, NoParams, Params
from node.template import JobRef

if TYPE_CHECKING:
    from chain.network import Network
    from node.rpc.service import RpcService
    from node.service import Node

# Blocks the network rate is measured over: enough to smooth the lottery's luck, few
# enough that the estimate follows a miner joining or leaving within minutes.
RATE_BLOCKS = 60
assert RATE_BLOCKS <= RECENT_COMMIT_BLOCKS  # the chain's tally remembers that many blocks' commits
STATUS_NAMES = tuple(s.name.lower() for s in JobStatus)
# Pooled claims listed per job (``pending_claim_txs``: those escrowing the job's bond,
# lowest txids first): the pool may hold any number of claims of one job (each escrows
# a bond), and a miner needs only the lowest ones and its own; ``pending_claims``
# still counts them all.
MAX_LISTED_CLAIMS = 32
# A tip older than this many target spacings (and at least STALE_TIP_MIN_S) says no
# miner is running now (no block in 20 spacings happens once in e^20 by chance), so
# the rate of the blocks before it no longer predicts a wait: expected_wait_s is null.
STALE_TIP_SPACINGS = 20
STALE_TIP_MIN_S = 60


class JobParams(Params):
    job_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]


class WaitJobParams(Params):
    job_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
    timeout: Annotated[int, Field(ge=0, le=MAX_WAIT_MS)] = 0  # milliseconds, 0 = none


class ListJobsParams(Params):
    status: Literal[
        "open",
        "pending",
        "unsettled",
        "recent",
        "claimed",
        "committed",
        "paid",
        "refunded",
        "reclaimed",
        "expired",
        "all",
    ] = "open"
    limit: Annotated[int, Field(ge=1, le=10000)] = 1000
    claimant: str | None = None  # only the jobs this address holds


class MarketMethods:
    node: Node
    net: Network
    service: RpcService
    address: Callable[[str, str], bytes]  # MethodsBase's, checked

    # --- helpers ---------------------------------------------------------------------

    def network_rate(self) -> float:
        """Multiply-adds per second the network computed over the last RATE_BLOCKS.

        Each block counts the larger of its work (2^256 / target: expected multiply-adds
        behind a win) and its own product's m.n.k: on an easy network (a devnet at its
        target limit) almost every product wins, and the product is the better figure.
        """
        chain = self.node.chain
        cached = getattr(self, "_rate_cache", None)
        if cached is not None and cached[0] == chain.tip.hash:
            return float(cached[1])  # read once per tip: it reads RATE_BLOCKS blocks
        recs = list(itertools.islice(chain.ancestors(chain.tip.hash), RATE_BLOCKS + 1))
        rate = 0.0
        span = recs[0].timestamp - recs[-1].timestamp
        if len(recs) >= 3 and span > 0:
            done = 0
            for rec in recs[:-1]:
                h = chain.get_header(rec.hash)
                done += max(block_work(h.target), h.m * h.n * h.k)
            rate = done / span
        self._rate_cache = (chain.tip.hash, rate)
        return rate

    def local_market(self) -> dict[str, Any] | None:
        """The own miner's market counters (None without a market miner)."""
        miner = self.node.miner
        market = getattr(miner, "market", None)
        if market is None:
            return None
        c = market.counters
        return {
            "claims_sent": c.claims_sent, "claims_lost": c.claims_lost,
            "products": c.products, "multiply_adds": c.multiply_adds,
            "recomputed_products": c.recomputed, "restored_products": c.restored,
            "commits": c.commits, "reveals": c.reveals, "bonds_lost": c.bonds_lost,
            "jobs_in_hand": len(market.held),
        }  # fmt: skip

    def claimed_job(self, job_id: bytes, miner: bytes) -> tuple[JobRef, tuple[int, int, int]]:
        """The job a template may name for ``miner`` (its claimant), and its shape."""
        job = get_job(self.node.chain.state_get, job_id)
        if job is None or job.claimant != miner or job.status not in (
            JobStatus.CLAIMED, JobStatus.COMMITTED
        ):  # fmt: skip
            raise RpcError(
                INVALID_PARAMETER, "invalid parameter 'job': not a job this miner holds a claim of"
            )
        return JobRef(job_id, job.h_a, job.h_b), (job.m, job.k, job.n)

    def all_jobs(self) -> list[tuple[bytes, Job]]:
        return [
            (key[1:], Job.from_bytes(raw)) for key, raw in self.node.chain.db.iter_state(PREFIX_JOB)
        ]

    def job_info(self, job_id: bytes, job: Job, clock: BlockClock | None = None) -> dict[str, Any]:
        """A job as getjob and listjobs show it; with the next block's ``clock``, a
        claimed job says whether its claim lapsed (``claim_lapsed``: a commit now fails)."""
        hrp = self.net.hrp
        out: dict[str, Any] = {
            "job_id": job_id.hex(),
            "status": job.status.name.lower(),
            "buyer": encode_address(hrp, job.buyer),
            "m": job.m, "k": job.k, "n": job.n,
            "h_a": job.h_a.hex(), "h_b": job.h_b.hex(),
            "bounty": job.bounty,
            "multiply_adds": job.multiply_adds,
            "bounty_per_multiply_add": job.bounty / job.multiply_adds,
            "expires": job.expires,
            "submitted": job.submitted,
            "claims": job.claims,
            "data_url": job.data_url.decode(errors="replace"),
        }  # fmt: skip
        if job.claimant != ZERO_ADDRESS:
            out.update(
                claimant=encode_address(hrp, job.claimant), bond=job.bond,
                claim_deadline=job.claim_deadline,
            )  # fmt: skip
            if clock is not None and job.status == JobStatus.CLAIMED:
                out["claim_lapsed"] = claim_lapsed(job, clock)
        if job.committed_height:
            out.update(
                result_root=job.result_root.hex(),
                committed_height=job.committed_height,
                result_url=job.result_url.decode(errors="replace"),
                window_end=job.window_end,
            )
        if job.probe_open:
            out["probe"] = {
                "row": job.probe_row, "chunk": job.probe_chunk, "deposit": job.probe_deposit,
                "deadline": job.probe_deadline, "by": encode_address(hrp, job.probe_by),
            }  # fmt: skip
        return out

    # --- methods ---------------------------------------------------------------------

    def getjob(self, ctx: CallContext, p: JobParams) -> dict[str, Any]:
        """A compute job by id: status (pending, open, claimed, committed, paid,
        refunded, reclaimed, expired), buyer, shape, commitments, bounty, claim and
        result, and ``pending_commit`` while the claimant's commit waits in our pool."""
        job_id = bytes.fromhex(p.job_id)
        clock = self.node.chain.clock_after(self.node.chain.tip)
        job = get_job(self.node.chain.state_get, job_id)
        if job is None:
            job = self.pooled_job(job_id)
            if job is None:
                raise RpcError(INVALID_ADDRESS_OR_KEY, "job not found")
            out = self.pending_job_info(job_id, job)
        else:
            out = self.job_info(job_id, job, clock)
        out["mtp"] = clock.mtp
        if job.status in (JobStatus.OPEN, JobStatus.CLAIMED):
            self._add_pool_actions(out, job_id, job)
        return out

    def jobs_on_chain(self, job_ids: Iterable[bytes]) -> list[dict[str, Any]]:
        """Jobs as the ``jobs`` topic shows them: as getjob does on chain, without the
        pool's actions; one whose submit's block was disconnected as ``pending`` (its
        submit back in our pool) or ``unknown``."""
        clock = self.node.chain.clock_after(self.node.chain.tip)
        out = []
        for job_id in job_ids:
            job = get_job(self.node.chain.state_get, job_id)
            pooled = self.pooled_job(job_id) if job is None else None
            if job is not None:
                info = self.job_info(job_id, job, clock)
            elif pooled is not None:
                info = self.pending_job_info(job_id, pooled)
            else:
                info = {"job_id": job_id.hex(), "status": "unknown"}
            info["mtp"] = clock.mtp
            out.append(info)
        return out

    def pending_job_info(self, job_id: bytes, job: Job) -> dict[str, Any]:
        """What getjob and listjobs say of a job whose submit waits in our mempool;
        ``queued`` when it waits behind a nonce gap of its sender (no miner takes it
        until a transaction fills the gap)."""
        out = {**self.job_info(job_id, job), "status": "pending"}
        del out["submitted"]
        if not self.node.mempool.is_pending(job_id):
            out["queued"] = True
        return out

    def _add_pool_actions(self, out: dict[str, Any], job_id: bytes, job: Job) -> None:
        """``pending_claims``, ``pending_claimants`` and ``pending_claim_txs`` (a job
        not claimed on chain) and ``pending_commit``: what our mempool holds for the
        job."""
        claimant = job.claimant if job.status == JobStatus.CLAIMED else None
        claims, pending = self.pool_actions(job_id, claimant)
        if claims:
            hrp = self.net.hrp
            out["pending_claims"] = len(claims)
            out["pending_claimants"] = sorted({encode_address(hrp, c) for _, c, _ in claims})
            need = self.net.market.bond_for(job.bounty)  # a smaller bond fails on its own
            out["pending_claim_txs"] = [
                {"txid": txid.hex(), "claimant": encode_address(hrp, sender), "bond": bond}
                for txid, sender, bond in [c for c in claims if c[2] >= need][:MAX_LISTED_CLAIMS]
            ]  # by txid: of the claims that stand, the lowest takes the job in a block
        if pending is not None:
            out["pending_commit"] = pending
        if claimant is None and self.reclaim_pooled(job_id, job):
            out["pending_reclaim"] = True

    def reclaim_pooled(self, job_id: bytes, job: Job) -> bool:
        """Its buyer's reclaim waits in our mempool: the job is being cancelled (a claim
        now would race the reclaim into a block and most likely compute for nothing)."""
        return any(
            tx.kind == TxKind.JOB_RECLAIM and tx.payload == job_id and tx.sender == job.buyer
            for tx in self.node.mempool.job_actions(job_id)
        )

    async def waitforjob(self, ctx: CallContext, p: WaitJobParams) -> dict[str, Any]:
        """Wait until a job's C can be collected (its commit on chain or in our pool)
        or the job will never deliver (refunded, reclaimed, expired), or ``timeout``
        milliseconds pass (0: up to MAX_WAIT_MS); then answer as getjob. A buyer waits
        on each part this way instead of polling getjob."""
        job_id = bytes.fromhex(p.job_id)
        timeout = (p.timeout or MAX_WAIT_MS) / 1000
        await self.service.wait_change(lambda: self._job_settled(job_id), timeout, ctx)
        return self.getjob(ctx, JobParams(job_id=p.job_id))

    def _job_settled(self, job_id: bytes) -> bool:
        """waitforjob's condition (checked at every tip and mempool change; the pool's
        job index keeps it from walking the pool)."""
        job = get_job(self.node.chain.state_get, job_id)
        if job is None:
            job = self.pooled_job(job_id)
            if job is None:
                return True  # unknown: getjob answers "not found" at once
        elif job.status not in (JobStatus.OPEN, JobStatus.CLAIMED):
            return True
        claimant = job.claimant if job.status == JobStatus.CLAIMED else None
        return self.pool_actions(job_id, claimant)[1] is not None

    def pooled_job(self, job_id: bytes) -> Job | None:
        """The job a JOB_SUBMIT still in our mempool will create (its id is the txid)."""
        tx = self.node.mempool.get(job_id)
        return None if tx is None else pooled_submit_job(tx)

    def pool_jobs(self) -> tuple[dict[bytes, Job], set[bytes], dict[bytes, set[bytes]]]:
        """Our mempool's market view: the jobs its submits will create, by id; the ids
        of jobs that a claim in it goes for; and the senders of its reclaims, by job."""
        pool = self.node.mempool
        submits: dict[bytes, Job] = {}
        claimed: set[bytes] = set()
        reclaims: dict[bytes, set[bytes]] = {}
        for tx in pool.market_txs(queued_submits=False):  # indexed: not the whole pool
            if tx.kind == TxKind.JOB_CLAIM and len(tx.payload) == 32:
                claimed.add(tx.payload)
            elif tx.kind == TxKind.JOB_RECLAIM and len(tx.payload) == 32:
                reclaims.setdefault(tx.payload, set()).add(tx.sender)
            elif tx.kind == TxKind.JOB_SUBMIT:
                job = pooled_submit_job(tx)
                if job is not None:
                    submits[tx.txid] = job
        return submits, claimed, reclaims

    def pool_actions(
        self, job_id: bytes, claimant: bytes | None
    ) -> tuple[list[tuple[bytes, bytes, int]], dict[str, str] | None]:
        """What our mempool holds for the job: its claims as (txid, sender, bond), by
        txid (with ``claimant`` None: the job is not claimed on chain; else none), and
        a JOB_COMMIT from ``claimant`` (the claim is on chain) or, with None, from a
        sender whose claim of the job waits there too (miners claim and commit before
        anything confirms). A buyer fetches and checks C without waiting for blocks:
        C is checked against A and B anyway."""
        claims: list[tuple[bytes, bytes, int]] = []
        commits: list[tuple[bytes, bytes, JobCommit]] = []
        for tx in self.node.mempool.job_actions(job_id):  # indexed: not the whole pool
            txid = tx.txid
            if tx.kind not in (TxKind.JOB_COMMIT, TxKind.JOB_CLAIM):
                continue
            if claimant is None and tx.kind == TxKind.JOB_CLAIM and tx.payload == job_id:
                claims.append((txid, tx.sender, tx.amount))
                continue
            try:
                commit = decode_job_payload(tx.kind, tx.payload)
            except JobPayloadError:
                continue
            if isinstance(commit, JobCommit) and commit.job_id == job_id:
                commits.append((txid, tx.sender, commit))
        claims.sort()
        committers = {sender for _, sender, _ in claims} if claimant is None else {claimant}
        for txid, sender, commit in commits:
            if sender in committers:
                return claims, {
                    "txid": txid.hex(), "claimant": encode_address(self.net.hrp, sender),
                    "result_root": commit.result_root.hex(),
                    "result_url": commit.url.decode(errors="replace"),
                }  # fmt: skip
        return claims, None

    def listjobs(self, ctx: CallContext, p: ListJobsParams) -> list[Any]:
        """Compute jobs, best bounty per multiply-add first; ``status`` filters (default
        "open": jobs a claim could take now; "pending": jobs whose submit waits in our
        mempool, which a claim can take too; "unsettled": open, claimed and committed;
        "recent": committed in the last RECENT_COMMIT_BLOCKS blocks, whatever their
        status now; "all": every job on chain); ``claimant``: only the jobs that address
        holds (a miner finds its own after a restart). Open and pending jobs carry
        ``pending_claims`` while claims of them wait in our mempool."""
        chain = self.node.chain
        clock = chain.clock_after(chain.tip)
        mtp = clock.mtp
        claimant = None if p.claimant is None else self.address(p.claimant, "claimant")
        out = []
        if p.status == "pending":
            if claimant is not None:
                return []  # a pooled submit has no claimant yet
            for job_id, job in self.pool_jobs()[0].items():
                if mtp < job.expires:
                    out.append(self.pending_job_info(job_id, job))
                    self._add_pool_actions(out[-1], job_id, job)
            out.sort(key=lambda j: -j["bounty_per_multiply_add"])
            return out[: p.limit]
        jobs: Iterable[tuple[bytes, Job]]
        if p.status == "recent":  # the chain's tally knows them: no walk of every job
            recent = chain.job_tally.committed_after(chain.tip.height - RECENT_COMMIT_BLOCKS)
            jobs = [(jid, job) for jid in recent if (job := get_job(chain.state_get, jid))]
        elif p.status in ("open", "unsettled", *(s.name.lower() for s in HELD_STATUSES)):
            jobs = live_jobs(chain.db.iter_state, chain.state_get)
        else:
            jobs = self.all_jobs()
        for job_id, job in jobs:
            if claimant is not None and job.claimant != claimant:
                continue
            if p.status == "open" and not (job.status == JobStatus.OPEN and mtp < job.expires):
                continue
            if p.status in STATUS_NAMES and job.status.name.lower() != p.status:
                continue
            out.append(self.job_info(job_id, job, clock))
            if p.status == "open":
                self._add_pool_actions(out[-1], job_id, job)
        out.sort(key=lambda j: -j["bounty_per_multiply_add"])
        return out[: p.limit]

    def getmarketinfo(self, ctx: CallContext, p: NoParams) -> dict[str, Any]:
        """The market at a glance: jobs by status, open demand, the going bounty per
        multiply-add, the share of the network's work that went to paid products over
        the last RATE_BLOCKS blocks, and the expected wait for new work."""
        chain = self.node.chain
        recs = list(itertools.islice(chain.ancestors(chain.tip.hash), RATE_BLOCKS + 1))
        since = recs[-1].height
        span = max(1, recs[0].timestamp - recs[-1].timestamp)
        tally = chain.job_tally  # jobs by status, recent commits: no walk of every job
        counts = {"pending": 0, **{s.name.lower(): n for s, n in tally.counts.items()}}
        demand = bounty = busy = delivered = 0
        open_rates: list[float] = []
        paid_rates: list[float] = []
        pooled, claimed, reclaims = self.pool_jobs()
        counts["pending"] = len(pooled)

        def claimable_now(jid: bytes, job: Job) -> bool:  # no claim, not being cancelled
            return jid not in claimed and job.buyer not in reclaims.get(jid, ())

        claimable = [job for jid, job in pooled.items() if claimable_now(jid, job)]
        for jid, job in live_jobs(chain.db.iter_state, chain.state_get):
            if job.status == JobStatus.OPEN:
                if claimable_now(jid, job):
                    claimable.append(job)
                demand += job.multiply_adds
                bounty += job.bounty
                open_rates.append(job.bounty / job.multiply_adds)
            elif job.status == JobStatus.CLAIMED:  # (a committed job's C is done)
                busy += job.multiply_adds
        for jid in tally.committed_after(since):
            job = get_job(chain.state_get, jid)
            if job is not None and job.status in (JobStatus.COMMITTED, JobStatus.PAID):
                delivered += job.multiply_adds
                paid_rates.append(job.bounty / job.multiply_adds)
        rate = self.network_rate()
        rates = open_rates or paid_rates
        tip_age = max(0, int(time.time()) - chain.tip.timestamp)
        spacing = self.net.difficulty.target_spacing_s
        stale_after = max(STALE_TIP_MIN_S, STALE_TIP_SPACINGS * spacing)
        waits = rate > 0 and tip_age <= stale_after
        return {
            "jobs": counts,
            "open_demand_multiply_adds": demand,
            "claimable": len(claimable),
            "claimable_multiply_adds": sum(job.multiply_adds for job in claimable),
            "open_bounty": bounty,
            "in_progress_multiply_adds": busy,
            "going_bounty_per_multiply_add": statistics.median(rates) if rates else 0.0,
            "network_multiply_adds_per_s": rate,
            "delivered_multiply_adds": delivered,
            "useful_share": min(1.0, delivered / (rate * span)) if rate > 0 else 0.0,
            "window_blocks": len(recs) - 1,
            "tip_age_s": tip_age,
            "expected_wait_s": (demand + busy) / rate if waits else None,
            "params": dataclasses.asdict(self.net.market),
        }
