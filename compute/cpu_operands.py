"""Steps 1 and 2 of the CPU engine's product (compute/numpy_engine.py): the operands'
commitments, and the noisy operands laid out once in the form the transcript reads.

1. commit: A^T (an 8x8-byte register transpose) while the columns of B are hashed,
   then the columns of A^T (the rows of A): multi-lane SHA-256 (compute/fasthash.py),
   64 leaves per vectorized pass, and the Merkle levels, kept for the seals.
2. noise: the dense lines of E_AL and E_BR in bulk (multi-lane SHAKE-256, equal to
   consensus.noise.dense_noise_lines) and the sparse patterns
   (consensus.noise.sparse_pattern). Then A'^T = A^T + E_A^T and B' = B + E_B, written
   once in the layout the product reads (packed micro-tile strips on the integer path,
   int8 column panels on the sgemm path), together with the sparse halves of noise
   removal, X = A . E_BL and Y = E_AR . B' (exact int32, O(mk + kn)).

Every function here runs its kernels on the engine's worker pool (``pool.count``
threads), which the caller owns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from compute import fasthash, int8_kernels, kernels
from compute.cpu_workers import Workers, split_range
from compute.engine import OperandLeaves
from compute.int_tile import IntTile
from compute.removal import RemovalPlan, plan_removal
from consensus.noise import (
    LABEL_A_LEFT,
    LABEL_A_PATTERN,
    LABEL_B_PATTERN,
    LABEL_B_RIGHT,
    sparse_pattern,
)

Int8Matrix = npt.NDArray[np.int8]


class Workspace:
    """The big scratch arrays of one product shape (the engine keeps one for the next
    product of the same shape)."""

    def __init__(self, key: tuple[int, ...], int_tile: IntTile | None) -> None:
        m, k, n, r, h, w, _, _ = key
        self.key = key
        self.a_t = np.empty((k, m), np.int8)  # A^T
        if int_tile is None:
            self.a_pan = np.empty(m * k, np.int8)  # A'^T in panels of block_rows columns
            self.b_pan = np.empty(k * n, np.int8)  # B' in panels of block_cols columns
            self.corr = np.empty(0, np.int32)
        else:
            # int8_kernels.build_packed_panel's layout; zeros stay in the padding
            steps, qps = k // r, -(-r // int_tile.group)
            strips_a, strips_b = -(-m // int_tile.mr), -(-n // int_tile.nr)
            self.a_pan = np.zeros(strips_a * steps * qps * int_tile.mr, np.uint32)
            self.b_pan = np.zeros(strips_b * steps * qps * int_tile.nr, np.uint32)
            self.corr = np.zeros(strips_a * steps * int_tile.mr, np.int32)
        self.x_t = np.empty((r, m), np.int32)  # (A . E_BL)^T
        self.y = np.empty((r, n), np.int32)  # E_AR . B'
        self.digests = np.empty(((m // h) * (n // w), 8), np.uint32)


def transpose_into(pool: Workers, x: Int8Matrix, out: Int8Matrix) -> None:
    """out = x^T: 8x8-byte blocks on every worker when both sides are multiples of 8."""
    rows, cols = x.shape
    if rows % 8 or cols % 8:
        out[:] = x.T
        return
    src, dst = x.view(np.uint64), out.view(np.uint64)
    ranges = split_range(cols // 8, pool.count)
    pool.map(lambda w: kernels.transpose_u8_blocks(src, dst, *ranges[w]) if w < len(ranges) else 0)


def commit_operands(
    pool: Workers, a: Int8Matrix, a_t: Int8Matrix, b: Int8Matrix
) -> tuple[fasthash.WordTree, fasthash.WordTree]:
    """A^T into ``a_t``, and the trees over the rows of A (columns of A^T) and the
    columns of B. The columns of B are hashed while A is transposed: one is
    compute-bound, the other memory-bound, so they share two cores well."""
    threads = pool.count
    m, n = a_t.shape[1], b.shape[1]
    row_leaves = np.empty((m, 8), np.uint32)
    col_leaves = np.empty((n, 8), np.uint32)
    if threads >= 2 and not (m % 8 or a.shape[1] % 8):
        src, dst = a.view(np.uint64), a_t.view(np.uint64)
        first = [
            lambda: kernels.transpose_u8_blocks(src, dst, 0, src.shape[1]),
            lambda: fasthash.leaf_words(b, True, fasthash.LEAF_MIDSTATE, col_leaves, 0, n),
        ]
        pool.map(lambda wi: first[wi]() if wi < len(first) else None)
        jobs = [(a_t, row_leaves, lo, hi) for lo, hi in split_range(m, threads, 64)]
    else:
        transpose_into(pool, a, a_t)
        jobs = [(a_t, row_leaves, lo, hi) for lo, hi in split_range(m, threads, 64)]
        jobs += [(b, col_leaves, lo, hi) for lo, hi in split_range(n, threads, 64)]

    def run(wi: int) -> None:
        for mat, out, lo, hi in jobs[wi::threads]:
            fasthash.leaf_words(mat, True, fasthash.LEAF_MIDSTATE, out, lo, hi)

    pool.map(run)
    return (
        fasthash.WordTree(fasthash.merkle_levels(row_leaves)),
        fasthash.WordTree(fasthash.merkle_levels(col_leaves)),
    )


def given_trees(
    leaves: OperandLeaves, m: int, n: int
) -> tuple[fasthash.WordTree, fasthash.WordTree]:
    """The trees over leaves the caller already has (a market miner's download)."""
    rows, cols = (np.ascontiguousarray(x, np.uint32) for x in leaves)
    if rows.shape != (m, 8) or cols.shape != (n, 8):
        raise ValueError(
            f"operand leaves {rows.shape} and {cols.shape} do not fit {m} rows and {n} columns"
        )
    return (
        fasthash.WordTree(fasthash.merkle_levels(rows)),
        fasthash.WordTree(fasthash.merkle_levels(cols)),
    )


def noisy_operands(
    pool: Workers, int_tile: IntTile | None, ws: Workspace, b: Int8Matrix,
    b_t: Int8Matrix | None, r: int, sigma_a: bytes, sigma_b: bytes, bm: int, bn: int,
) -> RemovalPlan:  # fmt: skip
    """A'^T and B' into the workspace, and the plan of noise removal; with ``b_t``
    (the int8 forms: NumpyEngine.packs_b_from_rows) B' is packed from B^T's rows and
    B is not read."""
    threads = pool.count
    k, m = ws.a_t.shape
    n = b.shape[1]
    e_al_t = fasthash.dense_lines_t(sigma_a, LABEL_A_LEFT, m, r)  # r x m
    e_br = fasthash.dense_lines_t(sigma_b, LABEL_B_RIGHT, n, r)  # r x n
    a_plus, a_minus = (p.astype(np.int32) for p in sparse_pattern(sigma_a, LABEL_A_PATTERN, k, r))
    b_plus, b_minus = (p.astype(np.int32) for p in sparse_pattern(sigma_b, LABEL_B_PATTERN, k, r))
    x_t, y = ws.x_t, ws.y  # (A . E_BL)^T and E_AR . B'
    x_t[:] = 0
    y[:] = 0
    jobs: list[tuple] = []
    if int_tile is not None:
        mr, nr, group, b_offset = int_tile.mr, int_tile.nr, int_tile.group, int_tile.b_offset
        for p0 in range(0, m, bm):
            jobs.append(
                (ws.a_t, e_al_t, a_plus, a_minus, b_plus, b_minus, False, ws.a_pan, x_t,
                 ws.corr, r, mr, p0, min(m, p0 + bm), group, b_offset)
            )  # fmt: skip
        b_jobs: list[tuple] = []
        for p0 in range(0, n, bn):
            if b_t is not None:
                b_jobs.append(
                    (b_t.view(np.uint32), e_br, b_plus, b_minus, a_plus, a_minus, ws.b_pan,
                     y, r, nr, p0, min(n, p0 + bn))
                )  # fmt: skip
                continue
            jobs.append(
                (b, e_br, b_plus, b_minus, a_plus, a_minus, True, ws.b_pan, y, ws.corr, r,
                 nr, p0, min(n, p0 + bn), group, b_offset)
            )  # fmt: skip
        tasks: list[tuple[Any, tuple]] = [(int8_kernels.build_packed_panel, j) for j in jobs]
        tasks += [(int8_kernels.build_packed_b_panel_from_rows, j) for j in b_jobs]

        def run_packed(wi: int) -> None:
            for kernel, args in tasks[wi::threads]:
                kernel(*args)

        pool.map(run_packed)
        return plan_removal(x_t, e_al_t, e_br, y)
    for p0 in range(0, m, bm):
        jobs.append(
            (ws.a_t, e_al_t, a_plus, a_minus, b_plus, b_minus, False, ws.a_pan, x_t, p0,
             min(m, p0 + bm))
        )  # fmt: skip
    for p0 in range(0, n, bn):
        jobs.append(
            (b, e_br, b_plus, b_minus, a_plus, a_minus, True, ws.b_pan, y, p0, min(n, p0 + bn))
        )

    def run(wi: int) -> None:
        for args in jobs[wi::threads]:
            kernels.build_noisy_panel(*args)

    pool.map(run)
    return plan_removal(x_t, e_al_t, e_br, y)
