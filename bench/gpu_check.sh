#!/usr/bin/env bash
# One-shot GPU check of the CuPy engine. Run once on the GPU machine from the repo root:
#
#     bash bench/gpu_check.sh
#
# Steps (each under its own timeout: 20 + 50 + 90 + 55 s, under 4 minutes; about
# 1.5 minutes when all is well):
#   1. device and CuPy info
#   2. kernel compilation and self-test (mma.sync, its tuning variants, WMMA via <mma.h>,
#      WMMA via inline PTX, plain, GPU ticket hashing, GPU commitments and noise lines),
#      printed as a dict, then the autotune's timings and choice. If this step fails
#      (a variant broke the device, or a verified kernel failed), the later steps run
#      with POUW_MMA_VARIANTS=none (the verified kernels only; +40 s for its rerun).
#   3. pytest -m gpu tests/test_cupy_engine.py (bit identity of every passing mma kernel,
#      the chosen one included, with the reference, the plain kernel and the NumPy engine)
#   4. bench/bench_gpu.py (name=value lines; gpu_variant_* = each variant's TOPS)
# Everything is also written to $GPU_CHECK_LOG (default /tmp/pouw_gpu_check.log).
# A failing step does not stop the later ones; the summary at the end lists exit codes.

set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="${GPU_CHECK_LOG:-/tmp/pouw_gpu_check.log}"
: > "$LOG"

declare -a SUMMARY=()
LAST_RC=0

step() {
    local name="$1" limit="$2"
    shift 2
    echo "===== $name (timeout ${limit}s) =====" | tee -a "$LOG"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "===== $name: rc=$rc in $((SECONDS - t0))s =====" | tee -a "$LOG"
    SUMMARY+=("$name rc=$rc $((SECONDS - t0))s")
    LAST_RC=$rc
}

step "device" 20 python3 -c '
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

SELFTEST='
import sys, time
t0 = time.time()
from compute.cupy_engine import CupyEngine
e = CupyEngine()
res = e.prepare()
for key, value in res.items():
    if not key.startswith("autotune_"):
        print(f"{key}: {value}")
for key, value in res.items():
    if key.startswith("autotune_"):
        print(key)
        for name, sec in sorted(value.items(), key=lambda x: x[1]):
            print(f"    {name:34s} {sec * 1e3:8.3f} ms  {2 * 4096**3 / sec / 1e12:7.1f} TOPS")
print("kernel for r=32:", e.kernel_for(32), " r=128:", e.kernel_for(128))
print(f"prepare seconds: {time.time() - t0:.1f}")
ok = all(res.get(k) for k in ("mma", "plain", "tickets", "commit", "noise"))
try:  # the device still works after every variant ran (no sticky launch error)
    import cupy
    assert int(cupy.arange(1000).sum()) == 499500
    cupy.cuda.Device().synchronize()
except Exception as exc:
    print("device unusable after the self-test:", repr(exc)[:300])
    ok = False
sys.exit(0 if ok else 1)
'
step "selftest" 50 python3 -c "$SELFTEST"
if [ "$LAST_RC" != 0 ] && [ -z "${POUW_MMA_VARIANTS:-}" ]; then
    echo "!!!!! selftest failed: rerunning it and the later steps with POUW_MMA_VARIANTS=none" \
        | tee -a "$LOG"
    export POUW_MMA_VARIANTS=none
    step "selftest-no-variants" 40 python3 -c "$SELFTEST"
fi

step "pytest-gpu" 90 python3 -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_cupy_engine.py

step "bench" 55 python3 bench/bench_gpu.py

echo "===== summary =====" | tee -a "$LOG"
for line in "${SUMMARY[@]}"; do
    echo "$line" | tee -a "$LOG"
done
echo "POUW_MMA_VARIANTS=${POUW_MMA_VARIANTS:-all}" | tee -a "$LOG"
echo "log: $LOG"
