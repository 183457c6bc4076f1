"""Noise removal: the exact rank-2r correction C = C' - [X | E_AL] . [E_BR ; Y].

Both halves come from compute/numpy_engine.py's noisy-operand pass (X = A . E_BL and
Y = E_AR . B', exact int32). The product of the two is done in float (sgemm) in
chunks of the inner axis whose worst-case partial sums stay exact: float32 when
every chunk's bound sum(max|left| * max|right|) is <= 2^24, else float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compute import kernels

FLOAT32_EXACT = 1 << 24  # every integer of magnitude <= 2^24 is a float32
FLOAT64_EXACT = 1 << 53


@dataclass(frozen=True)
class RemovalPlan:
    """The exact rank-2r correction C = C' - left . right, split along its inner axis."""

    left_t: np.ndarray  # 2r x m: [X^T ; E_AL^T] = left^T
    right: np.ndarray  # 2r x n: [E_BR ; Y]
    chunks: np.ndarray  # int64 boundaries 0 = p_0 < p_1 < ... < p_c = 2r
    dtype: type  # np.float32 or np.float64


def exact_chunks(left_max: np.ndarray, right_max: np.ndarray, limit: int) -> np.ndarray | None:
    """Split the inner axis so that each chunk's sum of max|left[:, p]| * max|right[p, :]|
    stays <= limit. Every partial sum of a chunk's product is then an integer of at
    most that magnitude, exact in a float format whose integers are exact up to
    ``limit``, in any summation order. None when one index alone is over the limit."""
    bounds = [int(x) * int(y) for x, y in zip(left_max, right_max, strict=True)]
    cuts = [0]
    running = 0
    for p, bound in enumerate(bounds):
        if bound > limit:
            return None
        if running + bound > limit:
            cuts.append(p)
            running = 0
        running += bound
    cuts.append(len(bounds))
    return np.asarray(cuts, dtype=np.int64)


def _abs_max_rows(x: np.ndarray) -> np.ndarray:
    return np.maximum(x.max(axis=1).astype(np.int64), -x.min(axis=1).astype(np.int64))


def plan_removal(
    x_t: np.ndarray, e_al_t: np.ndarray, e_br: np.ndarray, y: np.ndarray
) -> RemovalPlan:
    """left = [X | E_AL] (m x 2r, held transposed), right = [E_BR ; Y] (2r x n), and
    the exact chunks of their product (float32 when possible, else float64)."""
    r = x_t.shape[0]
    left_max = np.concatenate([_abs_max_rows(x_t), _abs_max_rows(e_al_t)])
    right_max = np.concatenate([_abs_max_rows(e_br), _abs_max_rows(y)])
    for dtype, limit in ((np.float32, FLOAT32_EXACT), (np.float64, FLOAT64_EXACT)):
        chunks = exact_chunks(left_max, right_max, limit)
        if chunks is not None:
            left_t = np.empty((2 * r, x_t.shape[1]), dtype)
            left_t[:r] = x_t
            left_t[r:] = e_al_t
            right = np.empty((2 * r, y.shape[1]), dtype)
            right[:r] = e_br
            right[r:] = y
            return RemovalPlan(left_t, right, chunks, dtype)
    raise ArithmeticError("noise removal bound above 2^53: impossible for valid operands")


def remove_block_numpy(plan: RemovalPlan, i0: int, j0: int, acc: np.ndarray) -> None:
    rows, cols = acc.shape
    left = plan.left_t[:, i0 : i0 + rows].T
    right = plan.right[:, j0 : j0 + cols]
    buf = np.empty((rows, cols), plan.dtype)
    for p0, p1 in zip(plan.chunks[:-1], plan.chunks[1:], strict=True):
        np.matmul(left[:, p0:p1], right[p0:p1], out=buf)
        kernels.add_into(acc, buf, -1)
