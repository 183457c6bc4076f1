"""The compute market for the standalone `pouw miner`: claims, operands, commits and
reveals over a node's JSON-RPC and blob endpoint.

The in-node miner (node/market_miner.py) reads the chain directly; this one sees the
chain only through RPC (getbestblockhash, listjobs, getjob, getaccount,
getblockchaininfo, sendrawtransaction) and signs with its own key. The flow is the
same: hold a few claimed jobs (open on chain, or still a submit in the node's pool),
fetch their A and Bᵀ (every row checked against hA, hB), hand each claimed job to a
worker exactly once with Bᵀ as it came and the leaves checked on the way in, so that
the worker neither transposes B nor hashes the operands again (node/remote_miner.py:
the product carries the block lottery),
upload C to the node's blob endpoint so that the node serves it, commit, and answer
probes from the node's copy of C; jobs the chain says our key holds are taken back
after a restart (node/remote_results.py: the results' side).

Delivery before confirmation, as in the node: a claim still in the node's pool is
computed once it is the lowest txid among the job's standing claims there and the
rival wait old (node/remote_rivals.py), or without that wait when no rival claim can be
on its way (we know no other miner, or we claimed in our turn as the designated miner,
before the next one's came); its template names no job (the product is mined as the
miner's own work), and the commit follows the claim in nonce order, so a buyer can
fetch and check C before either confirms. Once the claim is on chain the template
names the job. Jobs that another's standing claim in the pool already goes for are
left alone (a claim escrowing too small a bond fails on its own and takes no job).

Several standalone miners take turns (node/claim_order): each notes the other miners it
sees claiming (pooled claims in ``listjobs``, claimants of the jobs in flight on each
new tip), and a batch of fresh jobs is dealt out one per miner, the same way on every
miner. A fresh job is claimed by its designated miner at once, by the next one a turn
(TURN_STEP_S) later if it is still unclaimed then, and only by a miner with an idle
worker: a product's parts spread over idle miners instead of queueing on the first one
that polled. Once a job is no longer fresh (``horizon``), busy miners take it in turns
too, up to ``claim_ahead`` jobs in hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.address import AddressError, address_from_pubkey, decode_address, encode_address
from chain.keys import PrivateKey
from chain.network import Network
from compute.blob_fetch import FetchReport, fetch_blob
from compute.blobs import MAX_UPLOAD, NPY_HEADER_ROOM, BlobError
from compute.fast_commit import leaf_bytes_to_words
from node.claim_order import (
    LOAD_WINDOW_S,
    PENDING_MIN_LEFT_S,
    RETRY_FAILED_S,
    Crossings,
    Sightings,
    claimable_after,
    dealing_order,
    designated,
    horizon,
    price_band,
)
from node.remote_results import (
    CLAIM_CONFIRM_S,
    HELD_STATUSES,
    LAPSED_UNCOMMITTED,
    LATE_C_KEEP_S,
    RemoteHeld,
    ResultDelivery,
)
from node.remote_rivals import UNCLAIMED_STATUSES, RivalWatch
from wallet.job_terms import DEFAULT_JOB_FEE, MINER_TXS_PER_PART
from wallet.job_txs import claim_tx
from wallet.rpc import NOT_FOUND, RpcClient, RpcError

log = logging.getLogger("pouw.market")

# Our jobs in flight listed at each tip: listjobs' own cap. A miner holds claim_ahead
# claimed jobs and the commits of one challenge window.
OURS_LIMIT = 10_000
# The market's round (claims, hand-outs): a fresh job waits at most this long for a
# claim from an idle miner; each round costs the node a listjobs of the jobs in flight.
MARKET_ROUND_S = 0.25
# Between one miner's turn for a fresh job and the next one's: two market rounds, since
# miners see a job up to a round apart and the designated miner's claim must reach the
# node before the next miner looks again.
TURN_STEP_S = 2 * MARKET_ROUND_S
# New jobs seen while other miners are known: list again after this, so that a buyer's
# batch of submits (sent a few ms apart) is dealt out as one batch on every miner.
BATCH_SETTLE_S = 0.02
# A designated miner's claim this soon after it first listed the job comes before the
# next miner's turn even if that miner listed the job a whole round earlier: no rival
# claim is coming.
FIRST_TURN_S = TURN_STEP_S - MARKET_ROUND_S


class RemoteMarket(ResultDelivery):
    def __init__(
        self,
        rpc: RpcClient,
        network: Network,
        key: PrivateKey,
        blob_url: str,
        blob_auth: tuple[str, str],
        workers: int = 1,
        min_bounty_per_mac: float = 0.0,
        fee: int = DEFAULT_JOB_FEE,
    ) -> None:
        self.rpc = rpc
        self.network = network
        self.key = key
        raw_address = address_from_pubkey(key.public_key)
        self.address = encode_address(network.hrp, raw_address)
        self.blob_url = blob_url
        self._blob_auth = blob_auth
        self.workers = workers
        self.claim_ahead = 2 * workers  # one computing per worker, the next one fetched
        self.min_bounty_per_mac = min_bounty_per_mac
        self.fee = fee
        self.held: dict[str, RemoteHeld] = {}
        self.products = 0
        self.recomputed = 0
        self.commits = 0
        self.bonds_lost = 0  # claims that lapsed, products refunded (each logged)
        self.job_multiply_adds = 0  # of the job products computed
        # job id -> multiply-adds, while a worker has it (until it delivers or is gone,
        # even if the job was dropped meanwhile: no claim of it is sent then)
        self._in_work: dict[str, int] = {}
        self._computed: set[str] = set()
        self._late_c: dict[str, tuple[bytes, float]] = {}  # C that ended too late
        self._failed: dict[str, float] = {}
        self._tip: str | None = None
        self._sightings = Sightings(raw_address)  # other miners seen claiming
        self._crossings = Crossings()  # how late rival claims of our jobs reach the node
        self._rivals = RivalWatch(self.address, network.market, self._crossings)
        # job id -> (first listed, price band): the jobs dealt out (listed now, or fresh)
        self._seen: dict[str, tuple[float, int]] = {}
        self._taken_fresh: dict[float, int] = {}  # batch -> our claims while it was fresh

    @property
    def blob_auth(self) -> tuple[str, str]:  # type: ignore[override]
        """The node's credentials for its blob endpoint: the RPC client's as they are now
        (a cookie read again after the node restarted), else those given."""
        current = getattr(self.rpc, "credentials", lambda: None)()
        return current if current is not None else self._blob_auth

    def poll(self) -> None:
        """Each market round: on a new tip forget ended or lost jobs and answer probes;
        read our young pooled claims' jobs for rivals; then claim more."""
        for step in self.round_steps():
            step()

    def round_steps(self) -> list[Callable[[], None]]:
        """``poll`` in steps, each a few RPC calls: a caller that shares the market
        with a worker's delivery takes its lock for one step at a time, so that a
        finished product is committed between steps, not after the whole round."""
        return [self._check_tip, self._redeliver, self._watch_rivals, self._claim_more]

    def _watch_rivals(self) -> None:
        self._rivals.watch(self.rpc, self.held)  # our young pooled claims' jobs

    def _check_tip(self) -> None:
        tip = str(self.rpc.call("getbestblockhash"))
        if tip != self._tip:
            self._refresh()
            self._claim_late_jobs()
            self._tip = tip  # (a round cut short by the node is done again next round)

    def _saw(self, address: str, now: float) -> None:
        try:
            raw = decode_address(address, self.network.hrp)
        except AddressError:
            return
        if self._sightings.saw(raw, now):
            log.info("miner %s claims jobs too: taking turns with it", address)

    def _refresh(self) -> None:
        now = time.monotonic()
        for job in self.rpc.call("listjobs", "unsettled"):  # the miners with jobs in flight
            if job.get("claimant"):
                self._saw(job["claimant"], now)
        # ours in one call (the node filters them), not a getjob each: a challenge
        # window's commits and more
        on_chain = {
            j["job_id"]: j for j in self.rpc.call("listjobs", "unsettled", OURS_LIMIT, self.address)
            if j["status"] in HELD_STATUSES
        }  # fmt: skip
        self._take_back(list(on_chain.values()), now)
        for job_id, held in list(self.held.items()):
            try:
                job = on_chain.get(job_id) or self.rpc.call("getjob", job_id)
            except RpcError:
                self.held.pop(job_id)
                continue
            ours = job.get("claimant") == self.address and job["status"] in HELD_STATUSES
            if not ours and self._ended(job_id, held, job):  # paid, or our bond lost (said)
                self.held.pop(job_id)  # (a worker that still has it keeps it in _in_work)
                continue
            if not ours:
                # our claim is on its way: sent lately, or pooled (a reorg took it back)
                on_its_way = now - held.claimed_at < CLAIM_CONFIRM_S or self.address in job.get(
                    "pending_claimants", ()
                )  # fmt: skip
                if job["status"] in UNCLAIMED_STATUSES and on_its_way:
                    continue
                log.info("job %s: %s", job_id[:16], job["status"] if held.computed else "lost")
                self.held.pop(job_id)
                continue
            held.job = job
            if job["status"] == "claimed" and not held.commit_sent:
                self._lapsed_now(job_id, held, LAPSED_UNCOMMITTED)  # (said once)
            if job["status"] == "committed" and not held.restore:
                held.unsent = None  # the commit is on chain: C is the node's to keep
            if job["status"] == "committed" and "probe" in job:
                self._reveal(job_id, held, job["probe"])

    def _claim_more(self) -> None:
        waiting = sum(not (h.computed or h.ended) for h in self.held.values())
        waiting += sum(jid not in self.held for jid in self._in_work)  # (a worker's, still)
        if waiting >= self.claim_ahead:
            return
        listed = self._list_unclaimed()
        if self._sightings.others(time.monotonic()) and any(
            j["job_id"] not in self._seen for j in listed
        ):
            time.sleep(BATCH_SETTLE_S)
            listed = self._list_unclaimed()
        now = time.monotonic()
        self._note_listed(listed, now)
        jobs = [
            j for j in listed
            if j["job_id"] not in self.held and self._failed.get(j["job_id"], 0.0) <= now
            and j["job_id"] not in self._in_work  # a worker still has it (slow, or hung)
            and j["job_id"] not in self._late_c  # its C is done: claimed again with it
            and j["bounty_per_multiply_add"] >= self.min_bounty_per_mac
            and int(j["bounty"]) >= MINER_TXS_PER_PART * self.fee  # not paid at a loss
            # C must reach the node in one upload (a 413 would cost the bond)
            and int(j["m"]) * int(j["n"]) * 4 + NPY_HEADER_ROOM <= MAX_UPLOAD
            and self._rivals.standing(j) is None  # another miner's claim takes it
            # a claim of our key, pooled, that we do not hold (an earlier process's, killed):
            # claiming again would fail one of the two (its fee lost); taken back on chain
            and self.address not in j.get("pending_claimants", ())
            and not j.get("pending_reclaim")  # its buyer is cancelling it
        ]  # fmt: skip
        if any(j["status"] == "pending" for j in jobs):
            mtp = int(self.rpc.call("getblockchaininfo")["mediantime"])
            jobs = [
                j for j in jobs if j["status"] == "open" or j["expires"] > mtp + PENDING_MIN_LEFT_S
            ]  # fmt: skip
        jobs.sort(key=lambda j: (
            -j["bounty_per_multiply_add"],
            hashlib.sha256((self.address + j["job_id"]).encode()).digest(),
        ))  # fmt: skip
        for job, unrivalled in self._our_turn(jobs, waiting, now)[: self.claim_ahead - waiting]:
            bond = self.network.market.bond_for(int(job["bounty"]))
            job_id = bytes.fromhex(job["job_id"])
            tx = claim_tx(self.network, self.key, self._nonce(), job_id, bond, fee=self.fee)
            if self._send(tx, f"claim of {job['job_id'][:16]}"):
                seen = {txid for txid, _ in self._rivals.claims(job)}  # before ours: no crossing
                held = RemoteHeld(
                    job, time.monotonic(), unrivalled, claim_txid=tx.txid, rivals_seen=seen
                )
                self.held[job["job_id"]] = held
                self._crossings.claimed(held.claimed_at)
                batch = self._seen[job["job_id"]][0]
                if now - batch < self._fresh_for(now):  # a fresh job taken
                    self._taken_fresh[batch] = self._taken_fresh.get(batch, 0) + 1
                pooled = ", its submit still pooled" if job["status"] == "pending" else ""
                log.info("claimed job %s (%dx%dx%d, bond %d)%s", job["job_id"][:16],
                         job["m"], job["k"], job["n"], bond, pooled)  # fmt: skip

    def _claim_late_jobs(self) -> None:
        """On a new tip: the jobs whose C we computed after our first claim lapsed
        (``_keep_late``) that are open again are claimed again, and that C committed
        right behind the claim (a fee is worth more than the product); one another
        miner took, or that ended, is let go."""
        now = time.monotonic()
        for job_id, (root, kept_at) in list(self._late_c.items()):
            if job_id in self.held or now - kept_at > LATE_C_KEEP_S:
                self._late_c.pop(job_id)  # (held again, or never reopened for us)
                continue
            try:
                job = self.rpc.call("getjob", job_id)
            except RpcError as exc:
                if exc.code == NOT_FOUND:  # (gone with a reorg of its submit)
                    self._late_c.pop(job_id)
                continue
            if job["status"] == "claimed" and job.get("claimant") == self.address:
                continue  # our lapsed claim: the timer reopens the job at a later block
            if job["status"] != "open" or job.get("pending_reclaim") or (
                self._rivals.standing(job) is not None
            ):  # another miner's, ended, or its buyer cancelling it
                self._late_c.pop(job_id)
                continue
            held_c = self._node_has_blob(root)
            if held_c is not True:
                if held_c is False:  # deleted: computed again if claimed again
                    self._late_c.pop(job_id)
                continue  # (None: the blob endpoint does not answer; the next tip asks)
            if self._claim_late(job_id, job, root, kept_at):
                self._late_c.pop(job_id)

    def _claim_late(self, job_id: str, job: dict[str, Any], root: bytes, kept_at: float) -> bool:
        """Claim ``job`` again and commit the C of ``root`` behind the claim; False if
        the claim was not taken (tried again at the next tip)."""
        bond = self.network.market.bond_for(int(job["bounty"]))
        tx = claim_tx(self.network, self.key, self._nonce(), bytes.fromhex(job_id), bond,
                      fee=self.fee)  # fmt: skip
        if not self._send(tx, f"claim of {job_id[:16]} (again)"):
            return False
        now = time.monotonic()
        held = RemoteHeld(
            job, now, claim_txid=tx.txid, dispatched=True, computed=True, result_root=root,
            c_on_node=True, uploaded_at=kept_at,
        )  # fmt: skip
        self.held[job_id] = held
        self._crossings.claimed(now)
        log.info("claimed job %s again: its C is done", job_id[:16])
        self._send_result(job_id, held)
        return True

    def _list_unclaimed(self) -> list[dict[str, Any]]:
        return [j for status in UNCLAIMED_STATUSES for j in self.rpc.call("listjobs", status)]

    def _fresh_for(self, now: float) -> float:
        """How long a job counts as fresh: every miner's turn (one turn when alone)."""
        return max(TURN_STEP_S, horizon(self._sightings.others(now), TURN_STEP_S))

    def _note_listed(self, listed: list[dict[str, Any]], now: float) -> None:
        """Note the miners whose claims wait in the pool, and when each job was first
        listed. The jobs first listed in one round are a batch, dealt out on their own;
        a job stays in its batch after it leaves the list (claimed on chain), so that
        every miner deals the same batch whoever claimed first."""
        for j in listed:
            for claimant in j.get("pending_claimants", ()):
                self._saw(claimant, now)
            if j["job_id"] not in self._seen:
                band = price_band(int(j["bounty"]), j["m"] * j["k"] * j["n"])
                self._seen[j["job_id"]] = (now, band)
        batches = {self._seen[j["job_id"]][0] for j in listed}  # with a job still listed
        fresh_for = self._fresh_for(now)
        self._seen = {
            jid: seen for jid, seen in self._seen.items()
            if seen[0] in batches or now - seen[0] < fresh_for
        }  # fmt: skip
        live = {first for first, _ in self._seen.values()}
        self._taken_fresh = {b: n for b, n in self._taken_fresh.items() if b in live}

    def _our_turn(
        self, jobs: list[dict[str, Any]], waiting: int, now: float
    ) -> list[tuple[dict[str, Any], bool]]:
        """The jobs we may claim now (module docstring), each with whether no rival
        claim can be on its way: a fresh job in our turn and only with a worker idle
        (unrivalled when we know no other miner, or in the designated miner's turn
        before the next one's comes; knowing no other, at most one per worker from a
        batch, so that a miner we do not know yet gets a turn and is seen); an older
        one in our turn after the horizon."""
        others = self._sightings.others(now)
        batches: dict[float, list[tuple[bytes, int]]] = {}
        for jid, (first, band) in self._seen.items():
            batches.setdefault(first, []).append((bytes.fromhex(jid), band))
        fresh_for = self._fresh_for(now)
        after: dict[bytes, float] = {}
        miners = [self._sightings.own, *others]
        dealt: list[tuple[float, bytes]] = []  # (batch, its miner) of each fresh job
        for first in sorted(batches):
            batch = batches[first]
            if now - first >= fresh_for or not others:
                after.update(claimable_after(self._sightings.own, others, batch, step=TURN_STEP_S))
                continue
            loads: dict[bytes, int] = {}  # as the in-node miner counts its claims
            for when, miner in dealt:
                if when > first - LOAD_WINDOW_S:
                    loads[miner] = loads.get(miner, 0) + 1
            after.update(claimable_after(self._sightings.own, others, batch, step=TURN_STEP_S,
                                         loads=loads))  # fmt: skip
            for miner in designated(miners, dealing_order(batch), loads).values():
                dealt.append((first, miner))
        idle = self.workers - waiting  # fresh jobs: one per idle worker
        ours = []
        for j in jobs:
            age = now - self._seen[j["job_id"]][0]
            turn = after[bytes.fromhex(j["job_id"])]
            if age < fresh_for:
                listed_at = self._seen[j["job_id"]][0]
                alone_full = not others and self._taken_fresh.get(listed_at, 0) >= self.workers
                if idle > 0 and age >= turn and not alone_full:
                    first_turn = turn == 0.0 and age < FIRST_TURN_S
                    ours.append((j, not others or first_turn))
                    idle -= 1
            elif age >= fresh_for + turn:
                ours.append((j, not others))
        return ours

    def _fetch(self, job_id: str, held: RemoteHeld) -> bool:
        if held.a is not None and held.bt is not None:
            return True
        job = held.job
        urls = [job.get("data_url", ""), self.blob_url]
        reports = (FetchReport(), FetchReport())

        async def both() -> list[npt.NDArray[np.integer]]:  # A and B^T at once
            return list(await asyncio.gather(
                fetch_blob(urls, bytes.fromhex(job["h_a"]), "a", job["m"], job["k"],
                           report=reports[0]),
                fetch_blob(urls, bytes.fromhex(job["h_b"]), "bt", job["n"], job["k"],
                           report=reports[1]),
            ))  # fmt: skip

        try:
            a, bt = asyncio.run(both())
        except BlobError as exc:
            log.warning("job %s: operands unavailable: %s", job_id[:16], exc)
            self._failed[job_id] = time.monotonic() + RETRY_FAILED_S
            return False
        held.a = np.asarray(a, dtype=np.int8)
        held.bt = np.ascontiguousarray(bt, dtype=np.int8)
        rows, cols = reports[0].leaves, reports[1].leaves
        if rows is not None and cols is not None:  # B's columns are B^T's rows
            held.leaves = (leaf_bytes_to_words(b"".join(rows)), leaf_bytes_to_words(b"".join(cols)))
        return True

    def prefetch(self) -> None:
        """Fetch the operands of the oldest claimed job still without them while the
        workers are busy: a worker that comes free finds them in hand."""
        now = time.monotonic()
        for job_id, held in sorted(self.held.items(), key=lambda kv: kv[1].claimed_at):
            if held.dispatched or held.ended or held.a is not None or (
                self._failed.get(job_id, 0.0) > now
            ):  # fmt: skip
                continue
            self._fetch(job_id, held)
            return

    def next_job(self) -> tuple[str, RemoteHeld, bool] | None:
        """A claimed job not yet handed out, with its operands in hand, and whether a
        template may name it (our claim is on chain); a claim still in the pool counts
        once it is the lowest standing one of the job there and the rival wait old, or
        at once if unrivalled (see the module)."""
        # a C to serve again after the claimed jobs, whose deadlines run
        for job_id, held in sorted(self.held.items(), key=lambda kv: (kv[1].restore,
                                                                     kv[1].claimed_at)):
            if held.dispatched or held.ended or not self._fetch(job_id, held):
                continue
            try:
                job = self.rpc.call("getjob", job_id)
            except RpcError:
                continue
            now = time.monotonic()
            held.rivals_read = now
            self._rivals.note(held, job, now)
            ours = job.get("claimant") == self.address
            named = ours and job["status"] == "claimed"
            if named:
                held.job = job
                if self._lapsed_now(job_id, held, LAPSED_UNCOMMITTED):
                    continue  # too late: computing it would not save the bond
            pooled = self._rivals.may_compute(held, job, now)
            restore = held.restore and ours and job["status"] == "committed"  # C to serve again
            if not (named or pooled or restore):
                continue
            held.dispatched = True
            held.job = job
            self._in_work[job_id] = job["m"] * job["k"] * job["n"]
            return job_id, held, named
        return None

    def next_computable_in(self) -> float:
        """Seconds until a claim of ours still in the pool, with its operands in hand,
        is the rival wait old (``next_job`` may then hand it out); inf if none waits."""
        now = time.monotonic()
        rival_wait = self._crossings.rival_wait(now)
        waits = [
            h.claimed_at + rival_wait - now
            for h in self.held.values()
            if not (h.dispatched or h.unrivalled) and h.a is not None
            and h.claimed_at + rival_wait > now
        ]  # fmt: skip
        return max(0.0, min(waits, default=math.inf))

    def release(self, job_id: str) -> None:
        """The worker computing this job is gone: hand the job out again (its operands
        are still in hand)."""
        self._in_work.pop(job_id, None)
        held = self.held.get(job_id)
        if held is not None and not held.computed:
            held.dispatched = False

    def line(self) -> str:
        """The market's part of the status line (totals since the start)."""
        return (
            f"paid jobs: {self.products} products, {self.job_multiply_adds} multiply-adds, "
            f"{self.commits} committed, {self.recomputed} recomputed"
            + (f", {self.bonds_lost} bonds lost" if self.bonds_lost else "")
        )
