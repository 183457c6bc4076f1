"""Choosing a mining engine: CuPy on a working CUDA GPU, else the NumPy CPU engine."""

from __future__ import annotations

import logging

from compute.engine import MiningEngine

log = logging.getLogger("pouw.compute")

ENGINES = ("numpy", "cupy")


def gpu_usable() -> tuple[bool, str]:
    """(True, "") when CuPy imports, sees a CUDA device and runs a tiny kernel;
    else (False, why)."""
    try:
        import cupy  # noqa: PLC0415 - optional dependency, imported only when asked
    except Exception as exc:  # noqa: BLE001 - any import failure means no GPU engine
        return False, f"cupy does not import ({type(exc).__name__}: {exc})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 - driver missing, no device, ...
        return False, f"no CUDA runtime ({type(exc).__name__}: {exc})"
    if count <= 0:
        return False, "no CUDA device"
    try:
        value = int((cupy.arange(16, dtype=cupy.int32) * 3).sum().item())
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot run is no engine
        return False, f"a tiny CUDA kernel failed ({type(exc).__name__}: {exc})"
    if value != 360:
        return False, f"a tiny CUDA kernel computed {value}, not 360"
    return True, ""


def select_engine(preferred: str | None = None) -> MiningEngine:
    """"numpy", "cupy" (raises if unusable) or None: CuPy when usable, else NumPy."""
    if preferred not in (None, *ENGINES):
        raise ValueError(f"unknown engine {preferred!r}; choose from {', '.join(ENGINES)}")
    if preferred in (None, "cupy"):
        ok, why = gpu_usable()
        if ok:
            from compute.cupy_engine import CupyEngine  # noqa: PLC0415 - lazy, GPU only

            log.info("mining engine: cupy")
            return CupyEngine()
        if preferred == "cupy":
            raise RuntimeError(f"the cupy engine is not usable here: {why}")
        log.info("mining engine: numpy (no GPU engine: %s)", why)
    else:
        log.info("mining engine: numpy (asked for)")
    from compute.numpy_engine import NumpyEngine  # noqa: PLC0415 - keeps numba off import

    return NumpyEngine()
