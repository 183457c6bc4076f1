"""CUDA sources of the GPU engine's first kernels (compiled by compute/cupy_device.py):
``BASIC_SOURCE`` (SHA-256 compression, tickets, the plain transcript, the noisy and
sparse lines; no header needed) and the fused WMMA transcript, built two ways
(``WMMA_SOURCE`` through <mma.h>, ``WMMA_PTX_SOURCE`` through inline PTX). The newer
kernels (commitments, noise lines, the mma.sync transcript and its tuning variants)
are in compute/cuda_kernels.py. Every kernel is specified by its NumPy mirror in
compute/gpu_backends.py (``ReferenceKernels``).
"""

from __future__ import annotations

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
