"""The tuning variants of the GPU engine's mma.sync transcript kernel
(compute/cuda_kernels.py, ``MMA_SOURCE``): one parameterised CUDA source
(``MMA_T_SOURCE``) instantiated per ``MmaVariant`` (block tiles 128x128 / 128x256 /
256x128, warp tiles, 3-5 stages, 1 or 2 blocks per SM, fold states in registers or
shared memory, the fold applied late or interleaved with the next step's mma). Each is
compiled and self-tested like the other kernels, and prepare() times the survivors
(compute/cupy_tuning.py). The fold rule is the same in all.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------
# Parameterised transcript kernels (tuning variants of the mma.sync kernel above).
# ---------------------------------------------------------------------------------

MMA_T_SOURCE = r"""
typedef unsigned int pw_u32;
typedef unsigned long long pw_u64;

#define PW_TK 64 /* k bytes per pipeline stage (two k32 steps) */

__device__ __forceinline__ pw_u32 pw_t_smem_addr(const void* p) {
    return (pw_u32)__cvta_generic_to_shared(p);
}
/* 16-byte async copy; src_bytes 0 writes zeros (rows past the operand). */
__device__ __forceinline__ void pw_t_cp16(pw_u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void pw_t_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void pw_t_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}
__device__ __forceinline__ void pw_t_ldsm_x4(pw_u32& r0, pw_u32& r1, pw_u32& r2, pw_u32& r3,
                                             pw_u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void pw_t_mma(int* d, const pw_u32* a, const pw_u32* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ int pw_t_swz(int row, int c) {
    return row * PW_TK + ((c ^ ((row >> 1) & 3)) << 4);
}
__device__ __forceinline__ pw_u32 pw_t_rotl1(pw_u32 x) { return __funnelshift_l(x, x, 1); }
/* Shared-memory fold states: volatile, so that they stay in program order between the
   (volatile) mma instructions instead of being hoisted into registers. */
__device__ __forceinline__ uint4 pw_t_lds128(pw_u32 addr) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
    return v;
}
__device__ __forceinline__ void pw_t_sts128(pw_u32 addr, uint4 v) {
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n"
                 :: "r"(addr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w));
}

/* The transcript (see pouw_transcript_mma for the fragment layouts), parameterised:
   BM x BN block tile, WM x WN warp tile ((BM / WM) * (BN / WN) warps), STAGES-deep
   cp.async pipeline. SMEM_STATE: the fold states live in shared memory (16 bytes per
   thread and 16 x 8 mma tile, only ever touched by their own thread) instead of
   registers. LATE: the fold of a k32 step that ends a block of r columns is applied to
   each tile just before that tile's next mma (or after the loop), so the ALU work
   overlaps the tensor cores instead of draining them; otherwise right after the step.
   Either way each state becomes rotl32(state, 1) ^ acc with acc = the sum over exactly
   the first multiple-of-r columns (<= k), as in pouw_transcript_mma.
   Rows [row0, row_end) of C' and the states; grid (ceil(np_ / BN), ceil((row_end -
   row0) / BM)); rows >= row_end and columns >= np_ are read as zeros and not stored. */
template <int BM, int BN, int WM, int WN, int STAGES, int SMEM_STATE, int LATE>
__device__ __forceinline__ void pw_transcript_t(
    const signed char* __restrict__ ap, const signed char* __restrict__ btp,
    int* __restrict__ c, int* __restrict__ s,
    int np_, int kp, int k, int r, int row0, int row_end, int fold) {
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int MI = WM / 16;
    constexpr int NJ = WN / 8;
    constexpr int STAGE_BYTES = (BM + BN) * PW_TK;
    constexpr int NA = BM * 4 / THREADS; /* 16-byte A chunks per thread and stage */
    constexpr int NB = BN * 4 / THREADS;
    constexpr int RSTEP = THREADS / 4;   /* rows between a thread's chunks */
    static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 16 == 0, "tiles");
    static_assert(NA >= 1 && NB >= 1 && NA * THREADS == BM * 4 && NB * THREADS == BN * 4,
                  "loader");
    extern __shared__ __align__(128) unsigned char pw_smem[];
    const int tid = threadIdx.x;
    const int warp = tid >> 5;
    const int lane = tid & 31;
    const int bm = row0 + (int)blockIdx.y * BM;
    const int bn = (int)blockIdx.x * BN;
    const int wm = (warp / WARPS_N) * WM;
    const int wn = (warp % WARPS_N) * WN;

    const int lrow = tid >> 2;
    const int lch = tid & 3;
    const pw_u32 sbase = pw_t_smem_addr(pw_smem);
    const signed char* ga = ap + (pw_u64)(bm + lrow) * (pw_u64)kp + lch * 16;
    const signed char* gb = btp + (pw_u64)(bn + lrow) * (pw_u64)kp + lch * 16;
    const pw_u64 rstride = (pw_u64)RSTEP * (pw_u64)kp;
    int amask = 0, bmask = 0; /* bit x: chunk x lies inside the operand */
#pragma unroll
    for (int x = 0; x < NA; ++x) amask |= (bm + lrow + x * RSTEP < row_end) ? (1 << x) : 0;
#pragma unroll
    for (int x = 0; x < NB; ++x) bmask |= (bn + lrow + x * RSTEP < np_) ? (1 << x) : 0;
    const int ktiles = kp / PW_TK;

    auto load_stage = [&](int kt) {
        if (kt < ktiles) {
            const pw_u32 st = sbase + (pw_u32)((kt % STAGES) * STAGE_BYTES);
            const pw_u64 off = (pw_u64)kt * PW_TK;
#pragma unroll
            for (int x = 0; x < NA; ++x) {
                const int ok = (amask >> x) & 1;
                pw_t_cp16(st + pw_t_swz(lrow + x * RSTEP, lch),
                          ok ? (const void*)(ga + x * rstride + off) : (const void*)ap,
                          ok ? 16 : 0);
            }
#pragma unroll
            for (int x = 0; x < NB; ++x) {
                const int ok = (bmask >> x) & 1;
                pw_t_cp16(st + BM * PW_TK + pw_t_swz(lrow + x * RSTEP, lch),
                          ok ? (const void*)(gb + x * rstride + off) : (const void*)btp,
                          ok ? 16 : 0);
            }
        }
        pw_t_commit();
    };

    int acc[MI][NJ][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;
    /* Fold states: registers, or shared memory after the pipeline stages. */
    pw_u32 st[SMEM_STATE ? 1 : MI][SMEM_STATE ? 1 : NJ][4];
    const pw_u32 sst = sbase + (pw_u32)(STAGES * STAGE_BYTES + 16 * tid);
    constexpr pw_u32 SST_STEP = 16u * THREADS; /* bytes between a thread's tiles */
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
            if (SMEM_STATE) {
                pw_t_sts128(sst + (pw_u32)(i * NJ + j) * SST_STEP, make_uint4(0u, 0u, 0u, 0u));
            } else {
#pragma unroll
                for (int e = 0; e < 4; ++e) st[SMEM_STATE ? 0 : i][SMEM_STATE ? 0 : j][e] = 0u;
            }
        }
    auto fold_tile = [&](int i, int j) {
        if (SMEM_STATE) {
            const pw_u32 addr = sst + (pw_u32)(i * NJ + j) * SST_STEP;
            uint4 v = pw_t_lds128(addr);
            v.x = pw_t_rotl1(v.x) ^ (pw_u32)acc[i][j][0];
            v.y = pw_t_rotl1(v.y) ^ (pw_u32)acc[i][j][1];
            v.z = pw_t_rotl1(v.z) ^ (pw_u32)acc[i][j][2];
            v.w = pw_t_rotl1(v.w) ^ (pw_u32)acc[i][j][3];
            pw_t_sts128(addr, v);
        } else {
            const int ii = SMEM_STATE ? 0 : i;
            const int jj = SMEM_STATE ? 0 : j;
#pragma unroll
            for (int e = 0; e < 4; ++e)
                st[ii][jj][e] = pw_t_rotl1(st[ii][jj][e]) ^ (pw_u32)acc[i][j][e];
        }
    };

#pragma unroll
    for (int sg = 0; sg < STAGES - 1; ++sg) load_stage(sg);

    const int a_row = wm + (lane & 7) + ((lane >> 3) & 1) * 8;
    const int a_ch = lane >> 4;
    const int b_row = wn + (lane & 7) + (lane >> 4) * 8;
    const int b_ch = (lane >> 3) & 1;

    /* Next fold boundary (a multiple of r, no division in the loop); kend steps by 32
       and r % 32 == 0, so kend meets every multiple of r. */
    int fnext = fold ? r : 0x7fffffff;
    int pend = 0; /* LATE: a fold is owed to every tile before its next mma */

    for (int kt = 0; kt < ktiles; ++kt) {
        pw_t_wait<STAGES - 2>();
        __syncthreads();
        load_stage(kt + STAGES - 1);
        const pw_u32 sa = sbase + (pw_u32)((kt % STAGES) * STAGE_BYTES);
        const pw_u32 sb = sa + BM * PW_TK;
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
            pw_u32 fa[MI][4];
            pw_u32 fb[NJ][2];
#pragma unroll
            for (int i = 0; i < MI; ++i)
                pw_t_ldsm_x4(fa[i][0], fa[i][1], fa[i][2], fa[i][3],
                             sa + pw_t_swz(a_row + 16 * i, a_ch + 2 * ks));
#pragma unroll
            for (int jj = 0; jj < NJ / 2; ++jj)
                pw_t_ldsm_x4(fb[2 * jj][0], fb[2 * jj][1], fb[2 * jj + 1][0], fb[2 * jj + 1][1],
                             sb + pw_t_swz(b_row + 16 * jj, b_ch + 2 * ks));
            if (LATE && pend) {
#pragma unroll
                for (int i = 0; i < MI; ++i)
#pragma unroll
                    for (int j = 0; j < NJ; ++j) {
                        fold_tile(i, j);
                        pw_t_mma(acc[i][j], fa[i], fb[j]);
                    }
            } else {
#pragma unroll
                for (int i = 0; i < MI; ++i)
#pragma unroll
                    for (int j = 0; j < NJ; ++j) pw_t_mma(acc[i][j], fa[i], fb[j]);
            }
            const int kend = kt * PW_TK + (ks + 1) * 32;
            const int now = (kend == fnext) && (kend <= k);
            if (kend == fnext) fnext += r;
            if (LATE) {
                pend = now;
            } else if (now) {
#pragma unroll
                for (int i = 0; i < MI; ++i)
#pragma unroll
                    for (int j = 0; j < NJ; ++j) fold_tile(i, j);
            }
        }
    }
    pw_t_wait<0>();
    if (LATE && pend) {
#pragma unroll
        for (int i = 0; i < MI; ++i)
#pragma unroll
            for (int j = 0; j < NJ; ++j) fold_tile(i, j);
    }

    const int g = lane >> 2;
    const int t4 = lane & 3;
#pragma unroll
    for (int i = 0; i < MI; ++i) {
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
            uint4 sv;
            if (SMEM_STATE) {
                sv = pw_t_lds128(sst + (pw_u32)(i * NJ + j) * SST_STEP);
            } else {
                const int ii = SMEM_STATE ? 0 : i;
                const int jj = SMEM_STATE ? 0 : j;
                sv = make_uint4(st[ii][jj][0], st[ii][jj][1], st[ii][jj][2], st[ii][jj][3]);
            }
            const int col = bn + wn + 8 * j + 2 * t4;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = bm + wm + 16 * i + g + 8 * h;
                if (row < row_end && col < np_) {
                    const pw_u64 o = (pw_u64)row * (pw_u64)np_ + (pw_u64)col;
                    *reinterpret_cast<int2*>(c + o) =
                        make_int2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
                    *reinterpret_cast<int2*>(s + o) = h ? make_int2((int)sv.z, (int)sv.w)
                                                        : make_int2((int)sv.x, (int)sv.y);
                }
            }
        }
    }
}
"""


class MmaVariant:
    """One configuration of the parameterised transcript kernel (MMA_T_SOURCE)."""

    def __init__(
        self,
        bm: int,
        bn: int,
        wm: int,
        wn: int,
        stages: int,
        min_blocks: int = 1,
        smem_state: bool = False,
        late: bool = True,
    ) -> None:
        self.bm, self.bn, self.wm, self.wn = bm, bn, wm, wn
        self.stages = stages
        self.min_blocks = min_blocks
        self.smem_state = smem_state
        self.late = late
        self.threads = (bm // wm) * (bn // wn) * 32
        fold = ("m" if smem_state else "r") + ("" if late else "e")
        self.name = f"mma_{bm}x{bn}_{wm}x{wn}_s{stages}_b{min_blocks}_{fold}"
        self.entry = "pouw_tr_" + self.name[4:]

    @property
    def shared_bytes(self) -> int:
        """Dynamic shared memory per block: the stages, then the states if there."""
        state = self.threads * (self.wm // 16) * (self.wn // 8) * 16 if self.smem_state else 0
        return self.stages * (self.bm + self.bn) * 64 + state

    def wrapper(self) -> str:
        return (
            f'extern "C" __global__ void __launch_bounds__({self.threads}, {self.min_blocks})\n'
            f"{self.entry}(const signed char* __restrict__ ap, "
            "const signed char* __restrict__ btp, int* __restrict__ c, int* __restrict__ s,\n"
            "    int np_, int kp, int k, int r, int row0, int row_end, int fold) {\n"
            f"    pw_transcript_t<{self.bm}, {self.bn}, {self.wm}, {self.wn}, {self.stages}, "
            f"{int(self.smem_state)}, {int(self.late)}>(ap, btp, c, s, np_, kp, k, r, row0, "
            "row_end, fold);\n}\n"
        )

    def source(self) -> str:
        return MMA_T_SOURCE + self.wrapper()


# Candidates, most promising first (the autotune in CupyEngine.prepare() times the ones
# that compile and pass the self-test). Shared memory: up to 227 KB per block on sm_90.
MMA_VARIANTS: tuple[MmaVariant, ...] = (
    # The baseline tiling (128 x 128, 8 warps of 64 x 32, states in registers, 1 block
    # per SM) with the late fold, at 3, 4 and 5 stages; and with the eager fold.
    MmaVariant(128, 128, 64, 32, 4),
    MmaVariant(128, 128, 64, 32, 3),
    MmaVariant(128, 128, 64, 32, 5),
    MmaVariant(128, 128, 64, 32, 4, late=False),
    # 8 warps of 32 x 64; 16 warps of 32 x 32 (512 threads, <= 128 registers).
    MmaVariant(128, 128, 32, 64, 4),
    MmaVariant(128, 128, 32, 32, 4),
    # States in shared memory (fewer registers): 2 blocks per SM of 128 x 128 with
    # 8 warps of 64 x 32 (late and eager fold) or 4 warps of 64 x 64; one block of
    # 128 x 256 / 256 x 128 with 8 warps of 64 x 64. The 64 x 64 warp tiles fold eagerly
    # (the late fold spills there: 255 registers + ~100 bytes of stack with nvcc 13.0).
    MmaVariant(128, 128, 64, 32, 3, min_blocks=2, smem_state=True),
    MmaVariant(128, 128, 64, 32, 3, min_blocks=2, smem_state=True, late=False),
    MmaVariant(128, 128, 64, 64, 3, min_blocks=2, smem_state=True, late=False),
    MmaVariant(128, 256, 64, 64, 3, smem_state=True, late=False),
    MmaVariant(128, 256, 64, 64, 4, smem_state=True, late=False),
    MmaVariant(256, 128, 64, 64, 3, smem_state=True, late=False),
)
MMA_VARIANT_BY_NAME = {v.name: v for v in MMA_VARIANTS}


def mma_variants_source(variants: tuple[MmaVariant, ...] = MMA_VARIANTS) -> str:
    """One module with every variant's entry point."""
    return MMA_T_SOURCE + "".join(v.wrapper() for v in variants)
