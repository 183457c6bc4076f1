"""The commitment to a job's result C = A . B, and the proof that one entry is wrong.

C (m x n, int32) is committed in two levels so that one entry is provable with O(k)
bytes whatever n is:

* a row of C is cut into chunks of ``RESULT_CHUNK`` entries (the last may be
  shorter); a chunk leaf is ``H_result/leaf(chunk as int32 little-endian)``;
* the *row root* of row i is the Merkle root of its chunk leaves (node tag
  ``pouw/result/node``);
* the *result root* hC is the Merkle root of the m row roots (node tag
  ``pouw/result/row``).

A challenge reveals row i of A (k bytes), column j of B (k bytes), the chunk of row i
of C holding entry j, and four branches: row i against hA, column j against hB, the
chunk against the row root, the row root against hC. It wins iff every branch checks
and the revealed entry differs from the exact dot product. ``verify_challenge`` is a
pure rule: it returns a named reason and never raises on a peer's data.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from consensus.commitments import line_leaf
from consensus.hashing import (
    HASH_SIZE,
    TAG_MERKLE_NODE,
    TAG_RESULT_LEAF,
    TAG_RESULT_NODE,
    TAG_RESULT_ROW,
    tagged_hasher,
)
from consensus.merkle import merkle_levels, merkle_root, root_from_branch
from consensus.result_layout import (  # re-exported: the layout's one home is there
    ENTRY_BYTES,
    RESULT_CHUNK,
    Challenge,
    chunk_count,
    chunk_len,
)


def chunk_leaf(data: bytes | memoryview) -> bytes:
    h = tagged_hasher(TAG_RESULT_LEAF)
    h.update(data)
    return h.digest()


def row_chunk_leaves(row: bytes | memoryview, n: int) -> list[bytes]:
    """Chunk leaves of one row of C given as n int32 LE entries (4n bytes)."""
    view = memoryview(row)
    step = RESULT_CHUNK * ENTRY_BYTES
    return [chunk_leaf(view[c * step : c * step + chunk_len(n, c) * ENTRY_BYTES])
            for c in range(chunk_count(n))]  # fmt: skip


def row_root(row: bytes | memoryview, n: int) -> bytes:
    return merkle_root(row_chunk_leaves(row, n), TAG_RESULT_NODE)


def as_result_bytes(c: npt.NDArray[np.integer]) -> npt.NDArray[np.int32]:
    """C as contiguous int32 little-endian (raises if an entry does not fit int32)."""
    if c.dtype != np.dtype("<i4"):
        if c.size and (int(c.max()) > 2**31 - 1 or int(c.min()) < -(2**31)):
            raise ValueError("result entries do not fit int32")
        c = c.astype("<i4")
    return np.ascontiguousarray(c)


def result_row_roots(c: npt.NDArray[np.integer]) -> list[bytes]:
    c32 = as_result_bytes(c)
    n = c32.shape[1]
    data = memoryview(c32.tobytes())
    width = n * ENTRY_BYTES
    return [row_root(data[i * width : (i + 1) * width], n) for i in range(c32.shape[0])]


def result_root_from_rows(row_roots: Sequence[bytes]) -> bytes:
    return merkle_root(row_roots, TAG_RESULT_ROW)


def result_root(c: npt.NDArray[np.integer]) -> bytes:
    """hC: the commitment a JOB_COMMIT carries."""
    return result_root_from_rows(result_row_roots(c))


def result_proof(
    c: npt.NDArray[np.integer], i: int, j: int
) -> tuple[bytes, list[bytes], list[bytes]]:
    """(chunk bytes, chunk branch within row i, row branch within C) for entry (i, j)."""
    c32 = as_result_bytes(c)
    return row_proof(c32[i].tobytes(), result_row_roots(c32), i, j)


def row_proof(
    row: bytes, row_roots: Sequence[bytes], i: int, j: int
) -> tuple[bytes, list[bytes], list[bytes]]:
    """``result_proof`` from row i of C alone (int32 LE bytes) and C's m row roots: what
    a claimant that keeps C elsewhere (its node's blob store) reads to answer a probe."""
    from consensus.merkle import branch_from_levels

    n = len(row) // ENTRY_BYTES
    leaves = row_chunk_leaves(row, n)
    chunk = j // RESULT_CHUNK
    step = RESULT_CHUNK * ENTRY_BYTES
    data = row[chunk * step : chunk * step + chunk_len(n, chunk) * ENTRY_BYTES]
    chunk_branch = branch_from_levels(merkle_levels(leaves, TAG_RESULT_NODE), chunk)
    row_branch = branch_from_levels(merkle_levels(list(row_roots), TAG_RESULT_ROW), i)
    return data, chunk_branch, row_branch


class ChallengeReject(enum.StrEnum):
    BAD_INDEX = "challenge-bad-index"  # i >= m or j >= n
    MALFORMED = "challenge-malformed"  # revealed lines of the wrong length
    BAD_ROW_BRANCH = "challenge-bad-row-branch"  # row of A does not lead to hA
    BAD_COLUMN_BRANCH = "challenge-bad-column-branch"  # column of B does not lead to hB
    BAD_RESULT_BRANCH = "challenge-bad-result-branch"  # chunk does not lead to hC
    ENTRY_CORRECT = "challenge-entry-correct"  # the committed entry is the right one


def verify_chunk(
    m: int, n: int, h_c: bytes, row: int, chunk: int, data: bytes,
    chunk_branch: Sequence[bytes], result_branch: Sequence[bytes],
) -> ChallengeReject | None:  # fmt: skip
    """None when ``data`` is chunk ``chunk`` of row ``row`` of the C committed as hC."""
    if not (0 <= row < m and 0 <= chunk < chunk_count(n)):
        return ChallengeReject.BAD_INDEX
    if len(data) != chunk_len(n, chunk) * ENTRY_BYTES:
        return ChallengeReject.MALFORMED
    if any(len(x) != HASH_SIZE for x in (*chunk_branch, *result_branch)):
        return ChallengeReject.MALFORMED
    row_root_ = root_from_branch(
        chunk_leaf(data), chunk, chunk_count(n), chunk_branch, TAG_RESULT_NODE
    )
    if row_root_ is None:
        return ChallengeReject.BAD_RESULT_BRANCH
    if root_from_branch(row_root_, row, m, result_branch, TAG_RESULT_ROW) != h_c:
        return ChallengeReject.BAD_RESULT_BRANCH
    return None


def verify_challenge(
    m: int, k: int, n: int, h_a: bytes, h_b: bytes, h_c: bytes, ch: Challenge
) -> ChallengeReject | None:
    """None when the challenge proves that the committed entry C[i, j] is wrong."""
    if not (0 <= ch.i < m and 0 <= ch.j < n):
        return ChallengeReject.BAD_INDEX
    chunk = ch.j // RESULT_CHUNK
    if len(ch.row) != k or len(ch.col) != k or len(ch.chunk) != chunk_len(n, chunk) * ENTRY_BYTES:
        return ChallengeReject.MALFORMED
    if any(len(x) != HASH_SIZE for x in (*ch.row_branch, *ch.col_branch)):
        return ChallengeReject.MALFORMED
    if root_from_branch(line_leaf(ch.row), ch.i, m, ch.row_branch, TAG_MERKLE_NODE) != h_a:
        return ChallengeReject.BAD_ROW_BRANCH
    if root_from_branch(line_leaf(ch.col), ch.j, n, ch.col_branch, TAG_MERKLE_NODE) != h_b:
        return ChallengeReject.BAD_COLUMN_BRANCH
    bad_chunk = verify_chunk(m, n, h_c, ch.i, chunk, ch.chunk, ch.chunk_branch, ch.result_branch)
    if bad_chunk is not None:
        return bad_chunk
    a = np.frombuffer(ch.row, dtype=np.int8).astype(np.int64)
    b = np.frombuffer(ch.col, dtype=np.int8).astype(np.int64)
    exact = int(a @ b)
    pos = (ch.j % RESULT_CHUNK) * ENTRY_BYTES
    committed = int.from_bytes(ch.chunk[pos : pos + ENTRY_BYTES], "little", signed=True)
    if committed == exact:
        return ChallengeReject.ENTRY_CORRECT
    return None
