#!/usr/bin/env bash
# One-shot GPU check of the CuPy engine. Run once on the GPU machine from the repo root:
#
#     bash bench/gpu_check.sh
#
# Steps (each under its own timeout: 30 + 45 + 150 + 100 s, about 5 minutes at most):
#   1. device and CuPy info
#   2. kernel compilation and self-test (mma.sync, WMMA via <mma.h>, WMMA via inline PTX, plain,
#      GPU ticket hashing, GPU commitments and noise lines), printed as a dict
#   3. pytest -m gpu tests/test_cupy_engine.py
#   4. bench/bench_gpu.py (name=value lines)
# Everything is also written to $GPU_CHECK_LOG (default /tmp/pouw_gpu_check.log).
# A failing step does not stop the later ones; the summary at the end lists exit codes.

set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="${GPU_CHECK_LOG:-/tmp/pouw_gpu_check.log}"
: > "$LOG"

declare -a SUMMARY=()

step() {
    local name="$1" limit="$2"
    shift 2
    echo "===== $name (timeout ${limit}s) =====" | tee -a "$LOG"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "===== $name: rc=$rc in $((SECONDS - t0))s =====" | tee -a "$LOG"
    SUMMARY+=("$name rc=$rc $((SECONDS - t0))s")
}

step "device" 30 python3 -c '
import sys, numpy, cupy
print("python", sys.version.split()[0], "numpy", numpy.__version__, "cupy", cupy.__version__)
n = cupy.cuda.runtime.getDeviceCount()
print("devices", n, "driver", cupy.cuda.runtime.driverGetVersion(),
      "runtime", cupy.cuda.runtime.runtimeGetVersion())
for i in range(n):
    p = cupy.cuda.runtime.getDeviceProperties(i)
    name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
    print(i, name, "cc", p["major"], p["minor"], "mem_gib", round(p["totalGlobalMem"] / 2**30, 1),
          "sms", p["multiProcessorCount"])
try:
    from cupy_backends.cuda.libs import nvrtc
    print("nvrtc", nvrtc.getVersion())
except Exception as exc:
    print("nvrtc version unknown:", exc)
try:
    import numba
    print("numba", numba.__version__)
except Exception as exc:
    print("numba missing:", exc)
'

step "selftest" 45 python3 -c '
import time
t0 = time.time()
from compute.cupy_engine import CupyEngine
e = CupyEngine()
res = e.prepare()
for key, value in res.items():
    print(f"{key}: {value}")
print("kernel for r=32:", e.kernel_for(32), " r=128:", e.kernel_for(128))
print(f"prepare seconds: {time.time() - t0:.1f}")
'

step "pytest-gpu" 150 python3 -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_cupy_engine.py

step "bench" 100 python3 bench/bench_gpu.py

echo "===== summary =====" | tee -a "$LOG"
for line in "${SUMMARY[@]}"; do
    echo "$line" | tee -a "$LOG"
done
echo "log: $LOG"
