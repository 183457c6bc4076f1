"""Subsidy schedule: halvings from block 1, the all-time total, and the miner's reward."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.params import ParamsError, SubsidyParams
from consensus.subsidy import (
    MAX_HALVINGS,
    block_subsidy,
    halvings_at,
    max_total_subsidy,
    miner_reward,
    subsidy_fits_cap,
)

BTC_LIKE = SubsidyParams(
    initial_subsidy=50 * 10**8,
    halving_interval=210_000,
    supply_cap=21 * 10**6 * 10**8,
    coinbase_maturity=100,
)


def test_genesis_mints_nothing():
    assert block_subsidy(BTC_LIKE, 0) == 0


def test_era_boundaries():
    i = BTC_LIKE.halving_interval
    assert block_subsidy(BTC_LIKE, 1) == 50 * 10**8
    assert block_subsidy(BTC_LIKE, i) == 50 * 10**8  # last block of era 0
    assert block_subsidy(BTC_LIKE, i + 1) == 25 * 10**8  # first block of era 1
    assert block_subsidy(BTC_LIKE, 2 * i) == 25 * 10**8
    assert block_subsidy(BTC_LIKE, 2 * i + 1) == 1_250_000_000
    assert halvings_at(BTC_LIKE, 1) == 0
    assert halvings_at(BTC_LIKE, i + 1) == 1


def test_zero_after_64_halvings_even_for_a_huge_subsidy():
    p = SubsidyParams(2**80, 1, 2**90, 0)
    assert block_subsidy(p, 64) == 2**80 >> 63  # era 63, still paying
    assert block_subsidy(p, 65) == 0  # 64 halvings: zero, not 2^16
    assert block_subsidy(p, 10**30) == 0


def test_btc_like_total_is_the_familiar_sum():
    # Satoshi's schedule minus nothing: every era has exactly I paid blocks here.
    assert max_total_subsidy(BTC_LIKE) == 2_099_999_997_690_000
    assert subsidy_fits_cap(BTC_LIKE, 0)
    assert subsidy_fits_cap(BTC_LIKE, 21 * 10**14 - 2_099_999_997_690_000)
    assert not subsidy_fits_cap(BTC_LIKE, 21 * 10**14 - 2_099_999_997_690_000 + 1)


def test_brute_force_sum_matches_total():
    p = SubsidyParams(1000, 7, 10**9, 0)
    last_paying = 7 * MAX_HALVINGS
    total = sum(block_subsidy(p, h) for h in range(0, last_paying + 50))
    assert total == max_total_subsidy(p)
    assert block_subsidy(p, last_paying + 1) == 0


@given(st.integers(1, 2**70), st.integers(1, 10**7), st.integers(0, 2**80))
def test_schedule_properties(initial, interval, height):
    p = SubsidyParams(initial, interval, 1, 0)
    s = block_subsidy(p, height)
    assert 0 <= s <= initial
    assert block_subsidy(p, height + 1) <= s or height == 0
    if height >= 1:
        halvings = (height - 1) // interval
        assert s == (initial >> halvings if halvings < 64 else 0)


@given(st.integers(1, 2**70), st.integers(1, 10**6))
def test_total_is_interval_times_era_sum(initial, interval):
    p = SubsidyParams(initial, interval, 1, 0)
    eras = [block_subsidy(p, 1 + e * interval) for e in range(MAX_HALVINGS + 2)]
    assert max_total_subsidy(p) == interval * sum(eras)
    assert max_total_subsidy(p) < 2 * initial * interval  # geometric bound


def test_miner_reward_is_subsidy_plus_fees():
    assert miner_reward(BTC_LIKE, 1, 0) == 50 * 10**8
    assert miner_reward(BTC_LIKE, 1, 1234) == 50 * 10**8 + 1234
    assert miner_reward(BTC_LIKE, 0, 0) == 0
    assert miner_reward(BTC_LIKE, 10**12, 99) == 99  # fees outlive the subsidy


def test_caller_bugs_raise():
    with pytest.raises(ValueError):
        block_subsidy(BTC_LIKE, -1)
    with pytest.raises(ValueError):
        miner_reward(BTC_LIKE, 1, -1)
    with pytest.raises(ValueError):
        subsidy_fits_cap(BTC_LIKE, -1)
    with pytest.raises(ValueError):
        halvings_at(BTC_LIKE, 0)
    with pytest.raises(ParamsError):
        block_subsidy(SubsidyParams(0, 1, 1, 0), 1)
