"""Numba side of the integer transcript (int8 VNNI or int16 AVX2): packing and the
block driver.

compute/int_tile.py compiles the micro-kernel; these kernels lay the noisy operands
out for it once per product and walk a block of C' through it. Layouts (see
int_tile.py):

* A' by strips of MR rows, B' + offset by strips of NR columns, one r-step after the
  other (all strips of a step together, so that packing writes one compact region
  per step); a strip's step is ``qps`` = ceil(r / group) words of ``group`` k values
  (4 bytes, or 2 int16), a word holding one of the strip's MR (or NR)
  columns-of-the-source. A step whose r is not a multiple of the group is padded with
  zeros (they add nothing).
* ``corr``: per strip of A', per step, MR int32: offset (128 or 0) * the running sum
  of each row of A' up to the end of that step.

A block of C' (``rows x cols``, padded up to whole micro-tiles) keeps its raw int32
accumulators and its fold states in contiguous scratch; the driver runs the
micro-kernel over a few r-steps at a time (``chunk_steps``) for every micro-tile, so
that the B' micro-panel of a chunk stays in L1 while the rows of the block pass by.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from compute.int_tile import FLAG_FINAL, FLAG_FOLD, FLAG_INIT
from compute.kernels import MODE_FOLD
from compute.numba_cache import drop_stale

drop_stale()  # before any cached kernel loads: they inline other modules


@nb.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _copy_run(words, q, lo, out, base, count):
    for jl in range(count):
        out[base + jl] = words[q, lo + jl]


@nb.njit(nogil=True, cache=True, boundscheck=False)
def _copy_strips(words, out, base, strip):
    """Strip after strip (the last may be short), quad after quad: out[base...] =
    words[q, strip columns]. Runs of the int8 forms' micro-tile widths (8, 32) get a
    constant trip count, so each is a few vector moves instead of a scalar loop (the
    int16 form's widths, 6 and 16, took the same time either way, measured on Zen 3)."""
    qps, w = words.shape
    o = base
    for lo in range(0, w, strip):
        count = min(strip, w - lo)
        if count == 8:
            for q in range(qps):
                _copy_run(words, q, lo, out, o + q * strip, 8)
        elif count == 32:
            for q in range(qps):
                _copy_run(words, q, lo, out, o + q * strip, 32)
        else:
            for q in range(qps):
                _copy_run(words, q, lo, out, o + q * strip, count)
        o += qps * strip


_LOW7 = np.uint32(0x7F7F7F7F)
_HIGH = np.uint32(0x80808080)


@nb.njit(nogil=True, cache=True, boundscheck=False)
def build_packed_b_panel_from_rows(
    bt_words, table, plus, minus, s_plus, s_minus, out, acc, r, strip, p0, p1
):  # fmt: skip
    """``build_packed_panel`` for B given as the rows of B^T, for r a multiple of 4:
    ``bt_words`` is B^T (n x k int8) seen as n x k/4 uint32, so one load brings the 4
    bytes of a column of B in a quad, already in the packed word's byte order. The
    noise bytes are added four at a time without carries between bytes (bytes wrap:
    exact, as in build_packed_panel). Bit for bit the same words and scatter, without
    transposing B first."""
    steps = bt_words.shape[1] * 4 // r
    qps = r // 4
    step_words = out.shape[0] // steps
    w = p1 - p0
    words = np.empty((qps, w), np.uint32)
    noise = np.empty(w, np.uint32)
    for s in range(steps):
        for q in range(qps):
            c0 = s * r + q * 4
            noise[:] = 0
            for kk in range(4):
                tp = table[plus[c0 + kk], p0:p1].view(np.uint8)
                tm = table[minus[c0 + kk], p0:p1].view(np.uint8)
                shift = np.uint32(8 * kk)
                for jj in range(w):
                    noise[jj] |= np.uint32(np.uint8(tp[jj] - tm[jj])) << shift
            wq = words[q]
            col = c0 // 4
            for jj in range(w):
                x = bt_words[p0 + jj, col]
                y = noise[jj]
                wq[jj] = ((x & _LOW7) + (y & _LOW7)) ^ ((x ^ y) & _HIGH)  # B + noise
            for kk in range(4):
                shift = np.uint32(8 * kk)
                ap = acc[s_plus[c0 + kk], p0:p1]
                am = acc[s_minus[c0 + kk], p0:p1]
                for jj in range(w):
                    v = np.int32(np.int8(np.uint8((wq[jj] >> shift) & np.uint32(0xFF))))
                    ap[jj] += v
                    am[jj] -= v
            for jj in range(w):
                wq[jj] ^= _HIGH  # + 128 in every byte (the int8 form's offset)
        _copy_strips(words, out, s * step_words + (p0 // strip) * qps * strip, strip)


@nb.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _int16_pair(lo, hi):
    """One packed word of the int16 path: two noisy entries (int8 bytes), sign-extended."""
    return np.uint32(np.uint16(np.int16(np.int8(lo)))) | (
        np.uint32(np.uint16(np.int16(np.int8(hi)))) << np.uint32(16)
    )


@nb.njit(nogil=True, cache=True, boundscheck=False)
def build_packed_panel(
    src, table, plus, minus, s_plus, s_minus, is_b, out, acc, corr, r, strip, p0, p1, group,
    b_offset,
):  # fmt: skip
    """Columns p0..p1-1 of the noisy operand (p0 a multiple of ``strip``), packed into
    ``out`` (uint32 words: one word = one column's ``group`` k values: 4 bytes, or 2
    sign-extended int16 for group 2).

    noisy[c, j] = src[c, j] + table[plus[c], j] - table[minus[c], j]; for A (is_b
    False: src = A^T, table = E_AL^T) it is stored as is and ``b_offset`` times its
    running row sums go to ``corr``, and acc[s_plus[c]] += clean, acc[s_minus[c]] -=
    clean (acc = (A . E_BL)^T); for B (src = B, table = E_BR) noisy + ``b_offset`` is
    stored and the noisy entry is scattered (acc = E_AR . B').
    """
    k = src.shape[0]
    steps = k // r
    gps = (r + group - 1) // group
    step_words = out.shape[0] // steps  # one r-step of every strip of the operand
    w = p1 - p0
    running = np.zeros(w, np.int32)  # |row sum of A'| <= 127 * k < 2^31
    quad = np.zeros((4, w), np.uint8)  # the group's k values, one row each
    words = np.empty((gps, w), np.uint32)  # one step, interleaved: a row per group
    offset = np.uint8(b_offset if is_b else 0)
    for s in range(steps):
        for q in range(gps):
            if q * group + group > r:
                quad[:] = 0
            for kk in range(min(group, r - q * group)):
                c = s * r + q * group + kk
                row = src[c, p0:p1].view(np.uint8)
                tp = table[plus[c], p0:p1].view(np.uint8)
                tm = table[minus[c], p0:p1].view(np.uint8)
                t = quad[kk]
                # bytes wrap: the noisy entry fits in [-127, 126], so its byte is exact
                for jj in range(w):
                    t[jj] = row[jj] + tp[jj] - tm[jj] + offset
                ap = acc[s_plus[c], p0:p1]
                am = acc[s_minus[c], p0:p1]
                if is_b:
                    for jj in range(w):
                        v = np.int32(np.int8(t[jj] - offset))
                        ap[jj] += v
                        am[jj] -= v
                else:
                    clean = src[c, p0:p1]
                    for jj in range(w):
                        v = np.int32(clean[jj])
                        ap[jj] += v
                        am[jj] -= v
                    for jj in range(w):
                        running[jj] += np.int32(np.int8(t[jj]))
            # interleave the group's rows into words
            wq = words[q]
            t0, t1, t2, t3 = quad[0], quad[1], quad[2], quad[3]
            if group == 4:
                for jj in range(w):
                    wq[jj] = (
                        np.uint32(t0[jj])
                        | (np.uint32(t1[jj]) << 8)
                        | (np.uint32(t2[jj]) << 16)
                        | (np.uint32(t3[jj]) << 24)
                    )
            else:
                for jj in range(w):
                    wq[jj] = _int16_pair(t0[jj], t1[jj])
        # the step's strips, one after the other: a sequential write
        _copy_strips(words, out, s * step_words + (p0 // strip) * gps * strip, strip)
        if not is_b:
            o = ((p0 // strip) * steps + s) * strip
            for lo in range(0, w, strip):
                for jl in range(min(strip, w - lo)):
                    corr[o + jl] = np.int32(b_offset * running[lo + jl])
                o += steps * strip


@nb.njit(nogil=True, cache=True)
def transcript_block(
    tile, a_pack, b_pack, corr, i0, j0, rows, cols, steps, qps, mr, nr, chunk_steps, acc,
    state, flag, keep, mode,
):  # fmt: skip
    """C' of the block at (i0, j0) (``rows x cols``; i0 a multiple of mr, j0 of nr)
    into ``acc`` (exact int32) with its fold states in ``state``; both are scratch of
    at least rows, cols rounded up to mr, nr. Returns 1 (folded to the end), 0
    (product only) or -1 (stop requested and the product not wanted)."""
    ld = acc.shape[1]
    a_step = a_pack.shape[0] * 4 // steps  # bytes of one r-step of all of A' (or B')
    b_step = b_pack.shape[0] * 4 // steps
    pa0 = a_pack.ctypes.data
    pb0 = b_pack.ctypes.data
    pc0 = corr.ctypes.data
    pacc = acc.ctypes.data
    pst = state.ctypes.data
    folding = mode == MODE_FOLD
    fold_flag = FLAG_FOLD if mode == MODE_FOLD else 0
    for s0 in range(0, steps, chunk_steps):
        if flag[0] != 0:
            if not keep:
                return -1
            folding = False
            fold_flag = 0
        ns = min(chunk_steps, steps - s0)
        flags = fold_flag
        if s0 == 0:
            flags |= FLAG_INIT
        if s0 + ns == steps:
            flags |= FLAG_FINAL
        for jb in range(0, cols, nr):
            pb = pb0 + ((j0 + jb) // nr) * qps * 4 * nr + s0 * b_step
            for ib in range(0, rows, mr):
                strip = (i0 + ib) // mr
                pa = pa0 + strip * qps * 4 * mr + s0 * a_step
                pc = pc0 + ((strip * steps + s0) * mr) * 4
                off = (ib * ld + jb) * 4
                tile(pa, a_step, pb, b_step, pc, pacc + off, ld, pst + off, ld, ns, qps, flags)
    return 1 if folding else 0


@nb.njit(nogil=True, cache=True, boundscheck=False)
def remove_block(sgemm, left_t, right, chunks, i0, j0, buf, acc, out):
    """out[block] = acc - left[rows] . right[:, cols], one exact float32 sgemm per
    inner chunk (``left_t`` is left^T, 2r x m); ``acc`` the block's exact C'."""
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
            101, 112, 111, bm, bn, p1 - p0, np.float32(1.0),
            pl + 4 * (p0 * m + i0), m,
            pr + 4 * (p0 * n + j0), n,
            np.float32(0.0), pc, bn,
        )  # fmt: skip
        for i in range(bm):
            bf = buf[i]
            ac = out[i0 + i, j0 : j0 + bn]
            if ci == 0:
                src = acc[i]
                for j in range(bn):
                    ac[j] = src[j] - np.int32(bf[j])
            else:
                for j in range(bn):
                    ac[j] -= np.int32(bf[j])
    if chunks.shape[0] == 1:  # element by element: a slice assignment from an array
        for i in range(bm):  # compiles Numba's shape-mismatch message, about 5 s cold
            src = acc[i]
            ac = out[i0 + i, j0 : j0 + bn]
            for j in range(bn):
                ac[j] = src[j]
