"""The headers presync state machine (p2p/presync.py) on real mined chains: a chain
that does not beat ours is checked and never released; one that does is released only
in its second pass, checked against the commitments of the first; a chain swapped
between the passes, a broken link, an invalid header, a header from the future and a
floor that rises past the chain are each caught."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.chainstate import ChainState
from chain.header import Header
from chain.network import Network
from chain.storage import ChainDB
from p2p.presync import HeadersPresync, Phase, Step
from p2p.sync import HeaderStore
from tests.chainutil import Clock, address_of, easy_devnet, mine_block, open_db


class Mined:
    def __init__(self, path: Path, network: Network, count: int, key: int) -> None:
        self.db: ChainDB = open_db(path, network)
        clock = Clock(network.genesis_time)
        self.chain = ChainState(self.db, network, clock)
        self.headers: list[Header] = []
        for _ in range(count):
            clock.now = self.chain.tip_header.timestamp + 1
            block = mine_block(self.chain, miner=address_of(key))
            self.chain.process_block(block)
            self.headers.append(block.header)


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Mined]]:
    """Chains forking from genesis: ours ("a", 20 blocks), a longer one ("b", 30), a
    different one of the same length ("c", 30), a shorter one ("short", 12)."""
    network = easy_devnet()
    base = tmp_path_factory.mktemp("presync")
    out = {
        "a": Mined(base / "a", network, 20, 4),
        "b": Mined(base / "b", network, 30, 6),
        "c": Mined(base / "c", network, 30, 5),
        "short": Mined(base / "short", network, 12, 7),
    }
    yield out
    for m in out.values():
        m.db.close()


def _presync(
    ours: ChainState, period: int, buffer: int, floor: int | None = None
) -> tuple[HeadersPresync, HeaderStore]:
    store = HeaderStore(ours)
    g = ours.genesis.hash
    fl = store.floor if floor is None else (lambda: floor)
    now = ours.tip_header.timestamp + 60
    ps = HeadersPresync(
        ours.network, g, store.context(g), store.work_of(g) or 0, fl, now, period, buffer, b"salt"
    )
    return ps, store


def _feed(ps: HeadersPresync, headers: list[Header], batch: int) -> list[Step]:
    now = headers[-1].timestamp + 60
    steps = []
    phase = ps.phase
    for i in range(0, len(headers), batch):
        step = ps.feed(tuple(headers[i : i + batch]), now)
        steps.append(step)
        if step.abort or step.invalid or ps.phase is not phase:
            break
    return steps


def test_low_work_chain_is_checked_but_never_released(chains: dict[str, Mined]) -> None:
    ps, _ = _presync(chains["a"].chain, period=4, buffer=8)
    short = chains["short"].headers
    steps = _feed(ps, short, 5)
    assert [s.release for s in steps] == [[], [], []]
    assert [s.next_from for s in steps] == [short[4].hash, short[9].hash, short[11].hash]
    assert ps.phase is Phase.PRESYNC and ps.checked == 12 and ps.height == 12
    assert (
        ps.work == chains["short"].chain.tip.cumulative_work < chains["a"].chain.tip.cumulative_work
    )
    assert ps.nbits == 3 and len(ps.bits) == 1  # one bit per 4 headers, packed
    assert not ps.buffer


def test_more_work_chain_is_released_in_the_second_pass(chains: dict[str, Mined]) -> None:
    ours = chains["a"].chain
    b = chains["b"].headers
    ps, store = _presync(ours, period=2, buffer=4)
    steps = _feed(ps, b, 7)
    assert ps.phase is Phase.REDOWNLOAD and not any(s.release for s in steps)
    assert steps[-1].next_from == ours.genesis.hash  # ask again from the fork point
    first_pass = ps.height
    assert 20 < first_pass <= 30 and ps.work > ours.tip.cumulative_work
    released = []
    for i in range(0, len(b), 3):
        step = ps.feed(tuple(b[i : i + 3]), b[-1].timestamp + 60)
        assert step.abort is None and step.invalid is None
        if ps.phase is Phase.REDOWNLOAD:
            assert len(ps.buffer) <= 4  # held back until 2 more bits vouch for them
        released += step.release
        assert store.add_verified(step.release)
        if ps.phase is Phase.DONE:
            break
    assert ps.phase is Phase.DONE
    assert [e.hash for e in released] == [h.hash for h in b[: len(released)]]
    assert released[-1].work > ours.tip.cumulative_work
    want = chains["b"].chain
    for e in released:
        rec = want.index[e.hash]
        assert (e.height, e.work, e.timestamp) == (rec.height, rec.cumulative_work, rec.timestamp)
        assert e.anchor == want.anchor_time(e.hash)
    best = store.best()
    assert best is not None and best.hash == released[-1].hash


def test_chain_swapped_between_the_passes_is_caught_before_release(
    chains: dict[str, Mined],
) -> None:
    ps, _ = _presync(chains["a"].chain, period=1, buffer=24)
    _feed(ps, chains["b"].headers, 10)
    assert ps.phase is Phase.REDOWNLOAD
    steps = _feed(ps, chains["c"].headers, 10)
    assert steps[-1].abort is not None and "not the chain presynced" in steps[-1].abort
    assert not any(s.release for s in steps)  # 24 bits: a forger's chance is 2^-24


def test_broken_link_aborts_and_an_invalid_header_is_reported(chains: dict[str, Mined]) -> None:
    b = chains["b"].headers
    ps, _ = _presync(chains["a"].chain, period=4, buffer=8)
    step = ps.feed((b[0], b[2]), b[2].timestamp + 60)
    assert step.abort is not None and "does not continue" in step.abort
    ps, _ = _presync(chains["a"].chain, period=4, buffer=8)
    bad = dataclasses.replace(b[1], target=b[1].target - 1)
    step = ps.feed((b[0], bad), b[2].timestamp + 60)
    assert step.invalid is not None and step.abort is None and ps.checked == 1
    ps, _ = _presync(chains["a"].chain, period=4, buffer=8)
    bad = dataclasses.replace(b[0], seal=b[1].seal)  # a seal for another header
    step = ps.feed((bad,), b[2].timestamp + 60)
    assert step.invalid is not None and ps.checked == 0


def test_header_from_the_future_aborts_unpunished(chains: dict[str, Mined]) -> None:
    b = chains["b"].headers
    ps, _ = _presync(chains["a"].chain, period=4, buffer=8)
    step = ps.feed(tuple(b[:5]), b[4].timestamp - 2 * 3600 - 1)  # our clock far behind
    assert step.invalid is None and step.abort is not None and "future" in step.abort


def test_floor_rising_past_the_chain_ends_the_second_pass(chains: dict[str, Mined]) -> None:
    ours = chains["a"].chain
    b = chains["b"].headers
    floor = [ours.tip.cumulative_work]
    store = HeaderStore(ours)
    g = ours.genesis.hash
    ps = HeadersPresync(
        ours.network, g, store.context(g), store.work_of(g) or 0, lambda: floor[0],
        b[-1].timestamp, 2, 4, b"salt",
    )  # fmt: skip
    _feed(ps, b, 30)
    assert ps.phase is Phase.REDOWNLOAD
    floor[0] = chains["b"].chain.tip.cumulative_work  # we caught up meanwhile
    steps = _feed(ps, b, 30)
    assert steps[-1].abort is not None and "no longer" in steps[-1].abort


def test_prune_keeps_a_pinned_second_pass_chain(chains: dict[str, Mined]) -> None:
    ours = chains["a"].chain
    ps, store = _presync(ours, period=2, buffer=4)
    b = chains["b"].headers
    _feed(ps, b, 30)
    step = ps.feed(tuple(b[:10]), b[-1].timestamp + 60)
    assert len(step.release) == 6 and store.add_verified(step.release)
    store.pins[1] = step.release[-1].hash
    assert store.prune() == 0 and len(store) == 6  # below the tip, but pinned
    del store.pins[1]
    assert store.prune() == 6 and len(store) == 0


def test_store_holds_nothing_of_a_message_with_an_invalid_header(chains: dict[str, Mined]) -> None:
    # A false claim of work in a message's last header (a tiny target) must not get the
    # valid low-work headers before it stored.
    store = HeaderStore(chains["short"].chain)
    b = chains["b"].headers
    lie = dataclasses.replace(b[10], target=1)
    res = store.add_chain((*b[:10], lie))
    assert res.invalid is not None and res.added == 0 and len(store) == 0
    res = store.add_chain(tuple(b[:10]))
    assert res.invalid is None and res.added == 10 and len(store) == 10
