"""The transcript fold and the tickets it yields.

The product C' = A' . B' is computed in k-steps of width r. After step l the exact
partial sums acc (int32) are folded into a per-entry 32-bit state:

    state = rotl32(state, 1) XOR uint32(acc)          (state starts at 0)

so the final state of an entry depends on every intermediate partial sum, in order,
and no step can be skipped or merged. The ticket of tile t (h x w entries, tiles
numbered row-major over the (m/h) x (n/w) grid) is

    J = H_ticket(sigma_A || u32 t || the tile's h*w states as u32 little-endian, row-major)

and the tile wins when J, read big-endian, is below target * h * w * k.
The fold is per entry on purpose: a fused GPU kernel keeps it in the same registers
as the accumulator, whatever their layout, and writes it once at the end.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from consensus.hashing import HASH_SIZE, TAG_TICKET, tagged_hasher
from consensus.ints import u32

_MASK32 = 0xFFFFFFFF


def rotl32(state: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Rotate 32-bit words (held in uint64) left by one."""
    return ((state << np.uint64(1)) | (state >> np.uint64(31))) & np.uint64(_MASK32)


def fold_transcript(
    a_noisy: npt.NDArray[np.int64], b_noisy: npt.NDArray[np.int64], r: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
    """Reference transcript of rows ``a_noisy`` (h' x k) times columns ``b_noisy`` (k x w').

    Returns the exact product and the final fold state. Integer-only (int64), so it
    is slow and meant for verification and tests; compute/ holds the fast engines.
    """
    rows, k = a_noisy.shape
    if b_noisy.shape[0] != k or k % r:
        raise ValueError("inner dimensions must agree and be a multiple of r")
    acc = np.zeros((rows, b_noisy.shape[1]), dtype=np.int64)
    state = np.zeros(acc.shape, dtype=np.uint64)
    for step in range(k // r):
        lo, hi = step * r, (step + 1) * r
        acc += a_noisy[:, lo:hi] @ b_noisy[lo:hi, :]
        state = rotl32(state) ^ (acc & _MASK32).astype(np.uint64)
    return acc, state.astype(np.uint32)


def ticket(sigma_a: bytes, tile_index: int, tile_state: npt.NDArray[np.uint32]) -> bytes:
    """J for one tile whose final fold state is ``tile_state`` (h x w)."""
    h = tagged_hasher(TAG_TICKET)
    h.update(sigma_a)
    h.update(u32(tile_index))
    h.update(np.ascontiguousarray(tile_state, dtype="<u4").tobytes())
    return h.digest()


def tile_grid(m: int, n: int, tile_rows: int, tile_cols: int) -> tuple[int, int]:
    """(tile rows, tile columns) of the grid that partitions an m x n product."""
    return m // tile_rows, n // tile_cols


def tile_origin(tile_index: int, n: int, tile_rows: int, tile_cols: int) -> tuple[int, int]:
    """Top-left (row, column) of tile ``tile_index``."""
    per_row = n // tile_cols
    return (tile_index // per_row) * tile_rows, (tile_index % per_row) * tile_cols


def win_threshold(target: int, tile_rows: int, tile_cols: int, k: int) -> int:
    """A ticket wins when it is below this: the target is per multiply-add."""
    return target * tile_rows * tile_cols * k


def ticket_wins(ticket_bytes: bytes, threshold: int) -> bool:
    return len(ticket_bytes) == HASH_SIZE and int.from_bytes(ticket_bytes, "big") < threshold
