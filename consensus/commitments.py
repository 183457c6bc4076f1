"""Merkle commitments to the operands of a product: hA over rows of A, hB over columns of B.

A leaf is the tagged hash of the raw bytes of one row of A (or one column of B, i.e.
one row of B transposed), int8 two's complement, in index order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from consensus.hashing import TAG_MERKLE_LEAF, TAG_MERKLE_NODE, tagged_hasher
from consensus.merkle import merkle_levels, merkle_root

ENTRY_MIN = -64  # operands are 7-bit so that operand + noise still fits in int8
ENTRY_MAX = 63

Int8Matrix = npt.NDArray[np.int8]


def line_leaf(line: bytes | memoryview) -> bytes:
    """Leaf hash of one row of A or one column of B."""
    h = tagged_hasher(TAG_MERKLE_LEAF)
    h.update(line)
    return h.digest()


def row_leaves(matrix: Int8Matrix) -> list[bytes]:
    """Leaves of the rows of an int8 matrix (pass B.T for the columns of B)."""
    rows = np.ascontiguousarray(matrix, dtype=np.int8)
    data = memoryview(rows.tobytes())
    width = rows.shape[1]
    return [line_leaf(data[i * width : (i + 1) * width]) for i in range(rows.shape[0])]


def commit_rows(a: Int8Matrix) -> bytes:
    """hA: Merkle root over the rows of A."""
    return merkle_root(row_leaves(a), TAG_MERKLE_NODE)


def commit_cols(b: Int8Matrix) -> bytes:
    """hB: Merkle root over the columns of B."""
    return merkle_root(row_leaves(b.T), TAG_MERKLE_NODE)


def row_tree(matrix: Int8Matrix) -> list[list[bytes]]:
    """All levels of the row tree of ``matrix`` (for cutting many branches)."""
    return merkle_levels(row_leaves(matrix), TAG_MERKLE_NODE)


def entries_in_range(matrix: npt.NDArray[np.integer]) -> bool:
    """True when every entry lies in [ENTRY_MIN, ENTRY_MAX]."""
    if matrix.size == 0:
        return True
    return bool(matrix.min() >= ENTRY_MIN and matrix.max() <= ENTRY_MAX)
