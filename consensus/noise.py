"""Seeds and the low-rank noise that makes the lottery unpredictable.

    sigma_B = H_seed_b(prefix_hash || hB || u32 k || u32 n)
    sigma_A = H_seed_a(sigma_B || hA || u32 m || u32 k)

E_A = E_AL . E_AR and E_B = E_BL . E_BR, with E_AL (m x r) and E_BR (r x n) dense,
entries uniform in [-32, 31], and E_AR (r x k) and E_BL (k x r) sparse: each column of
E_AR (each row of E_BL) holds one +1 and one -1 in two distinct places. So a column of
E_A is the difference of two columns of E_AL and a row of E_B the difference of two
rows of E_BR: building the noise costs O(m k + k n), no matrix product.

Every stream is SHAKE-256 over the tagged prefix of TAG_NOISE, then the seed, a
one-byte label and a u32 index. Rows of E_AL and columns of E_BR are one stream each,
so a verifier derives only the rows and columns its tile touches.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from consensus.hashing import TAG_NOISE, TAG_SEED_A, TAG_SEED_B, tagged_hash
from consensus.ints import u8, u32

LABEL_A_LEFT = 1  # rows of E_AL, seeded by sigma_A
LABEL_B_RIGHT = 2  # columns of E_BR, seeded by sigma_B
LABEL_A_PATTERN = 3  # the +1/-1 pattern of E_AR, seeded by sigma_A
LABEL_B_PATTERN = 4  # the +1/-1 pattern of E_BL, seeded by sigma_B

DENSE_NOISE_MIN = -32  # dense noise is 6-bit: (byte & 63) - 32
_DENSE_MASK = 63

_TAG_DIGEST = hashlib.sha256(TAG_NOISE.encode("ascii")).digest()
_NOISE_PREFIX = _TAG_DIGEST + _TAG_DIGEST


def seed_b(prefix_hash: bytes, h_b: bytes, k: int, n: int) -> bytes:
    return tagged_hash(TAG_SEED_B, prefix_hash, h_b, u32(k), u32(n))


def seed_a(sigma_b: bytes, h_a: bytes, m: int, k: int) -> bytes:
    return tagged_hash(TAG_SEED_A, sigma_b, h_a, u32(m), u32(k))


def noise_stream(seed: bytes, label: int, index: int, nbytes: int) -> bytes:
    """``nbytes`` of SHAKE-256(tag prefix || seed || u8 label || u32 index)."""
    xof = hashlib.shake_256(_NOISE_PREFIX)
    xof.update(seed)
    xof.update(u8(label))
    xof.update(u32(index))
    return xof.digest(nbytes)


def dense_noise_lines(
    seed: bytes, label: int, indices: npt.ArrayLike, r: int
) -> npt.NDArray[np.int8]:
    """One line of r dense noise entries per index (rows of E_AL or columns of E_BR)."""
    idx = [int(i) for i in np.asarray(indices).ravel()]
    out = np.empty((len(idx), r), dtype=np.uint8)
    for row, i in enumerate(idx):
        out[row] = np.frombuffer(noise_stream(seed, label, i, r), dtype=np.uint8)
    return ((out & _DENSE_MASK).astype(np.int16) + DENSE_NOISE_MIN).astype(np.int8)


def sparse_pattern(
    seed: bytes, label: int, k: int, r: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(plus, minus): for each of the k positions, the two distinct noise indices.

    Position c draws two little-endian u32 words x, y; plus = x mod r and
    minus = (plus + 1 + y mod (r - 1)) mod r, which is never equal to plus.
    """
    words = np.frombuffer(noise_stream(seed, label, 0, 8 * k), dtype="<u4").astype(np.int64)
    x, y = words[0::2], words[1::2]
    plus = x % r
    minus = (plus + 1 + y % (r - 1)) % r
    return plus, minus


def noise_a_rows(sigma_a: bytes, rows: npt.ArrayLike, k: int, r: int) -> npt.NDArray[np.int64]:
    """Rows ``rows`` of E_A = E_AL . E_AR (int64, entries in [-63, 63])."""
    left = dense_noise_lines(sigma_a, LABEL_A_LEFT, rows, r).astype(np.int64)
    plus, minus = sparse_pattern(sigma_a, LABEL_A_PATTERN, k, r)
    return left[:, plus] - left[:, minus]


def noise_b_cols(sigma_b: bytes, cols: npt.ArrayLike, k: int, r: int) -> npt.NDArray[np.int64]:
    """Columns ``cols`` of E_B = E_BL . E_BR as a k x len(cols) int64 matrix."""
    right = dense_noise_lines(sigma_b, LABEL_B_RIGHT, cols, r).astype(np.int64)  # len(cols) x r
    plus, minus = sparse_pattern(sigma_b, LABEL_B_PATTERN, k, r)
    return (right[:, plus] - right[:, minus]).T
