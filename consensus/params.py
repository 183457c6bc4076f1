"""Per-network consensus parameters.

The values themselves live in genesis/<network>.json (one source of truth, shipped
with the package); this module defines their shape and checks them once at load,
so every rule downstream can trust them.
"""

from __future__ import annotations

from dataclasses import dataclass


class ParamsError(ValueError):
    """A genesis file carries parameters that break an invariant of the protocol."""


def _is_power_of_two(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


# |entry of A' or B'| <= 127, so one r-step partial product is bounded by 127^2 * r.
# It must stay below 2^24 to be exact in float32 (the CPU BLAS path): r <= 1024.
MAX_NOISE_RANK = 1024
# |entry of C'| <= 127^2 * k must stay below 2^31 so int32 accumulators are exact.
MAX_K = 131072
# A tile side above this would make seals (and their decoding caps) needlessly large.
MAX_TILE_SIDE = 64


@dataclass(frozen=True)
class PouwParams:
    """Shape rules of the proof of useful work (docs/PROTOCOL.md, "PoUW")."""

    noise_rank: int  # r: width of one transcript step and rank of the noise
    tile_rows: int  # h: rows of one ticket tile
    tile_cols: int  # w: columns of one ticket tile
    k_min: int
    k_max: int
    m_max: int
    n_max: int
    max_multiply_adds: int  # cap on m*n*k so one product fits a large GPU

    def validate(self) -> None:
        r = self.noise_rank
        if not _is_power_of_two(r) or r > MAX_NOISE_RANK or r < 2:
            raise ParamsError(f"noise_rank {r} must be a power of two in [2, {MAX_NOISE_RANK}]")
        for name in ("tile_rows", "tile_cols"):
            v = getattr(self, name)
            if not 1 <= v <= MAX_TILE_SIDE:
                raise ParamsError(f"{name} {v} must be in [1, {MAX_TILE_SIDE}]")
        if not (r <= self.k_min <= self.k_max <= MAX_K) or self.k_min % r or self.k_max % r:
            raise ParamsError(
                f"k_min, k_max must be multiples of noise_rank with r <= k_min <= k_max <= {MAX_K}"
            )
        if self.m_max % self.tile_rows or self.n_max % self.tile_cols:
            raise ParamsError("m_max and n_max must be multiples of the tile shape")
        if self.max_multiply_adds < self.tile_rows * self.tile_cols * self.k_min:
            raise ParamsError("max_multiply_adds is below the smallest possible product")


@dataclass(frozen=True)
class DifficultyParams:
    """ASERT retarget parameters (docs/PROTOCOL.md, "Difficulty")."""

    target_spacing_s: int  # ideal seconds between blocks
    half_life_s: int  # a block interval this far off doubles or halves the target
    max_target: int  # easiest allowed target per multiply-add (the "pow limit")
    genesis_target: int  # target of the genesis block, the ASERT anchor

    def validate(self) -> None:
        if self.target_spacing_s <= 0 or self.half_life_s <= 0:
            raise ParamsError("target spacing and half-life must be positive")
        if not 0 < self.genesis_target <= self.max_target < 2**256:
            raise ParamsError("need 0 < genesis_target <= max_target < 2^256")


@dataclass(frozen=True)
class SubsidyParams:
    """Native token issuance (docs/PROTOCOL.md, "Subsidy")."""

    initial_subsidy: int  # base units minted to the miner of each early block
    halving_interval: int  # blocks between halvings
    supply_cap: int  # total base units that can ever be minted (genesis funds included)
    coinbase_maturity: int  # blocks before a mined reward may be spent

    def validate(self) -> None:
        if self.initial_subsidy <= 0 or self.halving_interval <= 0:
            raise ParamsError("initial subsidy and halving interval must be positive")
        if self.supply_cap <= 0 or self.coinbase_maturity < 0:
            raise ParamsError("supply cap must be positive, maturity non-negative")


@dataclass(frozen=True)
class MarketParams:
    """Rules of the compute market (docs/PROTOCOL.md, "Compute market").

    Every window is wall time: seconds of median-time-past (MTP), and at least
    ``min_window_blocks`` blocks, so fast blocks cannot shrink the time a buyer has to
    check a result or a worker has to answer. The defaults are for public networks
    (minutes to hours); the devnet genesis sets seconds.
    """

    # A claim's deadline: claim MTP + claim_slack_s + multiply-adds / claim_rate. The
    # slack covers fetching A and B and getting the commit mined; the rate is the
    # slowest worker the market expects (10^10 MAC/s: a modest GPU, or a fast CPU).
    claim_slack_s: int = 600
    claim_rate: int = 10**10
    # The bond a claim escrows: at least bond_bps / 10,000 of the bounty and min_bond.
    # It is what a worker loses for vanishing, withholding C or committing a wrong one.
    bond_bps: int = 1_000
    min_bond: int = 100_000
    challenge_s: int = 3_600  # after a commit, time to fetch, check and challenge C
    reveal_s: int = 600  # time a claimant has to publish a probed chunk of C
    probe_deposit: int = 10_000  # least deposit of a probe (paid to the claimant if answered)
    min_window_blocks: int = 2  # every window also spans at least this many blocks
    max_open_s: int = 30 * 86_400  # a job stays claimable at most this long

    def validate(self) -> None:
        times = (self.claim_slack_s, self.challenge_s, self.reveal_s, self.max_open_s)
        if min(times) < 1 or self.claim_rate < 1 or self.min_window_blocks < 1:
            raise ParamsError("market windows must be at least one second and one block")
        if not 0 <= self.bond_bps <= 1_000_000 or self.min_bond < 1 or self.probe_deposit < 1:
            raise ParamsError("market bond and deposit must be positive")

    def bond_for(self, bounty: int) -> int:
        """The least bond a claim of a job with this bounty must escrow."""
        return max(self.min_bond, bounty * self.bond_bps // 10_000)

    def claim_seconds(self, multiply_adds: int) -> int:
        """How long a claim of a product of this size lasts (before min_window_blocks)."""
        return self.claim_slack_s + -(-multiply_adds // self.claim_rate)
