"""GPU benchmark: mining a product (fused transcript, noise, tickets) against the plain
cuBLAS GEMMs on the same device. Prints ``name=value`` lines; exits 0 with
``gpu=unavailable`` when there is no CuPy or no CUDA device.

    python3 bench/bench_gpu.py            # 8192^3, then 16384x8192x16384 if time allows

Main lines (for the 8192^3 shape; the larger one repeats them with a suffix):
  gpu_pouw_overhead_ratio   device time of mining (A'/B' build + transcript + noise
                            removal + ticket hashing, CUDA events) / cuBLAS int8 GEMM
  gpu_pouw_overhead_ratio_all  the same plus the GPU commitments and noise lines
  gpu_transcript_kernel     the transcript kernel timed ("mma" = mma.sync m16n8k32)
  gpu_useful_tops           2 m n k / that device time / 1e12
  gpu_pouw_wall_ratio       the whole mine() call (host commitments, uploads, copy of the
                            product back, seals) / cuBLAS int8 GEMM
  gpu_transcript_ratio      the transcript kernel alone / cuBLAS int8 GEMM
  gpu_fold_overhead_ratio   the same kernel with the fold / without it
  gpu_kernel                the kernel the autotune in prepare() chose for r = 128
  gpu_variant_tops_<name>   each passing mma kernel ("mma" and the tuning variants of
                            compute/cuda_kernels.MMA_VARIANTS), one launch over the whole
                            8192^3 product, with the fold; ..._nofold_tops_<name> without;
                            ..._fold_overhead_<name> the ratio of the two times
  gpu_variant_best / gpu_variant_best_nofold   the fastest variant here, with / without fold
  gpu_autotune_<name>       the autotune's own timing (4096^3, fold) of each candidate
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BUDGET_S = 100.0  # start no new shape after this many seconds
PREFIX = bytes(32)


def emit(name: str, value: object) -> None:
    if isinstance(value, float):
        value = f"{value:.6g}"
    print(f"{name}={value}", flush=True)


def bench_shape(cp, engine, params, m: int, k: int, n: int, suffix: str) -> None:
    from compute.cublas_baselines import half_gemm_tn, int8_gemm_tn, time_device
    from compute.engine import FixedTemplate

    ops = 2.0 * m * n * k
    r = params.noise_rank
    emit(f"gpu_shape{suffix}", f"{m}x{k}x{n}")
    rng = np.random.default_rng(0)
    a = rng.integers(-64, 64, size=(m, k), dtype=np.int8)
    b = rng.integers(-64, 64, size=(k, n), dtype=np.int8)
    a_d = cp.asarray(a)
    bt_d = cp.ascontiguousarray(cp.asarray(b).T)

    t_i8 = None
    c_ref = None
    try:
        c_ref = cp.empty((m, n), dtype=cp.int32)
        t_i8 = time_device(lambda: int8_gemm_tn(a_d, bt_d, c_ref), repeat=5, warmup=2)
        emit(f"gpu_int8_gemm_seconds{suffix}", t_i8)
        emit(f"gpu_int8_tops{suffix}", ops / t_i8 / 1e12)
        rows = a[:2].astype(np.int64) @ b.astype(np.int64)
        emit(f"gpu_int8_gemm_exact{suffix}", int(np.array_equal(cp.asnumpy(c_ref[:2]), rows)))
    except Exception as exc:  # noqa: BLE001 - report and go on
        emit(f"gpu_int8_gemm_error{suffix}", repr(exc)[:300])

    t_f16 = None
    try:
        a16 = a_d.astype(cp.float16)
        bt16 = bt_d.astype(cp.float16)
        c16 = cp.empty((m, n), dtype=cp.float16)
        t_f16 = time_device(lambda: half_gemm_tn(a16, bt16, c16), repeat=5, warmup=2)
        emit(f"gpu_fp16_gemm_seconds{suffix}", t_f16)
        emit(f"gpu_fp16_tflops{suffix}", ops / t_f16 / 1e12)
        a16 = bt16 = c16 = None  # free
    except Exception as exc:  # noqa: BLE001
        emit(f"gpu_fp16_gemm_error{suffix}", repr(exc)[:300])

    kernel = engine.kernel_for(r)
    try:  # the transcript kernel alone, on A and B^T standing in for A' and B'^T
        ap, btp = engine.pad_operands(a_d, bt_d)
        t_fold = time_device(
            lambda: engine.transcript_device(ap, btp, k, r, fold=True, kernel=kernel), repeat=3
        )
        t_nofold = time_device(
            lambda: engine.transcript_device(ap, btp, k, r, fold=False, kernel=kernel), repeat=3
        )
        emit(f"gpu_transcript_kernel{suffix}", kernel)
        emit(f"gpu_transcript_seconds{suffix}", t_fold)
        emit(f"gpu_transcript_tops{suffix}", ops / t_fold / 1e12)
        emit(f"gpu_transcript_nofold_seconds{suffix}", t_nofold)
        emit(f"gpu_fold_overhead_ratio{suffix}", t_fold / t_nofold)
        if t_i8:
            emit(f"gpu_transcript_ratio{suffix}", t_fold / t_i8)
        # The previous kernel (WMMA) for comparison, when the chosen one is newer.
        prev = [x for x in ("wmma", "wmma_ptx") if x in engine.backend.kernels.compiled]
        if kernel.startswith("mma") and prev and not suffix:
            t_prev = time_device(
                lambda: engine.transcript_device(ap, btp, k, r, fold=True, kernel=prev[0]),
                repeat=3,
            )
            emit(f"gpu_transcript_seconds_{prev[0]}{suffix}", t_prev)
            emit(f"gpu_transcript_tops_{prev[0]}{suffix}", ops / t_prev / 1e12)
            emit(f"gpu_transcript_speedup_vs_{prev[0]}{suffix}", t_prev / t_fold)
        if not suffix:
            bench_variants(cp, engine, ap, btp, k, r, ops)
        ap = btp = None  # free
    except Exception as exc:  # noqa: BLE001
        emit(f"gpu_transcript_error{suffix}", repr(exc)[:300])
    cp.get_default_memory_pool().free_all_blocks()

    try:
        template = FixedTemplate(PREFIX, 1)  # hardest target: no winners, no seals
        out = None
        for _ in range(3):  # the first runs pay for allocations (device and pinned pools)
            out = None  # return the previous product's pinned buffer to the pool
            out = engine.mine(params, a, b, template)
        assert out is not None and out.product is not None
        sec = out.stats.seconds
        device = sec.get("device", float("nan"))
        wall = sec.get("total", float("nan"))
        emit(f"gpu_pouw_device_seconds{suffix}", device)
        emit(f"gpu_pouw_wall_seconds{suffix}", wall)
        emit(f"gpu_useful_tops{suffix}", ops / device / 1e12)
        emit(f"gpu_useful_tops_wall{suffix}", ops / wall / 1e12)
        device_all = sec.get("device_all", device)
        emit(f"gpu_pouw_device_all_seconds{suffix}", device_all)
        emit(f"gpu_pouw_wall_over_device{suffix}", wall / device)
        emit(f"gpu_commit_on_gpu{suffix}", int(engine.gpu_commit))
        emit(f"gpu_noise_on_gpu{suffix}", int(engine.gpu_noise))
        if t_i8:
            emit(f"gpu_pouw_overhead_ratio{suffix}", device / t_i8)
            emit(f"gpu_pouw_overhead_ratio_all{suffix}", device_all / t_i8)
            emit(f"gpu_pouw_wall_ratio{suffix}", wall / t_i8)
        if t_f16:
            emit(f"gpu_pouw_overhead_ratio_vs_fp16{suffix}", device / t_f16)
        for stage, value in sorted(sec.items()):
            emit(f"gpu_breakdown_{stage}{suffix}", value)
        emit(f"gpu_tickets{suffix}", out.stats.tickets)
        if c_ref is not None:
            emit(
                f"gpu_product_equals_cublas{suffix}",
                int(np.array_equal(out.product, cp.asnumpy(c_ref))),
            )
    except Exception as exc:  # noqa: BLE001
        emit(f"gpu_mine_error{suffix}", repr(exc)[:300])
    a_d = bt_d = c_ref = None  # free
    cp.get_default_memory_pool().free_all_blocks()


def bench_variants(cp, engine, ap, btp, k: int, r: int, ops: float) -> None:
    """Each passing mma kernel alone (one launch, C' and states preallocated), with and
    without the fold, so that the table shows what each tiling / fold choice buys."""
    c = cp.empty((ap.shape[0], btp.shape[0]), dtype=cp.int32)
    s = cp.empty_like(c)
    best: dict[bool, tuple[float, str]] = {}
    for name in engine.passed_mma_kernels():
        try:
            t = {}
            for fold in (True, False):
                t[fold] = engine.time_kernel(ap, btp, c, s, k, r, name, fold, repeat=3)
                if fold not in best or t[fold] < best[fold][0]:
                    best[fold] = (t[fold], name)
            emit(f"gpu_variant_tops_{name}", ops / t[True] / 1e12)
            emit(f"gpu_variant_nofold_tops_{name}", ops / t[False] / 1e12)
            emit(f"gpu_variant_fold_overhead_{name}", t[True] / t[False])
        except Exception as exc:  # noqa: BLE001
            emit(f"gpu_variant_error_{name}", repr(exc)[:200])
    if True in best:
        emit("gpu_variant_best", best[True][1])
        emit("gpu_variant_best_tops", ops / best[True][0] / 1e12)
    if False in best:
        emit("gpu_variant_best_nofold", best[False][1])
        emit("gpu_variant_best_nofold_tops", ops / best[False][0] / 1e12)
    c = s = None


def main() -> int:
    start = time.perf_counter()
    try:
        import cupy as cp

        if cp.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # noqa: BLE001 - no cupy, no driver, no device
        print("gpu=unavailable")
        print(f"gpu_reason={type(exc).__name__}: {str(exc)[:200]}")
        return 0

    from compute.cupy_engine import CupyEngine
    from consensus.params import PouwParams

    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    emit("gpu", name.decode() if isinstance(name, bytes) else name)
    emit("gpu_cc", f"{props['major']}.{props['minor']}")
    emit("gpu_memory_gib", props["totalGlobalMem"] / 2**30)
    emit("cupy_version", cp.__version__)

    t0 = time.perf_counter()
    engine = CupyEngine()
    selftest = engine.prepare()
    emit("gpu_prepare_seconds", time.perf_counter() - t0)
    for key in ("mma", "plain", "wmma", "wmma_ptx", "tickets", "commit", "noise"):
        emit(f"gpu_selftest_{key}", int(bool(selftest.get(key))))
    for key, value in selftest.items():
        if "error" in key or "failed" in key:
            emit(f"gpu_selftest_{key}", str(value).replace("\n", " ")[:300])
    params = PouwParams(
        noise_rank=128,
        tile_rows=8,
        tile_cols=8,
        k_min=1024,
        k_max=16384,
        m_max=16384,
        n_max=16384,
        max_multiply_adds=1 << 42,
    )
    params.validate()
    emit("gpu_variants_passed", len(selftest.get("variants_passed", [])))
    emit("gpu_variants_failed", ",".join(selftest.get("variants_failed", [])) or "none")
    emit("gpu_kernel", engine.kernel_for(params.noise_rank))
    emit("gpu_noise_rank", params.noise_rank)
    info = engine.prepare()
    for name, sec in sorted(info.get(f"autotune_r{params.noise_rank}", {}).items()):
        emit(f"gpu_autotune_{name}", sec)

    bench_shape(cp, engine, params, 8192, 8192, 8192, "")
    free, _total = cp.cuda.runtime.memGetInfo()
    if time.perf_counter() - start < BUDGET_S / 2 and free > 24 * 2**30:
        bench_shape(cp, engine, params, 16384, 8192, 16384, "_16384x8192x16384")
    else:
        emit("gpu_skipped_16384x8192x16384", "time or memory")
    emit("gpu_bench_seconds", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
