"""PoUW parameters for engine tests: any noise rank and tile, generous shape bounds."""

from __future__ import annotations

from consensus.params import PouwParams


def engine_params(r: int, h: int = 8, w: int = 8, k_max: int = 16384) -> PouwParams:
    params = PouwParams(
        noise_rank=r,
        tile_rows=h,
        tile_cols=w,
        k_min=r,
        k_max=k_max,
        m_max=4096,
        n_max=4096,
        max_multiply_adds=1 << 40,
    )
    params.validate()
    return params
