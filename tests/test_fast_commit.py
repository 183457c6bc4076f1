"""compute/fast_commit (compute/fasthash's SIMD lanes) gives the same bytes as the
consensus reference (one hashlib call per hash) on every shape class."""

from __future__ import annotations

import numpy as np
import pytest

from compute.fast_commit import (
    line_leaf_words,
    merkle_root_of,
    result_row_root_words,
    to_digests,
    to_words,
)
from consensus.commitments import row_leaves
from consensus.hashing import TAG_MERKLE_NODE, TAG_RESULT_ROW, tagged_hash
from consensus.merkle import merkle_root
from consensus.result import result_root, result_row_roots


@pytest.mark.parametrize(("m", "n"), [(1, 1), (3, 64), (17, 130), (40, 4096), (5, 63), (0, 8),
                                      (33, 192), (4, 0)])  # fmt: skip
def test_result_row_roots_match_consensus(m: int, n: int) -> None:
    c = np.random.default_rng(m * 1000 + n).integers(-(2**31), 2**31, (m, n), dtype=np.int64)
    c = c.astype(np.int32)
    got = to_digests(result_row_root_words(c))
    assert got == result_row_roots(c)
    if m:
        assert merkle_root_of(result_row_root_words(c), TAG_RESULT_ROW) == result_root(c)


@pytest.mark.parametrize(("rows", "cols"), [(1, 64), (31, 4096), (100, 50), (64, 128), (3, 1)])
def test_line_leaves_and_roots_match_consensus(rows: int, cols: int) -> None:
    x = np.random.default_rng(rows + cols).integers(-64, 64, (rows, cols), dtype=np.int8)
    leaves = to_digests(line_leaf_words(x))
    assert leaves == row_leaves(x)
    expect = merkle_root(leaves, TAG_MERKLE_NODE)
    assert merkle_root_of(leaves, TAG_MERKLE_NODE) == expect
    assert merkle_root_of(line_leaf_words(x), TAG_MERKLE_NODE) == expect
    # a non-contiguous view (columns of B as rows of Bᵀ) hashes the same
    assert to_digests(line_leaf_words(x.T)) == row_leaves(np.ascontiguousarray(x.T))


def test_merkle_root_of_edge_cases() -> None:
    leaves = [tagged_hash("pouw/test", bytes([i])) for i in range(37)]
    for count in (0, 1, 2, 3, 5, 16, 17, 32, 33, 37):
        expect = merkle_root(leaves[:count], TAG_MERKLE_NODE)
        assert merkle_root_of(leaves[:count], TAG_MERKLE_NODE) == expect
    assert to_digests(to_words(leaves)) == leaves
    with pytest.raises(ValueError):
        merkle_root_of([b"short"], TAG_MERKLE_NODE)


@pytest.mark.parametrize(
    "rows, cols",
    [(1, 1), (7, 9), (8, 8), (64, 72), (300, 1001), (257, 264), (264, 257), (513, 515)],
)
def test_transposed_equals_numpy_on_every_shape(rows: int, cols: int) -> None:
    """The block transpose, whole 8x8 blocks or padded to them (ragged shapes past
    SMALL_BYTES), equals NumPy's x.T and is C-contiguous."""
    from compute.transpose import transposed

    x = np.random.default_rng(rows * 1000 + cols).integers(-128, 128, (rows, cols), np.int8)
    got = transposed(x)
    assert got.flags.c_contiguous and got.dtype == np.int8
    assert np.array_equal(got, x.T)
    assert np.array_equal(transposed(x[:, 1:]), x[:, 1:].T)  # a strided column slice
