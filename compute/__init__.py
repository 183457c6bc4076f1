"""Mining engines: the interface (engine.py), the CPU engine (numpy_engine.py), the GPU
engine (cupy_engine.py; its kernels' sources in cuda_sources.py, cuda_kernels.py and
cuda_mma_variants.py, their compiled launches in cupy_device.py, the backends in
gpu_backends.py, its kernel choice in cupy_tuning.py and self-test in
cupy_self_test.py), the engine choice (select.py) and Freivalds' check of a product
(freivalds.py).

Importing this package is cheap: the engines (and Numba, CuPy) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from compute.engine import (
    FixedTemplate,
    MiningEngine,
    MiningOutput,
    MiningStats,
    WorkTemplate,
)
from compute.select import select_engine

if TYPE_CHECKING:
    from compute.freivalds import freivalds_check
    from compute.numpy_engine import NumpyEngine

__all__ = [
    "FixedTemplate",
    "MiningEngine",
    "MiningOutput",
    "MiningStats",
    "NumpyEngine",
    "WorkTemplate",
    "freivalds_check",
    "select_engine",
]


def __getattr__(name: str) -> Any:
    if name == "NumpyEngine":
        from compute.numpy_engine import NumpyEngine

        return NumpyEngine
    if name == "freivalds_check":
        from compute.freivalds import freivalds_check

        return freivalds_check
    raise AttributeError(f"module 'compute' has no attribute {name!r}")
