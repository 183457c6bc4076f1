"""node/claim_order: every miner computes the same turns for fresh jobs and for a
backlog."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
    from types import SimpleNamespace

    from chain.address import address_from_pubkey
    from chain.jobs import Job
    from chain.keys import devnet_key
    from compute.blobs import BlobStore
    from node.market_miner import MarketMiner

    keys = [devnet_key(i) for i in (1, 2, 3)]
    addresses = [address_from_pubkey(k.public_key) for k in keys]
    job = Job(b"\0" * 20, 128, 2048, 128, b"\1" * 32, b"\2" * 32, 500_000, 10**9, 1)
    backlog = [(j, job) for j in JOBS[:4]]
    now = 1000.0
    shares = []
    for key, me in zip(keys, addresses, strict=True):
        miner = MarketMiner(
            None,  # type: ignore[arg-type]
            BlobStore(tmp_path / me.hex()),
            SimpleNamespace(key=key),  # type: ignore[arg-type]
            lambda tx: None,
            lambda address: 0,
        )
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
    from types import SimpleNamespace

    from chain.address import address_from_pubkey
    from chain.jobs import Job
    from chain.keys import devnet_key
    from compute.blobs import BlobStore
    from node.market_miner import MarketMiner

    keys = [devnet_key(1), devnet_key(2)]
    addresses = [address_from_pubkey(k.public_key) for k in keys]
    job = Job(b"\0" * 20, 128, 2048, 128, b"\1" * 32, b"\2" * 32, 500_000, 10**9, 1)
    parts = [(j, job) for j in JOBS[:2]]
    t0 = 1000.0
    mine = []
    for key in keys:
        miner = MarketMiner(
            None,  # type: ignore[arg-type]
            BlobStore(tmp_path / key.public_key.hex()),
            SimpleNamespace(key=key),  # type: ignore[arg-type]
            lambda tx: None,
            lambda address: 0,
        )
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
    from types import SimpleNamespace

    from chain.keys import devnet_key
    from compute.blobs import BlobStore
    from node.market_miner import MarketMiner

    miner = MarketMiner(
        None,  # type: ignore[arg-type]
        BlobStore(tmp_path / "blobs"),
        SimpleNamespace(key=devnet_key(1)),  # type: ignore[arg-type]
        lambda tx: None,
        lambda address: 0,
    )
    rounds: list[bool] = []
    miner._claim_more = lambda quick=False: rounds.append(quick)  # type: ignore[method-assign]  # noqa: SLF001
    now = 1000.0
    miner._quick_round(now + 0.01)  # noqa: SLF001 - no event loop: the mining loop runs it
    assert miner._claim_round(now) is False and rounds == [False]  # noqa: SLF001
    assert miner._quick_round_at == now + 0.01  # noqa: SLF001
    miner._claim_round(now + 0.011)  # noqa: SLF001
    assert rounds == [False, True] and miner._quick_round_at is None  # noqa: SLF001
