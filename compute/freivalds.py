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

The A and B side, A (B X), does not need C: ``prepare_check`` computes it ahead (a
buyer does it while a miner computes C), and ``PreparedCheck.check`` then costs one
pass over C, C X. A prepared check is used once: its signs stay unknown to the prover.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

DEFAULT_TRIALS = 16
FLOAT32_EXACT = 1 << 24  # integers below this are exact float32 values, and so their sums
FLOAT64_EXACT = 1 << 53
# Rows of B turned into floats at a time by prepare_check: a slice stays in cache, and a
# 4096 x 4096 B never needs a 64 MB float copy.
CONVERT_ROWS = 256


def _blas_in_this_thread() -> AbstractContextManager[None]:
    """BLAS on the calling thread only, for these thin products (a matrix times 16
    sign vectors): OpenBLAS's worker threads would each spin about 0.1 s after every
    call, and a buyer's client took a core from its own node that way (measured: 0.25
    of a second of CPU per checked product, against 0.08 without). Process-wide while it
    lasts (compute/blas.single_threaded)."""
    from compute.blas import find_blas, single_threaded

    return single_threaded(find_blas())


def _matvec_kernel(mat, x, out):  # type: ignore[no-untyped-def]
    """out = mat . x for an integer matrix (any width) and an int64 vector."""
    rows, cols = mat.shape
    for i in range(rows):
        row = mat[i]
        total = np.int64(0)
        for j in range(cols):
            total += np.int64(row[j]) * x[j]
        out[i] = total


@cache
def _compiled_matvec() -> Callable[..., None]:
    """The Numba build of _matvec_kernel, made on first use (the integer path is for
    entries too large for exact float sums; importing this module stays cheap)."""
    import numba as nb

    return nb.njit(nogil=True, cache=True, boundscheck=False)(_matvec_kernel)  # type: ignore[no-any-return]


def _matvec(mat: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    _compiled_matvec()(mat, x, out)


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
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        return False
    if not all(np.issubdtype(x.dtype, np.integer) for x in (a, b)):
        return False
    return prepare_check(a, b, trials, rng).check(c)


@dataclass
class PreparedCheck:
    """Freivalds' check of one C against A . B with A (B X) already computed."""

    m: int
    n: int
    bound: int  # |(A . B)_ij| can be no larger: max|A| max|B| k
    signs: npt.NDArray[np.int8]  # n x trials, entries +1 / -1
    abx: npt.NDArray[np.int64] | npt.NDArray[np.float64]  # m x trials, exact integers
    exact_float: bool  # C X through BLAS in float64 (exact by bound), else int64
    used: bool = False

    def check(self, c: npt.NDArray[np.integer]) -> bool:
        """True when C passes every trial. A second call raises (ValueError): a prover
        that saw the first answer must not face the same signs again."""
        if self.used:
            raise ValueError("a prepared Freivalds check is used once")
        self.used = True
        if c.ndim != 2 or c.shape != (self.m, self.n):
            return False
        if not np.issubdtype(c.dtype, np.integer):
            return False
        if c.size == 0:
            return True
        if self.abx.size == 0:  # k = 0: A . B is all zeros
            return not np.any(c)
        c = np.ascontiguousarray(c)
        if _abs_max(c) > self.bound:
            return False
        if self.exact_float:
            signs = self.signs.astype(np.float64)
            with _blas_in_this_thread():
                for lo in range(0, self.m, CONVERT_ROWS):  # C in slices, as B when prepared
                    cx = c[lo : lo + CONVERT_ROWS].astype(np.float64) @ signs
                    if not np.array_equal(self.abx[lo : lo + CONVERT_ROWS], cx):
                        return False
            return True
        cx_col = np.empty(self.m, np.int64)
        for t in range(self.signs.shape[1]):
            _matvec(c, self.signs[:, t].astype(np.int64), cx_col)
            if not np.array_equal(self.abx[:, t], cx_col):
                return False
        return True


def prepare_check(
    a: npt.NDArray[np.integer],
    b: npt.NDArray[np.integer],
    trials: int = DEFAULT_TRIALS,
    rng: np.random.Generator | None = None,
) -> PreparedCheck:
    """The A and B side of Freivalds' check of a C yet to come (integer A, B)."""
    if trials < 1:
        raise ValueError("at least one trial")
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2:
        raise ValueError(f"A is {m}x{k} but B is {k2}x{n}")
    rng = rng if rng is not None else np.random.default_rng()
    signs = rng.integers(0, 2, (n, trials), dtype=np.int8) * np.int8(2) - np.int8(1)
    if min(a.size, b.size) == 0:
        return PreparedCheck(m, n, 0, signs, np.zeros((0, trials), np.int64), False)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    b_max = _abs_max(b)
    bound = _abs_max(a) * b_max * k
    if b_max * n >= 1 << 62 or bound * n >= 1 << 62:
        raise ValueError("matrices too large for exact int64 Freivalds sums")
    if bound * n < FLOAT64_EXACT:
        # float sums of integers are exact below the mantissa (module docstring)
        wide = np.float32 if b_max * n < FLOAT32_EXACT else np.float64
        bx = np.empty((k, trials), wide)
        signs_wide = signs.astype(wide)
        with _blas_in_this_thread():
            for lo in range(0, k, CONVERT_ROWS):  # B in slices: no float copy of all of it
                bx[lo : lo + CONVERT_ROWS] = b[lo : lo + CONVERT_ROWS].astype(wide) @ signs_wide
            abx = a.astype(np.float64) @ bx.astype(np.float64)
        return PreparedCheck(m, n, bound, signs, abx, True)
    abx_int = np.empty((m, trials), np.int64)
    bx = np.empty(k, np.int64)
    col = np.empty(m, np.int64)
    for t in range(trials):
        _matvec(b, signs[:, t].astype(np.int64), bx)
        _matvec(a, bx, col)
        abx_int[:, t] = col
    return PreparedCheck(m, n, bound, signs, abx_int, False)
