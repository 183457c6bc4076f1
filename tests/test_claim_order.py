"""node/claim_order: every miner computes the same turns for fresh jobs and for a
backlog."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from node.claim_order import (
    ALONE_AFTER_S,
    BACKLOG_STEP_S,
    FALLBACK_STEP_S,
    LATENESS_SAMPLES,
    MAX_LATENESS_S,
    MAX_SIGHTINGS,
    Sightings,
    claimable_after,
    designated,
    horizon,
    rank_of,
)

MINERS = [hashlib.sha256(bytes([i])).digest()[:20] for i in range(5)]
JOBS = [hashlib.sha256(b"job" + bytes([i])).digest() for i in range(12)]


def _bare_miner(folder: Path, key: Any) -> Any:
    """A market miner with no chain or pool behind it: its claim turns alone."""
    from types import SimpleNamespace

    from compute.blobs import BlobStore
    from node.market_miner import MarketMiner

    return MarketMiner(
        None,  # type: ignore[arg-type]
        BlobStore(folder),
        SimpleNamespace(key=key),  # type: ignore[arg-type]
        lambda tx: None,
        lambda address: 0,
    )


def _miner_over_one_open_job(tmp_path: Path) -> tuple[Any, Any, list[Any], Any]:
    """A market miner on a real chain holding one open job of bounty 10**6, whose pool
    is a list the test fills: (network, the job's submit, the pool, the miner)."""
    from chain.keys import devnet_key
    from compute.blobs import BlobStore
    from node.market_claims import MarketSettings
    from node.market_miner import MarketMiner
    from tests.chainutil import mine_block
    from tests.marketutil import market_devnet, new_chain, operands
    from wallet.job_txs import submit_tx

    net = market_devnet()
    chain = new_chain(tmp_path / "chain", net)
    a, b = operands(64, 128, 64)
    submit = submit_tx(net, devnet_key(0), 0, a, b, 10**6, chain.mtp_after(chain.tip) + 500)
    chain.clock.now = chain.tip_header.timestamp + 1  # type: ignore[attr-defined]
    assert chain.process_block(mine_block(chain, [submit])).accepted
    pool: list[Any] = []
    miner = MarketMiner(
        chain, BlobStore(tmp_path / "blobs"), MarketSettings(key=devnet_key(1)),
        lambda tx: None, lambda address: 0, pool_txs=lambda: pool,
    )  # fmt: skip
    return net, submit, pool, miner


def test_a_batch_spreads_over_the_miners_and_every_miner_agrees() -> None:
    three = MINERS[:3]
    first = designated(three, JOBS[:3])
    assert sorted(first.values()) == sorted(three)  # one part each
    six = designated(three, JOBS[:6])
    assert sorted(six.values()) == sorted(three * 2)
    # each miner, from its own view (itself first, others in any order), gets the same
    for me in three:
        others = [a for a in reversed(three) if a != me]
        after = claimable_after(me, others, [(j, 0) for j in JOBS[:3]])
        assert [j for j, t in after.items() if t == 0.0] == [j for j in JOBS[:3] if first[j] == me]


def test_turns_are_distinct_steps_and_a_lone_miner_waits_for_nothing() -> None:
    for job in JOBS:
        first = designated(MINERS, [job])[job]
        ranks = sorted(rank_of(m, MINERS, job, first) for m in MINERS)
        assert ranks == list(range(len(MINERS)))
    after = claimable_after(MINERS[0], MINERS[1:], [(JOBS[0], 0)])
    assert after[JOBS[0]] in {r * FALLBACK_STEP_S for r in range(len(MINERS))}
    assert claimable_after(MINERS[0], [], [(JOBS[0], 0), (JOBS[1], 3)]) == {
        JOBS[0]: 0.0, JOBS[1]: 0.0,
    }  # fmt: skip
    assert horizon([]) == 0.0 and horizon(MINERS[1:]) == len(MINERS) * FALLBACK_STEP_S


def test_better_paying_jobs_are_dealt_first() -> None:
    """The dealing order is price band first: the best-paying job goes to its lowest
    weight miner whatever its id."""
    me, other = MINERS[0], MINERS[1]
    jobs = [(JOBS[0], 0), (JOBS[1], 5)]
    mine = claimable_after(me, [other], jobs)
    theirs = claimable_after(other, [me], jobs)
    for job, _ in jobs:
        assert sorted([mine[job], theirs[job]]) == [0.0, FALLBACK_STEP_S]
    best = designated([me, other], [JOBS[1]])[JOBS[1]]
    assert (mine if best == me else theirs)[JOBS[1]] == 0.0


def test_sightings_expire_and_are_capped() -> None:
    seen = Sightings(MINERS[0])
    assert not seen.saw(MINERS[0], 0.0)  # our own claims do not count
    assert seen.alone(0.0)
    assert seen.saw(MINERS[1], 10.0)  # a miner new to us
    assert not seen.saw(MINERS[1], 11.0)
    assert not seen.alone(11.0 + ALONE_AFTER_S - 1) and seen.others(12.0) == [MINERS[1]]
    assert seen.alone(11.0 + ALONE_AFTER_S + 1)
    assert seen.saw(MINERS[1], 11.0 + ALONE_AFTER_S + 1)  # new again after a long silence
    seen = Sightings(MINERS[0])
    for i in range(MAX_SIGHTINGS + 10):
        seen.saw(i.to_bytes(20, "big"), 20.0)
    assert len(seen.others(20.0)) == MAX_SIGHTINGS


def test_a_late_claimer_gets_longer_before_the_next_miner_takes_over() -> None:
    """A miner whose designated claims reach us about 60 ms after the submit (a
    standalone `pouw miner`): the miners after it in line wait that much longer for
    its jobs; its own turn and other miners' jobs are unchanged. Its lateness is the
    median of its recent delays; slower claims (turns, backlog) and ours do not count."""
    me, late = MINERS[0], MINERS[1]
    seen = Sightings(me)
    assert seen.lateness(late) == 0.0  # nothing known: no extra wait
    seen.saw(me, 0.0, 0.01)
    for delay in (0.02, 0.06, 0.07, MAX_LATENESS_S + 0.1):  # the last: a turn, not latency
        seen.saw(late, 1.0, delay)
    seen.saw(late, 2.0)  # seen in the pool scan: no delay known
    assert seen.lateness(late) == 0.06 and seen.lateness(me) == 0.0
    for _ in range(LATENESS_SAMPLES):  # only recent claims count
        seen.saw(late, 5.0, 0.09)
    assert seen.lateness(late) == 0.09
    jobs = [(j, 0) for j in JOBS[:6]]
    plain = claimable_after(me, [late], jobs)
    waits = claimable_after(me, [late], jobs, lateness=seen.lateness)
    theirs = designated([me, late], sorted(j for j, _ in jobs))  # the dealing order
    for job, _ in jobs:
        extra = 0.09 if theirs[job] == late else 0.0
        assert waits[job] == plain[job] + extra
        assert (waits[job] == 0.0) == (theirs[job] == me)
    assert claimable_after(me, [], jobs, lateness=seen.lateness) == dict.fromkeys(JOBS[:6], 0.0)


def test_busy_miners_share_a_backlog_instead_of_each_claiming_all_of_it(tmp_path: Path) -> None:
    """Three miners that know each other see the same four open jobs (no longer fresh):
    each may claim only its share at once, together all four, none twice; the next
    miner in line gets a job BACKLOG_STEP_S later (its designated miner is gone)."""

    from chain.address import address_from_pubkey
    from chain.job_record import Job
    from chain.keys import devnet_key

    keys = [devnet_key(i) for i in (1, 2, 3)]
    addresses = [address_from_pubkey(k.public_key) for k in keys]
    job = Job(b"\0" * 20, 128, 2048, 128, b"\1" * 32, b"\2" * 32, 500_000, 10**9, 1)
    backlog = [(j, job) for j in JOBS[:4]]
    now = 1000.0
    shares = []
    for key, me in zip(keys, addresses, strict=True):
        miner = _bare_miner(tmp_path / me.hex(), key)
        for other in addresses:
            miner._sightings.saw(other, now)  # noqa: SLF001
        fresh, later = miner._turns(backlog, now)  # noqa: SLF001
        assert fresh == {}
        shares.append({j for j, _ in backlog if later.get(j, now) <= now})
        assert all(now < t <= now + 2 * BACKLOG_STEP_S for t in later.values())
        _, after_one_step = miner._turns(backlog, now + BACKLOG_STEP_S)  # noqa: SLF001
        assert after_one_step == later  # turns count from when the job was first seen
    assert all(shares) and sum(len(s) for s in shares) == 4
    assert set().union(*shares) == set(JOBS[:4])


def test_a_fresh_submit_mined_into_a_block_keeps_its_turns(tmp_path: Path) -> None:
    """Two miners, a product's two parts pooled: each part has its designated miner. A
    block takes both submits a few ms later (devnet blocks come that fast); the parts
    stay fresh with the same turns. They were dealt as a backlog once they left the
    pool, and an idle miner's quick round claimed the other miner's part at once: both
    computed it (seen with an in-node and a standalone miner)."""

    from chain.address import address_from_pubkey
    from chain.job_record import Job
    from chain.keys import devnet_key

    keys = [devnet_key(1), devnet_key(2)]
    addresses = [address_from_pubkey(k.public_key) for k in keys]
    job = Job(b"\0" * 20, 128, 2048, 128, b"\1" * 32, b"\2" * 32, 500_000, 10**9, 1)
    parts = [(j, job) for j in JOBS[:2]]
    t0 = 1000.0
    mine = []
    for key in keys:
        miner = _bare_miner(tmp_path / key.public_key.hex(), key)
        for other in addresses:
            miner._sightings.saw(other, t0)  # noqa: SLF001
        miner._pooled_submits = {j: (job, t0) for j, _ in parts}  # noqa: SLF001
        pooled, backlog = miner._turns(parts, t0 + 0.005)  # noqa: SLF001
        assert backlog == {} and sorted(pooled.values()) == [t0, t0 + FALLBACK_STEP_S]
        miner._pooled_submits = {}  # noqa: SLF001 - both submits are in a block now
        mined, backlog = miner._turns(parts, t0 + 0.03)  # noqa: SLF001
        assert mined == pooled and backlog == {}
        mine.append({j for j, t in mined.items() if t == t0})
    assert mine[0] and mine[1] and mine[0] | mine[1] == set(JOBS[:2])


def test_a_timer_round_leaves_a_quick_round_still_to_come(tmp_path: Path) -> None:
    """A submit schedules a quick round 10 ms on; a timer round that happens to run
    first (it skips fresh jobs) must not cancel it: that fresh job then waited for the
    next timer round, 0.25 s later."""

    from chain.keys import devnet_key

    miner = _bare_miner(tmp_path / "blobs", devnet_key(1))
    rounds: list[bool] = []
    miner._claim_more = lambda quick=False: rounds.append(quick)  # type: ignore[method-assign]  # noqa: SLF001
    now = 1000.0
    miner._quick_round(now + 0.01)  # noqa: SLF001 - no event loop: the mining loop runs it
    assert miner._claim_round(now) is False and rounds == [False]  # noqa: SLF001
    assert miner._quick_round_at == now + 0.01  # noqa: SLF001
    miner._claim_round(now + 0.011)  # noqa: SLF001
    assert rounds == [False, True] and miner._quick_round_at is None  # noqa: SLF001


def test_claimed_fresh_jobs_count_and_the_rest_of_a_batch_deals_the_same() -> None:
    """A miner holding a fresh job is passed over for the next one; and once some of a
    batch is claimed as dealt (claims seen before a miner's round), the rest is dealt
    to the same miners as before."""
    three = MINERS[:3]
    for start in range(0, 9, 3):
        batch = JOBS[start : start + 3]
        first = designated(three, batch)
        for claimed in ([batch[0]], [batch[1]], [batch[2]], batch[:2], [batch[0], batch[2]]):
            loads: dict[bytes, int] = {}
            for job in claimed:
                loads[first[job]] = loads.get(first[job], 0) + 1
            rest = [j for j in batch if j not in claimed]
            assert designated(three, rest, loads) == {j: first[j] for j in rest}
    for job in JOBS:  # a miner holding one is skipped while another holds none
        busy = designated(three, [job])[job]
        again = designated(three, [job], {busy: 1})[job]
        assert again != busy
        assert designated(three, [job], dict.fromkeys(three, 1))[job] == busy


def test_a_submit_right_after_a_claimed_one_goes_to_an_idle_miner(tmp_path: Path) -> None:
    """Three in-node miners. A submit arrives, its designated miner claims it; a second
    submit arrives 30 ms later whose lowest-weight miner is that same busy miner. Every
    miner deals the second to one of the two idle ones (before, the busy miner was
    designated: it left the job, and the next miner claimed it a step later)."""
    import time

    import numpy as np

    from chain.address import address_from_pubkey
    from chain.job_record import Job
    from chain.keys import devnet_key
    from chain.network import load_network
    from wallet.job_txs import claim_tx, submit_tx

    net = load_network("devnet")
    keys = [devnet_key(i) for i in (1, 2, 3)]
    addresses = [address_from_pubkey(k.public_key) for k in keys]
    a = np.ones((128, 256), np.int8)
    b = np.ones((256, 128), np.int8)
    first = submit_tx(net, devnet_key(0), 0, a, b, 10**6, 10**10)
    busy = designated(addresses, [first.txid])[first.txid]
    nonce = 1
    while True:  # a second submit whose lowest-weight miner is the busy one
        second = submit_tx(net, devnet_key(0), nonce, a, b, 10**6, 10**10)
        if designated(addresses, [second.txid])[second.txid] == busy:
            break
        nonce += 1
    claim = claim_tx(net, keys[addresses.index(busy)], 0, first.txid, 10**5)
    job = Job(b"\0" * 20, 128, 256, 128, b"\1" * 32, b"\2" * 32, 10**6, 10**10, 1)
    miners = []
    for key in keys:
        miner = _bare_miner(tmp_path / key.public_key.hex(), key)
        for other in addresses:
            miner._sightings.saw(other, time.monotonic())  # noqa: SLF001
        miner.notice_tx(first)
        miner.notice_tx(claim)
        miners.append(miner)
    time.sleep(0.03)
    designated_now = []
    for me, miner in zip(addresses, miners, strict=True):
        miner.notice_tx(second)
        arrived = miner._submit_arrived[second.txid]  # noqa: SLF001
        miner._pooled_submits = {second.txid: (job, arrived)}  # noqa: SLF001
        turns, backlog = miner._turns([(second.txid, job)], time.monotonic())  # noqa: SLF001
        assert backlog == {}
        if turns[second.txid] == arrived:
            designated_now.append(me)
    assert len(designated_now) == 1 and designated_now[0] != busy


def test_the_standalone_miner_counts_the_fresh_jobs_of_its_earlier_batches() -> None:
    """The standalone miner lists a submit in one round and the next in a later round
    (two batches): the second goes to a miner that was not dealt the first, as the
    in-node miners deal it."""
    from chain.address import address_from_pubkey
    from chain.keys import devnet_key
    from chain.network import load_network
    from node.remote_market import RemoteMarket

    net = load_network("devnet")
    keys = [devnet_key(i) for i in (1, 2, 3)]
    addresses = [address_from_pubkey(k.public_key) for k in keys]
    p0 = JOBS[0]
    busy = designated(addresses, [p0])[p0]
    p1 = next(j for j in JOBS[1:] if designated(addresses, [j])[j] == busy)
    now = 1000.0
    takers = []
    for key, me in zip(keys, addresses, strict=True):
        market = RemoteMarket(None, net, key, "", ("", ""))  # type: ignore[arg-type]
        for other in addresses:
            market._sightings.saw(other, now)  # noqa: SLF001
        market._seen = {p0.hex(): (now - 0.03, 0), p1.hex(): (now, 0)}  # noqa: SLF001
        if market._our_turn([{"job_id": p1.hex()}], 0, now):  # noqa: SLF001
            takers.append(me)
    assert len(takers) == 1 and takers[0] != busy


def test_a_submit_brings_a_later_quick_round_forward(tmp_path: Path) -> None:
    """A quick round already set for a later turn (the next rank's turn for an earlier
    job) must not hold back the round a new submit asks for: the new job's designated
    miner claimed it only at that later turn (seen: 60-140 ms late)."""
    import time

    import numpy as np

    from chain.keys import devnet_key
    from chain.network import load_network
    from node.market_claims import QUICK_ROUND_SETTLE_S
    from wallet.job_txs import submit_tx

    miner = _bare_miner(tmp_path / "blobs", devnet_key(1))
    later = time.monotonic() + 0.1
    miner._quick_round(later)  # noqa: SLF001 - our turn for an earlier job
    a, b = np.ones((128, 256), np.int8), np.ones((256, 128), np.int8)
    before = time.monotonic()
    miner.notice_tx(submit_tx(load_network("devnet"), devnet_key(0), 0, a, b, 10**6, 10**10))
    at = miner._quick_round_at  # noqa: SLF001
    assert at is not None and before + QUICK_ROUND_SETTLE_S <= at < later
    sooner = time.monotonic()  # a round already due sooner stays as it is
    miner._quick_round(sooner)  # noqa: SLF001
    miner.notice_tx(submit_tx(load_network("devnet"), devnet_key(0), 1, a, b, 10**6, 10**10))
    assert miner._quick_round_at == sooner  # noqa: SLF001


def test_a_late_claim_of_an_old_job_does_not_hide_a_fresh_claim(tmp_path: Path) -> None:
    """The count reads the newest claims first and stops at old ones: a claim of a
    backlog job (its submit seen long ago) that comes right after a fresh job's claim
    must not end the reading before that fresh claim."""
    import time

    import numpy as np

    from chain.address import address_from_pubkey
    from chain.keys import devnet_key
    from chain.network import load_network
    from wallet.job_txs import claim_tx, submit_tx

    net = load_network("devnet")
    miner = _bare_miner(tmp_path / "blobs", devnet_key(1))
    a, b = np.ones((128, 256), np.int8), np.ones((256, 128), np.int8)
    fresh, old = (submit_tx(net, devnet_key(0), n, a, b, 10**6, 10**10) for n in (0, 1))
    miner.notice_tx(old)
    miner._submit_arrived[old.txid] -= 60.0  # noqa: SLF001 - seen a minute ago
    miner.notice_tx(fresh)
    claimant = address_from_pubkey(devnet_key(2).public_key)
    miner.notice_tx(claim_tx(net, devnet_key(2), 0, fresh.txid, 10**5))
    miner.notice_tx(claim_tx(net, devnet_key(2), 1, old.txid, 10**5))
    since = time.monotonic() - 0.16
    assert miner._loads(since, set()) == {claimant: 1}  # noqa: SLF001


def test_a_job_its_buyer_is_reclaiming_is_no_candidate(tmp_path: Path) -> None:
    """An open job whose buyer's reclaim waits in the pool is not claimed (the claim
    would race the reclaim into a block and most likely compute for nothing); a
    reclaim of it from anyone else changes nothing."""
    from chain.keys import devnet_key
    from wallet.job_txs import reclaim_tx

    net, submit, pool, miner = _miner_over_one_open_job(tmp_path)
    buyer, other = devnet_key(0), devnet_key(2)
    assert [jid for jid, _ in miner.candidates()] == [submit.txid]
    pool.append(reclaim_tx(net, other, 0, submit.txid))
    assert [jid for jid, _ in miner.candidates()] == [submit.txid]
    pool.append(reclaim_tx(net, buyer, 1, submit.txid))
    assert miner.candidates() == []


def test_a_block_that_arrives_while_operands_come_is_seen_before_computing(
    tmp_path: Path,
) -> None:
    """Our pooled claim waits behind a rival's lower txid. While the operands of our
    next job download, a block takes both claims (the rival's won): both leave the
    pool, and the choice made on the old tip saw no rival any more and computed the
    job (a duplicate product, seen in bench_usefulness). The miner decides again on
    the new tip: the job is lost, nothing is computed."""
    import time

    from chain.job_record import JobStatus, get_job
    from chain.keys import devnet_key
    from compute.blobs import BlobStore
    from node.market_claims import MarketSettings
    from node.market_miner import MarketMiner
    from node.market_operands import Held
    from tests.chainutil import mine_block
    from tests.marketutil import market_devnet, new_chain, operands
    from wallet.job_txs import claim_tx, submit_tx

    net = market_devnet()
    buyer, me, rival = devnet_key(0), devnet_key(1), devnet_key(2)
    chain = new_chain(tmp_path / "chain", net)
    a, b = operands(64, 128, 64)
    expires = chain.mtp_after(chain.tip) + 500
    first, second = (submit_tx(net, buyer, i, a, b, 10**6 + i, expires) for i in range(2))
    chain.clock.now = chain.tip_header.timestamp + 1  # type: ignore[attr-defined]
    assert chain.process_block(mine_block(chain, [first, second])).accepted
    bond = net.market.bond_for(10**6 + 1)
    theirs = claim_tx(net, rival, 0, first.txid, bond)
    for fee in range(1000, 1200):
        ours = claim_tx(net, me, 0, first.txid, bond, fee=fee)
        if ours.txid > theirs.txid:
            break
    next_claim = claim_tx(net, me, 1, second.txid, bond)
    pool: list[Any] = [ours, theirs, next_claim]
    miner = MarketMiner(
        chain, BlobStore(tmp_path / "blobs"), MarketSettings(key=me),
        lambda tx: None, lambda address: 0, pool_txs=lambda: pool,
    )  # fmt: skip
    now = time.monotonic()
    job1, job2 = (get_job(chain.state_get, s.txid) for s in (first, second))
    assert job1 is not None and job2 is not None
    miner.held[first.txid] = Held(job1, now - 5, ours.txid, a=a, b=b)
    miner.held[second.txid] = Held(job2, now - 4, next_claim.txid)
    blocks = []

    async def fetch(job_id: bytes, held: Held) -> bool:
        if job_id == second.txid and not blocks:  # the block arrives meanwhile
            chain.clock.now = chain.tip_header.timestamp + 1  # type: ignore[attr-defined]
            blocks.append(mine_block(chain, [ours, theirs]))
            assert chain.process_block(blocks[0]).accepted
            pool.remove(ours), pool.remove(theirs)
        return held.a is not None

    miner.operands.fetch = fetch  # type: ignore[method-assign]
    assert asyncio.run(miner.next_work()) is None
    assert (get_job(chain.state_get, first.txid) or job1).claimant != miner.address
    assert (get_job(chain.state_get, first.txid) or job1).status is JobStatus.CLAIMED
    assert first.txid not in miner.held and miner.counters.claims_lost == 1


def test_the_rival_wait_follows_how_late_rival_claims_arrive() -> None:
    """No crossing seen: RIVAL_WAIT_S. Rival claims that reached us 0.3-0.6 s after
    ours on a quarter of our claims (blocks being validated): the wait covers all but
    UNCOVERED_SHARE of the claims, never more than MAX_RIVAL_WAIT_S; the same crossings
    on only 5 % of the claims are not worth a wait on every claim; ages past the
    maximum are not samples; old crossings and claims are forgotten."""
    from node.claim_order import (
        CROSSING_MEMORY_S,
        CROSSING_SAMPLES,
        MAX_RIVAL_WAIT_S,
        RIVAL_WAIT_S,
        UNCOVERED_SHARE,
        Crossings,
    )

    crossings = Crossings()
    assert crossings.rival_wait(0.0) == RIVAL_WAIT_S
    crossings.crossed(0.02, 1.0)  # quicker than the floor
    assert crossings.rival_wait(1.0) == RIVAL_WAIT_S
    for _ in range(40):
        crossings.claimed(1.5)
    for i in range(10):
        crossings.crossed(0.3 + 0.03 * i, 2.0)
    uncovered = int(UNCOVERED_SHARE * 40)  # the latest crossings the wait may leave
    assert abs(crossings.rival_wait(2.0) - (0.57 - 0.03 * uncovered)) < 1e-9
    before = crossings.rival_wait(3.0)
    crossings.crossed(MAX_RIVAL_WAIT_S + 0.5, 3.0)  # too late to wait for: no sample
    assert crossings.rival_wait(3.0) == before
    for _ in range(160):  # the same 11 crossings on 200 claims: rare, no longer waited for
        crossings.claimed(3.0)
    assert crossings.rival_wait(3.0) == RIVAL_WAIT_S
    for _ in range(CROSSING_SAMPLES):
        crossings.crossed(MAX_RIVAL_WAIT_S, 4.0)
    assert crossings.rival_wait(4.0) == MAX_RIVAL_WAIT_S
    assert crossings.rival_wait(4.0 + CROSSING_MEMORY_S) == RIVAL_WAIT_S


def test_the_rival_wait_leaves_a_share_of_the_claims_when_many_cross() -> None:
    """Half of 256 claims crossed, at ages spread over 0.2-0.6 s: the wait leaves at
    most UNCOVERED_SHARE of the claims crossed later than it, however many crossed
    (not that share of a window of the crossings)."""
    from node.claim_order import CLAIM_SAMPLES, UNCOVERED_SHARE, Crossings

    crossings = Crossings()
    ages = [0.2 + 0.4 * i / (CLAIM_SAMPLES // 2) for i in range(CLAIM_SAMPLES // 2)]
    for i in range(CLAIM_SAMPLES):
        crossings.claimed(1.0)
        if i % 2:
            crossings.crossed(ages[i // 2], 1.0)
    wait = crossings.rival_wait(1.0)
    later = sum(age > wait for age in ages)
    assert later <= UNCOVERED_SHARE * CLAIM_SAMPLES
    assert later >= UNCOVERED_SHARE * CLAIM_SAMPLES - 1  # and no longer than that needs


def test_a_rival_claim_of_a_held_job_is_a_crossing(tmp_path: Path) -> None:
    """The in-node miner samples how late a standing rival claim of a job it holds
    arrives; a claim of a job it does not hold, its own, or one escrowing too small a
    bond to stand is no sample."""
    import time

    from chain.job_record import Job
    from chain.keys import devnet_key
    from compute.blobs import BlobStore
    from node.claim_order import MAX_RIVAL_WAIT_S, RIVAL_WAIT_S
    from node.market_claims import MarketSettings
    from node.market_miner import MarketMiner
    from node.market_operands import Held
    from tests.marketutil import market_devnet, new_chain
    from wallet.job_txs import claim_tx

    net = market_devnet()
    me = devnet_key(1)
    miner = MarketMiner(
        new_chain(tmp_path / "chain", net), BlobStore(tmp_path / "blobs"),
        MarketSettings(key=me), lambda tx: None, lambda address: 0,
    )  # fmt: skip
    job_id, bounty = JOBS[0], 10**6
    job = Job(b"\0" * 20, 128, 2048, 128, b"\1" * 32, b"\2" * 32, bounty, 10**9, 1)
    bond = net.market.bond_for(bounty)
    miner.held[job_id] = Held(job, time.monotonic() - 0.4, b"\1" * 32)
    miner.notice_tx(claim_tx(net, me, 0, job_id, bond))  # our own
    miner.notice_tx(claim_tx(net, devnet_key(2), 0, JOBS[1], bond))  # a job we do not hold
    miner.notice_tx(claim_tx(net, devnet_key(2), 1, job_id, bond - 1))  # cannot stand
    assert miner._crossings.rival_wait(time.monotonic()) == RIVAL_WAIT_S  # noqa: SLF001
    miner.notice_tx(claim_tx(net, devnet_key(2), 2, job_id, bond))
    assert 0.4 <= miner._crossings.rival_wait(time.monotonic()) <= MAX_RIVAL_WAIT_S  # noqa: SLF001


def test_a_pooled_claim_too_small_to_stand_takes_no_job(tmp_path: Path) -> None:
    """Another's pooled claim escrowing less than the job's bond fails on its own and
    cannot win (chain/jobs.lowest_claims): the job stays a candidate. One with the full
    bond takes it off the list."""
    from chain.keys import devnet_key
    from wallet.job_txs import claim_tx

    net, submit, pool, miner = _miner_over_one_open_job(tmp_path)
    bond = net.market.bond_for(10**6)
    pool.append(claim_tx(net, devnet_key(2), 0, submit.txid, bond - 1))
    assert [jid for jid, _ in miner.candidates()] == [submit.txid]
    pool.append(claim_tx(net, devnet_key(3), 0, submit.txid, bond))
    assert miner.candidates() == []


def test_a_job_paying_less_than_the_miners_fees_and_one_we_claimed_before_are_no_candidates(
    tmp_path: Path,
) -> None:
    """A job whose bounty is below the miner's claim and commit fees would cost it more
    than it pays: left alone. A job that a pooled claim of our own key goes for, which
    this miner does not hold (sent before a restart), is not claimed a second time."""
    from chain.keys import devnet_key
    from wallet.job_txs import claim_tx

    net, submit, pool, miner = _miner_over_one_open_job(tmp_path)
    assert [jid for jid, _ in miner.candidates()] == [submit.txid]
    miner.settings.fee = 10**6 // 2 + 1  # two such fees are more than the bounty of 10**6
    assert miner.candidates() == []
    miner.settings.fee = 1000
    pool.append(claim_tx(net, devnet_key(1), 0, submit.txid, net.market.bond_for(10**6)))
    assert miner.candidates() == []
