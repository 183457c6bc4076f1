"""The GPU mining engine: CuPy on the host side, a fused WMMA int8 kernel on the device.

What runs where (results equal consensus/pouw.py bit for bit):

* Host (NumPy + consensus/): the statement and seeds, the sparse +1/-1 patterns, spot
  checks of everything the device hashed, winner checks and seals. Operands go up and
  the product comes back through pinned host memory.
* Device:
  - Commitments (compute/cuda_kernels.py): one thread per row of A / of B^T hashes its
    tagged leaf (SHA-256), then one launch per Merkle level (odd node promoted). Every
    call re-hashes a few leaves and a few parents per level on the host
    (``_levels_ok``); a mismatch drops to consensus.commitments.row_tree for good.
  - Dense noise lines (rows of E_AL, columns of E_BR): one SHAKE-256 block per line on
    the device, a few lines per call re-derived on the host; host fallback likewise.
  - The transcript, preferred kernel ``pouw_transcript_mma`` ("mma", r % 32 == 0):
    mma.sync m16n8k32 with ldmatrix, a 4-stage cp.async pipeline and swizzled shared
    memory, 128 x 128 block tiles, 8 warps of 64 x 32, the fold on the accumulator
    registers (compute/cuda_kernels.py). Self-tested like the WMMA kernels below (and
    against the plain kernel on a larger product); WMMA is the fallback. Tuning
    variants of it (MMA_VARIANTS: block tiles 128x128 / 128x256 / 256x128, warp tiles,
    3-5 stages, 1 or 2 blocks per SM, fold states in registers or shared memory, the
    fold applied late, interleaved with the next step's mma) are compiled and
    self-tested too (a failing one is dropped); prepare() times the survivors once per
    (device, r) and kernel_for(r) returns the fastest. The fold rule is the same in all.
  - A' = A + E_AL[:, plus_A] - E_AL[:, minus_A] and B'^T = B^T + E_BR^T[:, plus_B] -
    E_BR^T[:, minus_B] (``pouw_noisy_lines``, one pass), stored as int8 (entries lie in
    [-127, 126]), zero-padded to the kernel's tile multiples (M, N to 128, K to 64).
  - The transcript: one fused kernel (``pouw_transcript_wmma``) computes C' = A'.B' on
    int8 tensor cores (WMMA m16n16k16, int32 accumulators) and, after every r columns
    of k, folds the accumulator fragment into a state fragment of the same type,
    ``st = rotl32(st, 1) ^ uint32(acc)``. Fragments of one type share their element
    layout, so the per-entry fold needs no knowledge of it. C' and the states are
    stored once at the end. Zero padding rows/columns change no real entry, and the
    extra zero k columns past k are never folded (folds only at multiples of r <= k).
    The kernel is built two ways: through the <mma.h> WMMA API ("wmma"; NVRTC needs
    the toolkit's include directory, searched for) and through the same wmma.* PTX
    instructions in inline assembly ("wmma_ptx"; no header needed). Every compiled
    variant is self-tested against consensus.transcript.fold_transcript before use.
    ``pouw_transcript_plain`` is the same computation with one thread per entry: the
    fallback (r not a multiple of 16, or no WMMA variant passed) and a test reference.
  - Tickets: one thread per tile hashes prefix || sigma_A || u32 t || states with
    SHA-256 (``pouw_tickets``) and compares with the threshold. Every winner is
    re-hashed on the host with consensus.transcript.ticket before it is sealed; a
    disagreement drops the engine to host hashing of every ticket.
  - Noise removal, exact: C = C' - (A.E_BL).E_BR - E_AL.(E_AR.B'). The sparse products
    X = A.E_BL (m x r) and Y^T = (E_AR.B')^T (n x r) are exact int32 sums of
    gathered int8 entries (``pouw_sparse_lines``; |X| <= 64 k, |Y| <= 127 k). The two
    rank-r products are one rank-2r product [X | E_AL] . [E_BR ; Y], done as a
    float64 cuBLAS GEMM (FP64 tensor cores on an H100). Every product and every
    partial sum is an integer bounded by the sum of the absolute values of the terms:
    each position p feeds one +1 and one -1, so sum_q |X_iq| <= 2 * 64 k and
    sum_q |Y_qj| <= 2 * 127 k, and with |E| <= 32 that sum is below 32 * 382 k < 2^14 k
    <= 2^31, far below 2^53: float64 is exact whatever the summation order, blocking or
    FMA use (cuBLAS's integer GEMM has no tensor-core path for these int32 factors).
    The subtraction C = C' - D is done in 64-bit integers (``pouw_sub_exact``) and
    fits int32 (|C| <= 64^2 k).

``stop`` is polled between launches of the transcript, which runs in chunks of block
rows (about ``chunk_multiply_adds`` each) with at most two chunks in flight, so a stop
is noticed within a couple of chunks (a few ms on an H100). With
``keep_product_on_stop`` the remaining chunks run without the fold and the exact
product is returned with no seals.

CuPy is imported lazily: this module imports (and ``CupyEngine.available()`` answers
False) on machines without CuPy or a GPU.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.cuda_kernels import (
    COMMIT_NOISE_SOURCE,
    MMA_SHARED_BYTES,
    MMA_SOURCE,
    MMA_VARIANT_BY_NAME,
    MMA_VARIANTS,
    MmaVariant,
    mma_variants_source,
)
from compute.engine import MiningOutput, MiningStats, OperandLeaves, WorkTemplate
from consensus.commitments import entries_in_range, line_leaf, row_tree
from consensus.hashing import TAG_MERKLE_LEAF, TAG_MERKLE_NODE, TAG_NOISE, TAG_TICKET, tagged_hash
from consensus.merkle import merkle_levels
from consensus.noise import (
    LABEL_A_LEFT,
    LABEL_A_PATTERN,
    LABEL_B_PATTERN,
    LABEL_B_RIGHT,
    dense_noise_lines,
    sparse_pattern,
)
from consensus.params import PouwParams
from consensus.pouw import make_seal
from consensus.seal import Seal, check_shape
from consensus.transcript import (
    fold_transcript,
    ticket,
    ticket_wins,
    tile_grid,
    tile_origin,
    win_threshold,
)

BLOCK_M = 128  # rows of C' per thread block (both kernels chunk work in these units)
BLOCK_N = 128  # columns of C' per thread block of the WMMA kernel
BLOCK_K = 64  # bytes of k per shared-memory stage of the WMMA kernel
TICKET_THREADS = 128
HASH_THREADS = 64  # threads per block of the leaf / Merkle / noise kernels
TRANSCRIPT_KERNELS = ("mma", "wmma", "wmma_ptx", "plain")  # best first
# Tuning variants of the mma kernel (compute/cuda_kernels.py, MMA_VARIANTS): each is
# compiled and self-tested like the kernels above; prepare() times the survivors and
# kernel_for() returns the fastest. POUW_MMA_VARIANTS="none" (or a comma-separated list
# of names) limits which are built.
AUTOTUNE_RANKS = (128,)  # ranks tuned by prepare(); others on first use in kernel_for()
AUTOTUNE_SHAPE = (4096, 4096, 4096)  # m, k, n of the timed product
DEFAULT_CHUNK_MULTIPLY_ADDS = 1 << 38  # ~1-3 ms of tensor-core work per launch on an H100

# cudaDataType_t and cublasComputeType_t values (library_types.h, cublas_api.h).
_CUDA_R_32F = 0
_CUDA_R_16F = 2
_CUDA_R_8I = 3
_CUDA_R_32I = 10
_CUBLAS_COMPUTE_32F = 68
_CUBLAS_COMPUTE_32I = 72
_CUBLAS_OP_N = 0
_CUBLAS_OP_T = 1
_CUBLAS_GEMM_DEFAULT = -1

# ---------------------------------------------------------------------------------
# Device code. Two modules: BASIC_SOURCE needs no header at all; WMMA_SOURCE needs
# <mma.h> and is optional (the engine falls back to the plain kernel without it).
# ---------------------------------------------------------------------------------

_SHA256_K = (
    "0x428a2f98u,0x71374491u,0xb5c0fbcfu,0xe9b5dba5u,0x3956c25bu,0x59f111f1u,0x923f82a4u,"
    "0xab1c5ed5u,0xd807aa98u,0x12835b01u,0x243185beu,0x550c7dc3u,0x72be5d74u,0x80deb1feu,"
    "0x9bdc06a7u,0xc19bf174u,0xe49b69c1u,0xefbe4786u,0x0fc19dc6u,0x240ca1ccu,0x2de92c6fu,"
    "0x4a7484aau,0x5cb0a9dcu,0x76f988dau,0x983e5152u,0xa831c66du,0xb00327c8u,0xbf597fc7u,"
    "0xc6e00bf3u,0xd5a79147u,0x06ca6351u,0x14292967u,0x27b70a85u,0x2e1b2138u,0x4d2c6dfcu,"
    "0x53380d13u,0x650a7354u,0x766a0abbu,0x81c2c92eu,0x92722c85u,0xa2bfe8a1u,0xa81a664bu,"
    "0xc24b8b70u,0xc76c51a3u,0xd192e819u,0xd6990624u,0xf40e3585u,0x106aa070u,0x19a4c116u,"
    "0x1e376c08u,0x2748774cu,0x34b0bcb5u,0x391c0cb3u,0x4ed8aa4au,0x5b9cca4fu,0x682e6ff3u,"
    "0x748f82eeu,0x78a5636fu,0x84c87814u,0x8cc70208u,0x90befffau,0xa4506cebu,0xbef9a3f7u,"
    "0xc67178f2u"
)

BASIC_SOURCE = (
    r"""
typedef unsigned int pw_u32;
typedef unsigned long long pw_u64;

#define PW_SHA256_K_LIST """
    + _SHA256_K
    + r"""

__host__ __device__ __forceinline__ pw_u32 pw_rotl1(pw_u32 x) { return (x << 1) | (x >> 31); }
__host__ __device__ __forceinline__ pw_u32 pw_rotr(pw_u32 x, int n) {
    return (x >> n) | (x << (32 - n));
}
__host__ __device__ __forceinline__ pw_u32 pw_bswap(pw_u32 x) {
    return (x >> 24) | ((x >> 8) & 0x0000ff00u) | ((x << 8) & 0x00ff0000u) | (x << 24);
}

/* One SHA-256 compression of the 16 big-endian message words w_in into h. */
__host__ __device__ inline void pw_sha256_compress(pw_u32 h[8], const pw_u32 w_in[16],
                                                   const pw_u32* K) {
    pw_u32 w[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) w[i] = w_in[i];
    pw_u32 a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
#pragma unroll
    for (int i = 0; i < 64; ++i) {
        pw_u32 wi;
        if (i < 16) {
            wi = w[i];
        } else {
            const pw_u32 x15 = w[(i - 15) & 15], x2 = w[(i - 2) & 15];
            const pw_u32 s0 = pw_rotr(x15, 7) ^ pw_rotr(x15, 18) ^ (x15 >> 3);
            const pw_u32 s1 = pw_rotr(x2, 17) ^ pw_rotr(x2, 19) ^ (x2 >> 10);
            wi = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
            w[i & 15] = wi;
        }
        const pw_u32 S1 = pw_rotr(e, 6) ^ pw_rotr(e, 11) ^ pw_rotr(e, 25);
        const pw_u32 ch = (e & f) ^ (~e & g);
        const pw_u32 t1 = hh + S1 + ch + K[i] + wi;
        const pw_u32 S0 = pw_rotr(a, 2) ^ pw_rotr(a, 13) ^ pw_rotr(a, 22);
        const pw_u32 mj = (a & b) ^ (a & c) ^ (b & c);
        const pw_u32 t2 = S0 + mj;
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

/* Ticket of tile t: SHA256(prefix64 || sigma_A || u32be t || states as u32 LE, row-major).
   prefix16 and sigma8 are the big-endian words of those byte strings. The states are
   read at s[(row0 + i) * ld + col0 + j]; a u32 written little-endian and read back as
   a big-endian word is its byte swap. h receives the 8 digest words (big-endian). */
__host__ __device__ inline void pw_ticket_digest(
    pw_u32 h[8], const pw_u32* s, long long ld, int n, int th, int tw, int t,
    const pw_u32* prefix16, const pw_u32* sigma8, const pw_u32* K) {
    h[0] = 0x6a09e667u; h[1] = 0xbb67ae85u; h[2] = 0x3c6ef372u; h[3] = 0xa54ff53au;
    h[4] = 0x510e527fu; h[5] = 0x9b05688cu; h[6] = 0x1f83d9abu; h[7] = 0x5be0cd19u;
    pw_sha256_compress(h, prefix16, K);
    const int per_row = n / tw;
    const long long row0 = (long long)(t / per_row) * th;
    const long long col0 = (long long)(t % per_row) * tw;
    const int words = 9 + th * tw;            /* message words after the 64-byte prefix */
    const int nblocks = (words + 3 + 15) / 16; /* + 0x80 word + 64-bit length */
    const pw_u32 bitlen = (pw_u32)((64 + 4 * words) * 8);
    for (int blk = 0; blk < nblocks; ++blk) {
        pw_u32 w[16];
        for (int x = 0; x < 16; ++x) {
            const int wi = blk * 16 + x;
            pw_u32 v;
            if (wi < 8) {
                v = sigma8[wi];
            } else if (wi == 8) {
                v = (pw_u32)t;
            } else if (wi < words) {
                const int e = wi - 9;
                const int ti = e / tw;
                const int tj = e - ti * tw;
                v = pw_bswap(s[(row0 + ti) * ld + col0 + tj]);
            } else if (wi == words) {
                v = 0x80000000u;
            } else if (wi == nblocks * 16 - 1) {
                v = bitlen;
            } else {
                v = 0u;
            }
            w[x] = v;
        }
        pw_sha256_compress(h, w, K);
    }
}

__constant__ pw_u32 PW_SHA_K[64] = {PW_SHA256_K_LIST};

/* digests[t*8 + i]: digest word i byte-swapped, so the buffer's bytes are the digests.
   wins[t] = 1 when the digest, read as a 256-bit big-endian integer, is below the
   threshold thr8 (big-endian words), or when all_win is set (threshold >= 2^256). */
extern "C" __global__ void pouw_tickets(
    const pw_u32* __restrict__ s, long long ld, int n, int th, int tw, int ntiles,
    const pw_u32* __restrict__ prefix16, const pw_u32* __restrict__ sigma8,
    const pw_u32* __restrict__ thr8, int all_win,
    pw_u32* __restrict__ digests, unsigned char* __restrict__ wins) {
    __shared__ pw_u32 sk[64];
    for (int i = threadIdx.x; i < 64; i += blockDim.x) sk[i] = PW_SHA_K[i];
    __syncthreads();
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= ntiles) return;
    pw_u32 h[8];
    pw_ticket_digest(h, s, ld, n, th, tw, t, prefix16, sigma8, sk);
    int win = all_win;
    if (!win) {
        for (int i = 0; i < 8; ++i) {
            if (h[i] != thr8[i]) {
                win = h[i] < thr8[i] ? 1 : 0;
                break;
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) digests[(long long)t * 8 + i] = pw_bswap(h[i]);
    wins[t] = (unsigned char)win;
}

/* One entry of the transcript: exact int32 dot product of a row of A' and a row of
   B'^T in k order, folding the partial sum after every r terms (state starts at 0). */
__host__ __device__ inline void pw_plain_entry(const signed char* arow, const signed char* brow,
                                               int k, int r, int fold, int* acc_out,
                                               pw_u32* st_out) {
    int acc = 0;
    pw_u32 st = 0u;
    for (int p0 = 0; p0 < k; p0 += r) {
        for (int p = p0; p < p0 + r; ++p) acc += (int)arow[p] * (int)brow[p];
        if (fold) st = pw_rotl1(st) ^ (pw_u32)acc;
    }
    *acc_out = acc;
    *st_out = st;
}

/* The transcript with one thread per entry of C', rows [row0, row1) of the padded
   np_-wide outputs. Reference for the WMMA kernel; fallback when r % 16 != 0. */
extern "C" __global__ void pouw_transcript_plain(
    const signed char* __restrict__ ap, const signed char* __restrict__ btp,
    int* __restrict__ c, int* __restrict__ s,
    int np_, int kp, int k, int r, int row0, int row1, int fold) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = row0 + blockIdx.y * blockDim.y + threadIdx.y;
    if (j >= np_ || i >= row1) return;
    int acc;
    pw_u32 st;
    pw_plain_entry(ap + (pw_u64)i * (pw_u64)kp, btp + (pw_u64)j * (pw_u64)kp, k, r, fold,
                   &acc, &st);
    const pw_u64 o = (pw_u64)i * (pw_u64)np_ + (pw_u64)j;
    c[o] = acc;
    s[o] = (int)st;
}

/* One entry of a noisy operand: base + left[plus[p]] - left[minus[p]] for a row of A
   and its row of E_AL (or a row of B^T and its column of E_BR). In [-127, 126]. */
__host__ __device__ __forceinline__ signed char pw_noisy_entry(const signed char* base_row,
                                                               const signed char* left_row,
                                                               const int* plus,
                                                               const int* minus, int p) {
    return (signed char)((int)base_row[p] + (int)left_row[plus[p]] - (int)left_row[minus[p]]);
}

/* out[i*ldo + p] = pw_noisy_entry(row i) for i < rows, p < k: A' from A and E_AL, or
   B'^T from B^T and E_BR^T. base is rows x k (contiguous), left rows x r. */
extern "C" __global__ void pouw_noisy_lines(
    const signed char* __restrict__ base, const signed char* __restrict__ left, int r,
    const int* __restrict__ plus, const int* __restrict__ minus,
    signed char* __restrict__ out, long long ldo, int rows, int k) {
    const long long i = blockIdx.x; /* grid (rows, ceil(k / blockDim.x)) */
    const int p = blockIdx.y * blockDim.x + threadIdx.x;
    if (p >= k || i >= rows) return;
    out[i * ldo + p] = pw_noisy_entry(base + i * (long long)k, left + i * (long long)r,
                                      plus, minus, p);
}

/* Row i of mat (rows x k, int8, leading dimension ld) times the k x r matrix with +1
   at (p, plus[p]) and -1 at (p, minus[p]), entry q: the CSR lists group positions by
   q (positions pidx[pptr[q]:pptr[q+1]] have plus == q). Exact in int32 (|.| <= 127 k). */
__host__ __device__ inline int pw_sparse_entry(const signed char* line, int q, const int* pptr,
                                               const int* pidx, const int* mptr,
                                               const int* midx) {
    int acc = 0;
    for (int t = pptr[q]; t < pptr[q + 1]; ++t) acc += (int)line[pidx[t]];
    for (int t = mptr[q]; t < mptr[q + 1]; ++t) acc -= (int)line[midx[t]];
    return acc;
}

/* out[i*r + q] = pw_sparse_entry(row i, q) for i < rows, q < r. */
extern "C" __global__ void pouw_sparse_lines(
    const signed char* __restrict__ mat, long long ld, int rows, int r,
    const int* __restrict__ pptr, const int* __restrict__ pidx,
    const int* __restrict__ mptr, const int* __restrict__ midx, int* __restrict__ out) {
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (long long)rows * r) return;
    const long long i = tid / r;
    const int q = (int)(tid - i * r);
    out[tid] = pw_sparse_entry(mat + i * ld, q, pptr, pidx, mptr, midx);
}
"""
)

# Two ways to reach the same WMMA instructions. The <mma.h> C++ API is the standard
# one; NVRTC finds the header only when it is given the toolkit's include directory.
# The inline-PTX prelude issues the identical wmma.load / wmma.mma / wmma.store
# instructions (PTX ISA, "Warp-level matrix instructions") and needs no header.
_WMMA_PRELUDE_MMA_H = r"""
#include <mma.h>
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, signed char,
                               nvcuda::wmma::row_major> pw_frag_a;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, signed char,
                               nvcuda::wmma::col_major> pw_frag_b;
typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, int> pw_frag_c;
#define PW_FRAG_C_ELEMENTS (pw_frag_c::num_elements)
__device__ __forceinline__ void pw_zero(pw_frag_c& f) { nvcuda::wmma::fill_fragment(f, 0); }
__device__ __forceinline__ void pw_load_a(pw_frag_a& f, const signed char* p) {
    nvcuda::wmma::load_matrix_sync(f, p, 16);
}
__device__ __forceinline__ void pw_load_b(pw_frag_b& f, const signed char* p) {
    nvcuda::wmma::load_matrix_sync(f, p, 16);
}
__device__ __forceinline__ void pw_mma(pw_frag_c& d, const pw_frag_a& a, const pw_frag_b& b) {
    nvcuda::wmma::mma_sync(d, a, b, d);
}
__device__ __forceinline__ void pw_store(int* p, const pw_frag_c& f, unsigned ldm) {
    nvcuda::wmma::store_matrix_sync(p, f, ldm, nvcuda::wmma::mem_row_major);
}
"""

_WMMA_PRELUDE_PTX = r"""
/* m16n16k16 s8 fragments: A and B are two .b32 registers (four s8 each), the s32
   accumulator eight. Generic addressing (no state space): works for shared and global. */
struct pw_frag_a { int x[2]; };
struct pw_frag_b { int x[2]; };
struct pw_frag_c { int x[8]; };
#define PW_FRAG_C_ELEMENTS 8
__device__ __forceinline__ void pw_zero(pw_frag_c& f) {
#pragma unroll
    for (int i = 0; i < 8; ++i) f.x[i] = 0;
}
__device__ __forceinline__ void pw_load_a(pw_frag_a& f, const signed char* p) {
    asm volatile("wmma.load.a.sync.aligned.row.m16n16k16.s8 {%0, %1}, [%2], %3;"
                 : "=r"(f.x[0]), "=r"(f.x[1]) : "l"(p), "r"(16) : "memory");
}
__device__ __forceinline__ void pw_load_b(pw_frag_b& f, const signed char* p) {
    asm volatile("wmma.load.b.sync.aligned.col.m16n16k16.s8 {%0, %1}, [%2], %3;"
                 : "=r"(f.x[0]), "=r"(f.x[1]) : "l"(p), "r"(16) : "memory");
}
__device__ __forceinline__ void pw_mma(pw_frag_c& d, const pw_frag_a& a, const pw_frag_b& b) {
    asm volatile(
        "wmma.mma.sync.aligned.row.col.m16n16k16.s32.s8.s8.s32 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9}, {%10, %11}, "
        "{%0, %1, %2, %3, %4, %5, %6, %7};"
        : "+r"(d.x[0]), "+r"(d.x[1]), "+r"(d.x[2]), "+r"(d.x[3]),
          "+r"(d.x[4]), "+r"(d.x[5]), "+r"(d.x[6]), "+r"(d.x[7])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(b.x[0]), "r"(b.x[1]));
}
__device__ __forceinline__ void pw_store(int* p, const pw_frag_c& f, unsigned ldm) {
    asm volatile(
        "wmma.store.d.sync.aligned.row.m16n16k16.s32 [%0], "
        "{%1, %2, %3, %4, %5, %6, %7, %8}, %9;"
        :
        : "l"(p), "r"(f.x[0]), "r"(f.x[1]), "r"(f.x[2]), "r"(f.x[3]),
          "r"(f.x[4]), "r"(f.x[5]), "r"(f.x[6]), "r"(f.x[7]), "r"(ldm)
        : "memory");
}
"""

_WMMA_BODY = r"""
typedef unsigned int pw_u32;
typedef unsigned long long pw_u64;

#define PW_BM 128
#define PW_BN 128
#define PW_BK 64
#define PW_KC (PW_BK / 16)

__device__ __forceinline__ pw_u32 pw_rotl1(pw_u32 x) { return (x << 1) | (x >> 31); }

/* Fused transcript on int8 tensor cores.
   ap:  A'   (mp x kp, row-major int8), btp: B'^T (np_ x kp, row-major int8), both
        zero-padded: mp, np_ multiples of 128, kp a multiple of 64, k <= kp, r % 16 == 0.
   c:   C'   (mp x np_ int32), s: fold states (mp x np_, uint32 bits in int32).
   Grid (np_/128, block rows of this launch), 256 threads: 8 warps as 4 (M) x 2 (N),
   each warp owns a 32 x 64 patch = 2 x 4 fragments of 16 x 16.
   Shared memory per stage holds the 64-byte k slice as four 16-byte chunks:
   sa[stage][chunk][row][16], so every fragment's 16x16 block is 256 contiguous,
   256-byte-aligned bytes (ldm = 16). Two stages: global loads of the next slice go to
   registers while the current one is multiplied; one __syncthreads per slice.
   The fold runs on the accumulator fragment itself: the state fragment has the same
   type, hence the same element-to-entry map, and is stored with the same call. */
extern "C" __global__ void __launch_bounds__(256, 1) pouw_transcript_wmma(
    const signed char* __restrict__ ap, const signed char* __restrict__ btp,
    int* __restrict__ c, int* __restrict__ s,
    int np_, int kp, int k, int r, int brow0, int fold) {
    __shared__ __align__(256) signed char sa[2][PW_KC][PW_BM][16];
    __shared__ __align__(256) signed char sb[2][PW_KC][PW_BN][16];

    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int bm = (brow0 + (int)blockIdx.y) * PW_BM;
    const int bn = (int)blockIdx.x * PW_BN;
    const int wm = (warp >> 1) * 32;
    const int wn = (warp & 1) * 64;

    pw_frag_c acc[2][4];
    pw_frag_c st[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            pw_zero(acc[i][j]);
            pw_zero(st[i][j]);
        }
    }

    /* Loader: lanes 0-7 of a warp take 8 consecutive rows at chunk 0, lanes 8-15 the
       same rows at chunk 1, ...: each warp instruction reads whole 32-byte sectors and
       writes 8 distinct 16-byte bank groups per phase. Rows lrow and lrow + 64. */
    const int lrow = warp * 8 + (lane & 7);
    const int lc = lane >> 3;
    const signed char* ga0 = ap + (pw_u64)(bm + lrow) * (pw_u64)kp + (pw_u64)(lc * 16);
    const signed char* ga1 = ga0 + (pw_u64)64 * (pw_u64)kp;
    const signed char* gb0 = btp + (pw_u64)(bn + lrow) * (pw_u64)kp + (pw_u64)(lc * 16);
    const signed char* gb1 = gb0 + (pw_u64)64 * (pw_u64)kp;

    int4 ra0 = *reinterpret_cast<const int4*>(ga0);
    int4 ra1 = *reinterpret_cast<const int4*>(ga1);
    int4 rb0 = *reinterpret_cast<const int4*>(gb0);
    int4 rb1 = *reinterpret_cast<const int4*>(gb1);
    *reinterpret_cast<int4*>(&sa[0][lc][lrow][0]) = ra0;
    *reinterpret_cast<int4*>(&sa[0][lc][lrow + 64][0]) = ra1;
    *reinterpret_cast<int4*>(&sb[0][lc][lrow][0]) = rb0;
    *reinterpret_cast<int4*>(&sb[0][lc][lrow + 64][0]) = rb1;
    __syncthreads();

    const int ntiles = kp / PW_BK;
    for (int t = 0; t < ntiles; ++t) {
        const int cur = t & 1;
        const bool more = (t + 1) < ntiles;
        if (more) {
            const pw_u64 off = (pw_u64)(t + 1) * PW_BK;
            ra0 = *reinterpret_cast<const int4*>(ga0 + off);
            ra1 = *reinterpret_cast<const int4*>(ga1 + off);
            rb0 = *reinterpret_cast<const int4*>(gb0 + off);
            rb1 = *reinterpret_cast<const int4*>(gb1 + off);
        }
#pragma unroll
        for (int kc = 0; kc < PW_KC; ++kc) {
            pw_frag_a fa[2];
            pw_frag_b fb[4];
#pragma unroll
            for (int i = 0; i < 2; ++i) pw_load_a(fa[i], &sa[cur][kc][wm + 16 * i][0]);
#pragma unroll
            for (int j = 0; j < 4; ++j) pw_load_b(fb[j], &sb[cur][kc][wn + 16 * j][0]);
#pragma unroll
            for (int i = 0; i < 2; ++i) {
#pragma unroll
                for (int j = 0; j < 4; ++j) pw_mma(acc[i][j], fa[i], fb[j]);
            }
            const int kend = t * PW_BK + (kc + 1) * 16;
            if (fold && kend <= k && (kend % r) == 0) {
#pragma unroll
                for (int i = 0; i < 2; ++i) {
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
#pragma unroll
                        for (int e = 0; e < PW_FRAG_C_ELEMENTS; ++e) {
                            const pw_u32 old = (pw_u32)st[i][j].x[e];
                            st[i][j].x[e] = (int)(pw_rotl1(old) ^ (pw_u32)acc[i][j].x[e]);
                        }
                    }
                }
            }
        }
        if (more) {
            const int nxt = cur ^ 1;
            *reinterpret_cast<int4*>(&sa[nxt][lc][lrow][0]) = ra0;
            *reinterpret_cast<int4*>(&sa[nxt][lc][lrow + 64][0]) = ra1;
            *reinterpret_cast<int4*>(&sb[nxt][lc][lrow][0]) = rb0;
            *reinterpret_cast<int4*>(&sb[nxt][lc][lrow + 64][0]) = rb1;
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const pw_u64 o =
                (pw_u64)(bm + wm + 16 * i) * (pw_u64)np_ + (pw_u64)(bn + wn + 16 * j);
            pw_store(c + o, acc[i][j], (unsigned)np_);
            pw_store(s + o, st[i][j], (unsigned)np_);
        }
    }
}
"""

WMMA_SOURCE = _WMMA_PRELUDE_MMA_H + _WMMA_BODY  # the <mma.h> variant ("wmma")
WMMA_PTX_SOURCE = _WMMA_PRELUDE_PTX + _WMMA_BODY  # header-free variant ("wmma_ptx")

NVRTC_OPTIONS = ("--std=c++17",)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _import_cupy() -> Any:
    import cupy  # noqa: PLC0415 - optional dependency, imported on first use

    return cupy


def _include_dirs() -> list[str]:
    """Directories that may hold <mma.h>, for NVRTC builds that do not find it alone."""
    roots = [os.environ.get(v) for v in ("CUDA_PATH", "CUDA_HOME", "CUDA_ROOT")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    roots.append("/usr/local/cuda")
    try:
        cp = _import_cupy()
        roots.append(cp.cuda.get_cuda_path())
    except Exception:  # noqa: BLE001 - best effort only
        pass
    found: list[str] = []
    for root in roots:
        if root and os.path.isfile(os.path.join(root, "include", "mma.h")):
            found.append(os.path.join(root, "include"))
    for entry in sys.path:  # pip CUDA wheels: site-packages/nvidia/<pkg>/include
        for inc in glob.glob(os.path.join(entry, "nvidia", "*", "include")):
            if os.path.isfile(os.path.join(inc, "mma.h")):
                found.append(inc)
    out: list[str] = []
    for d in found:
        if d not in out:
            out.append(d)
    return out


# ---------------------------------------------------------------------------------
# Backends: the device kernels behind a small interface, so that the host-side
# orchestration can also run (slowly) against a NumPy mirror of every kernel.
# ---------------------------------------------------------------------------------


class _CupyKernels:
    """Compiled modules for one device and the launches of each kernel."""

    def __init__(self, cp: Any) -> None:
        self.cp = cp
        self._sub: Any = None
        basic_error: Exception | None = None
        basic_attempts: list[tuple[str, ...]] = [NVRTC_OPTIONS, ()]
        for options in basic_attempts:
            try:
                basic = cp.RawModule(code=BASIC_SOURCE, options=options)
                self._plain = basic.get_function("pouw_transcript_plain")
                self._sparse = basic.get_function("pouw_sparse_lines")
                self._tickets = basic.get_function("pouw_tickets")
                self._noisy = basic.get_function("pouw_noisy_lines")
                break
            except Exception as exc:  # noqa: BLE001 - retried without options
                basic_error = exc
        else:
            raise RuntimeError(f"cannot compile the basic CUDA module: {basic_error}")
        # The WMMA kernel, both ways (see _WMMA_PRELUDE_*); either may fail to compile.
        self.wmma: dict[str, Any] = {}
        self.wmma_errors: dict[str, str] = {}
        errors = []
        attempts: list[tuple[str, ...]] = [NVRTC_OPTIONS]
        attempts += [NVRTC_OPTIONS + (f"-I{d}",) for d in _include_dirs()]
        for options in attempts:
            try:
                module = cp.RawModule(code=WMMA_SOURCE, options=options)
                self.wmma["wmma"] = module.get_function("pouw_transcript_wmma")
                break
            except Exception as exc:  # noqa: BLE001 - compile errors vary by toolkit
                errors.append(f"{options}: {exc}")
        if "wmma" not in self.wmma:
            self.wmma_errors["wmma"] = "\n".join(errors)[-4000:]
        for options in basic_attempts:
            try:
                module = cp.RawModule(code=WMMA_PTX_SOURCE, options=options)
                self.wmma["wmma_ptx"] = module.get_function("pouw_transcript_wmma")
                self.wmma_errors.pop("wmma_ptx", None)
                break
            except Exception as exc:  # noqa: BLE001
                self.wmma_errors["wmma_ptx"] = f"{options}: {exc}"[-4000:]
        # The mma.sync kernel (compute/cuda_kernels.py): header-free, optional.
        for options in basic_attempts:
            try:
                module = cp.RawModule(code=MMA_SOURCE, options=options)
                fn = module.get_function("pouw_transcript_mma")
                fn.max_dynamic_shared_size_bytes = MMA_SHARED_BYTES
                self.wmma["mma"] = fn
                self.wmma_errors.pop("mma", None)
                break
            except Exception as exc:  # noqa: BLE001
                self.wmma_errors["mma"] = f"{options}: {exc}"[-4000:]
        # Tuning variants of the mma kernel: one module, else one module per variant.
        self.variants: dict[str, MmaVariant] = {}
        wanted = _wanted_variants()
        if wanted:
            self._compile_variants(cp, wanted, basic_attempts)
        # Commitments and dense noise (optional: the host computes them otherwise).
        self._leaves: Any = None
        self._level: Any = None
        self._noise: Any = None
        self.commit_error = ""
        for options in basic_attempts:
            try:
                module = cp.RawModule(code=BASIC_SOURCE + COMMIT_NOISE_SOURCE, options=options)
                self._leaves = module.get_function("pouw_line_leaves")
                self._level = module.get_function("pouw_merkle_level")
                self._noise = module.get_function("pouw_noise_lines")
                self.commit_error = ""
                break
            except Exception as exc:  # noqa: BLE001
                self.commit_error = f"{options}: {exc}"[-4000:]

    def _compile_variants(
        self, cp: Any, wanted: tuple[MmaVariant, ...], attempts: list[tuple[str, ...]]
    ) -> None:
        def attach(module: Any, v: MmaVariant) -> None:
            fn = module.get_function(v.entry)
            fn.max_dynamic_shared_size_bytes = v.shared_bytes
            self.wmma[v.name] = fn
            self.variants[v.name] = v
            self.wmma_errors.pop(v.name, None)

        for options in attempts:
            try:
                module = cp.RawModule(code=mma_variants_source(wanted), options=options)
                # RawModule compiles lazily: compile now, so that a compile error falls
                # through to the per-variant modules below.
                if hasattr(module, "compile"):
                    module.compile()
                else:
                    module.get_function(wanted[0].entry)
                for v in wanted:
                    try:
                        attach(module, v)
                    except Exception as exc:  # noqa: BLE001 - e.g. too much shared memory
                        self.wmma_errors[v.name] = f"{options}: {exc}"[-4000:]
                return
            except Exception:  # noqa: BLE001 - find the culprit: one module each
                pass
        for v in wanted:
            for options in attempts:
                try:
                    attach(cp.RawModule(code=v.source(), options=options), v)
                    break
                except Exception as exc:  # noqa: BLE001
                    self.wmma_errors[v.name] = f"{options}: {exc}"[-4000:]

    @property
    def compiled(self) -> tuple[str, ...]:
        """Transcript kernels that compiled, best first (without a tuning: "mma", then
        the variants, then WMMA, then plain)."""
        first = tuple(k for k in TRANSCRIPT_KERNELS[:1] if k in self.wmma)
        rest = tuple(k for k in TRANSCRIPT_KERNELS[1:-1] if k in self.wmma)
        return first + tuple(self.variants) + rest + ("plain",)

    @property
    def has_commit(self) -> bool:
        return self._leaves is not None

    def line_leaves(self, mat: Any, prefix16: Any) -> Any:
        """(rows, 32) uint8: the tagged leaf hash of every row of mat (int8, 2-D)."""
        cp = self.cp
        mat = cp.ascontiguousarray(mat)
        rows, length = mat.shape
        out = cp.empty((rows, 8), dtype=cp.uint32)
        if rows:
            vec = 1 if (mat.data.ptr % 16 == 0 and length % 16 == 0) else 0
            self._leaves(
                ((rows + HASH_THREADS - 1) // HASH_THREADS,),
                (HASH_THREADS,),
                (
                    mat,
                    np.int64(length),
                    np.int32(rows),
                    np.int64(length),
                    prefix16,
                    np.int32(vec),
                    out,
                ),
            )
        return out.view(cp.uint8).reshape(rows, 32)

    def merkle_tree(self, leaves: Any, prefix16: Any) -> Any:
        """All levels, leaves first, concatenated: (total nodes, 32) uint8."""
        cp = self.cp
        count = int(leaves.shape[0])
        sizes = [count]
        while sizes[-1] > 1:
            sizes.append((sizes[-1] + 1) // 2)
        buf = cp.empty((sum(sizes), 8), dtype=cp.uint32)
        buf[:count] = leaves.view(cp.uint32).reshape(count, 8)
        off = 0
        for size in sizes[:-1]:
            nxt = (size + 1) // 2
            self._level(
                ((nxt + HASH_THREADS - 1) // HASH_THREADS,),
                (HASH_THREADS,),
                (
                    buf[off : off + size],
                    np.int32(size),
                    prefix16,
                    buf[off + size : off + size + nxt],
                ),
            )
            off += size
        return buf.view(cp.uint8).reshape(-1, 32)

    def noise_lines(self, tmpl17: Any, first: int, rows: int, r: int) -> Any:
        cp = self.cp
        out = cp.empty((rows, r), dtype=cp.int8)
        if rows:
            self._noise(
                ((rows + HASH_THREADS - 1) // HASH_THREADS,),
                (HASH_THREADS,),
                (tmpl17, np.int32(first), np.int32(rows), np.int32(r), out),
            )
        return out

    def transcript(
        self,
        ap: Any,
        btp: Any,
        c: Any,
        s: Any,
        k: int,
        r: int,
        brow0: int,
        nbrows: int,
        fold: bool,
        kernel: str,
    ) -> None:
        """Rows [brow0*128, (brow0+nbrows)*128) of C' and of the fold states."""
        mp, kp = ap.shape
        np_ = btp.shape[0]
        var = self.variants.get(kernel)
        if var is not None:
            row0 = brow0 * BLOCK_M
            row_end = min(mp, row0 + nbrows * BLOCK_M)
            self.wmma[kernel](
                (-(-np_ // var.bn), -(-(row_end - row0) // var.bm)),
                (var.threads,),
                (
                    ap,
                    btp,
                    c,
                    s,
                    np.int32(np_),
                    np.int32(kp),
                    np.int32(k),
                    np.int32(r),
                    np.int32(row0),
                    np.int32(row_end),
                    np.int32(1 if fold else 0),
                ),
                shared_mem=var.shared_bytes,
            )
        elif kernel in ("mma", "wmma", "wmma_ptx"):
            self.wmma[kernel](
                (np_ // BLOCK_N, nbrows),
                (256,),
                (
                    ap,
                    btp,
                    c,
                    s,
                    np.int32(np_),
                    np.int32(kp),
                    np.int32(k),
                    np.int32(r),
                    np.int32(brow0),
                    np.int32(1 if fold else 0),
                ),
                shared_mem=MMA_SHARED_BYTES if kernel == "mma" else 0,  # wmma: static smem
            )
        else:
            row0 = brow0 * BLOCK_M
            row1 = min(mp, row0 + nbrows * BLOCK_M)
            self._plain(
                ((np_ + 31) // 32, (row1 - row0 + 7) // 8),
                (32, 8),
                (
                    ap,
                    btp,
                    c,
                    s,
                    np.int32(np_),
                    np.int32(kp),
                    np.int32(k),
                    np.int32(r),
                    np.int32(row0),
                    np.int32(row1),
                    np.int32(1 if fold else 0),
                ),
            )

    def noisy_lines(self, out: Any, base: Any, left: Any, plus: Any, minus: Any) -> None:
        """out[:rows, :k] = base + left[:, plus] - left[:, minus] (all contiguous)."""
        rows, k = base.shape
        if rows and k:
            self._noisy(
                (rows, (k + 255) // 256),
                (256,),
                (
                    base,
                    left,
                    np.int32(left.shape[1]),
                    plus,
                    minus,
                    out,
                    np.int64(out.shape[1]),
                    np.int32(rows),
                    np.int32(k),
                ),
            )

    def sub_exact(self, c: Any, d: Any) -> Any:
        """C' - D as int32: D holds exact integers in float64 and the difference fits."""
        if self._sub is None:
            self._sub = self.cp.ElementwiseKernel(
                "int32 c, float64 d",
                "int32 out",
                "out = (int)((long long)c - (long long)d)",
                "pouw_sub_exact",
            )
        try:
            return self._sub(c, d)
        except Exception:  # noqa: BLE001 - same result, more memory passes
            cp = self.cp
            return (c.astype(cp.int64) - d.astype(cp.int64)).astype(cp.int32)

    def sparse_lines(self, mat: Any, rows: int, r: int, csr_plus: Any, csr_minus: Any) -> Any:
        cp = self.cp
        out = cp.empty((rows, r), dtype=cp.int32)
        total = rows * r
        if total:
            threads = 256
            self._sparse(
                ((total + threads - 1) // threads,),
                (threads,),
                (
                    mat,
                    np.int64(mat.shape[1]),
                    np.int32(rows),
                    np.int32(r),
                    csr_plus[0],
                    csr_plus[1],
                    csr_minus[0],
                    csr_minus[1],
                    out,
                ),
            )
        return out

    def tickets(
        self,
        s: Any,
        m: int,
        n: int,
        th: int,
        tw: int,
        prefix16: Any,
        sigma8: Any,
        thr8: Any,
        all_win: bool,
    ) -> tuple[Any, Any]:
        cp = self.cp
        ntiles = (m // th) * (n // tw)
        digests = cp.empty((ntiles, 8), dtype=cp.uint32)
        wins = cp.empty((ntiles,), dtype=cp.uint8)
        if ntiles:
            self._tickets(
                ((ntiles + TICKET_THREADS - 1) // TICKET_THREADS,),
                (TICKET_THREADS,),
                (
                    s,
                    np.int64(s.shape[1]),
                    np.int32(n),
                    np.int32(th),
                    np.int32(tw),
                    np.int32(ntiles),
                    prefix16,
                    sigma8,
                    thr8,
                    np.int32(1 if all_win else 0),
                    digests,
                    wins,
                ),
            )
        return digests, wins


class _CupyBackend:
    """CuPy arrays, CUDA events for timing, the compiled kernels."""

    emulated = False

    def __init__(self, device_id: int | None = None) -> None:
        cp = _import_cupy()
        self.cp = cp
        self.xp = cp
        self.device_id = cp.cuda.runtime.getDevice() if device_id is None else device_id
        with cp.cuda.Device(self.device_id):
            self.kernels = _cached_kernels(cp, self.device_id)

    def device(self) -> Any:
        return self.cp.cuda.Device(self.device_id)

    def to_host(self, x: Any) -> np.ndarray:
        return self.cp.asnumpy(self.cp.ascontiguousarray(x))

    def to_device(self, x: np.ndarray) -> Any:
        return self.cp.asarray(np.ascontiguousarray(x))

    def to_device_async(self, x: np.ndarray) -> tuple[Any, Any]:
        """(device copy, staging buffer): x goes through pinned host memory and the copy
        runs asynchronously on the current stream; keep the staging buffer alive until
        the stream has passed the copy (any later synchronization)."""
        cp = self.cp
        x = np.ascontiguousarray(x)
        try:
            import cupyx  # noqa: PLC0415

            buf = cupyx.empty_pinned(x.shape, dtype=x.dtype)
            np.copyto(buf, x)
            out = cp.empty(x.shape, dtype=x.dtype)
            out.set(buf, stream=cp.cuda.get_current_stream())
            return out, buf
        except Exception:  # noqa: BLE001 - pageable copy
            return cp.asarray(x), None

    def to_host_pinned(self, x: Any) -> np.ndarray:
        """x copied into pinned host memory (from CuPy's pinned pool: reused once the
        returned array is dropped), which copies at full PCIe speed."""
        cp = self.cp
        x = cp.ascontiguousarray(x)
        try:
            import cupyx  # noqa: PLC0415

            out = cupyx.empty_pinned(x.shape, dtype=x.dtype)
            x.get(out=out)
            self.synchronize()
            return out
        except Exception:  # noqa: BLE001 - pageable copy
            return cp.asnumpy(x)

    def event(self) -> Any:
        ev = self.cp.cuda.Event()
        ev.record()
        return ev

    @staticmethod
    def wait(ev: Any) -> None:
        ev.synchronize()

    def elapsed(self, ev0: Any, ev1: Any) -> float:
        ev1.synchronize()
        return float(self.cp.cuda.get_elapsed_time(ev0, ev1)) / 1000.0

    def synchronize(self) -> None:
        self.cp.cuda.get_current_stream().synchronize()


_KERNEL_CACHE: dict[int, _CupyKernels] = {}
_SELF_TEST_CACHE: dict[int, dict[str, Any]] = {}  # per device: kernels are shared
_AUTOTUNE_CACHE: dict[tuple[int, int], tuple[str, dict[str, float]]] = {}  # (device, r)


def _wanted_variants() -> tuple[MmaVariant, ...]:
    """MMA_VARIANTS, limited by the POUW_MMA_VARIANTS environment variable."""
    env = os.environ.get("POUW_MMA_VARIANTS", "").strip()
    if not env or env == "all":
        return MMA_VARIANTS
    if env == "none":
        return ()
    names = {x.strip() for x in env.split(",")}
    return tuple(v for v in MMA_VARIANTS if v.name in names)


_KERNEL_LOCK = threading.Lock()


def _cached_kernels(cp: Any, device_id: int) -> _CupyKernels:
    with _KERNEL_LOCK:
        kern = _KERNEL_CACHE.get(device_id)
        if kern is None:
            kern = _CupyKernels(cp)
            _KERNEL_CACHE[device_id] = kern
        return kern


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class ReferenceKernels:
    """NumPy mirror of every device kernel: the specification each one must meet.

    Used with ``HostBackend`` to run the engine's host-side orchestration without a
    GPU (tests), and readable as the contract of the CUDA code above.
    """

    compiled = TRANSCRIPT_KERNELS[:1] + tuple(MMA_VARIANT_BY_NAME) + TRANSCRIPT_KERNELS[1:]
    wmma_errors: dict[str, str] = {}
    has_commit = True
    commit_error = ""

    @staticmethod
    def line_leaves(mat: np.ndarray, prefix16: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(mat, dtype=np.int8)
        out = np.empty((rows.shape[0], 32), dtype=np.uint8)
        for i in range(rows.shape[0]):
            out[i] = np.frombuffer(line_leaf(rows[i].tobytes()), dtype=np.uint8)
        return out

    @staticmethod
    def merkle_tree(leaves: np.ndarray, prefix16: np.ndarray) -> np.ndarray:
        levels = merkle_levels([bytes(x) for x in leaves], TAG_MERKLE_NODE)
        flat = b"".join(node for level in levels for node in level)
        return np.frombuffer(flat, dtype=np.uint8).reshape(-1, 32).copy()

    @staticmethod
    def noise_lines(tmpl17: np.ndarray, first: int, rows: int, r: int) -> np.ndarray:
        # The template holds the seed at bytes 64..96 and the label at byte 96.
        raw = np.asarray(tmpl17, dtype="<u8").tobytes()
        seed, label = raw[64:96], raw[96]
        return dense_noise_lines(seed, label, range(first, first + rows), r)

    def transcript(
        self,
        ap: np.ndarray,
        btp: np.ndarray,
        c: np.ndarray,
        s: np.ndarray,
        k: int,
        r: int,
        brow0: int,
        nbrows: int,
        fold: bool,
        kernel: str,
    ) -> None:
        rows = slice(brow0 * BLOCK_M, min(ap.shape[0], (brow0 + nbrows) * BLOCK_M))
        acc, state = fold_transcript(
            ap[rows, :k].astype(np.int64), btp[:, :k].T.astype(np.int64), r
        )
        c[rows] = acc.astype(np.int32)
        s[rows] = state.view(np.int32) if fold else 0

    def noisy_lines(
        self, out: np.ndarray, base: np.ndarray, left: np.ndarray, plus: Any, minus: Any
    ) -> None:
        rows, k = base.shape
        val = base.astype(np.int16) + left[:, plus].astype(np.int16) - left[:, minus]
        out[:rows, :k] = val.astype(np.int8)

    @staticmethod
    def sub_exact(c: np.ndarray, d: np.ndarray) -> np.ndarray:
        return (c.astype(np.int64) - d.astype(np.int64)).astype(np.int32)

    def sparse_lines(
        self, mat: np.ndarray, rows: int, r: int, csr_plus: Any, csr_minus: Any
    ) -> np.ndarray:
        out = np.zeros((rows, r), dtype=np.int64)
        m64 = mat[:rows].astype(np.int64)
        for q in range(r):
            plus = csr_plus[1][csr_plus[0][q] : csr_plus[0][q + 1]]
            minus = csr_minus[1][csr_minus[0][q] : csr_minus[0][q + 1]]
            out[:, q] = m64[:, plus].sum(axis=1) - m64[:, minus].sum(axis=1)
        return out.astype(np.int32)

    def tickets(
        self,
        s: np.ndarray,
        m: int,
        n: int,
        th: int,
        tw: int,
        prefix16: np.ndarray,
        sigma8: np.ndarray,
        thr8: np.ndarray,
        all_win: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        # prefix16 is implied by TAG_TICKET (ticket() absorbs it itself).
        sigma = np.asarray(sigma8, dtype=">u4").tobytes()
        threshold = int.from_bytes(np.asarray(thr8, dtype=">u4").tobytes(), "big")
        grid_rows, grid_cols = tile_grid(m, n, th, tw)
        states = np.ascontiguousarray(s[:m, :n]).view(np.uint32)
        digests = np.empty((grid_rows * grid_cols, 8), dtype=np.uint32)
        wins = np.zeros(grid_rows * grid_cols, dtype=np.uint8)
        for t in range(grid_rows * grid_cols):
            i, j = tile_origin(t, n, th, tw)
            dig = ticket(sigma, t, states[i : i + th, j : j + tw])
            digests[t] = np.frombuffer(dig, dtype=np.uint32)
            wins[t] = 1 if all_win or int.from_bytes(dig, "big") < threshold else 0
        return digests, wins


class HostBackend:
    """NumPy arrays and ``ReferenceKernels``: the engine's logic without a GPU."""

    emulated = True

    def __init__(self) -> None:
        self.xp = np
        self.kernels = ReferenceKernels()

    def device(self) -> _NullContext:
        return _NullContext()

    @staticmethod
    def to_host(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x)

    @staticmethod
    def to_device(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x)

    @staticmethod
    def to_device_async(x: np.ndarray) -> tuple[np.ndarray, None]:
        return np.array(x, copy=True, order="C"), None

    @staticmethod
    def to_host_pinned(x: np.ndarray) -> np.ndarray:
        return np.array(x, copy=True, order="C")

    @staticmethod
    def event() -> float:
        return time.perf_counter()

    @staticmethod
    def wait(ev: float) -> None:
        return None

    @staticmethod
    def elapsed(ev0: float, ev1: float) -> float:
        return ev1 - ev0

    def synchronize(self) -> None:
        return None


# ---------------------------------------------------------------------------------
# Host helpers
# ---------------------------------------------------------------------------------


def _kernel_r_multiple(kernel: str) -> int:
    """The noise rank must be a multiple of this for the kernel (its k step)."""
    if kernel in MMA_VARIANT_BY_NAME:
        return 32
    return {"mma": 32, "wmma": 16, "wmma_ptx": 16}.get(kernel, 1)


def _csr(idx: npt.NDArray[np.int64], r: int) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, positions): positions p with idx[p] == q are positions[ptr[q]:ptr[q+1]]."""
    order = np.argsort(idx, kind="stable").astype(np.int32)
    ptr = np.zeros(r + 1, dtype=np.int32)
    ptr[1:] = np.cumsum(np.bincount(idx, minlength=r))
    return ptr, order


def _be_words(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=">u4").astype(np.uint32)


def _ticket_prefix() -> bytes:
    return _tag_prefix(TAG_TICKET)


def _tag_prefix(tag: str) -> bytes:
    digest = hashlib.sha256(tag.encode("ascii")).digest()
    return digest + digest


def _noise_template(seed: bytes, label: int) -> np.ndarray:
    """The one padded SHAKE-256 block (rate 136) of a dense noise stream, as 17
    little-endian lanes, with the 4 big-endian index bytes (offsets 97..100) left zero
    for the kernel to fill (consensus.noise.noise_stream)."""
    msg = _tag_prefix(TAG_NOISE) + bytes(seed) + bytes([label]) + bytes(4)
    if len(msg) > 135:
        raise ValueError("noise seed too long for one SHAKE-256 block")
    block = bytearray(136)
    block[: len(msg)] = msg
    block[len(msg)] ^= 0x1F
    block[135] ^= 0x80
    return np.frombuffer(bytes(block), dtype="<u8").astype(np.uint64)


def _split_levels(flat: np.ndarray, count: int) -> list[list[bytes]]:
    """Levels (leaves first) from the concatenated (nodes, 32) uint8 array."""
    raw = np.ascontiguousarray(flat).tobytes()
    levels: list[list[bytes]] = []
    off = 0
    size = count
    while True:
        levels.append([raw[32 * i : 32 * i + 32] for i in range(off, off + size)])
        off += size
        if size <= 1:
            break
        size = (size + 1) // 2
    return levels


def _levels_ok(levels: list[list[bytes]], lines: Callable[[int], bytes], rng: Any) -> bool:
    """Spot check of device-built Merkle levels against consensus: a few leaves (first,
    last, random) re-hashed from their lines, and at every level a few parents (first,
    last, random) re-hashed from their children, odd-node promotion included."""
    count = len(levels[0])
    if count == 0:
        return False
    for i in {0, count - 1, *(int(x) for x in rng.integers(0, count, size=3))}:
        if levels[0][i] != line_leaf(lines(i)):
            return False
    for lv in range(1, len(levels)):
        below, level = levels[lv - 1], levels[lv]
        if len(level) != (len(below) + 1) // 2:
            return False
        size = len(level)
        for i in {0, size - 1, *(int(x) for x in rng.integers(0, size, size=2))}:
            if 2 * i + 1 < len(below):
                want = tagged_hash(TAG_MERKLE_NODE, below[2 * i], below[2 * i + 1])
            else:
                want = below[2 * i]
            if level[i] != want:
                return False
    return len(levels[-1]) == 1


PRE_STAGES = ("commit_gpu", "noise_gpu")


class _Stages:
    """Device stage times from events (GPU) and host stage times from perf_counter."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.events: list[tuple[str, Any, Any]] = []
        self.host: dict[str, float] = {}

    def device(self, name: str, ev0: Any, ev1: Any) -> None:
        self.events.append((name, ev0, ev1))

    def add_host(self, name: str, seconds: float) -> None:
        self.host[name] = self.host.get(name, 0.0) + seconds

    def seconds(self) -> dict[str, float]:
        out = dict(self.host)
        if self.events:
            for name, e0, e1 in self.events:
                out[name] = out.get(name, 0.0) + self.backend.elapsed(e0, e1)
            # "device": the span of the mining proper (A'/B' build to tickets); the GPU
            # commitments and noise lines before it are reported as their own stages.
            main = [ev for ev in self.events if ev[0] not in PRE_STAGES] or self.events
            out["device"] = self.backend.elapsed(main[0][1], main[-1][2])
            out["device_all"] = out["device"] + sum(out.get(name, 0.0) for name in PRE_STAGES)
        return out


class CupyEngine:
    """Mining engine on one CUDA GPU (see the module docstring).

    ``kernel``: "auto" (r % 32 == 0: the fastest of "mma" and its tuning variants that
    compiled and passed the self-test, timed once per device and r (``autotune``); else
    the first of "mma", "wmma", "wmma_ptx" (r % 16 == 0) that passed, else plain), or one
    of those names (a variant's name from compute.cuda_kernels.MMA_VARIANTS included).
    ``gpu_tickets``: hash the tickets on the GPU (each winner re-checked on the host)
    instead of copying the states back and hashing every tile on the host.
    ``gpu_commit``: build the Merkle commitments (leaves and levels) on the GPU, spot
    checked against consensus on every call. ``gpu_noise``: derive the dense noise
    lines (SHAKE-256) on the GPU, spot checked likewise. A failed self-test or spot
    check turns the GPU path off (host fallback). ``chunk_multiply_adds``: work per
    transcript launch (bounds the stop latency).
    """

    name = "cupy"

    def __init__(
        self,
        *,
        kernel: str = "auto",
        gpu_tickets: bool = True,
        gpu_commit: bool = True,
        gpu_noise: bool = True,
        chunk_multiply_adds: int = DEFAULT_CHUNK_MULTIPLY_ADDS,
        device_id: int | None = None,
        self_check: bool = True,
        backend: Any = None,
        autotune: bool = True,
    ) -> None:
        if kernel != "auto" and kernel not in TRANSCRIPT_KERNELS + tuple(MMA_VARIANT_BY_NAME):
            raise ValueError(f"unknown kernel {kernel!r}")
        self.kernel = kernel
        self.gpu_tickets = gpu_tickets
        self.gpu_commit = gpu_commit
        self.gpu_noise = gpu_noise
        self._check_rng = np.random.default_rng()
        self.chunk_multiply_adds = max(1, int(chunk_multiply_adds))
        self.device_id = device_id
        self.self_check = self_check
        self._backend = backend
        self._self_test: dict[str, Any] | None = None
        self.autotune = autotune
        self._tuned: dict[int, str] = {}  # r -> fastest passing mma kernel
        self._tune_info: dict[str, Any] = {}
        self._lock = threading.RLock()

    # -- availability and preparation -------------------------------------------------

    @staticmethod
    def available() -> bool:
        """True when CuPy imports and sees at least one CUDA device."""
        try:
            cp = _import_cupy()
            return int(cp.cuda.runtime.getDeviceCount()) > 0
        except Exception:  # noqa: BLE001 - no cupy, no driver, no device
            return False

    def prepare(self) -> dict[str, Any]:
        """Compile the kernels, run the self-test once and time the passing mma kernels
        for the ranks in AUTOTUNE_RANKS; returns the self-test results (with
        "kernel_r{r}": the choice and "autotune_r{r}": {kernel: seconds})."""
        with self._lock:
            if self._backend is None:
                self._backend = _CupyBackend(self.device_id)
            if self._self_test is None:
                if self.self_check and not self._backend.emulated:
                    dev = self._backend.device_id
                    with _KERNEL_LOCK:
                        cached = _SELF_TEST_CACHE.get(dev)
                    if cached is None:
                        with self._backend.device():
                            cached = self.self_test()
                        with _KERNEL_LOCK:
                            _SELF_TEST_CACHE[dev] = cached
                    self._self_test = dict(cached)
                else:
                    # Untested: trust the compiled kernels, but never an untested variant
                    # on a real device.
                    self._self_test = {
                        k: True
                        for k in self._backend.kernels.compiled
                        if k not in MMA_VARIANT_BY_NAME or self._backend.emulated
                    }
                    self._self_test["tickets"] = True
                    self._self_test["commit"] = True
                    self._self_test["noise"] = True
                if not self._self_test.get("commit", False):
                    if self.gpu_commit:
                        warnings.warn(
                            "GPU commitments failed their self-test; hashing on the host",
                            stacklevel=2,
                        )
                    self.gpu_commit = False
                if not self._self_test.get("noise", False):
                    if self.gpu_noise:
                        warnings.warn(
                            "GPU noise failed its self-test; deriving it on the host",
                            stacklevel=2,
                        )
                    self.gpu_noise = False
                if not self._self_test.get("tickets", False):
                    if self.gpu_tickets:
                        warnings.warn(
                            "GPU ticket hashing failed its self-test; hashing on the host",
                            stacklevel=2,
                        )
                    self.gpu_tickets = False
                for r in AUTOTUNE_RANKS:
                    self._tune(r)
            return {**self._self_test, **self._tune_info}

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self.prepare()
        return self._backend

    def kernel_for(self, r: int) -> str:
        """The transcript kernel mine() will use for noise rank r: with kernel="auto" and
        r % 32 == 0, the fastest passing mma kernel ("mma" or a tuning variant; see
        _tune); otherwise the first of "mma" (mma.sync, r % 32 == 0), "wmma" (<mma.h>),
        "wmma_ptx" (inline PTX) (r % 16 == 0) that compiled and passed the self-test,
        else "plain"."""
        self.prepare()
        compiled = self.backend.kernels.compiled
        passed = self._self_test or {}
        if self.kernel == "auto" and r % 32 == 0:
            tuned = self._tune(r)
            if tuned is not None:
                return tuned
        if self.kernel == "plain":
            return "plain"
        if self.kernel != "auto":
            if self.kernel not in compiled or r % _kernel_r_multiple(self.kernel):
                errors = self.backend.kernels.wmma_errors.get(self.kernel, "")
                raise RuntimeError(f"kernel {self.kernel} unavailable for r={r}: {errors}")
            return self.kernel
        for cand in TRANSCRIPT_KERNELS[:-1]:
            if cand in compiled and passed.get(cand) and r % _kernel_r_multiple(cand) == 0:
                return cand
        return "plain"

    def passed_mma_kernels(self) -> list[str]:
        """The "mma" kernel and the tuning variants that compiled and passed the self-test."""
        self.prepare()
        passed = self._self_test or {}
        return [
            k
            for k in self.backend.kernels.compiled
            if (k == "mma" or k in MMA_VARIANT_BY_NAME) and passed.get(k)
        ]

    def _tune(self, r: int) -> str | None:
        """The fastest passing mma kernel for rank r (r % 32 == 0), timed once per device
        and r on AUTOTUNE_SHAPE with the fold; None when there is nothing to time."""
        with self._lock:
            if r in self._tuned:
                return self._tuned[r]
            if self._self_test is None or self._backend is None:
                return None
            cands = self.passed_mma_kernels()
            if not cands or r % 32:
                return None
            if not self.autotune or self._backend.emulated or len(cands) == 1:
                cached = (cands[0], {})
            else:
                dev = self._backend.device_id
                with _KERNEL_LOCK:
                    cached = _AUTOTUNE_CACHE.get((dev, r))
                if cached is None:
                    with self._backend.device():
                        cached = self._autotune(r, cands)
                    with _KERNEL_LOCK:
                        _AUTOTUNE_CACHE[(dev, r)] = cached
            choice, times = cached
            self._tuned[r] = choice
            self._tune_info[f"kernel_r{r}"] = choice
            self._tune_info[f"autotune_r{r}"] = dict(times)
            return choice

    def _autotune(self, r: int, cands: list[str]) -> tuple[str, dict[str, float]]:
        """Times each candidate (one launch over AUTOTUNE_SHAPE, random int8 operands,
        with the fold; median of 3 after a warm-up): (fastest, {kernel: seconds})."""
        cp = self._backend.cp
        times: dict[str, float] = {}
        try:
            m, k, n = AUTOTUNE_SHAPE
            k = max(r, k - k % r)
            kp = _round_up(k, BLOCK_K)
            rs = cp.random.RandomState(12345)
            ap = rs.randint(-127, 127, size=(m, kp), dtype=cp.int32).astype(cp.int8)
            btp = rs.randint(-127, 127, size=(n, kp), dtype=cp.int32).astype(cp.int8)
            c = cp.empty((m, n), dtype=cp.int32)
            s = cp.empty((m, n), dtype=cp.int32)
            for kern in cands:
                try:
                    times[kern] = self.time_kernel(ap, btp, c, s, k, r, kern, True, repeat=3)
                except Exception:  # noqa: BLE001 - a kernel that cannot launch is not chosen
                    continue
            del ap, btp, c, s
            cp.get_default_memory_pool().free_all_blocks()
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: keep the default
            warnings.warn(f"transcript autotune failed: {exc!r}", stacklevel=2)
        if not times:
            return cands[0], times
        return min(times, key=lambda x: times[x]), times

    def time_kernel(
        self,
        ap: Any,
        btp: Any,
        c: Any,
        s: Any,
        k: int,
        r: int,
        kernel: str,
        fold: bool,
        repeat: int = 3,
        warmup: int = 1,
    ) -> float:
        """Median device seconds of one launch of a transcript kernel over all of the
        padded operands (c, s preallocated, mp x np int32)."""
        kern = self.backend.kernels
        brows = ap.shape[0] // BLOCK_M
        return time_device(
            lambda: kern.transcript(ap, btp, c, s, k, r, 0, brows, fold, kernel),
            repeat=repeat,
            warmup=warmup,
        )

    # -- the transcript on padded device operands ---------------------------------------

    def transcript_device(
        self,
        ap: Any,
        btp: Any,
        k: int,
        r: int,
        *,
        fold: bool = True,
        kernel: str | None = None,
        stop: threading.Event | None = None,
        keep_on_stop: bool = False,
        stages: _Stages | None = None,
    ) -> tuple[Any, Any, bool]:
        """C' and the fold states (mp x np int32) of padded A' (mp x kp), B'^T (np x kp).

        mp and np must be multiples of 128 and kp a multiple of 64 (see pad_operands).
        Returns (c, s, stopped). When stopped without keep_on_stop, c and s are partial.
        """
        be = self.backend
        xp = be.xp
        kern = kernel or self.kernel_for(r)
        mp, kp = ap.shape
        np_ = btp.shape[0]
        if mp % BLOCK_M or np_ % BLOCK_N or kp % BLOCK_K or btp.shape[1] != kp:
            raise ValueError(f"operands not padded: A' {ap.shape}, B'^T {btp.shape}")
        if k > kp or k % r or r % _kernel_r_multiple(kern):
            raise ValueError(f"bad k={k}, r={r} for kernel {kern} (kp={kp})")
        c = xp.zeros((mp, np_), dtype=xp.int32)
        s = xp.zeros((mp, np_), dtype=xp.int32)
        brows = mp // BLOCK_M
        per_brow = BLOCK_M * np_ * max(kp, 1)
        # Block rows per launch: about chunk_multiply_adds of work (the default keeps
        # thousands of blocks per launch on large products, a few ms each on an H100).
        chunk = max(1, min(brows, -(-self.chunk_multiply_adds // per_brow)))
        if kern == "plain":  # ~50x slower: keep launches short for the stop latency
            chunk = max(1, min(chunk, -(-(self.chunk_multiply_adds >> 6) // per_brow)))
        var = MMA_VARIANT_BY_NAME.get(kern)
        if var is not None and var.bm > BLOCK_M:  # whole block tiles per launch
            step = var.bm // BLOCK_M
            chunk = min(brows, -(-chunk // step) * step)
        stopped = False
        in_flight: list[Any] = []
        ev0 = be.event()
        for b0 in range(0, brows, chunk):
            if not stopped and stop is not None and stop.is_set():
                stopped = True
                if not keep_on_stop:
                    break
            nb = min(chunk, brows - b0)
            be.kernels.transcript(ap, btp, c, s, k, r, b0, nb, fold and not stopped, kern)
            in_flight.append(be.event())
            if len(in_flight) >= 2:
                be.wait(in_flight.pop(0))
        ev1 = be.event()
        if stages is not None:
            stages.device("transcript", ev0, ev1)
        return c, s, stopped

    def pad_operands(self, ap: Any, btp: Any) -> tuple[Any, Any]:
        """Zero-pad A' (m x k) and B'^T (n x k), int8 device arrays, to kernel multiples."""
        xp = self.backend.xp
        m, k = ap.shape
        n = btp.shape[0]
        mp, np_, kp = _round_up(m, BLOCK_M), _round_up(n, BLOCK_N), _round_up(k, BLOCK_K)
        out = []
        for x, rows in ((ap, mp), (btp, np_)):
            if x.shape == (rows, kp) and x.dtype == xp.int8 and x.flags.c_contiguous:
                out.append(x)
            else:
                y = xp.zeros((rows, kp), dtype=xp.int8)
                y[: x.shape[0], :k] = x
                out.append(y)
        return out[0], out[1]

    # -- mining -----------------------------------------------------------------------

    def mine(
        self,
        params: PouwParams,
        a: npt.NDArray[np.int8],
        b: npt.NDArray[np.int8],
        template: WorkTemplate,
        stop: threading.Event | None = None,
        tickets_out: list[bytes] | None = None,
        keep_product_on_stop: bool = False,
        operand_leaves: OperandLeaves | None = None,  # unused: the GPU hashes fast
        b_t: npt.NDArray[np.int8] | None = None,  # unused
    ) -> MiningOutput:
        be = self.backend
        with be.device():
            return self._mine(params, a, b, template, stop, tickets_out, keep_product_on_stop)

    def _mine(
        self,
        params: PouwParams,
        a: npt.NDArray[np.int8],
        b: npt.NDArray[np.int8],
        template: WorkTemplate,
        stop: threading.Event | None,
        tickets_out: list[bytes] | None,
        keep_product_on_stop: bool,
    ) -> MiningOutput:
        t_start = time.perf_counter()
        be = self.backend
        xp = be.xp
        kern_obj = be.kernels
        stages = _Stages(be)
        a = np.asarray(a)
        b = np.asarray(b)
        if a.dtype != np.int8 or b.dtype != np.int8 or a.ndim != 2 or b.ndim != 2:
            raise ValueError("operands must be 2-D int8 matrices")
        m, k = a.shape
        if b.shape[0] != k:
            raise ValueError(f"inner dimensions differ: {a.shape} x {b.shape}")
        n = b.shape[1]
        shape_check = check_shape(params, m, k, n)
        if not shape_check.ok:
            raise ValueError(f"shape {m}x{k}x{n} rejected: {shape_check.reason}")
        if not (entries_in_range(a) and entries_in_range(b)):
            raise ValueError("operand entries must lie in [-64, 63]")
        r, th, tw = params.noise_rank, params.tile_rows, params.tile_cols
        kern = self.kernel_for(r)

        t0 = time.perf_counter()
        a = np.ascontiguousarray(a)
        # Upload the operands through pinned memory (asynchronous copies): the leaf
        # hashes of A run while B is staged on the host.
        keep: list[Any] = []
        a_d, buf = be.to_device_async(a)
        keep.append(buf)
        use_commit = self.gpu_commit and kern_obj.has_commit
        leaf_prefix = node_prefix = None
        a_leaves = None
        if use_commit:
            leaf_prefix = be.to_device(_be_words(_tag_prefix(TAG_MERKLE_LEAF)))
            node_prefix = be.to_device(_be_words(_tag_prefix(TAG_MERKLE_NODE)))
            a_leaves = kern_obj.line_leaves(a_d, leaf_prefix)
        b_d, buf = be.to_device_async(b)
        keep.append(buf)
        bt_d = xp.ascontiguousarray(b_d.T)
        t1 = time.perf_counter()
        stages.add_host("upload", t1 - t0)

        row_levels: list[list[bytes]] | None = None
        col_levels: list[list[bytes]] | None = None
        if use_commit:
            ev = be.event()
            a_tree = kern_obj.merkle_tree(a_leaves, node_prefix)
            b_tree = kern_obj.merkle_tree(kern_obj.line_leaves(bt_d, leaf_prefix), node_prefix)
            stages.device("commit_gpu", ev, be.event())
            row_levels = _split_levels(be.to_host(a_tree), m)
            col_levels = _split_levels(be.to_host(b_tree), n)
            del a_tree, b_tree, a_leaves
            rng = self._check_rng
            if not (
                _levels_ok(row_levels, lambda i: a[i].tobytes(), rng)
                and _levels_ok(col_levels, lambda j: np.ascontiguousarray(b[:, j]).tobytes(), rng)
            ):
                warnings.warn(
                    "GPU commitments disagreed with the host; hashing on the host", stacklevel=2
                )
                self.gpu_commit = False
                row_levels = col_levels = None
        if row_levels is None or col_levels is None:
            row_levels = row_tree(a)
            col_levels = row_tree(b.T)
        be.synchronize()  # the staged uploads are done: their pinned buffers may go
        keep.clear()
        work = template.statement(m, k, n, row_levels[-1][0], col_levels[-1][0])
        sigma_a, sigma_b = work.seeds()
        t2 = time.perf_counter()
        stages.add_host("commit", t2 - t1)

        # Dense noise lines: on the GPU (queued first, so the host derives the sparse
        # patterns meanwhile), spot checked; or on the host.
        e_al_d = right_d = None
        if self.gpu_noise and kern_obj.has_commit:
            ev = be.event()
            e_al_d = kern_obj.noise_lines(
                be.to_device(_noise_template(sigma_a, LABEL_A_LEFT)), 0, m, r
            )
            right_d = kern_obj.noise_lines(
                be.to_device(_noise_template(sigma_b, LABEL_B_RIGHT)), 0, n, r
            )
            stages.device("noise_gpu", ev, be.event())
        a_plus, a_minus = sparse_pattern(sigma_a, LABEL_A_PATTERN, k, r)
        b_plus, b_minus = sparse_pattern(sigma_b, LABEL_B_PATTERN, k, r)
        if e_al_d is not None and right_d is not None:
            rng = self._check_rng
            good = True
            for dev, seed, label, rows in (
                (e_al_d, sigma_a, LABEL_A_LEFT, m),
                (right_d, sigma_b, LABEL_B_RIGHT, n),
            ):
                idx = sorted({0, rows - 1, *(int(x) for x in rng.integers(0, rows, size=2))})
                got = be.to_host(dev[be.to_device(np.asarray(idx, dtype=np.int64))])
                if not np.array_equal(got, dense_noise_lines(seed, label, idx, r)):
                    good = False
            if not good:
                warnings.warn(
                    "GPU noise disagreed with the host; deriving it on the host", stacklevel=2
                )
                self.gpu_noise = False
                e_al_d = right_d = None
        if e_al_d is None or right_d is None:
            e_al_d = be.to_device(dense_noise_lines(sigma_a, LABEL_A_LEFT, range(m), r))
            # n x r: E_BR^T
            right_d = be.to_device(dense_noise_lines(sigma_b, LABEL_B_RIGHT, range(n), r))
        t3 = time.perf_counter()
        stages.add_host("noise_host", t3 - t2)

        if stop is not None and stop.is_set() and not keep_product_on_stop:
            stats = MiningStats(
                seconds={**stages.seconds(), "total": time.perf_counter() - t_start}
            )
            return MiningOutput(work, None, [], True, stats)

        idx_d = [be.to_device(x.astype(np.int32)) for x in (a_plus, a_minus, b_plus, b_minus)]
        csr_a = [tuple(be.to_device(x) for x in _csr(v, r)) for v in (a_plus, a_minus)]
        csr_b = [tuple(be.to_device(x) for x in _csr(v, r)) for v in (b_plus, b_minus)]
        stages.add_host("upload", time.perf_counter() - t3)

        # A' and B'^T, zero-padded.
        ev = be.event()
        mp, np_, kp = _round_up(m, BLOCK_M), _round_up(n, BLOCK_N), _round_up(k, BLOCK_K)
        ap = xp.zeros((mp, kp), dtype=xp.int8)
        btp = xp.zeros((np_, kp), dtype=xp.int8)
        kern_obj.noisy_lines(ap, a_d, e_al_d, idx_d[0], idx_d[1])
        kern_obj.noisy_lines(btp, bt_d, right_d, idx_d[2], idx_d[3])
        del bt_d, b_d
        ev_noise = be.event()
        stages.device("noise", ev, ev_noise)

        c, s, stopped = self.transcript_device(
            ap,
            btp,
            k,
            r,
            fold=True,
            kernel=kern,
            stop=stop,
            keep_on_stop=keep_product_on_stop,
            stages=stages,
        )
        if stopped and not keep_product_on_stop:
            stats = MiningStats(
                seconds={**stages.seconds(), "total": time.perf_counter() - t_start}
            )
            return MiningOutput(work, None, [], True, stats)

        # Exact noise removal (module docstring).
        ev = be.event()
        x_d = kern_obj.sparse_lines(a_d, m, r, csr_b[0], csr_b[1])  # A . E_BL, m x r
        yt_d = kern_obj.sparse_lines(btp, n, r, csr_a[0], csr_a[1])  # (E_AR . B')^T, n x r
        u = xp.concatenate([x_d.astype(xp.float64), e_al_d.astype(xp.float64)], axis=1)
        vt = xp.concatenate([right_d.astype(xp.float64), yt_d.astype(xp.float64)], axis=1)
        product_d = xp.empty((m, n), dtype=xp.int32)
        band = max(1, min(m, (1 << 26) // max(1, n)))
        for r0 in range(0, m, band):
            r1 = min(m, r0 + band)
            d = xp.matmul(u[r0:r1], vt.T)
            product_d[r0:r1] = kern_obj.sub_exact(c[r0:r1, :n], d)
            del d
        del u, vt, x_d, yt_d
        stages.device("remove_noise", ev, be.event())

        if not stopped and stop is not None and stop.is_set():
            stopped = True  # the lottery is dead; the product is done
        seals: list[Seal] = []
        ntiles = 0
        if not stopped:
            ntiles = (m // th) * (n // tw)
            threshold = win_threshold(work.target, th, tw, k)
            seals = self._tickets_and_seals(
                params,
                work,
                a,
                b,
                s,
                sigma_a,
                threshold,
                row_levels,
                col_levels,
                tickets_out,
                stages,
            )

        t4 = time.perf_counter()
        product = be.to_host_pinned(product_d) if (not stopped or keep_product_on_stop) else None
        stages.add_host("download", time.perf_counter() - t4)
        del c, s, ap, btp, a_d, product_d
        if product is not None:
            product = product.astype(np.int32, copy=False)
        seconds = stages.seconds()
        seconds["total"] = time.perf_counter() - t_start
        stats = MiningStats(
            multiply_adds=m * n * k if not stopped or keep_product_on_stop else 0,
            tickets=ntiles,
            seconds=seconds,
        )
        return MiningOutput(work, product, seals, stopped, stats)

    def _tickets_and_seals(
        self,
        params: PouwParams,
        work: Any,
        a: np.ndarray,
        b: np.ndarray,
        s: Any,
        sigma_a: bytes,
        threshold: int,
        row_levels: list[list[bytes]],
        col_levels: list[list[bytes]],
        tickets_out: list[bytes] | None,
        stages: _Stages,
    ) -> list[Seal]:
        be = self.backend
        m, n = work.m, work.n
        th, tw = params.tile_rows, params.tile_cols
        ntiles = (m // th) * (n // tw)
        tickets: list[bytes] | None = None
        winners: list[int] = []
        win_tickets: dict[int, bytes] = {}
        if self.gpu_tickets:
            all_win = threshold >= 1 << 256
            thr = min(threshold, (1 << 256) - 1).to_bytes(32, "big")
            ev = be.event()
            digests_d, wins_d = be.kernels.tickets(
                s,
                m,
                n,
                th,
                tw,
                be.to_device(_be_words(_ticket_prefix())),
                be.to_device(_be_words(sigma_a)),
                be.to_device(_be_words(thr)),
                all_win,
            )
            stages.device("tickets", ev, be.event())
            t0 = time.perf_counter()
            wins = be.to_host(wins_d)
            winners = [int(t) for t in np.flatnonzero(wins)]
            if tickets_out is not None:
                raw = be.to_host(digests_d).tobytes()
                tickets = [raw[32 * t : 32 * t + 32] for t in range(ntiles)]
                win_tickets = {t: tickets[t] for t in winners}
            elif winners:
                sel = be.to_host(digests_d[be.to_device(np.asarray(winners, dtype=np.int64))])
                win_tickets = {t: sel[i].tobytes() for i, t in enumerate(winners)}
            # Every winner is re-hashed on the host before it is sealed.
            ok = True
            states = be.to_host(s[:m, :n]).view(np.uint32) if len(winners) > 64 else None
            for t in winners:
                i, j = tile_origin(t, n, th, tw)
                if states is not None:
                    tile = states[i : i + th, j : j + tw]
                else:
                    tile = be.to_host(s[i : i + th, j : j + tw]).view(np.uint32)
                host_j = ticket(sigma_a, t, tile)
                if host_j != win_tickets[t] or not ticket_wins(host_j, threshold):
                    ok = False
                    break
            stages.add_host("tickets_check", time.perf_counter() - t0)
            if not ok:
                warnings.warn(
                    "GPU ticket hash disagreed with the host; hashing on the host", stacklevel=2
                )
                self.gpu_tickets = False
                tickets = None
        if not self.gpu_tickets:
            t0 = time.perf_counter()
            states = be.to_host(s[:m, :n]).view(np.uint32)
            tickets = []
            for t in range(ntiles):
                i, j = tile_origin(t, n, th, tw)
                tickets.append(ticket(sigma_a, t, states[i : i + th, j : j + tw]))
            winners = [t for t, jt in enumerate(tickets) if ticket_wins(jt, threshold)]
            win_tickets = {t: tickets[t] for t in winners}
            stages.add_host("tickets_host", time.perf_counter() - t0)
        if tickets_out is not None and tickets is not None:
            tickets_out.extend(tickets)
        t0 = time.perf_counter()
        seals = [
            make_seal(params, work, a, b, t, win_tickets[t], row_levels, col_levels)
            for t in winners
        ]
        stages.add_host("seals", time.perf_counter() - t0)
        return seals

    # -- self-test ----------------------------------------------------------------------

    def self_test(self, seed: int = 0) -> dict[str, Any]:
        """Compare every compiled transcript kernel with the NumPy reference transcript,
        and the GPU ticket hash with hashlib, on small cases (padding, r = 16/32/128,
        the extreme entries -127 and 126; the mma kernel also against the plain kernel
        on a larger product), the GPU ticket hash with hashlib, and the GPU commitments
        and noise lines with consensus; then the mma tuning variants (MMA_VARIANTS) on the
        same cases, with and without the fold. Returns {"mma", "plain", "wmma",
        "wmma_ptx", "tickets", "commit", "noise", each variant's name: bool, "compiled",
        "variants_passed", "variants_failed": [...], and any errors}."""
        be = self._backend if self._backend is not None else _CupyBackend(self.device_id)
        self._backend = be
        rng = np.random.default_rng(seed)
        out: dict[str, Any] = {"compiled": list(be.kernels.compiled)}
        for name, err in be.kernels.wmma_errors.items():
            out[f"{name}_compile_error"] = err[-600:]
        cases = [
            (200, 96, 136, 32),
            (128, 256, 256, 128),
            (64, 128, 16, 16),
            (136, 64, 8, 32),
            (384, 576, 264, 32),  # 9 k-stages, partial block tiles
            (256, 1024, 384, 128),
            (256, 640, 256, 128),  # extremes, 10 k-stages
        ]
        variants = [x for x in be.kernels.compiled if x in MMA_VARIANT_BY_NAME]
        names = TRANSCRIPT_KERNELS + tuple(variants)
        ok = {name: name in be.kernels.compiled for name in names}
        case_data = []
        for ci, (m, k, n, r) in enumerate(cases):
            if ci in (1, 6):
                a_n = np.full((m, k), -127, dtype=np.int8)
                b_n = np.full((n, k), -127, dtype=np.int8)
                a_n[::3] = 126
                if ci == 6:
                    b_n[1::2] = 126
                    a_n[:, ::5] = 126
            else:
                a_n = rng.integers(-127, 127, size=(m, k), dtype=np.int8)
                b_n = rng.integers(-127, 127, size=(n, k), dtype=np.int8)
            ref_c, ref_s = fold_transcript(a_n.astype(np.int64), b_n.T.astype(np.int64), r)
            case_data.append((m, k, n, r, a_n, b_n, ref_c, ref_s))

        def small_cases(group: list[str]) -> None:
            for m, k, n, r, a_n, b_n, ref_c, ref_s in case_data:
                ap, btp = self.pad_operands(be.to_device(a_n), be.to_device(b_n))
                for kern in group:
                    if not ok[kern] or r % _kernel_r_multiple(kern):
                        continue
                    try:
                        c, s, _ = self.transcript_device(ap, btp, k, r, kernel=kern)
                        be.synchronize()
                        c_h = be.to_host(c[:m, :n])
                        s_h = be.to_host(s[:m, :n]).view(np.uint32)
                        good = np.array_equal(c_h, ref_c) and np.array_equal(s_h, ref_s)
                    except Exception as exc:  # noqa: BLE001 - report, fall back
                        good = False
                        out[f"{kern}_error"] = repr(exc)[-600:]
                    if not good:
                        ok[kern] = False
                        out.setdefault(f"{kern}_failed_case", (m, k, n, r))

        def large_case(group: list[str]) -> None:
            """The kernels of group against the verified plain kernel on a larger product
            (640 rows: partial 256-row tiles; 384 columns: partial 256-column tiles),
            with and without the fold."""
            big = [x for x in group if ok[x]]
            if not big:
                return
            try:
                for r in (32, 128):
                    a_n = rng.integers(-127, 127, size=(640, 2048), dtype=np.int8)
                    b_n = rng.integers(-127, 127, size=(384, 2048), dtype=np.int8)
                    ap, btp = self.pad_operands(be.to_device(a_n), be.to_device(b_n))
                    c2, s2, _ = self.transcript_device(ap, btp, 2048, r, kernel="plain")
                    for kern in big:
                        try:
                            c1, s1, _ = self.transcript_device(ap, btp, 2048, r, kernel=kern)
                            good = bool((c1 == c2).all()) and bool((s1 == s2).all())
                            c0, s0, _ = self.transcript_device(
                                ap, btp, 2048, r, fold=False, kernel=kern
                            )
                            good = good and bool((c0 == c2).all()) and not bool(s0.any())
                        except Exception as exc:  # noqa: BLE001
                            good = False
                            out[f"{kern}_error"] = repr(exc)[-600:]
                        if not good:
                            ok[kern] = False
                            out.setdefault(f"{kern}_failed_case", (640, 2048, 384, r))
            except Exception as exc:  # noqa: BLE001
                for kern in big:
                    ok[kern] = False
                out["large_case_error"] = repr(exc)[-600:]

        # The verified kernels first; the tuning variants last (a variant that breaks
        # the device cannot take the others' results with it).
        small_cases(list(TRANSCRIPT_KERNELS))
        out.update({name: ok[name] for name in TRANSCRIPT_KERNELS})
        # Tickets: random states, odd tile shapes, a threshold in the middle.
        tickets_ok = True
        try:
            for m, n, th, tw in ((16, 24, 8, 8), (12, 20, 3, 5), (64, 64, 16, 16)):
                s_h = rng.integers(0, 1 << 32, size=(m, n), dtype=np.uint64).astype(np.uint32)
                s_pad = np.zeros((m + 3, n + 5), dtype=np.uint32)
                s_pad[:m, :n] = s_h
                sigma = rng.bytes(32)
                threshold = 1 << 255
                digests_d, wins_d = be.kernels.tickets(
                    be.to_device(s_pad.view(np.int32)),
                    m,
                    n,
                    th,
                    tw,
                    be.to_device(_be_words(_ticket_prefix())),
                    be.to_device(_be_words(sigma)),
                    be.to_device(_be_words(threshold.to_bytes(32, "big"))),
                    False,
                )
                raw = be.to_host(digests_d).tobytes()
                wins = be.to_host(wins_d)
                for t in range((m // th) * (n // tw)):
                    i, j = tile_origin(t, n, th, tw)
                    want = ticket(sigma, t, s_h[i : i + th, j : j + tw])
                    if raw[32 * t : 32 * t + 32] != want or bool(wins[t]) != (
                        int.from_bytes(want, "big") < threshold
                    ):
                        tickets_ok = False
        except Exception as exc:  # noqa: BLE001
            tickets_ok = False
            out["tickets_error"] = repr(exc)[-600:]
        out["tickets"] = tickets_ok
        # The mma kernel against the verified plain kernel on a larger product.
        large_case(["mma"])
        out["mma"] = ok["mma"]
        # Commitments and noise lines against consensus.
        out["commit"] = out["noise"] = False
        if be.kernels.has_commit:
            try:
                good = True
                leaf_p = be.to_device(_be_words(_tag_prefix(TAG_MERKLE_LEAF)))
                node_p = be.to_device(_be_words(_tag_prefix(TAG_MERKLE_NODE)))
                for rows, width in ((1, 64), (2, 1), (5, 100), (13, 128), (37, 63), (64, 8192)):
                    mat = rng.integers(-64, 64, size=(rows, width), dtype=np.int8)
                    leaves = be.kernels.line_leaves(be.to_device(mat), leaf_p)
                    got = _split_levels(be.to_host(be.kernels.merkle_tree(leaves, node_p)), rows)
                    good = good and got == row_tree(mat)
                # Columns of a transposed device matrix, as mine() hashes B.
                b_n = rng.integers(-64, 64, size=(200, 7), dtype=np.int8)
                bt = be.xp.ascontiguousarray(be.to_device(b_n).T)
                got = _split_levels(
                    be.to_host(be.kernels.merkle_tree(be.kernels.line_leaves(bt, leaf_p), node_p)),
                    7,
                )
                good = good and got == row_tree(b_n.T)
                out["commit"] = bool(good)
            except Exception as exc:  # noqa: BLE001
                out["commit_error"] = repr(exc)[-600:]
            try:
                good = True
                for r, rows, first in ((32, 40, 0), (128, 70, 3), (16, 5, 0), (160, 9, 65530)):
                    seed = rng.bytes(32)
                    for label in (LABEL_A_LEFT, LABEL_B_RIGHT):
                        got = be.to_host(
                            be.kernels.noise_lines(
                                be.to_device(_noise_template(seed, label)), first, rows, r
                            )
                        )
                        want = dense_noise_lines(seed, label, range(first, first + rows), r)
                        good = good and np.array_equal(got, want)
                out["noise"] = bool(good)
            except Exception as exc:  # noqa: BLE001
                out["noise_error"] = repr(exc)[-600:]
        else:
            out["commit_error"] = be.kernels.commit_error[-600:]
        # The tuning variants: the same small cases, then the larger product.
        small_cases(variants)
        large_case(variants)
        out.update({name: ok[name] for name in variants})
        out["variants_passed"] = [x for x in variants if ok[x]]
        out["variants_failed"] = [x for x in variants if not ok[x]]
        return out


# ---------------------------------------------------------------------------------
# Baselines for the benchmark: the plain products on the same GPU through cuBLAS.
# ---------------------------------------------------------------------------------


def _cublas() -> tuple[Any, Any]:
    cp = _import_cupy()
    try:
        from cupy_backends.cuda.libs import cublas  # noqa: PLC0415
    except ImportError:  # pragma: no cover - older layouts
        from cupy.cuda import cublas  # noqa: PLC0415
    handle = cp.cuda.device.get_cublas_handle()
    cublas.setStream(handle, cp.cuda.get_current_stream().ptr)
    cublas.setPointerMode(handle, 0)  # CUBLAS_POINTER_MODE_HOST: alpha, beta on the host
    return cublas, handle


def _gemm_tn(
    a: Any, bt: Any, out: Any, dtype: Any, out_dtype: Any, cuda_in: int, cuda_out: int,
    compute: int, scalar: Any,
) -> Any:
    """out = A . B for device A (m x k) and B^T (n x k), row-major, by cublasGemmEx."""
    cp = _import_cupy()
    a = cp.ascontiguousarray(a, dtype=dtype)
    bt = cp.ascontiguousarray(bt, dtype=dtype)
    m, k = a.shape
    n = bt.shape[0]
    if bt.shape[1] != k:
        raise ValueError("inner dimensions differ")
    if out is None:
        out = cp.empty((m, n), dtype=out_dtype)
    cublas, handle = _cublas()
    one = np.array(1, dtype=scalar)
    zero = np.array(0, dtype=scalar)
    # Column-major view: out^T (n x m) = (B^T as k x n col-major)^T . (A^T as k x m).
    cublas.gemmEx(
        handle, _CUBLAS_OP_T, _CUBLAS_OP_N, n, m, k, one.ctypes.data,
        bt.data.ptr, cuda_in, k, a.data.ptr, cuda_in, k, zero.ctypes.data,
        out.data.ptr, cuda_out, n, compute, _CUBLAS_GEMM_DEFAULT,
    )  # fmt: skip
    return out


def int8_gemm_tn(a: Any, bt: Any, out: Any = None) -> Any:
    """C = A . B (int32, exact) for device int8 A (m x k) and B^T (n x k), row-major,
    through cublasGemmEx with CUDA_R_8I inputs, CUDA_R_32I output and
    CUBLAS_COMPUTE_32I (int8 tensor cores). k should be a multiple of 4."""
    cp = _import_cupy()
    return _gemm_tn(a, bt, out, cp.int8, cp.int32, _CUDA_R_8I, _CUDA_R_32I,
                    _CUBLAS_COMPUTE_32I, np.int32)  # fmt: skip


def int8_gemm_baseline(a: Any, b: Any) -> Any:
    """The plain exact product A . B (int32 device array) by cuBLAS int8 GEMM."""
    cp = _import_cupy()
    a_d = cp.asarray(a, dtype=cp.int8)
    bt_d = cp.ascontiguousarray(cp.asarray(b, dtype=cp.int8).T)
    return int8_gemm_tn(a_d, bt_d)


def half_gemm_tn(a: Any, bt: Any, out: Any = None) -> Any:
    """C = A . B for device float16 A (m x k) and B^T (n x k): fp16 in and out, fp32
    accumulation (CUBLAS_COMPUTE_32F), tensor cores. Not exact; a speed reference."""
    cp = _import_cupy()
    return _gemm_tn(a, bt, out, cp.float16, cp.float16, _CUDA_R_16F, _CUDA_R_16F,
                    _CUBLAS_COMPUTE_32F, np.float32)  # fmt: skip


def half_gemm_baseline(a: Any, b: Any) -> Any:
    cp = _import_cupy()
    a_d = cp.asarray(a).astype(cp.float16)
    bt_d = cp.ascontiguousarray(cp.asarray(b).astype(cp.float16).T)
    return half_gemm_tn(a_d, bt_d)


def time_device(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> float:
    """Median seconds of fn() on the current stream, timed with CUDA events."""
    cp = _import_cupy()
    for _ in range(warmup):
        fn()
    cp.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repeat):
        e0, e1 = cp.cuda.Event(), cp.cuda.Event()
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(cp.cuda.get_elapsed_time(e0, e1) / 1000.0)
    times.sort()
    return float(times[len(times) // 2])


__all__ = [
    "CupyEngine",
    "HostBackend",
    "ReferenceKernels",
    "BASIC_SOURCE",
    "WMMA_SOURCE",
    "int8_gemm_tn",
    "int8_gemm_baseline",
    "half_gemm_tn",
    "half_gemm_baseline",
    "time_device",
]
