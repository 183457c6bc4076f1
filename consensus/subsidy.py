"""Native token issuance: the block subsidy schedule and the miner's reward.

Bitcoin-style halvings, counted from block 1 (genesis mints nothing through
this schedule; its funds are the genesis allocation): blocks 1..I pay the
initial subsidy, blocks I+1..2I half of it, and so on, each era exactly I =
halving_interval blocks, with an integer right shift so every node agrees to the
base unit. After 64 halvings the subsidy is zero for good, so total issuance is
a finite sum that ``subsidy_fits_cap`` checks against the supply cap.

Fees go to the miner, as in Bitcoin: they move coins that already exist, so they
never touch the supply cap, and they are what pays miners once the subsidy
has run out.
"""

from __future__ import annotations

from consensus.params import SubsidyParams

MAX_HALVINGS = 64  # from the 64th halving on, the subsidy is zero


def halvings_at(params: SubsidyParams, height: int) -> int:
    """Number of halvings in force at ``height`` (>= 1): (height - 1) // halving_interval."""
    if height < 1:
        raise ValueError(f"height {height} carries no subsidy era")
    return (height - 1) // params.halving_interval


def block_subsidy(params: SubsidyParams, height: int) -> int:
    """New base units a block at ``height`` may mint; 0 for genesis (height 0)."""
    params.validate()
    if height < 0:
        raise ValueError(f"negative height {height}")
    if height == 0:
        return 0
    halvings = halvings_at(params, height)
    if halvings >= MAX_HALVINGS:
        return 0
    return params.initial_subsidy >> halvings


def max_total_subsidy(params: SubsidyParams) -> int:
    """Every base unit the schedule will ever mint: I * sum(initial >> i, i < 64)."""
    params.validate()
    per_era = sum(params.initial_subsidy >> i for i in range(MAX_HALVINGS))
    return params.halving_interval * per_era


def subsidy_fits_cap(params: SubsidyParams, genesis_funds: int) -> bool:
    """Whether genesis funds plus all subsidies ever stay within ``supply_cap``."""
    if genesis_funds < 0:
        raise ValueError("genesis funds cannot be negative")
    return genesis_funds + max_total_subsidy(params) <= params.supply_cap


def miner_reward(params: SubsidyParams, height: int, total_fees: int) -> int:
    """The most a block's reward output may pay: its subsidy plus all its fees."""
    if total_fees < 0:
        raise ValueError("total fees cannot be negative")
    return block_subsidy(params, height) + total_fees
