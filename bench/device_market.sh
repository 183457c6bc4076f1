#!/usr/bin/env bash
# bench/bench_market.py on the device machine's 16 cores: the figure of the market
# issue that a 2-core machine cannot give (a product split over three miners, each
# pinned to a core of its own, against one miner), plus the CPU engine's path there.
#
# The device image has Python 3.12 with NumPy and Numba but not the node's other
# dependencies, and reaches no package index. So, first, on a machine that reaches
# PyPI (this one), from the repo root:
#
#     bash bench/device_market.sh fetch
#
# downloads Python 3.12 wheels of those dependencies, at the versions of this
# checkout's .venv, into .whl/ (ignored by git; about 12 MB). Then, with the device
# tool, one call:
#
#     run(command="bash bench/device_market.sh", carry=[".whl"], timeout_s=560)
#
# It installs the wheels into .whl/site (PYTHONPATH, nothing installed system-wide),
# checks the imports and prints the engine's path, then runs bench_market's
# one_miner and three_miners scenarios (--runs 3: about 4 minutes on 2 cores) with
# its output also in $OUT/bench_market_device.log. Dry-run here with
# `PY=/path/to/python3.12 bash bench/device_market.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The runtime dependencies the device image lacks (pyproject.toml's, less NumPy and
# Numba, which it has), and pytest: the benchmark's node processes come from
# tests/market_node.py, whose helpers import it.
DEPS=(plyvel pynacl pycryptodome pydantic aiohttp prometheus-client pytest)

if [ "${1:-}" = fetch ]; then
    pins=()
    for name in "${DEPS[@]}"; do
        pin=$(.venv/bin/python -m pip freeze 2>/dev/null | grep -i -E "^${name//-/[-_.]}==" || true)
        pins+=("${pin:-$name}")
    done
    # pip fetches wheels for another Python version with --python-version
    .venv/bin/python -m pip download -q --only-binary=:all: --implementation cp \
        --python-version 3.12 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        -d .whl "${pins[@]}"
    echo "wheels for: ${pins[*]}"
    ls .whl
    exit 0
fi

PY="${PY:-python3}"
OUT_DIR="${OUT:-/tmp}"
mkdir -p "$OUT_DIR"
if [ ! -d .whl ]; then
    echo "no .whl/: run 'bash bench/device_market.sh fetch' first and carry .whl" >&2
    exit 2
fi
"$PY" -m pip install -q --no-index --find-links .whl --target .whl/site --upgrade "${DEPS[@]}"
export PYTHONPATH="$PWD/.whl/site:$PWD"
export PYTHONUNBUFFERED=1
"$PY" - <<'EOF'
import os, sys
import numpy, numba, plyvel, nacl, Crypto, pydantic, aiohttp, prometheus_client  # noqa
from compute.numpy_engine import NumpyEngine
print("python", sys.version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__,
      "cores", len(os.sched_getaffinity(0)), "engine_path", NumpyEngine().path)
EOF
timeout -k 5 "${BENCH_TIMEOUT_S:-480}" "$PY" bench/bench_market.py \
    --only one_miner --only three_miners --runs "${RUNS:-3}" 2>&1 \
    | tee "$OUT_DIR/bench_market_device.log"
