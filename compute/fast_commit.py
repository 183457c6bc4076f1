"""Commitments to whole matrices through compute/fasthash's SIMD-lane SHA-256: the
same bytes as consensus/commitments.py (row leaves of A and Bᵀ), consensus/result.py
(row roots of C) and consensus/merkle.py (roots), many times faster on large matrices.

A committed 512 x 4096 C has 32,768 chunk leaves and as many Merkle nodes; one hashlib
call per hash costs more in Python than the hash itself, so its root took 55-95 ms
on the miner (between a finished product and its commit) and again on the buyer
(checking every row as it arrives). Consensus code keeps the one-hash-at-a-time
reference; these are for the blob store, the miner, the buyer and the wallet, and
tests/test_fast_commit.py checks them bit-identical on every shape class (odd counts,
rows whose length is not a multiple of a chunk, tiny and empty inputs).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from compute.fasthash import (
    LEAF_MIDSTATE,
    digest_bytes,
    leaf_words,
    level_words,
    row_leaf_words,
    tag_midstate,
)
from compute.spread import spread
from consensus.hashing import TAG_MERKLE_NODE, TAG_RESULT_LEAF, TAG_RESULT_NODE, TAG_RESULT_ROW
from consensus.merkle import EMPTY_ROOT
from consensus.result import ENTRY_BYTES, RESULT_CHUNK, as_result_bytes

Words = npt.NDArray[np.uint32]  # digests as count x 8 big-endian words

MIDSTATES = {
    tag: tag_midstate(tag) for tag in (TAG_MERKLE_NODE, TAG_RESULT_LEAF, TAG_RESULT_NODE,
                                       TAG_RESULT_ROW)
}  # fmt: skip


def _midstate(tag: str) -> npt.NDArray[np.uint32]:
    found = MIDSTATES.get(tag)
    return found if found is not None else tag_midstate(tag)


def _as_int8_rows(matrix: npt.NDArray[np.generic]) -> npt.NDArray[np.int8]:
    """A 2-D array's rows as int8 byte rows (no copy when already contiguous)."""
    flat = np.ascontiguousarray(matrix)
    return flat.view(np.int8).reshape(flat.shape[0], flat.shape[1] * flat.itemsize)


def _leaves(rows: npt.NDArray[np.int8], midstate: npt.NDArray[np.uint32]) -> Words:
    out = np.empty((rows.shape[0], 8), np.uint32)
    if rows.shape[0]:
        if rows.shape[1] % 4 == 0 and rows.shape[1] and rows.flags.c_contiguous:
            words = rows.view(np.uint32)
            spread(lambda lo, hi: row_leaf_words(words, midstate, out, lo, hi), rows.shape[0])
        else:
            leaf_words(rows, False, midstate, out, 0, rows.shape[0])
    return out


def tree_roots(level: Words, node_tag: str) -> Words:
    """Merkle roots of many trees of equal leaf count at once: ``level`` is trees x
    leaves x 8 words; returns trees x 8 (an odd node is promoted, as consensus/merkle)."""
    trees, width = level.shape[0], level.shape[1]
    if width == 0:
        return np.tile(np.frombuffer(EMPTY_ROOT, ">u4").astype(np.uint32), (trees, 1))
    midstate = _midstate(node_tag)
    while width > 1:
        pairs = width // 2
        joined = np.ascontiguousarray(level[:, : 2 * pairs]).reshape(trees * 2 * pairs, 8)
        parents = np.empty((trees * pairs, 8), np.uint32)
        level_words(joined, midstate, parents, 0, trees * pairs)
        up = parents.reshape(trees, pairs, 8)
        level = np.concatenate([up, level[:, 2 * pairs :]], axis=1) if width % 2 else up
        width = level.shape[1]
    return level[:, 0]


def to_words(digests: list[bytes]) -> Words:
    if any(len(d) != 32 for d in digests):
        raise ValueError("Merkle leaves must be 32-byte hashes")
    return leaf_bytes_to_words(b"".join(digests))


def leaf_bytes_to_words(raw: bytes) -> Words:
    """32-byte leaves laid end to end -> (count, 8) words."""
    if len(raw) % 32:
        raise ValueError("Merkle leaves must be 32-byte hashes")
    return np.frombuffer(raw, ">u4").astype(np.uint32).reshape(len(raw) // 32, 8)


def to_digests(words: Words) -> list[bytes]:
    raw = digest_bytes(words)
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def merkle_root_of(leaves: Words | list[bytes], node_tag: str) -> bytes:
    """consensus.merkle.merkle_root of 32-byte leaves (bytes, or count x 8 words)."""
    words = to_words(leaves) if isinstance(leaves, list) else leaves
    if words.shape[0] == 0:
        return EMPTY_ROOT
    return digest_bytes(tree_roots(words[None], node_tag)[0])


def line_leaf_words(matrix: npt.NDArray[np.int8]) -> Words:
    """consensus.commitments.row_leaves of an int8 matrix, as words."""
    return _leaves(_as_int8_rows(np.asarray(matrix, np.int8)), LEAF_MIDSTATE)


def column_leaf_words(matrix: npt.NDArray[np.int8]) -> Words:
    """The leaves of an int8 matrix's columns (the rows of its transpose), as words:
    the leaves of a blob of kind bt, from B itself (no transpose)."""
    mat = np.asarray(matrix, np.int8)
    out = np.empty((mat.shape[1], 8), np.uint32)
    if mat.shape[1]:
        spread(lambda lo, hi: leaf_words(mat, True, LEAF_MIDSTATE, out, lo, hi), mat.shape[1])
    return out


def result_row_root_words(c: npt.NDArray[np.integer]) -> Words:
    """consensus.result.result_row_roots of C, as words."""
    c32 = as_result_bytes(c)
    m, n = c32.shape
    data = _as_int8_rows(c32)
    full, rest = divmod(n, RESULT_CHUNK)
    step = RESULT_CHUNK * ENTRY_BYTES
    midstate = _midstate(TAG_RESULT_LEAF)
    chunks = np.empty((m, full + (1 if rest else 0), 8), np.uint32)
    if full:
        body = np.ascontiguousarray(data[:, : full * step]).reshape(m * full, step)
        chunks[:, :full] = _leaves(body, midstate).reshape(m, full, 8)
    if rest:  # the short last chunk of every row
        chunks[:, full] = _leaves(np.ascontiguousarray(data[:, full * step :]), midstate)
    return tree_roots(chunks, TAG_RESULT_NODE)


def warm_up() -> None:
    """Compile (or load from Numba's cache) every kernel variant the blob store, the
    fetcher and the miner use, so that the first job does not wait 0.3-0.7 s for it
    (a market miner runs this on a background thread when it starts)."""
    for writeable in (True, False):
        for matrix in (np.ones((2, 64), np.int8), np.ones((2, 6), np.int8),
                       np.ones((2, 70), np.int32)):  # fmt: skip
            matrix.flags.writeable = writeable
            merkle_root_of(
                result_row_root_words(matrix) if matrix.dtype == np.int32
                else line_leaf_words(matrix),
                TAG_MERKLE_NODE,
            )  # fmt: skip
