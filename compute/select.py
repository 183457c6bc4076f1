"""Choosing a mining engine: CuPy on a working CUDA GPU, else the NumPy CPU engine."""

from __future__ import annotations

import logging

from compute.engine import MiningEngine

log = logging.getLogger("pouw.compute")

ENGINES = ("numpy", "cupy")
# What to do when CuPy cannot run: the wheels are built per CUDA major version
# (pyproject.toml's extras; docs/OPERATIONS.md, Install).
CUPY_INSTALL_HINT = (
    "install CuPy for your CUDA version (`pip install 'pouw[gpu]'` for CUDA 12, "
    "'pouw[gpu-cuda13]' for CUDA 13; `pouw miner --list-devices` shows what is found)"
)


class EngineUnavailableError(RuntimeError):
    """The engine asked for cannot run on this machine; ``why`` says what failed and the
    message adds what to do."""

    def __init__(self, engine: str, why: str) -> None:
        self.engine = engine
        self.why = why
        super().__init__(f"the {engine} engine is not usable here: {why}; {CUPY_INSTALL_HINT}")


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


def check_engine(preferred: str | None) -> None:
    """Raise EngineUnavailableError when ``preferred`` is "cupy" and CuPy cannot run here
    (a quick check before a node starts; numpy and None always have an engine)."""
    if preferred == "cupy":
        ok, why = gpu_usable()
        if not ok:
            raise EngineUnavailableError("cupy", why)


def select_engine(preferred: str | None = None) -> MiningEngine:
    """The engine ``preferred`` names: "numpy", "cupy" (EngineUnavailableError if unusable)
    or None: CuPy when usable, else NumPy."""
    if preferred not in (None, *ENGINES):
        raise ValueError(f"unknown engine {preferred!r}; choose from {', '.join(ENGINES)}")
    if preferred in (None, "cupy"):
        ok, why = gpu_usable()
        if ok:
            from compute.cupy_engine import CupyEngine  # noqa: PLC0415 - lazy, GPU only

            log.info("mining engine: cupy")
            return CupyEngine()
        if preferred == "cupy":
            raise EngineUnavailableError("cupy", why)
        log.info("mining engine: numpy (no GPU engine: %s)", why)
    else:
        log.info("mining engine: numpy (asked for)")
    from compute.numpy_engine import NumpyEngine  # noqa: PLC0415 - keeps numba off import

    return NumpyEngine()
