"""Bulk versions of the protocol's hashing, many messages at once in SIMD lanes.

Same bytes as consensus/ (tests/test_numpy_engine.py compares them), only faster when
there are thousands of messages:

* ``dense_lines_t``: the dense noise lines of consensus.noise.dense_noise_lines
  (SHAKE-256 over tag prefix || seed || u8 label || u32 index, one line per index),
  transposed: r x count. Each line is one Keccak-f[1600] call for r <= 136.
* ``row_leaves`` / ``col_leaves`` and ``merkle_levels``: the leaves and the levels of
  consensus.commitments' trees over the rows of A and the columns of B (no transposed
  copy of B needed), as arrays of big-endian 32-bit words, one digest per row.

The kernels take a [lo, hi) range so callers can split the work between threads.
"""

from __future__ import annotations

import hashlib
import struct

import numba as nb
import numpy as np

from compute.keccak_lanes import LANES as KLANES
from compute.keccak_lanes import permute
from compute.numba_cache import drop_stale
from compute.sha256_lanes import BUFFER_WORDS, IV, LANES, ROUND_K, compress
from consensus.hashing import TAG_MERKLE_LEAF, TAG_MERKLE_NODE, TAG_NOISE

drop_stale()  # before any cached kernel loads: they inline other modules

SHAKE256_RATE = 136


def digest_bytes(words: np.ndarray) -> bytes:
    """Digest(s) held as big-endian 32-bit words back to bytes."""
    return np.ascontiguousarray(words, dtype=np.uint32).astype(">u4").tobytes()


def words_to_digests(words: np.ndarray) -> list[bytes]:
    raw = digest_bytes(words)
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def sha256_midstate(block64: bytes) -> np.ndarray:
    """The SHA-256 chaining state after one 64-byte block (a tagged-hash prefix).

    Plain Python (one compression), so that importing this module compiles nothing.
    """

    def rotr(x: int, n: int) -> int:
        return ((x >> n) | (x << (32 - n))) & 0xFFFFFFFF

    w = list(struct.unpack(">16I", block64))
    for t in range(16, 64):
        s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & 0xFFFFFFFF)
    a, b, c, d, e, f, g, h = IV
    for t in range(64):
        t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + ROUND_K[t] + w[t]
        t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
        a, b, c, d, e, f, g, h = (t1 + t2) & 0xFFFFFFFF, a, b, c, (d + t1) & 0xFFFFFFFF, e, f, g
    return np.array(
        [(x + y) & 0xFFFFFFFF for x, y in zip(IV, (a, b, c, d, e, f, g, h), strict=True)],
        dtype=np.uint32,
    )


_MIDSTATES: dict[str, np.ndarray] = {}  # a handful of tags, each computed once


def tag_midstate(tag: str) -> np.ndarray:
    """The chaining state after a tagged hash's 64-byte prefix, SHA256(tag) twice.

    Cached: the pure-Python compression takes about 0.2 ms, 13 % of a devnet filler
    product that asked for it every time. Callers must not write into it."""
    found = _MIDSTATES.get(tag)
    if found is None:
        digest = hashlib.sha256(tag.encode("ascii")).digest()
        found = _MIDSTATES[tag] = sha256_midstate(digest + digest)
    return found


# --- SHAKE-256 noise lines -----------------------------------------------------------

_TAG_NOISE_DIGEST = hashlib.sha256(TAG_NOISE.encode("ascii")).digest()


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _shake_lines(block, word12, r, out, lo, hi):
    """out[:, lo:hi] = the first r bytes of each index's stream, mapped to (b & 63) - 32.

    ``block`` is the padded absorb block (17 words) for index 0; only word 12 (label,
    the big-endian index, the 0x1F pad byte) changes with the index.
    """
    buf = np.empty(25 * KLANES, np.uint64)
    for x0 in range(lo, hi, KLANES):
        count = min(KLANES, hi - x0)
        for q in range(25):
            value = block[q] if q < 17 else np.uint64(0)
            for x in range(KLANES):
                buf[q * KLANES + x] = value
        for x in range(count):
            idx = np.uint64(x0 + x)
            swapped = (
                ((idx >> np.uint64(24)) & np.uint64(0xFF))
                | (((idx >> np.uint64(16)) & np.uint64(0xFF)) << np.uint64(8))
                | (((idx >> np.uint64(8)) & np.uint64(0xFF)) << np.uint64(16))
                | ((idx & np.uint64(0xFF)) << np.uint64(24))
            )
            buf[12 * KLANES + x] = word12 | (swapped << np.uint64(8))
        permute(buf)
        produced = 0
        while produced < r:
            take = min(SHAKE256_RATE, r - produced)
            for byte in range(take):
                q = byte // 8
                shift = np.uint64(8 * (byte % 8))
                row = out[produced + byte]
                for x in range(count):
                    v = (buf[q * KLANES + x] >> shift) & np.uint64(63)
                    row[x0 + x] = np.int8(np.int64(v) - 32)
            produced += take
            if produced < r:
                permute(buf)


def shake_block(seed: bytes, label: int) -> tuple[np.ndarray, np.uint64]:
    """The padded SHAKE-256 absorb block of (seed, label, index 0) and its word 12."""
    message = _TAG_NOISE_DIGEST + _TAG_NOISE_DIGEST + seed + bytes([label]) + bytes(4)
    if len(message) >= SHAKE256_RATE:
        raise ValueError("noise seed too long for a one-block absorb")
    block = bytearray(SHAKE256_RATE)
    block[: len(message)] = message
    block[len(message)] ^= 0x1F
    block[-1] ^= 0x80
    words = np.frombuffer(bytes(block), dtype="<u8").astype(np.uint64)
    return words, np.uint64(words[12])


def dense_lines_t(
    seed: bytes, label: int, count: int, r: int, lo: int = 0, hi: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Lines lo..hi-1 of dense noise (indices 0..count-1), transposed: r x count int8."""
    if len(seed) != 32:
        raise ValueError("noise seeds are 32 bytes")
    if out is None:
        out = np.empty((r, count), np.int8)
    block, word12 = shake_block(seed, label)
    _shake_lines(block, word12, r, out, lo, count if hi is None else hi)
    return out


# --- Merkle leaves and levels --------------------------------------------------------


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _pad_word(k, total_bits, nblocks, p):
    """The big-endian message word at byte ``p`` (>= k - 3) of a padded k-byte line,
    counting only the bytes from position k on (callers OR in the data bytes)."""
    word = np.uint32(0)
    last = nblocks * 64
    for t in range(4):
        pos = p + t
        byte = np.uint32(0)
        if pos == k:
            byte = np.uint32(0x80)
        elif pos >= last - 8:
            byte = np.uint32((total_bits >> np.uint64(8 * (last - 1 - pos))) & np.uint64(0xFF))
        word |= byte << np.uint32(24 - 8 * t)
    return word


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _line_byte(mat, by_columns, line, pos):
    if by_columns:
        return np.uint32(np.uint8(mat[pos, line]))
    return np.uint32(np.uint8(mat[line, pos]))


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _load_state(buf, midstate):
    """Every lane's chaining state rows set to the tag's midstate."""
    for s in range(8):
        for x in range(LANES):
            buf[(16 + s) * LANES + x] = midstate[s]


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _store_digests(buf, out, x0, count):
    """The first ``count`` lanes' states as digests out[x0 ...] (8 words each)."""
    for x in range(count):
        for s in range(8):
            out[x0 + x, s] = buf[(16 + s) * LANES + x]


@nb.njit(nogil=True, cache=True, boundscheck=False)
def leaf_words(mat, by_columns, midstate, out, lo, hi):
    """out[i] = leaf hash of line i (row i of ``mat``, or column i when by_columns),
    for lo <= i < hi, as 8 big-endian words."""
    k = mat.shape[0] if by_columns else mat.shape[1]
    nblocks = (k + 9 + 63) // 64
    total_bits = np.uint64(8 * (64 + k))
    buf = np.empty(BUFFER_WORDS, np.uint32)
    for x0 in range(lo, hi, LANES):
        count = min(LANES, hi - x0)
        _load_state(buf, midstate)
        for blk in range(nblocks):
            for q in range(16):
                p = blk * 64 + 4 * q
                row = buf[q * LANES : (q + 1) * LANES]
                if p + 3 < k:
                    if by_columns:
                        r0 = mat[p, x0 : x0 + count]
                        r1 = mat[p + 1, x0 : x0 + count]
                        r2 = mat[p + 2, x0 : x0 + count]
                        r3 = mat[p + 3, x0 : x0 + count]
                        for x in range(count):
                            row[x] = (
                                (np.uint32(np.uint8(r0[x])) << np.uint32(24))
                                | (np.uint32(np.uint8(r1[x])) << np.uint32(16))
                                | (np.uint32(np.uint8(r2[x])) << np.uint32(8))
                                | np.uint32(np.uint8(r3[x]))
                            )
                    else:
                        for x in range(count):
                            line = mat[x0 + x]
                            row[x] = (
                                (np.uint32(np.uint8(line[p])) << np.uint32(24))
                                | (np.uint32(np.uint8(line[p + 1])) << np.uint32(16))
                                | (np.uint32(np.uint8(line[p + 2])) << np.uint32(8))
                                | np.uint32(np.uint8(line[p + 3]))
                            )
                else:
                    pad = _pad_word(k, total_bits, nblocks, p)
                    for x in range(count):
                        word = pad
                        for t in range(4):
                            if p + t < k:
                                word |= _line_byte(mat, by_columns, x0 + x, p + t) << np.uint32(
                                    24 - 8 * t
                                )
                        row[x] = word
            compress(buf)
        _store_digests(buf, out, x0, count)


@nb.njit(nogil=True, cache=True, boundscheck=False)
def row_leaf_words(words, midstate, out, lo, hi):
    """leaf_words of the rows of an int8 matrix whose rows are a whole number of 32-bit
    words, given as that matrix viewed as uint32 (rows x k/4, native byte order): each
    message word is one load and a byte swap instead of four byte loads, about twice
    as fast (the rows of a blob arrive this way, and its columns are not at hand)."""
    k = 4 * words.shape[1]
    nblocks = (k + 9 + 63) // 64
    total_bits = np.uint64(8 * (64 + k))
    buf = np.empty(BUFFER_WORDS, np.uint32)
    for x0 in range(lo, hi, LANES):
        count = min(LANES, hi - x0)
        _load_state(buf, midstate)
        for blk in range(nblocks):
            full = min(16, max(0, (k - blk * 64) // 4))  # data words in this block
            for x in range(count):  # each line's 64 bytes in one run
                line = words[x0 + x]
                for q in range(full):
                    w = line[blk * 16 + q]
                    buf[q * LANES + x] = (
                        (w << np.uint32(24))
                        | ((w & np.uint32(0xFF00)) << np.uint32(8))
                        | ((w >> np.uint32(8)) & np.uint32(0xFF00))
                        | (w >> np.uint32(24))
                    )
            for q in range(full, 16):
                pad = _pad_word(k, total_bits, nblocks, blk * 64 + 4 * q)
                for x in range(count):
                    buf[q * LANES + x] = pad
            compress(buf)
        _store_digests(buf, out, x0, count)


@nb.njit(nogil=True, cache=True, boundscheck=False)
def level_words(level, midstate, out, lo, hi):
    """out[p] = node(level[2p], level[2p + 1]) for lo <= p < hi (full pairs only)."""
    buf = np.empty(BUFFER_WORDS, np.uint32)
    for x0 in range(lo, hi, LANES):
        count = min(LANES, hi - x0)
        _load_state(buf, midstate)
        for q in range(8):
            for x in range(count):
                buf[q * LANES + x] = level[2 * (x0 + x), q]
                buf[(q + 8) * LANES + x] = level[2 * (x0 + x) + 1, q]
        compress(buf)
        for q in range(16):
            value = np.uint32(0)
            if q == 0:
                value = np.uint32(0x80000000)
            elif q == 15:
                value = np.uint32(8 * 128)
            for x in range(LANES):
                buf[q * LANES + x] = value
        compress(buf)
        _store_digests(buf, out, x0, count)


LEAF_MIDSTATE = tag_midstate(TAG_MERKLE_LEAF)
NODE_MIDSTATE = tag_midstate(TAG_MERKLE_NODE)


def merkle_levels(leaves: np.ndarray) -> list[np.ndarray]:
    """Every level (leaves first) of consensus.merkle's tree, as count x 8 word arrays."""
    levels = [leaves]
    while levels[-1].shape[0] > 1:
        level = levels[-1]
        pairs = level.shape[0] // 2
        out = np.empty(((level.shape[0] + 1) // 2, 8), np.uint32)
        level_words(level, NODE_MIDSTATE, out, 0, pairs)
        if level.shape[0] % 2:
            out[-1] = level[-1]  # odd count: the last node is promoted unchanged
        levels.append(out)
    return levels


class WordTree:
    """A Merkle tree held as word arrays; converts to consensus' byte levels on demand."""

    def __init__(self, levels: list[np.ndarray]) -> None:
        self.levels = levels
        self._bytes: list[list[bytes]] | None = None

    @property
    def root(self) -> bytes:
        return digest_bytes(self.levels[-1][0])

    def byte_levels(self) -> list[list[bytes]]:
        if self._bytes is None:
            self._bytes = [words_to_digests(level) for level in self.levels]
        return self._bytes
