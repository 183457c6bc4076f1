"""Numba kernels of the CPU engine (compute/numpy_engine.py).

Every kernel is ``nogil``: the engine runs them from its own worker threads (one per
core) on disjoint parts of the data, so no Numba threading layer is involved and a
node may run several engines at once. Integer arithmetic only, except the float32
sgemm products whose exactness the callers guarantee (|partial sum| <= 2^24).

Layouts used by the transcript:

* ``a_t``: A'^T as float32, k x m (row c holds column c of A'), so that building it
  from A^T and the rows of E_AL^T is a vectorized row operation, like B'.
* ``b``: B' as float32, k x n.
* A block of C' is ``bm x bn``; its accumulator is a strided view of the int32
  output, its fold state and the float32 sgemm buffer are contiguous scratch.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from compute.numba_cache import drop_stale
from compute.sha256_lanes import BUFFER_WORDS, LANES, compress

drop_stale()  # before any cached kernel loads: they inline other modules

_U32 = np.uint32
_ONE = np.uint32(1)
_THIRTY_ONE = np.uint32(31)

ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112

# Widest group of r-steps that one float32 buffer may accumulate exactly: every
# partial sum is bounded by 127^2 * (steps * r), which must stay <= 2^24.
FLOAT32_EXACT = 1 << 24
MAX_NOISY = 127


def steps_per_group(r: int) -> int:
    return max(1, FLOAT32_EXACT // (MAX_NOISY * MAX_NOISY * r))


# --- transposes -------------------------------------------------------------------

_M1 = np.uint64(0x00FF00FF00FF00FF)
_M2 = np.uint64(0x0000FFFF0000FFFF)
_M3 = np.uint64(0x00000000FFFFFFFF)
_S8 = np.uint64(8)
_S16 = np.uint64(16)
_S32 = np.uint64(32)


@nb.njit(nogil=True, cache=True, boundscheck=False)
def transpose_u8_blocks(src64, dst64, g0, g1):
    """dst = src^T for int8 matrices seen as uint64 words (8 bytes per word).

    src64 is rows x (cols/8), dst64 is cols x (rows/8); this call does the source
    column words g0..g1-1 (callers split that range between threads). Each 8x8 byte
    block is transposed in registers with three rounds of masked swaps.
    """
    rows = src64.shape[0]
    for ib in range(rows // 8):
        i0 = ib * 8
        for g in range(g0, g1):
            x0 = src64[i0, g]
            x1 = src64[i0 + 1, g]
            x2 = src64[i0 + 2, g]
            x3 = src64[i0 + 3, g]
            x4 = src64[i0 + 4, g]
            x5 = src64[i0 + 5, g]
            x6 = src64[i0 + 6, g]
            x7 = src64[i0 + 7, g]
            t = ((x0 >> _S8) ^ x1) & _M1
            x1 ^= t
            x0 ^= t << _S8
            t = ((x2 >> _S8) ^ x3) & _M1
            x3 ^= t
            x2 ^= t << _S8
            t = ((x4 >> _S8) ^ x5) & _M1
            x5 ^= t
            x4 ^= t << _S8
            t = ((x6 >> _S8) ^ x7) & _M1
            x7 ^= t
            x6 ^= t << _S8
            t = ((x0 >> _S16) ^ x2) & _M2
            x2 ^= t
            x0 ^= t << _S16
            t = ((x1 >> _S16) ^ x3) & _M2
            x3 ^= t
            x1 ^= t << _S16
            t = ((x4 >> _S16) ^ x6) & _M2
            x6 ^= t
            x4 ^= t << _S16
            t = ((x5 >> _S16) ^ x7) & _M2
            x7 ^= t
            x5 ^= t << _S16
            t = ((x0 >> _S32) ^ x4) & _M3
            x4 ^= t
            x0 ^= t << _S32
            t = ((x1 >> _S32) ^ x5) & _M3
            x5 ^= t
            x1 ^= t << _S32
            t = ((x2 >> _S32) ^ x6) & _M3
            x6 ^= t
            x2 ^= t << _S32
            t = ((x3 >> _S32) ^ x7) & _M3
            x7 ^= t
            x3 ^= t << _S32
            c0 = g * 8
            dst64[c0, ib] = x0
            dst64[c0 + 1, ib] = x1
            dst64[c0 + 2, ib] = x2
            dst64[c0 + 3, ib] = x3
            dst64[c0 + 4, ib] = x4
            dst64[c0 + 5, ib] = x5
            dst64[c0 + 6, ib] = x6
            dst64[c0 + 7, ib] = x7


# --- noisy operands and the sparse halves of noise removal ---------------------------


@nb.njit(nogil=True, cache=True, boundscheck=False)
def build_noisy_panel(
    src, table, plus, minus, s_plus, s_minus, scatter_noisy, out, acc, p0, p1
):  # fmt: skip
    """Panel p0..p1-1 (columns of ``src``) of the noisy operand, as int8, and its share
    of the sparse half of noise removal.

    out[p0 * k + c * w + j] = src[c, p0 + j] + table[plus[c], p0 + j] - table[minus[c], p0 + j]
    (w = p1 - p0: the panel is k x w, contiguous, so one r-step of it is one run of
    r * w bytes), and acc[s_plus[c]] += v, acc[s_minus[c]] -= v with v the clean entry
    (scatter_noisy False) or the noisy one (True).

    For A: src = A^T, table = E_AL^T, out = A'^T panels, acc = (A . E_BL)^T (clean).
    For B: src = B, table = E_BR, out = B' panels, acc = E_AR . B' (noisy).
    Entries of A', B' lie in [-127, 126]; |acc| <= 127 * 2k < 2^31.
    """
    k = src.shape[0]
    w = p1 - p0
    for c in range(k):
        s = src[c, p0:p1]
        tp = table[plus[c], p0:p1]
        tm = table[minus[c], p0:p1]
        o = out[p0 * k + c * w : p0 * k + (c + 1) * w]
        ap = acc[s_plus[c], p0:p1]
        am = acc[s_minus[c], p0:p1]
        for j in range(w):
            clean = np.int32(s[j])
            noisy = clean + np.int32(tp[j]) - np.int32(tm[j])
            o[j] = np.int8(noisy)
            v = noisy if scatter_noisy else clean
            ap[j] += v
            am[j] -= v


# --- the transcript ------------------------------------------------------------------


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _convert(src, dst, lo, hi):
    # zero-based loop over slices: Numba then knows no index is negative (no
    # wraparound test per element) and LLVM vectorizes it
    s = src[lo:hi]
    d = dst[lo:hi]
    for e in range(hi - lo):
        d[e] = np.float32(s[e])


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _fold_rows(buf, out, i0, j0, state, lo, hi, flush):
    """Rows lo..hi-1 of the fold (see _fold)."""
    cols = buf.shape[1]
    if flush:
        for i in range(lo, hi):
            bf = buf[i]
            bs = out[i0 + i, j0 : j0 + cols]
            st = state[i]
            for j in range(cols):
                x = bs[j] + np.int32(bf[j])
                bs[j] = x
                bf[j] = 0.0
                s = st[j]
                st[j] = ((s << _ONE) | (s >> _THIRTY_ONE)) ^ _U32(x)
    else:
        for i in range(lo, hi):
            bf = buf[i]
            bs = out[i0 + i, j0 : j0 + cols]
            st = state[i]
            for j in range(cols):
                x = bs[j] + np.int32(bf[j])
                s = st[j]
                st[j] = ((s << _ONE) | (s >> _THIRTY_ONE)) ^ _U32(x)


FOLD_ROWS_PER_CHUNK = 8


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _fold(buf, out, i0, j0, state, flush, a_next, a_dst, b_next, b_dst):
    """acc = base + buf (base: the int32 block of ``out``; buf: the group's float sum so
    far); state = rotl(state) ^ acc. With ``flush`` the group moves into base and buf
    returns to zero. Meanwhile the next step's int8 slices are converted into the
    float32 sgemm operands, a share after every few rows, so that their memory latency
    overlaps the fold instead of stalling the next sgemm's packing.
    """
    rows = buf.shape[0]
    chunks = (rows + FOLD_ROWS_PER_CHUNK - 1) // FOLD_ROWS_PER_CHUNK
    a_len = a_next.shape[0]
    b_len = b_next.shape[0]
    a_step = (a_len + chunks - 1) // chunks
    b_step = (b_len + chunks - 1) // chunks
    for ci in range(chunks):
        lo = ci * FOLD_ROWS_PER_CHUNK
        _fold_rows(buf, out, i0, j0, state, lo, min(rows, lo + FOLD_ROWS_PER_CHUNK), flush)
        a_lo = min(a_len, ci * a_step)
        _convert(a_next, a_dst, a_lo, min(a_len, a_lo + a_step))
        b_lo = min(b_len, ci * b_step)
        _convert(b_next, b_dst, b_lo, min(b_len, b_lo + b_step))


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _flush(buf, out, i0, j0):
    rows, cols = buf.shape
    for i in range(rows):
        bf = buf[i]
        bs = out[i0 + i, j0 : j0 + cols]
        for j in range(cols):
            bs[j] += np.int32(bf[j])
            bf[j] = 0.0


MODE_PRODUCT = 0  # C' only, no fold
MODE_FOLD = 1  # the transcript
MODE_STEPS = 2  # as MODE_FOLD without the fold (benchmarks: the fold's cost)


@nb.njit(nogil=True, cache=True, boundscheck=False)
def transcript_block(
    sgemm, a_pan, b_pan, i0, j0, r, group, buf, out, state, a_f32, b_f32, flag, keep, mode
):  # fmt: skip
    """C' block (rows i0.., columns j0.. of ``out``), folding every r-step into ``state``.

    ``a_pan`` / ``b_pan`` hold A'^T and B' as int8 panels (see build_noisy_panel); the
    block's panels start at i0 * k and j0 * k. Each r-step slice is converted to the
    float32 scratch ``a_f32`` (r x bm) / ``b_f32`` (r x bn), during the previous fold.
    sgemm accumulates (beta = 1) up to ``group`` r-steps in the float32 ``buf`` (exact:
    group * r * 127^2 <= 2^24); after each step the fold reads base + buf, and at the
    end of a group the buffer moves into the int32 block of ``out``. In MODE_PRODUCT
    (or once ``flag[0]`` is set and ``keep`` is true) nothing is folded. Returns 1
    (folded to the end), 0 (product only) or -1 (stop requested and the product not
    wanted: the block is garbage).
    """
    bm, bn = buf.shape
    k = a_pan.shape[0] // out.shape[0]
    steps = k // r
    a0 = i0 * k
    b0 = j0 * k
    fa = a_f32.ravel()
    fb = b_f32.ravel()
    pa = a_f32.ctypes.data
    pb = b_f32.ctypes.data
    pc = buf.ctypes.data
    buf[:] = 0.0
    state[:] = 0
    for i in range(bm):
        out[i0 + i, j0 : j0 + bn] = 0
    folding = mode == MODE_FOLD
    converted = False
    for step in range(steps):
        if flag[0] != 0:
            if not keep:
                return -1
            folding = False
            mode = MODE_PRODUCT
        if not converted:
            _convert(a_pan[a0 + step * r * bm : a0 + (step + 1) * r * bm], fa, 0, r * bm)
            _convert(b_pan[b0 + step * r * bn : b0 + (step + 1) * r * bn], fb, 0, r * bn)
        sgemm(
            ROW_MAJOR, TRANS, NO_TRANS, bm, bn, r, np.float32(1.0), pa, bm, pb, bn,
            np.float32(1.0), pc, bn,
        )  # fmt: skip
        last = step + 1 == steps or (step + 1) % group == 0
        if mode == MODE_PRODUCT:
            converted = False
            if last:
                _flush(buf, out, i0, j0)
            continue
        nxt = min(step + 1, steps - 1)  # the last fold converts a slice again: harmless
        a_next = a_pan[a0 + nxt * r * bm : a0 + (nxt + 1) * r * bm]
        b_next = b_pan[b0 + nxt * r * bn : b0 + (nxt + 1) * r * bn]
        if folding:
            _fold(buf, out, i0, j0, state, last, a_next, fa, b_next, fb)
        else:
            _convert(a_next, fa, 0, r * bm)
            _convert(b_next, fb, 0, r * bn)
            if last:
                _flush(buf, out, i0, j0)
        converted = True
    return 1 if folding else 0


@nb.njit(nogil=True, cache=True, boundscheck=False)
def remove_block(sgemm, left_t, right, chunks, i0, j0, buf, out):
    """out[block] -= left[rows] . right[:, cols], one exact float32 sgemm per chunk.

    ``left_t`` is left^T (2r x m), so a chunk of the inner axis is a run of its rows.
    """
    m = left_t.shape[1]
    n = right.shape[1]
    bm, bn = buf.shape
    pl = left_t.ctypes.data
    pr = right.ctypes.data
    pc = buf.ctypes.data
    for ci in range(chunks.shape[0] - 1):
        p0 = chunks[ci]
        p1 = chunks[ci + 1]
        sgemm(
            ROW_MAJOR, TRANS, NO_TRANS, bm, bn, p1 - p0, np.float32(1.0),
            pl + 4 * (p0 * m + i0), m,
            pr + 4 * (p0 * n + j0), n,
            np.float32(0.0), pc, bn,
        )  # fmt: skip
        for i in range(bm):
            bf = buf[i]
            ac = out[i0 + i, j0 : j0 + bn]
            for j in range(bn):
                ac[j] -= np.int32(bf[j])


# Fallback (np.matmul writes a fresh r-step product into buf each time).


@nb.njit(nogil=True, cache=True, boundscheck=False)
def fold_step(buf, acc, state):
    """acc += buf; state = rotl(state) ^ acc."""
    rows, cols = buf.shape
    for i in range(rows):
        bf = buf[i]
        ac = acc[i]
        st = state[i]
        for j in range(cols):
            x = ac[j] + np.int32(bf[j])
            ac[j] = x
            s = st[j]
            st[j] = ((s << _ONE) | (s >> _THIRTY_ONE)) ^ _U32(x)


@nb.njit(nogil=True, cache=True, boundscheck=False)
def add_into(acc, buf, sign):
    """acc += sign * buf (buf exact integers in float32 or float64)."""
    rows, cols = buf.shape
    for i in range(rows):
        bf = buf[i]
        ac = acc[i]
        for j in range(cols):
            ac[j] += np.int32(sign * np.int64(bf[j]))


# --- tickets ---------------------------------------------------------------------------


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _bswap32(v):
    return _U32(
        ((v >> np.uint32(24)) & np.uint32(0xFF))
        | ((v >> np.uint32(8)) & np.uint32(0xFF00))
        | ((v << np.uint32(8)) & np.uint32(0xFF0000))
        | (v << np.uint32(24))
    )


@nb.njit(nogil=True, cache=True, boundscheck=False)
def hash_tiles(state, i0, j0, h, w, tiles_per_row, sigma_words, midstate, digests, buf, msg):
    """Tickets of every h x w tile of a block whose final fold state is ``state``.

    J = SHA256(tag prefix || sigma_A || u32 t || states LE): the prefix block is
    already in ``midstate``; the rest (and the padding) is laid out as big-endian
    words in ``msg`` (rows = words, columns = lanes) and compressed LANES tiles at a
    time. Digest words (big-endian) go to digests[t].
    """
    bm, bn = state.shape
    tw = bn // w
    ntiles = (bm // h) * tw
    hw = h * w
    nwords = msg.shape[0]
    total_bits = np.uint64(8 * (64 + 36 + 4 * hw))
    for x in range(LANES):
        for q in range(8):
            msg[q, x] = sigma_words[q]
        msg[9 + hw, x] = np.uint32(0x80000000)
        for q in range(10 + hw, nwords - 2):
            msg[q, x] = 0
        msg[nwords - 2, x] = _U32(total_bits >> np.uint64(32))
        msg[nwords - 1, x] = _U32(total_bits & np.uint64(0xFFFFFFFF))
    row_tile0 = i0 // h
    col_tile0 = j0 // w
    for t0 in range(0, ntiles, LANES):
        count = min(LANES, ntiles - t0)
        for x in range(count):
            tt = t0 + x
            ti = tt // tw
            tj = tt - ti * tw
            msg[8, x] = (row_tile0 + ti) * tiles_per_row + col_tile0 + tj
            p = 9
            for a in range(h):
                srow = state[ti * h + a]
                for c in range(w):
                    msg[p, x] = _bswap32(srow[tj * w + c])
                    p += 1
        for s in range(8):
            for x in range(LANES):
                buf[(16 + s) * LANES + x] = midstate[s]
        for blk in range(nwords // 16):
            for q in range(16):
                row = msg[blk * 16 + q]
                for x in range(LANES):
                    buf[q * LANES + x] = row[x]
            compress(buf)
        for x in range(count):
            t = msg[8, x]
            for s in range(8):
                digests[t, s] = buf[(16 + s) * LANES + x]


def ticket_words(h: int, w: int) -> int:
    """Words of the padded ticket message after the 64-byte tag prefix."""
    return ((36 + 4 * h * w + 9 + 63) // 64) * 16


def new_hash_scratch(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty(BUFFER_WORDS, np.uint32), np.empty((ticket_words(h, w), LANES), np.uint32)


@nb.njit(nogil=True, cache=True, boundscheck=False)
def below_threshold(digests, threshold_words, out):
    """out[t] = digest t (8 big-endian words) < threshold (8 big-endian words)."""
    for t in range(digests.shape[0]):
        result = False
        for q in range(8):
            d = digests[t, q]
            e = threshold_words[q]
            if d != e:
                result = d < e
                break
        out[t] = result
