"""The transcript of the CPU engine: C' block by block on the engine's worker threads.

compute/numpy_engine.py prepares the operands (commitments, noise, packed or paneled
A' and B') and calls ``run_transcript``; each worker takes the next block, computes
its C' with every r-step folded (integer micro-kernel, per-step sgemm, or np.matmul;
see numpy_engine's docstring), hashes its tiles' tickets and removes its noise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compute import fasthash, int8_kernels, kernels
from compute.blas import Blas
from compute.int_tile import IntTile
from compute.removal import RemovalPlan, remove_block_numpy
from consensus.hashing import TAG_TICKET
from consensus.params import PouwParams

CHUNK_K = 512  # k per micro-kernel call on the integer path: its B' micro-panel stays in L1


@dataclass(frozen=True)
class Operands:
    a_pan: np.ndarray  # A' (int8 panels, or uint32 words packed for the integer path)
    b_pan: np.ndarray  # B' (likewise; B' + offset when packed: 128 for int8, 0 for int16)
    corr: np.ndarray  # integer path: offset * running row sums of A' (empty otherwise)
    k: int


def run_transcript(
    params: PouwParams,
    operands: Operands,
    plan: RemovalPlan,
    sigma_a: bytes,
    product: np.ndarray,
    digests: np.ndarray,
    flag: np.ndarray,
    keep: bool,
    bm: int,
    bn: int,
    blas: Blas | None,
    int_tile: IntTile | None,
    mode: int,
    run_workers: Callable[[Callable[[int], None]], object],
    workers: int,
) -> tuple[bool, dict[str, float]]:
    """C = C' - noise into ``product``, tickets into ``digests``; returns whether every
    block was folded to the end, and the per-worker average seconds of each part."""
    m, n = product.shape
    r, h, w = params.noise_rank, params.tile_rows, params.tile_cols
    a_pan, b_pan = operands.a_pan, operands.b_pan
    blocks = [(i, j) for i in range(0, m, bm) for j in range(0, n, bn)]
    next_block = [0]
    lock = threading.Lock()
    group = kernels.steps_per_group(r)
    sigma_words = np.frombuffer(sigma_a, dtype=">u4").astype(np.uint32)
    midstate = fasthash.tag_midstate(TAG_TICKET)
    tiles_per_row = n // w
    fast_removal = blas is not None and plan.dtype is np.float32
    all_folded = [True]
    times = {"gemm_fold": 0.0, "tickets": 0.0, "removal": 0.0}
    k = operands.k
    steps = k // r
    qps = -(-r // int_tile.group) if int_tile is not None else 0  # packed words per step
    chunk_steps = max(1, CHUNK_K // r)

    def worker(_: int) -> None:
        scratch: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        hash_buf, msg = kernels.new_hash_scratch(h, w)
        local = {"gemm_fold": 0.0, "tickets": 0.0, "removal": 0.0}
        while True:
            with lock:
                if next_block[0] >= len(blocks):
                    break
                i0, j0 = blocks[next_block[0]]
                next_block[0] += 1
            rows, cols = min(bm, m - i0), min(bn, n - j0)
            if (rows, cols) not in scratch:
                scratch[rows, cols] = _scratch(rows, cols, r, int_tile)
            buf, state, a_f32, b_f32 = scratch[rows, cols]
            block_mode = mode if flag[0] == 0 else kernels.MODE_PRODUCT
            t = time.perf_counter()
            if int_tile is not None:
                acc = a_f32
                status = int8_kernels.transcript_block(
                    int_tile.tile, a_pan, b_pan, operands.corr, i0, j0, rows, cols, steps, qps,
                    int_tile.mr, int_tile.nr, chunk_steps, acc, state, flag, keep, block_mode,
                )  # fmt: skip
            elif blas is not None:
                status = kernels.transcript_block(
                    blas.sgemm, a_pan, b_pan, i0, j0, r, group, buf, product, state, a_f32,
                    b_f32, flag, keep, block_mode,
                )  # fmt: skip
            else:
                status = _transcript_block_numpy(
                    a_pan, b_pan, i0, j0, r, buf, product, state, a_f32, b_f32, flag, keep,
                    block_mode,
                )  # fmt: skip
            t2 = time.perf_counter()
            local["gemm_fold"] += t2 - t
            if status < 0:
                all_folded[0] = False
                break
            if status == 1:
                kernels.hash_tiles(
                    state[:rows, :cols], i0, j0, h, w, tiles_per_row, sigma_words, midstate,
                    digests, hash_buf, msg,
                )  # fmt: skip
            else:
                all_folded[0] = False
            t3 = time.perf_counter()
            local["tickets"] += t3 - t2
            if int_tile is not None and fast_removal:
                assert blas is not None
                int8_kernels.remove_block(
                    blas.sgemm, plan.left_t, plan.right, plan.chunks, i0, j0, buf, a_f32,
                    product,
                )  # fmt: skip
            elif int_tile is not None:
                product[i0 : i0 + rows, j0 : j0 + cols] = a_f32[:rows, :cols]
                remove_block_numpy(plan, i0, j0, product[i0 : i0 + rows, j0 : j0 + cols])
            elif fast_removal:
                assert blas is not None
                kernels.remove_block(
                    blas.sgemm, plan.left_t, plan.right, plan.chunks, i0, j0, buf, product
                )
            else:
                remove_block_numpy(plan, i0, j0, product[i0 : i0 + rows, j0 : j0 + cols])
            local["removal"] += time.perf_counter() - t3
        with lock:
            for key, value in local.items():
                times[key] += value

    run_workers(worker)
    parts = {key: value / workers for key, value in times.items()}
    return all_folded[0], parts


def _transcript_block_numpy(
    a_pan, b_pan, i0, j0, r, buf, out, state, a_f32, b_f32, flag, keep, mode
) -> int:  # fmt: skip
    """The transcript of one block with np.matmul (no direct sgemm): a fresh product per
    r-step, added and folded by one Numba pass."""
    rows, cols = buf.shape
    k = a_pan.shape[0] // out.shape[0]
    acc = out[i0 : i0 + rows, j0 : j0 + cols]
    acc[:] = 0
    state[:] = 0
    folding = mode == kernels.MODE_FOLD
    a0, b0 = i0 * k, j0 * k
    for step in range(k // r):
        if flag[0]:
            if not keep:
                return -1
            folding = False
        a_f32.ravel()[:] = a_pan[a0 + step * r * rows : a0 + (step + 1) * r * rows]
        b_f32.ravel()[:] = b_pan[b0 + step * r * cols : b0 + (step + 1) * r * cols]
        np.matmul(a_f32.T, b_f32, out=buf)
        if folding:
            kernels.fold_step(buf, acc, state)
        else:
            kernels.add_into(acc, buf, 1)
    return 1 if folding else 0


def _scratch(rows: int, cols: int, r: int, int_tile: IntTile | None) -> tuple[np.ndarray, ...]:
    """Per-block scratch of one worker: (sgemm buffer, fold state, then the two float32
    r-step operands on the sgemm path, or the int32 accumulators and nothing on the
    integer path, where state and accumulators cover whole micro-tiles)."""
    buf = np.empty((rows, cols), np.float32)
    if int_tile is None:
        return (
            buf,  # sgemm output (a group's sum)
            np.empty((rows, cols), np.uint32),  # fold state
            np.empty((r, rows), np.float32),  # one r-step of A'^T
            np.empty((r, cols), np.float32),  # one r-step of B'
        )
    padded = (-(-rows // int_tile.mr) * int_tile.mr, -(-cols // int_tile.nr) * int_tile.nr)
    return buf, np.empty(padded, np.uint32), np.empty(padded, np.int32), buf
