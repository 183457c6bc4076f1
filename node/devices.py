"""What GPU mining can use here: ``pouw miner --list-devices``."""

from __future__ import annotations

import platform
from typing import Any


def describe_devices() -> tuple[list[str], bool]:
    """Lines describing the CuPy/CUDA setup and each device; and whether the GPU is usable."""
    from compute.select import gpu_usable  # noqa: PLC0415 - imports cupy only when asked

    lines = [f"python {platform.python_version()} on {platform.machine()}"]
    try:
        import numpy  # noqa: PLC0415

        lines.append(f"numpy {numpy.__version__}: the CPU engine is always available")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"numpy does not import: {exc}")
    ok, why = gpu_usable()
    try:
        import cupy  # noqa: PLC0415 - optional dependency
    except Exception as exc:  # noqa: BLE001 - any import failure: no cupy here
        lines.append(f"cupy: not usable ({type(exc).__name__}: {exc})")
        lines.append(
            "  install it with `pip install 'pouw[gpu]'` (CUDA 12) or 'pouw[gpu-cuda13]' (CUDA 13)"
        )
        lines.append("GPU mining: no; the miner uses the CPU (numpy) engine")
        return lines, False
    lines.append(f"cupy {cupy.__version__}")
    rt: Any = cupy.cuda.runtime
    try:
        drv, run = rt.driverGetVersion(), rt.runtimeGetVersion()
        ver = [f"{v // 1000}.{v % 1000 // 10}" for v in (drv, run)]
        lines.append(f"CUDA driver {ver[0]}, runtime {ver[1]}")
        count = int(rt.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 - no driver, no device
        lines.append(f"CUDA: not usable ({type(exc).__name__}: {exc})")
        count = 0
    for i in range(count):
        try:
            props = rt.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            mem = props["totalGlobalMem"] / 2**30
            cc = f"{props['major']}.{props['minor']}"
            lines.append(f"  device {i}: {name}, {mem:.1f} GiB, compute capability {cc}")
        except Exception as exc:  # noqa: BLE001
            lines.append(f"  device {i}: cannot be queried ({exc})")
    if ok:
        lines.append(f"GPU mining: yes, on {count} device(s) (--devices picks some)")
    else:
        lines.append(f"GPU mining: no ({why}); the miner uses the CPU (numpy) engine")
    return lines, ok
