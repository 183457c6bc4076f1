"""The readable reference of mining: noisy operands, full transcript, tickets, seals,
and noise removal giving the exact product.

Plain NumPy, int64 throughout: slow, and exact by construction. The engines in
compute/ must produce the same tickets, seals and products bit for bit; tests hold
them to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from consensus.commitments import ENTRY_MAX, ENTRY_MIN, Int8Matrix, row_tree
from consensus.hashing import TAG_FILLER, tagged_hash
from consensus.merkle import branch_from_levels
from consensus.noise import (
    LABEL_A_LEFT,
    LABEL_A_PATTERN,
    LABEL_B_PATTERN,
    LABEL_B_RIGHT,
    dense_noise_lines,
    noise_a_rows,
    noise_b_cols,
    noise_stream,
    sparse_pattern,
)
from consensus.params import PouwParams
from consensus.seal import Seal, WorkStatement
from consensus.transcript import (
    fold_transcript,
    ticket,
    ticket_wins,
    tile_grid,
    tile_origin,
    win_threshold,
)

Int64Matrix = npt.NDArray[np.int64]


def noisy_operands(
    params: PouwParams, work: WorkStatement, a: Int8Matrix, b: Int8Matrix
) -> tuple[Int64Matrix, Int64Matrix]:
    """A' = A + E_A and B' = B + E_B (int64; entries in [-127, 126])."""
    sigma_a, sigma_b = work.seeds()
    r = params.noise_rank
    a_noisy = a.astype(np.int64) + noise_a_rows(sigma_a, range(work.m), work.k, r)
    b_noisy = b.astype(np.int64) + noise_b_cols(sigma_b, range(work.n), work.k, r)
    return a_noisy, b_noisy


def all_tickets(
    params: PouwParams, work: WorkStatement, state: npt.NDArray[np.uint32]
) -> list[bytes]:
    """Tickets of every tile, in tile-index order, from the full fold state."""
    sigma_a, _ = work.seeds()
    h, w = params.tile_rows, params.tile_cols
    grid_rows, grid_cols = tile_grid(work.m, work.n, h, w)
    out = []
    for t in range(grid_rows * grid_cols):
        i, j = tile_origin(t, work.n, h, w)
        out.append(ticket(sigma_a, t, state[i : i + h, j : j + w]))
    return out


def remove_noise(
    params: PouwParams, work: WorkStatement, a: Int8Matrix, b: Int8Matrix, c_noisy: Int64Matrix
) -> Int64Matrix:
    """C = C' - (A . E_BL) . E_BR - E_AL . (E_AR . B'), exact.

    Both corrections are a sparse product (O(m k) or O(k n)) followed by a rank-r one.
    """
    sigma_a, sigma_b = work.seeds()
    r, m, k, n = params.noise_rank, work.m, work.k, work.n
    a64 = a.astype(np.int64)
    # A . E_BL: E_BL row p has +1 at column plus[p] and -1 at minus[p].
    b_plus, b_minus = sparse_pattern(sigma_b, LABEL_B_PATTERN, k, r)
    a_ebl = np.zeros((r, m), dtype=np.int64)
    np.add.at(a_ebl, b_plus, a64.T)
    np.subtract.at(a_ebl, b_minus, a64.T)
    e_br = dense_noise_lines(sigma_b, LABEL_B_RIGHT, range(n), r).astype(np.int64).T  # r x n
    # E_AR . B': E_AR column c has +1 at row plus[c] and -1 at row minus[c].
    b_noisy = b.astype(np.int64) + noise_b_cols(sigma_b, range(n), k, r)
    a_plus, a_minus = sparse_pattern(sigma_a, LABEL_A_PATTERN, k, r)
    ear_b = np.zeros((r, n), dtype=np.int64)
    np.add.at(ear_b, a_plus, b_noisy)
    np.subtract.at(ear_b, a_minus, b_noisy)
    e_al = dense_noise_lines(sigma_a, LABEL_A_LEFT, range(m), r).astype(np.int64)  # m x r
    return c_noisy - a_ebl.T @ e_br - e_al @ ear_b


def make_seal(
    params: PouwParams,
    work: WorkStatement,
    a: Int8Matrix,
    b: Int8Matrix,
    tile_index: int,
    ticket_bytes: bytes,
    row_levels: list[list[bytes]] | None = None,
    col_levels: list[list[bytes]] | None = None,
) -> Seal:
    """The seal revealing tile ``tile_index`` (pass precomputed trees when making many)."""
    h, w = params.tile_rows, params.tile_cols
    row0, col0 = tile_origin(tile_index, work.n, h, w)
    row_levels = row_levels if row_levels is not None else row_tree(a)
    col_levels = col_levels if col_levels is not None else row_tree(b.T)
    a8 = np.ascontiguousarray(a, dtype=np.int8)
    bt8 = np.ascontiguousarray(b.T, dtype=np.int8)
    return Seal(
        tile_index=tile_index,
        rows=tuple(a8[row0 + i].tobytes() for i in range(h)),
        cols=tuple(bt8[col0 + j].tobytes() for j in range(w)),
        row_branches=tuple(tuple(branch_from_levels(row_levels, row0 + i)) for i in range(h)),
        col_branches=tuple(tuple(branch_from_levels(col_levels, col0 + j)) for j in range(w)),
        ticket=ticket_bytes,
    )


@dataclass(frozen=True)
class MiningResult:
    product: Int64Matrix  # the exact C = A . B
    tickets: list[bytes]  # every tile's ticket, in tile-index order
    seals: list[Seal]  # one per winning tile, in tile-index order


def mine_reference(
    params: PouwParams, work: WorkStatement, a: Int8Matrix, b: Int8Matrix
) -> MiningResult:
    """Mine one product the slow, obvious way."""
    a_noisy, b_noisy = noisy_operands(params, work, a, b)
    c_noisy, state = fold_transcript(a_noisy, b_noisy, params.noise_rank)
    tickets = all_tickets(params, work, state)
    threshold = win_threshold(work.target, params.tile_rows, params.tile_cols, work.k)
    winners = [t for t, j in enumerate(tickets) if ticket_wins(j, threshold)]
    seals = []
    if winners:
        row_levels, col_levels = row_tree(a), row_tree(b.T)
        seals = [
            make_seal(params, work, a, b, t, tickets[t], row_levels, col_levels) for t in winners
        ]
    return MiningResult(remove_noise(params, work, a, b, c_noisy), tickets, seals)


def filler_matrices(seed: bytes, m: int, k: int, n: int) -> tuple[Int8Matrix, Int8Matrix]:
    """Pseudo-random operands in [-64, 63] for a miner with no job (plain proof of work).

    A is m x k from stream (seed, label 1), B is k x n from stream (seed, label 2), each
    byte mapped to (byte & 127) - 64, row-major.
    """
    key = tagged_hash(TAG_FILLER, seed)
    a = _bytes_to_entries(noise_stream(key, 1, 0, m * k)).reshape(m, k)
    b = _bytes_to_entries(noise_stream(key, 2, 0, k * n)).reshape(k, n)
    return a, b


def _bytes_to_entries(raw: bytes) -> Int8Matrix:
    values = (np.frombuffer(raw, dtype=np.uint8) & 127).astype(np.int16) + ENTRY_MIN
    assert values.max(initial=ENTRY_MIN) <= ENTRY_MAX
    return values.astype(np.int8)
