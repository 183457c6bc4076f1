"""The seal a block carries to prove its work, and its verification.

A seal reveals one winning tile: the h rows of A and w columns of B it touches, their
Merkle branches against hA and hB, and the ticket. Verifying it replays that tile's
transcript: about h*w*k multiply-adds plus (h+w)*k of noise, whatever m and n are.
``verify_seal`` never raises on a peer's data; every rejection has its own reason.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from consensus.commitments import ENTRY_MAX, ENTRY_MIN, line_leaf
from consensus.hashing import HASH_SIZE, TAG_MERKLE_NODE
from consensus.merkle import MAX_BRANCH_DEPTH, root_from_branch
from consensus.noise import noise_a_rows, noise_b_cols, seed_a, seed_b
from consensus.params import MAX_K, MAX_TILE_SIDE, PouwParams
from consensus.transcript import fold_transcript, ticket, tile_grid, tile_origin, win_threshold

# Decoding caps, checked before any slice is taken. They bound what a peer can make
# us allocate; params then narrow them per network.
MAX_SEAL_LINES = MAX_TILE_SIDE  # rows (or columns) revealed
MAX_SEAL_K = MAX_K


class SealDecodeError(ValueError):
    """The bytes are not a well-formed seal."""


class SealReject(enum.Enum):
    BAD_K = "bad-k"  # k outside the network bounds or not a multiple of r
    BAD_SHAPE = "bad-shape"  # m or n not a positive multiple of the tile, or too large
    TOO_MUCH_WORK = "too-much-work"  # m*n*k above the network cap
    MALFORMED = "malformed-seal"  # revealed lines or branches of the wrong size
    BAD_TILE_INDEX = "bad-tile-index"
    ENTRY_OUT_OF_RANGE = "entry-out-of-range"  # an operand entry outside [-64, 63]
    BAD_ROW_BRANCH = "bad-row-branch"  # a revealed row of A does not lead to hA
    BAD_COLUMN_BRANCH = "bad-column-branch"  # a revealed column of B does not lead to hB
    TICKET_ABOVE_TARGET = "ticket-above-target"
    TICKET_MISMATCH = "ticket-mismatch"  # the replayed transcript gives another ticket


@dataclass(frozen=True)
class SealCheck:
    reason: SealReject | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


SEAL_OK = SealCheck()


@dataclass(frozen=True)
class WorkStatement:
    """What a header claims about its work; every field is bound by the header prefix."""

    prefix_hash: bytes  # hash of every header field except the seal
    m: int
    k: int
    n: int
    h_a: bytes
    h_b: bytes
    target: int  # per multiply-add

    def seeds(self) -> tuple[bytes, bytes]:
        """(sigma_A, sigma_B)."""
        sigma_b = seed_b(self.prefix_hash, self.h_b, self.k, self.n)
        return seed_a(sigma_b, self.h_a, self.m, self.k), sigma_b


@dataclass(frozen=True)
class Seal:
    tile_index: int
    rows: tuple[bytes, ...]  # h rows of A, k bytes each (int8)
    cols: tuple[bytes, ...]  # w columns of B, k bytes each (int8)
    row_branches: tuple[tuple[bytes, ...], ...]
    col_branches: tuple[tuple[bytes, ...], ...]
    ticket: bytes

    def to_bytes(self) -> bytes:
        k = len(self.rows[0]) if self.rows else 0
        out = [struct.pack(">IBBI", self.tile_index, len(self.rows), len(self.cols), k)]
        out.extend(self.rows)
        out.extend(self.cols)
        for branch in (*self.row_branches, *self.col_branches):
            out.append(struct.pack(">B", len(branch)))
            out.extend(branch)
        out.append(self.ticket)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Seal:
        view = memoryview(data)
        if len(view) < 10:
            raise SealDecodeError("seal shorter than its 10-byte head")
        tile_index, n_rows, n_cols, k = struct.unpack_from(">IBBI", view, 0)
        if not (0 < n_rows <= MAX_SEAL_LINES and 0 < n_cols <= MAX_SEAL_LINES):
            raise SealDecodeError(f"seal reveals {n_rows}x{n_cols} lines, cap {MAX_SEAL_LINES}")
        if not 0 < k <= MAX_SEAL_K:
            raise SealDecodeError(f"seal line length {k} outside (0, {MAX_SEAL_K}]")
        pos = 10
        need = (n_rows + n_cols) * k
        if len(view) < pos + need:
            raise SealDecodeError("seal truncated inside its revealed lines")
        lines = [bytes(view[pos + i * k : pos + (i + 1) * k]) for i in range(n_rows + n_cols)]
        pos += need
        branches: list[tuple[bytes, ...]] = []
        for _ in range(n_rows + n_cols):
            if pos >= len(view):
                raise SealDecodeError("seal truncated before a branch")
            depth = view[pos]
            pos += 1
            if depth > MAX_BRANCH_DEPTH:
                raise SealDecodeError(f"branch depth {depth} above cap {MAX_BRANCH_DEPTH}")
            end = pos + depth * HASH_SIZE
            if len(view) < end:
                raise SealDecodeError("seal truncated inside a branch")
            branches.append(
                tuple(bytes(view[p : p + HASH_SIZE]) for p in range(pos, end, HASH_SIZE))
            )
            pos = end
        if len(view) != pos + HASH_SIZE:
            raise SealDecodeError("seal ticket missing or trailing bytes after it")
        return cls(
            tile_index=tile_index,
            rows=tuple(lines[:n_rows]),
            cols=tuple(lines[n_rows:]),
            row_branches=tuple(branches[:n_rows]),
            col_branches=tuple(branches[n_rows:]),
            ticket=bytes(view[pos:]),
        )


def check_shape(params: PouwParams, m: int, k: int, n: int) -> SealCheck:
    """The shape rules of the network, shared by miners, templates and verification."""
    r = params.noise_rank
    if not (params.k_min <= k <= params.k_max) or k % r:
        return SealCheck(SealReject.BAD_K)
    if not (0 < m <= params.m_max and m % params.tile_rows == 0):
        return SealCheck(SealReject.BAD_SHAPE)
    if not (0 < n <= params.n_max and n % params.tile_cols == 0):
        return SealCheck(SealReject.BAD_SHAPE)
    if m * n * k > params.max_multiply_adds:
        return SealCheck(SealReject.TOO_MUCH_WORK)
    return SEAL_OK


def _lines_to_matrix(lines: tuple[bytes, ...]) -> np.ndarray:
    return np.frombuffer(b"".join(lines), dtype=np.int8).reshape(len(lines), -1)


def verify_seal(params: PouwParams, work: WorkStatement, seal: Seal) -> SealCheck:
    """Accept an honest winning seal; reject anything else with its reason."""
    shape = check_shape(params, work.m, work.k, work.n)
    if not shape.ok:
        return shape
    h, w, k = params.tile_rows, params.tile_cols, work.k
    if (
        len(seal.rows) != h
        or len(seal.cols) != w
        or len(seal.row_branches) != h
        or len(seal.col_branches) != w
        or any(len(line) != k for line in (*seal.rows, *seal.cols))
        or len(seal.ticket) != HASH_SIZE
    ):
        return SealCheck(SealReject.MALFORMED)
    grid_rows, grid_cols = tile_grid(work.m, work.n, h, w)
    if not 0 <= seal.tile_index < grid_rows * grid_cols:
        return SealCheck(SealReject.BAD_TILE_INDEX)
    # Cheapest rejection first: the claimed ticket must win at all.
    threshold = win_threshold(work.target, h, w, k)
    if int.from_bytes(seal.ticket, "big") >= threshold:
        return SealCheck(SealReject.TICKET_ABOVE_TARGET)
    a_rows = _lines_to_matrix(seal.rows)
    b_cols = _lines_to_matrix(seal.cols)
    if a_rows.min() < ENTRY_MIN or a_rows.max() > ENTRY_MAX:
        return SealCheck(SealReject.ENTRY_OUT_OF_RANGE)
    if b_cols.min() < ENTRY_MIN or b_cols.max() > ENTRY_MAX:
        return SealCheck(SealReject.ENTRY_OUT_OF_RANGE)
    row0, col0 = tile_origin(seal.tile_index, work.n, h, w)
    for i, (line, branch) in enumerate(zip(seal.rows, seal.row_branches, strict=True)):
        root = root_from_branch(line_leaf(line), row0 + i, work.m, branch, TAG_MERKLE_NODE)
        if root != work.h_a:
            return SealCheck(SealReject.BAD_ROW_BRANCH)
    for j, (line, branch) in enumerate(zip(seal.cols, seal.col_branches, strict=True)):
        root = root_from_branch(line_leaf(line), col0 + j, work.n, branch, TAG_MERKLE_NODE)
        if root != work.h_b:
            return SealCheck(SealReject.BAD_COLUMN_BRANCH)
    sigma_a, sigma_b = work.seeds()
    r = params.noise_rank
    a_noisy = a_rows.astype(np.int64) + noise_a_rows(sigma_a, range(row0, row0 + h), k, r)
    b_noisy = b_cols.T.astype(np.int64) + noise_b_cols(sigma_b, range(col0, col0 + w), k, r)
    _, state = fold_transcript(a_noisy, b_noisy, r)
    if ticket(sigma_a, seal.tile_index, state) != seal.ticket:
        return SealCheck(SealReject.TICKET_MISMATCH)
    return SEAL_OK
