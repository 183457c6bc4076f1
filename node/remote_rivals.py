"""Other miners' claims of the jobs the standalone miner claims (node/remote_market.py),
as the node's pool shows them. Of a job's standing claims there a block gives the job
to the lowest txid (chain/jobs.lowest_claims); ours is computed while still pooled once
it is that one and the rival wait old: rival claims sent at the same moment have
reached the node by then (RIVAL_WAIT_S, longer while rival claims lately arrived later:
each one that crossed ours is a sample, measured as the in-node miner measures it,
node/claim_order.Crossings)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from consensus.params import MarketParams
from node.claim_order import MAX_RIVAL_WAIT_S, Crossings, lowest_standing
from wallet.rpc import RpcClient, RpcError

UNCLAIMED_STATUSES = ("open", "pending")  # on chain, or a submit in the node's pool
# A young pooled claim's job is read for rival claims at most this often (rounds come
# up to 20 a second): a crossing is timed to within a market round, late rather than
# early, which can only lengthen the wait it feeds (0.1-1 s).
RIVAL_READ_EVERY_S = 0.1


class PooledClaim(Protocol):
    """What the watch reads and notes of a claim of ours (node/remote_market.RemoteHeld)."""

    job: dict[str, Any]
    claimed_at: float
    claim_txid: bytes
    unrivalled: bool  # no rival claim can be on its way: computed without the rival wait
    rivals_seen: set[bytes]  # others' claims noted (txids)
    rivals_read: float  # when ``watch`` last read the job


class RivalWatch:
    """Others' claims of jobs, for the miner at ``address``; crossings go to ``crossings``."""

    def __init__(self, address: str, market: MarketParams, crossings: Crossings) -> None:
        self.address = address
        self.market = market
        self.crossings = crossings

    def claims(self, job: dict[str, Any]) -> list[tuple[bytes, int]]:
        """Others' claims of ``job`` waiting in the node's pool, as (txid, bond)."""
        return [
            (bytes.fromhex(c["txid"]), int(c["bond"]))
            for c in job.get("pending_claim_txs", ()) if c["claimant"] != self.address
        ]  # fmt: skip

    def standing(self, job: dict[str, Any]) -> bytes | None:
        """The lowest txid among others' pooled claims of ``job`` that escrow its bond."""
        need = self.market.bond_for(int(job["bounty"]))
        return lowest_standing(self.claims(job), need)

    def note(self, held: PooledClaim, job: dict[str, Any], now: float) -> None:
        """Others' standing claims of a job we claimed, seen for the first time (not in
        the listing we claimed from): each crossed ours, a sample of how late rival
        claims arrive (counted from our claim: one that came between our listing and
        our claim, a few ms, counts as a little late)."""
        need = self.market.bond_for(int(job["bounty"]))
        for txid, bond in self.claims(job):
            if txid not in held.rivals_seen:
                held.rivals_seen.add(txid)
                if bond >= need:
                    self.crossings.crossed(now - held.claimed_at, now)

    def watch(self, rpc: RpcClient, held: Mapping[str, PooledClaim]) -> None:
        """Read each job whose claim of ours is still pooled and younger than the
        longest rival wait, for rival claims that crossed ours: a claim that arrives
        after we handed the job out is the sample that matters most."""
        now = time.monotonic()
        for job_id, claim in list(held.items()):
            young = now - claim.claimed_at <= MAX_RIVAL_WAIT_S
            if not young or claim.job["status"] not in UNCLAIMED_STATUSES:
                continue
            if now - claim.rivals_read < RIVAL_READ_EVERY_S:
                continue  # rounds come up to 20 a second: a read each is the node's time
            claim.rivals_read = now
            try:
                job = rpc.call("getjob", job_id)
            except RpcError:
                continue
            self.note(claim, job, now)

    def first_in_pool(self, held: PooledClaim, job: dict[str, Any]) -> bool:
        """Our claim waits in the node's pool with the lowest txid of the job's standing
        claims there: the one a block gives the job to."""
        pooled = {bytes.fromhex(c["txid"]) for c in job.get("pending_claim_txs", ())}
        rival = self.standing(job)
        return held.claim_txid in pooled and (rival is None or held.claim_txid < rival)

    def may_compute(self, held: PooledClaim, job: dict[str, Any], now: float) -> bool:
        """Our claim of ``job`` (as just read) waits in the pool as the one a block
        gives the job to, and is the rival wait old, or ``unrivalled``."""
        return (
            job["status"] in UNCLAIMED_STATUSES
            and self.first_in_pool(held, job)
            and (held.unrivalled or now - held.claimed_at >= self.crossings.rival_wait(now))
        )
