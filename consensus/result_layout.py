"""How a job's result C is laid out for its commitment, and a challenge's data.

The numbers and shapes that transaction decoding needs (chain/job_payloads.py),
apart from the hashing and checking in consensus/result.py, so that decoding a
transaction loads no NumPy (every `pouw wallet` command decodes one).
"""

from __future__ import annotations

from dataclasses import dataclass

RESULT_CHUNK = 64  # entries of C per leaf: 256 bytes, so a challenge stays O(k)
ENTRY_BYTES = 4  # int32 little-endian


def chunk_count(n: int) -> int:
    return (n + RESULT_CHUNK - 1) // RESULT_CHUNK


def chunk_len(n: int, chunk: int) -> int:
    """Entries in chunk ``chunk`` of a row of n entries."""
    return min(RESULT_CHUNK, n - chunk * RESULT_CHUNK)


@dataclass(frozen=True)
class Challenge:
    """The data of one challenge (the JOB_CHALLENGE payload minus the job id)."""

    i: int
    j: int
    row: bytes  # row i of A, k int8 bytes
    col: bytes  # column j of B, k int8 bytes
    chunk: bytes  # the chunk of row i of C holding entry j, int32 LE
    row_branch: tuple[bytes, ...]  # row i of A against hA
    col_branch: tuple[bytes, ...]  # column j of B against hB
    chunk_branch: tuple[bytes, ...]  # chunk against the row root of row i of C
    result_branch: tuple[bytes, ...]  # that row root against hC
