"""CUDA sources of the GPU engine's newer kernels (compiled by compute/cupy_device.py).

* ``COMMIT_NOISE_SOURCE`` (appended to ``BASIC_SOURCE``, which provides the SHA-256
  compression): the Merkle commitments and the dense noise lines.
  - ``pouw_line_leaves``: one thread per line (a row of A or of B^T), the tagged leaf
    hash SHA256(prefix64 || line) with the 64-byte tag prefix compressed first.
  - ``pouw_merkle_level``: one thread per parent, SHA256(prefix64 || left || right);
    an odd last node is promoted unchanged (consensus/merkle.py).
  - ``pouw_noise_lines``: one thread per line, SHAKE-256(noise prefix || seed || u8
    label || u32be index) squeezed to r bytes, entry (byte & 63) - 32
    (consensus/noise.py). The message (101 bytes) is one 136-byte block whose padded
    template (17 little-endian lanes, index bytes zero) is built on the host.
  Digests are stored as bytes (each 32-bit word little-endian in memory), like the
  ticket digests. Every helper is ``__host__ __device__`` so the same code can be
  compiled and checked on a CPU (tests do this with nvcc or a C++ compiler).

* ``MMA_SOURCE``: ``pouw_transcript_mma``, the fused transcript on int8 tensor cores
  with mma.sync.m16n8k32 (PTX ISA, "Matrix multiply-accumulate operation using mma
  instruction", fragment layouts for .s8 A/B and .s32 C/D), ldmatrix, a
  ``PW_STAGES``-deep cp.async pipeline and XOR-swizzled shared memory. See the kernel
  comment for the tiling. Its tuning variants (block and warp tiles, stages, where the
  fold states live) are built from one parameterised source in
  compute/cuda_mma_variants.py.
"""

from __future__ import annotations

COMMIT_NOISE_SOURCE = r"""
/* ---------------- Merkle commitments ---------------- */

/* h = SHA-256 state after the 64-byte prefix block (the tag prefix). */
__host__ __device__ inline void pw_prefix_state(pw_u32 h[8], const pw_u32* prefix16,
                                                const pw_u32* K) {
    h[0] = 0x6a09e667u; h[1] = 0xbb67ae85u; h[2] = 0x3c6ef372u; h[3] = 0xa54ff53au;
    h[4] = 0x510e527fu; h[5] = 0x9b05688cu; h[6] = 0x1f83d9abu; h[7] = 0x5be0cd19u;
    pw_u32 w[16];
    for (int i = 0; i < 16; ++i) w[i] = prefix16[i];
    pw_sha256_compress(h, w, K);
}

/* Big-endian word from 4 bytes. */
__host__ __device__ __forceinline__ pw_u32 pw_be4(pw_u32 b0, pw_u32 b1, pw_u32 b2, pw_u32 b3) {
    return (b0 << 24) | (b1 << 16) | (b2 << 8) | b3;
}

/* Continue h (already holding the prefix state) over len bytes of line and finish:
   total message = 64 prefix bytes + len bytes. vec: line is 16-byte aligned, so the
   full 64-byte blocks are read as four 16-byte vectors. */
__host__ __device__ inline void pw_hash_line_tail(pw_u32 h[8], const unsigned char* line,
                                                  long long len, int vec, const pw_u32* K) {
    const long long nfull = len / 64;
    for (long long blk = 0; blk < nfull; ++blk) {
        const unsigned char* p = line + blk * 64;
        pw_u32 w[16];
        if (vec) {
            const pw_u32* q = reinterpret_cast<const pw_u32*>(p);
#pragma unroll
            for (int v = 0; v < 4; ++v) {
#ifdef __CUDA_ARCH__
                const uint4 x = __ldg(reinterpret_cast<const uint4*>(p) + v);
                w[4 * v + 0] = pw_bswap(x.x);
                w[4 * v + 1] = pw_bswap(x.y);
                w[4 * v + 2] = pw_bswap(x.z);
                w[4 * v + 3] = pw_bswap(x.w);
#else
                w[4 * v + 0] = pw_bswap(q[4 * v + 0]);
                w[4 * v + 1] = pw_bswap(q[4 * v + 1]);
                w[4 * v + 2] = pw_bswap(q[4 * v + 2]);
                w[4 * v + 3] = pw_bswap(q[4 * v + 3]);
#endif
            }
            (void)q;
        } else {
            for (int x = 0; x < 16; ++x)
                w[x] = pw_be4(p[4 * x], p[4 * x + 1], p[4 * x + 2], p[4 * x + 3]);
        }
        pw_sha256_compress(h, w, K);
    }
    const long long rem = len - nfull * 64;
    const unsigned char* p = line + nfull * 64;
    const int nblk = (rem + 9 + 63) / 64; /* 1 or 2 */
    const pw_u64 bits = (pw_u64)(64 + len) * 8ull;
    for (int blk = 0; blk < nblk; ++blk) {
        pw_u32 w[16];
        for (int x = 0; x < 16; ++x) {
            pw_u32 b[4];
            for (int q = 0; q < 4; ++q) {
                const long long idx = (long long)blk * 64 + 4 * x + q;
                b[q] = idx < rem ? (pw_u32)p[idx] : (idx == rem ? 0x80u : 0u);
            }
            w[x] = pw_be4(b[0], b[1], b[2], b[3]);
        }
        if (blk == nblk - 1) {
            w[14] = (pw_u32)(bits >> 32);
            w[15] = (pw_u32)bits;
        }
        pw_sha256_compress(h, w, K);
    }
}

/* out[i*8 + j] = byte-swapped digest word j of the leaf of line i (so the bytes of out
   are the 32-byte digests in order). Lines are rows of mat (leading dimension ld). */
extern "C" __global__ void pouw_line_leaves(
    const unsigned char* __restrict__ mat, long long ld, int rows, long long len,
    const pw_u32* __restrict__ prefix16, int vec, pw_u32* __restrict__ out) {
    __shared__ pw_u32 sk[64];
    __shared__ pw_u32 sp[16];
    for (int i = threadIdx.x; i < 64; i += blockDim.x) sk[i] = PW_SHA_K[i];
    for (int i = threadIdx.x; i < 16; i += blockDim.x) sp[i] = prefix16[i];
    __syncthreads();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows) return;
    pw_u32 h[8];
    pw_prefix_state(h, sp, sk);
    pw_hash_line_tail(h, mat + i * ld, len, vec, sk);
#pragma unroll
    for (int j = 0; j < 8; ++j) out[i * 8 + j] = pw_bswap(h[j]);
}

/* One Merkle parent (or a promoted node) from the byte-order digests of a level. */
__host__ __device__ inline void pw_merkle_parent(pw_u32* out8, const pw_u32* in, int count,
                                                 int i, const pw_u32* prefix16,
                                                 const pw_u32* K) {
    if (2 * i + 1 >= count) {
        for (int j = 0; j < 8; ++j) out8[j] = in[(long long)2 * i * 8 + j];
        return;
    }
    pw_u32 h[8];
    pw_prefix_state(h, prefix16, K);
    pw_u32 w[16];
    for (int j = 0; j < 16; ++j) w[j] = pw_bswap(in[(long long)2 * i * 8 + j]);
    pw_sha256_compress(h, w, K);
    for (int j = 0; j < 16; ++j) w[j] = 0u;
    w[0] = 0x80000000u;
    w[15] = (64u + 64u) * 8u;
    pw_sha256_compress(h, w, K);
    for (int j = 0; j < 8; ++j) out8[j] = pw_bswap(h[j]);
}

extern "C" __global__ void pouw_merkle_level(
    const pw_u32* __restrict__ in, int count, const pw_u32* __restrict__ prefix16,
    pw_u32* __restrict__ out) {
    __shared__ pw_u32 sk[64];
    __shared__ pw_u32 sp[16];
    for (int i = threadIdx.x; i < 64; i += blockDim.x) sk[i] = PW_SHA_K[i];
    for (int i = threadIdx.x; i < 16; i += blockDim.x) sp[i] = prefix16[i];
    __syncthreads();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (count + 1) / 2) return;
    pw_merkle_parent(out + (long long)i * 8, in, count, i, sp, sk);
}

/* ---------------- SHAKE-256 dense noise ---------------- */

__host__ __device__ __forceinline__ pw_u64 pw_rotl64(pw_u64 x, int n) {
    return n == 0 ? x : ((x << n) | (x >> (64 - n)));
}

__host__ __device__ inline void pw_keccak_f(pw_u64 s[25]) {
    const pw_u64 RC[24] = {
        0x0000000000000001ull, 0x0000000000008082ull, 0x800000000000808aull,
        0x8000000080008000ull, 0x000000000000808bull, 0x0000000080000001ull,
        0x8000000080008081ull, 0x8000000000008009ull, 0x000000000000008aull,
        0x0000000000000088ull, 0x0000000080008009ull, 0x000000008000000aull,
        0x000000008000808bull, 0x800000000000008bull, 0x8000000000008089ull,
        0x8000000000008003ull, 0x8000000000008002ull, 0x8000000000000080ull,
        0x000000000000800aull, 0x800000008000000aull, 0x8000000080008081ull,
        0x8000000000008080ull, 0x0000000080000001ull, 0x8000000080008008ull};
    const int ROT[24] = {1, 3, 6, 10, 15, 21, 28, 36, 45, 55, 2, 14,
                         27, 41, 56, 8, 25, 43, 62, 18, 39, 61, 20, 44};
    const int PIL[24] = {10, 7, 11, 17, 18, 3, 5, 16, 8, 21, 24, 4,
                         15, 23, 19, 13, 12, 2, 20, 14, 22, 9, 6, 1};
#pragma unroll 1
    for (int round = 0; round < 24; ++round) {
        pw_u64 bc[5];
#pragma unroll
        for (int i = 0; i < 5; ++i) bc[i] = s[i] ^ s[i + 5] ^ s[i + 10] ^ s[i + 15] ^ s[i + 20];
#pragma unroll
        for (int i = 0; i < 5; ++i) {
            const pw_u64 t = bc[(i + 4) % 5] ^ pw_rotl64(bc[(i + 1) % 5], 1);
#pragma unroll
            for (int j = 0; j < 25; j += 5) s[j + i] ^= t;
        }
        pw_u64 t = s[1];
#pragma unroll
        for (int i = 0; i < 24; ++i) {
            const int j = PIL[i];
            const pw_u64 b0 = s[j];
            s[j] = pw_rotl64(t, ROT[i]);
            t = b0;
        }
#pragma unroll
        for (int j = 0; j < 25; j += 5) {
#pragma unroll
            for (int i = 0; i < 5; ++i) bc[i] = s[j + i];
#pragma unroll
            for (int i = 0; i < 5; ++i) s[j + i] ^= (~bc[(i + 1) % 5]) & bc[(i + 2) % 5];
        }
        s[0] ^= RC[round];
    }
}

/* Dense noise line for index idx: tmpl17 is the padded first (and only) absorbed block
   with the 4 index bytes (offsets 97..100, big-endian) left zero. out gets r entries. */
__host__ __device__ inline void pw_noise_line(signed char* out, const pw_u64* tmpl17,
                                              pw_u32 idx, int r) {
    pw_u64 s[25];
    for (int i = 0; i < 25; ++i) s[i] = i < 17 ? tmpl17[i] : 0ull;
    s[12] ^= ((pw_u64)(idx >> 24) << 8) | ((pw_u64)((idx >> 16) & 255u) << 16) |
             ((pw_u64)((idx >> 8) & 255u) << 24) | ((pw_u64)(idx & 255u) << 32);
    pw_keccak_f(s);
    int pos = 0;
    for (int q = 0; q < r; ++q) {
        if (pos == 136) {
            pw_keccak_f(s);
            pos = 0;
        }
        const pw_u32 byte = (pw_u32)(s[pos >> 3] >> (8 * (pos & 7))) & 255u;
        out[q] = (signed char)((int)(byte & 63u) - 32);
        ++pos;
    }
}

/* out[i*r + q]: line i (index first + i) of dense noise, for i < rows. */
extern "C" __global__ void pouw_noise_lines(
    const pw_u64* __restrict__ tmpl17, int first, int rows, int r,
    signed char* __restrict__ out) {
    __shared__ pw_u64 st[17];
    for (int i = threadIdx.x; i < 17; i += blockDim.x) st[i] = tmpl17[i];
    __syncthreads();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows) return;
    pw_noise_line(out + i * r, st, (pw_u32)(first + i), r);
}
"""

MMA_SOURCE = r"""
typedef unsigned int pw_u32;
typedef unsigned long long pw_u64;

#define PW_MBM 128         /* block rows */
#define PW_MBN 128         /* block cols */
#define PW_MBK 64          /* k bytes per pipeline stage (two k32 steps) */
#ifndef PW_STAGES
#define PW_STAGES 4
#endif
#define PW_STAGE_BYTES ((PW_MBM + PW_MBN) * PW_MBK)

__device__ __forceinline__ pw_u32 pw_smem_addr(const void* p) {
    return (pw_u32)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void pw_cp_async16(pw_u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void pw_cp_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void pw_cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}
__device__ __forceinline__ void pw_ldsm_x4(pw_u32& r0, pw_u32& r1, pw_u32& r2, pw_u32& r3,
                                           pw_u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void pw_mma_s8(int* d, const pw_u32* a, const pw_u32* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
/* Byte offset of 16-byte chunk c (0..3) of row row in a 64-byte-row tile: XOR swizzle so
   that the 8 rows an ldmatrix phase reads (and the rows cp.async writes) fall in 8
   distinct 16-byte bank groups. */
__device__ __forceinline__ int pw_swz(int row, int c) {
    return row * PW_MBK + ((c ^ ((row >> 1) & 3)) << 4);
}

/* Fused transcript with mma.sync.m16n8k32 (int8 in, int32 accumulators).
   ap: A' (mp x kp int8, row-major), btp: B'^T (np_ x kp), zero-padded: mp, np_ multiples
   of 128, kp a multiple of 64, k <= kp, r % 32 == 0. c: C' (mp x np_ int32), s: fold
   states. Grid (np_/128, block rows of this launch), 256 threads = 8 warps as 2 (M) x 4
   (N); each warp owns 64 x 32 of C' = 4 x 4 mma tiles of 16 x 8, i.e. 64 accumulator
   and 64 state registers per thread. Accumulator register e of tile (i, j) is entry
   (wm + 16 i + g + 8 (e >> 1), wn + 8 j + 2 t + (e & 1)), g = lane >> 2, t = lane & 3.
   After each k32 step whose end kend satisfies kend <= k and kend % r == 0, every
   state register becomes rotl32(state, 1) ^ acc. C' and the states are stored once. */
extern "C" __global__ void __launch_bounds__(256, 1) pouw_transcript_mma(
    const signed char* __restrict__ ap, const signed char* __restrict__ btp,
    int* __restrict__ c, int* __restrict__ s,
    int np_, int kp, int k, int r, int brow0, int fold) {
    extern __shared__ __align__(128) unsigned char pw_smem[];
    const int tid = threadIdx.x;
    const int warp = tid >> 5;
    const int lane = tid & 31;
    const int bm = (brow0 + (int)blockIdx.y) * PW_MBM;
    const int bn = (int)blockIdx.x * PW_MBN;
    const int wm = (warp >> 2) * 64;
    const int wn = (warp & 3) * 32;

    /* Loader: thread tid copies chunk (tid & 3) of rows (tid >> 2) and (tid >> 2) + 64
       of both tiles. */
    const int lrow = tid >> 2;
    const int lch = tid & 3;
    const signed char* ga0 = ap + (pw_u64)(bm + lrow) * (pw_u64)kp + lch * 16;
    const signed char* ga1 = ga0 + (pw_u64)64 * (pw_u64)kp;
    const signed char* gb0 = btp + (pw_u64)(bn + lrow) * (pw_u64)kp + lch * 16;
    const signed char* gb1 = gb0 + (pw_u64)64 * (pw_u64)kp;
    const int so0 = pw_swz(lrow, lch);
    const int so1 = pw_swz(lrow + 64, lch);
    const pw_u32 sbase = pw_smem_addr(pw_smem);

    const int ktiles = kp / PW_MBK;

#define PW_LOAD_STAGE(kt_)                                                          \
    do {                                                                            \
        const int kt__ = (kt_);                                                     \
        if (kt__ < ktiles) {                                                        \
            const pw_u32 st__ = sbase + (pw_u32)((kt__ % PW_STAGES) * PW_STAGE_BYTES); \
            const pw_u64 off__ = (pw_u64)kt__ * PW_MBK;                             \
            pw_cp_async16(st__ + so0, ga0 + off__);                                 \
            pw_cp_async16(st__ + so1, ga1 + off__);                                 \
            pw_cp_async16(st__ + PW_MBM * PW_MBK + so0, gb0 + off__);               \
            pw_cp_async16(st__ + PW_MBM * PW_MBK + so1, gb1 + off__);               \
        }                                                                           \
        pw_cp_commit();                                                             \
    } while (0)

    int acc[4][4][4];
    pw_u32 st[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                acc[i][j][e] = 0;
                st[i][j][e] = 0u;
            }

#pragma unroll
    for (int sg = 0; sg < PW_STAGES - 1; ++sg) PW_LOAD_STAGE(sg);

    /* ldmatrix lane roles. A (x4 per 16-row tile): matrices (rows 0-7, k 0-15),
       (rows 8-15, k 0-15), (rows 0-7, k 16-31), (rows 8-15, k 16-31) = a0..a3.
       B (x4 per pair of 8-col tiles): (n 0-7, k 0-15), (n 0-7, k 16-31),
       (n 8-15, k 0-15), (n 8-15, k 16-31) = b0, b1 of tile j, b0, b1 of tile j + 1. */
    const int a_row = wm + (lane & 7) + ((lane >> 3) & 1) * 8;
    const int a_ch = lane >> 4;
    const int b_row = wn + (lane & 7) + (lane >> 4) * 8;
    const int b_ch = (lane >> 3) & 1;

    for (int kt = 0; kt < ktiles; ++kt) {
        pw_cp_wait<PW_STAGES - 2>();
        __syncthreads();
        PW_LOAD_STAGE(kt + PW_STAGES - 1);
        const pw_u32 sa = sbase + (pw_u32)((kt % PW_STAGES) * PW_STAGE_BYTES);
        const pw_u32 sb = sa + PW_MBM * PW_MBK;
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
            pw_u32 fa[4][4];
            pw_u32 fb[4][2];
#pragma unroll
            for (int i = 0; i < 4; ++i)
                pw_ldsm_x4(fa[i][0], fa[i][1], fa[i][2], fa[i][3],
                           sa + pw_swz(a_row + 16 * i, a_ch + 2 * ks));
#pragma unroll
            for (int jj = 0; jj < 2; ++jj)
                pw_ldsm_x4(fb[2 * jj][0], fb[2 * jj][1], fb[2 * jj + 1][0], fb[2 * jj + 1][1],
                           sb + pw_swz(b_row + 16 * jj, b_ch + 2 * ks));
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) pw_mma_s8(acc[i][j], fa[i], fb[j]);
            const int kend = kt * PW_MBK + (ks + 1) * 32;
            if (fold && kend <= k && (kend % r) == 0) {
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j)
#pragma unroll
                        for (int e = 0; e < 4; ++e)
                            st[i][j][e] = __funnelshift_l(st[i][j][e], st[i][j][e], 1) ^
                                          (pw_u32)acc[i][j][e];
            }
        }
    }
    pw_cp_wait<0>();
#undef PW_LOAD_STAGE

    const int g = lane >> 2;
    const int t4 = lane & 3;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const pw_u64 o = (pw_u64)(bm + wm + 16 * i + g + 8 * h) * (pw_u64)np_ +
                                 (pw_u64)(bn + wn + 8 * j + 2 * t4);
                *reinterpret_cast<int2*>(c + o) = make_int2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
                *reinterpret_cast<int2*>(s + o) =
                    make_int2((int)st[i][j][2 * h], (int)st[i][j][2 * h + 1]);
            }
        }
    }
}
"""

MMA_STAGES = 4
MMA_SHARED_BYTES = MMA_STAGES * (128 + 128) * 64  # dynamic shared memory per block
