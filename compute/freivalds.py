"""Freivalds' check: is C = A . B, in O(mk + kn + mn) instead of a product?

For a random vector x with entries +1 / -1, compare A (B x) with C x. If C != A B, the
difference D = C - A B has a nonzero row d, and d . x = 0 for at most half of the
sign vectors (flip the sign of one coordinate where d is nonzero), so each trial
misses a wrong C with probability at most 1/2; ``trials`` independent vectors leave
at most 2^-trials. Everything is integer and exact: entries of C larger than
max|A| * max|B| * k cannot belong to the product and are rejected first, and then
no int64 sum can overflow (checked, not assumed). The signs come from the operating
system's entropy unless a generator is passed, so a prover cannot aim at them.

All trials run at once as matrix products through BLAS when every sum fits a float
mantissa exactly (integers below 2^24 in float32, 2^53 in float64 add exactly in any
order, so the result is the integer one): B X in float32 when max|B| n < 2^24, the
rest in float64. This is 5-10x faster than one integer matrix-vector product per
trial; matrices past those bounds take the integer path.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

DEFAULT_TRIALS = 16
FLOAT32_EXACT = 1 << 24  # integers below this are exact float32 values, and so their sums
FLOAT64_EXACT = 1 << 53


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _matvec(mat, x, out):
    """out = mat . x for an integer matrix (any width) and an int64 vector."""
    rows, cols = mat.shape
    for i in range(rows):
        row = mat[i]
        total = np.int64(0)
        for j in range(cols):
            total += np.int64(row[j]) * x[j]
        out[i] = total


def _abs_max(x: np.ndarray) -> int:
    return max(int(x.max()), -int(x.min()))


def freivalds_check(
    a: npt.NDArray[np.integer],
    b: npt.NDArray[np.integer],
    c: npt.NDArray[np.integer],
    trials: int = DEFAULT_TRIALS,
    rng: np.random.Generator | None = None,
) -> bool:
    """True when C = A . B passes ``trials`` random sign vectors (false accept <= 2^-trials).

    A is m x k, B is k x n, C is m x n, all integer (int8 operands, int32 or int64
    product). A shape mismatch or a non-integer matrix is a False, not an exception.
    """
    if trials < 1:
        raise ValueError("at least one trial")
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2:
        return False
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2 or c.shape != (m, n):
        return False
    if not all(np.issubdtype(x.dtype, np.integer) for x in (a, b, c)):
        return False
    if min(a.size, b.size, c.size) == 0:
        return c.size == 0 or not np.any(c)
    a, b, c = (np.ascontiguousarray(x) for x in (a, b, c))
    bound = _abs_max(a) * _abs_max(b) * k  # |(A . B)_ij| can be no larger
    if _abs_max(c) > bound:
        return False
    if _abs_max(b) * n >= 1 << 62 or bound * n >= 1 << 62:
        raise ValueError("matrices too large for exact int64 Freivalds sums")
    rng = rng if rng is not None else np.random.default_rng()
    if bound * n < FLOAT64_EXACT:
        signs = rng.integers(0, 2, (n, trials), dtype=np.int8) * np.int8(2) - np.int8(1)
        return _float_trials(a, b, c, signs, _abs_max(b) * n)
    bx = np.empty(k, np.int64)
    abx = np.empty(m, np.int64)
    cx = np.empty(m, np.int64)
    for _ in range(trials):
        x = rng.integers(0, 2, n, dtype=np.int64) * 2 - 1
        _matvec(b, x, bx)
        _matvec(a, bx, abx)
        _matvec(c, x, cx)
        if not np.array_equal(abx, cx):
            return False
    return True


def _float_trials(
    a: npt.NDArray[np.integer], b: npt.NDArray[np.integer], c: npt.NDArray[np.integer],
    signs: npt.NDArray[np.int8], bx_bound: int,
) -> bool:  # fmt: skip
    """A (B X) == C X for the sign columns X, exactly, through BLAS (see the module
    docstring for why float sums are exact here); the caller checked the bounds."""
    wide = np.float32 if bx_bound < FLOAT32_EXACT else np.float64
    bx = b.astype(wide) @ signs.astype(wide)
    abx = a.astype(np.float64) @ bx.astype(np.float64)
    cx = c.astype(np.float64) @ signs.astype(np.float64)
    return bool(np.array_equal(abx, cx))
