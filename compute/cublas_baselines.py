"""Baselines for the GPU benchmark: the plain int8 and half products on the same GPU
through cuBLAS (cublasGemmEx), and a device timer (CUDA events, median of repeats).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from compute.cupy_device import import_cupy

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


def _cublas() -> tuple[Any, Any]:
    cp = import_cupy()
    try:
        from cupy_backends.cuda.libs import cublas  # noqa: PLC0415
    except ImportError:  # pragma: no cover - older layouts
        from cupy.cuda import cublas  # noqa: PLC0415
    handle = cp.cuda.device.get_cublas_handle()
    cublas.setStream(handle, cp.cuda.get_current_stream().ptr)
    cublas.setPointerMode(handle, 0)  # CUBLAS_POINTER_MODE_HOST: alpha, beta on the host
    return cublas, handle


def _gemm_tn(
    a: Any,
    bt: Any,
    out: Any,
    dtype: Any,
    out_dtype: Any,
    cuda_in: int,
    cuda_out: int,
    compute: int,
    scalar: Any,
) -> Any:
    """out = A . B for device A (m x k) and B^T (n x k), row-major, by cublasGemmEx."""
    cp = import_cupy()
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
    cp = import_cupy()
    return _gemm_tn(a, bt, out, cp.int8, cp.int32, _CUDA_R_8I, _CUDA_R_32I,
                    _CUBLAS_COMPUTE_32I, np.int32)  # fmt: skip


def int8_gemm_baseline(a: Any, b: Any) -> Any:
    """The plain exact product A . B (int32 device array) by cuBLAS int8 GEMM."""
    cp = import_cupy()
    a_d = cp.asarray(a, dtype=cp.int8)
    bt_d = cp.ascontiguousarray(cp.asarray(b, dtype=cp.int8).T)
    return int8_gemm_tn(a_d, bt_d)


def half_gemm_tn(a: Any, bt: Any, out: Any = None) -> Any:
    """C = A . B for device float16 A (m x k) and B^T (n x k): fp16 in and out, fp32
    accumulation (CUBLAS_COMPUTE_32F), tensor cores. Not exact; a speed reference."""
    cp = import_cupy()
    return _gemm_tn(a, bt, out, cp.float16, cp.float16, _CUDA_R_16F, _CUDA_R_16F,
                    _CUBLAS_COMPUTE_32F, np.float32)  # fmt: skip


def half_gemm_baseline(a: Any, b: Any) -> Any:
    cp = import_cupy()
    a_d = cp.asarray(a).astype(cp.float16)
    bt_d = cp.ascontiguousarray(cp.asarray(b).astype(cp.float16).T)
    return half_gemm_tn(a_d, bt_d)


def time_device(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> float:
    """Median seconds of fn() on the current stream, timed with CUDA events."""
    cp = import_cupy()
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
