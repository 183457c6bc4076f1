"""Freivalds' check: is C = A . B, in O(mk + kn + mn) instead of a product?

For a random vector x with entries +1 / -1, compare A (B x) with C x. If C != A B, the
difference D = C - A B has a nonzero row d, and d . x = 0 for at most half of the
sign vectors (flip the sign of one coordinate where d is nonzero), so each trial
misses a wrong C with probability at most 1/2; ``trials`` independent vectors leave
at most 2^-trials. Everything is integer and exact: entries of C larger than
max|A| * max|B| * k cannot belong to the product and are rejected first, and then
no int64 sum can overflow (checked, not assumed). The signs come from the operating
system's entropy unless a generator is passed, so a prover cannot aim at them.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

DEFAULT_TRIALS = 16


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
