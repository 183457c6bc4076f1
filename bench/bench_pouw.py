"""Overhead of mining (the CPU engine) over the plain exact int8 product, same process.

    .venv/bin/python bench/bench_pouw.py            # m = n = 2048, k = 4096 and 16384
    .venv/bin/python bench/bench_pouw.py --quick    # small shapes, a few seconds

Prints ``name=value`` lines. For each shape:

* ``baseline_s``: the plain exact product on the same backend, int8 A and B in, int32
  C out: A and B converted to float32 (into buffers kept between runs, as the engine
  keeps its own), float32 sgemm (np.matmul, OpenBLAS with its default threads), C
  converted to int32. Exact because |a b| <= 64 * 64 and a k-chunk of 4096 sums to at
  most 2^24; for k > 4096 the product runs in 4096-wide chunks of k accumulated in
  int32 (every chunk is exact, and so is their int32 sum).
* ``pouw_s``: NumpyEngine.mine (commitments, noise, transcript with its fold, tickets,
  noise removal, winners, seals) on the same operands, with a target at which about one
  tile per product wins; ``pouw_overhead_ratio`` = pouw_s / baseline_s. ``engine_path``
  says how the engine multiplies: ``int8-vnni`` (AVX-512 VNNI int8 dot products into
  exact int32, compute/int_tile.py, where the CPU has them), ``int8-avxvnni`` (the
  same on 256 bits), ``int16-avx2`` (AVX2 int16 dot products, where it has AVX2 but no
  VNNI), ``sgemm`` (float32 BLAS per r-step, everywhere else) or ``np.matmul`` (no BLAS
  library found). $POUW_CPU_PATH picks one. The baseline is float32 sgemm either way.
* ``pouw_sgemm_overhead_ratio_median``: the same for the engine forced onto its sgemm
  path (``cpu_path="sgemm"``), timed in the same loop: the transcript's cost over the
  plain product when both use the same arithmetic (printed where an integer path is used).
* the engine's breakdown (MiningStats.seconds, ``breakdown_*``; the ``transcript.*``
  parts are per-worker averages inside the transcript), and ``transcript_nofold_s``:
  the same transcript without the fold (and without tickets), to split product from fold.
* ``seal_verify_ms`` and ``seal_bytes`` at mainnet-like parameters (r = 128, 8 x 8).

Every time is the best of ``--reps`` runs (at least 5 unless ``--quick``; baseline and
engines alternate, so all see the same machine state); ``pouw_overhead_ratio_median``
is the median over the runs of each run's ratio: the figure to quote on a shared
machine. Each timed run starts after
a short pause (``SETTLE_S``): OpenBLAS worker threads keep spinning for ~0.1-0.2 s
after a multi-threaded call (its THREAD_TIMEOUT), and a run started right after the
baseline would share its cores with them (measured here: up to 40% slower).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute import kernels  # noqa: E402
from compute.blas import find_blas  # noqa: E402
from compute.engine import FixedTemplate  # noqa: E402
from compute.numpy_engine import NumpyEngine  # noqa: E402
from consensus.params import PouwParams  # noqa: E402
from consensus.seal import verify_seal  # noqa: E402

SETTLE_S = 0.3
EXACT_K_CHUNK = 4096  # 64 * 64 * 4096 = 2^24: the widest exact float32 chunk of k
PREFIX = bytes(range(32))

MAINNET_LIKE = PouwParams(
    noise_rank=128,
    tile_rows=8,
    tile_cols=8,
    k_min=1024,
    k_max=16384,
    m_max=65536,
    n_max=65536,
    max_multiply_adds=1 << 40,
)


class Baseline:
    """The plain exact int8 product with float32 sgemm; buffers kept between runs."""

    def __init__(self, m: int, k: int, n: int) -> None:
        self.af = np.empty((m, k), np.float32)
        self.bf = np.empty((k, n), np.float32)
        self.cf = np.empty((m, n), np.float32)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        np.copyto(self.af, a, casting="unsafe")
        np.copyto(self.bf, b, casting="unsafe")
        k = a.shape[1]
        if k <= EXACT_K_CHUNK:
            np.matmul(self.af, self.bf, out=self.cf)
            return self.cf.astype(np.int32)
        c = np.zeros(self.cf.shape, np.int32)
        for lo in range(0, k, EXACT_K_CHUNK):
            hi = min(k, lo + EXACT_K_CHUNK)
            np.matmul(self.af[:, lo:hi], self.bf[lo:hi], out=self.cf)
            c += self.cf.astype(np.int32)
        return c


def _timed(fn, *args):
    time.sleep(SETTLE_S)
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def bench_shape(
    engine: NumpyEngine, sgemm_engine: NumpyEngine | None, m: int, k: int, n: int, reps: int,
    tag: str,
) -> None:  # fmt: skip
    rng = np.random.default_rng(m + k + n)
    a = rng.integers(-64, 64, (m, k), dtype=np.int8)
    b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    params = MAINNET_LIKE
    tiles = (m // params.tile_rows) * (n // params.tile_cols)
    template = FixedTemplate(
        PREFIX, (1 << 256) // (tiles * params.tile_rows * params.tile_cols * k)
    )
    baseline = Baseline(m, k, n)

    # warm-up: compiles (or loads) the kernels, allocates the workspaces, checks results
    expect = baseline(a, b)
    out = engine.mine(params, a, b, template)
    assert out.product is not None and np.array_equal(out.product, expect), "engine disagrees"
    if sgemm_engine is not None:
        check = sgemm_engine.mine(params, a, b, template)
        assert check.product is not None and np.array_equal(check.product, expect)
        assert check.seals == out.seals, "the engine's paths disagree"

    base_times, mine_times, breakdowns, sgemm_ratios = [], [], [], []
    for _ in range(reps):
        t_base, _ = _timed(baseline, a, b)
        t_mine, out = _timed(engine.mine, params, a, b, template)
        base_times.append(t_base)
        mine_times.append(t_mine)
        breakdowns.append(out.stats.seconds)
        if sgemm_engine is not None:
            t_sgemm, _ = _timed(sgemm_engine.mine, params, a, b, template)
            sgemm_ratios.append(t_sgemm / t_base)
    engine.transcript_mode = kernels.MODE_STEPS
    nofold = []
    for _ in range(reps):
        time.sleep(SETTLE_S)
        nofold.append(engine.mine(params, a, b, template).stats.seconds["transcript"])
    engine.transcript_mode = kernels.MODE_FOLD

    best = int(np.argmin(mine_times))
    print(f"{tag}_shape={m}x{k}x{n}")
    print(f"{tag}_baseline_s={min(base_times):.4f}")
    print(f"{tag}_pouw_s={min(mine_times):.4f}")
    print(f"{tag}_pouw_overhead_ratio={min(mine_times) / min(base_times):.3f}")
    ratios = [t / s for t, s in zip(mine_times, base_times, strict=True)]
    print(f"{tag}_pouw_overhead_ratio_median={statistics.median(ratios):.3f}")
    print(f"{tag}_pouw_overhead_ratio_runs={','.join(f'{x:.3f}' for x in ratios)}")
    if sgemm_ratios:
        print(f"{tag}_pouw_sgemm_overhead_ratio_median={statistics.median(sgemm_ratios):.3f}")
    for name, value in breakdowns[best].items():
        print(f"{tag}_breakdown_{name.replace('.', '_')}_s={value:.4f}")
    print(f"{tag}_transcript_nofold_s={min(nofold):.4f}")
    print(f"{tag}_seals_found={len(out.seals)}")


def bench_seal(engine: NumpyEngine, k: int, reps: int) -> None:
    """A seal at mainnet-like parameters (a small m, n: verification does not see them)."""
    params = MAINNET_LIKE
    m = n = 64
    rng = np.random.default_rng(k)
    a = rng.integers(-64, 64, (m, k), dtype=np.int8)
    b = rng.integers(-64, 64, (k, n), dtype=np.int8)
    out = engine.mine(params, a, b, FixedTemplate(PREFIX, 1 << 256))  # every tile wins
    seal = out.seals[-1]
    times = []
    for _ in range(max(reps, 5)):
        t, check = _timed(verify_seal, params, out.work, seal)
        assert check.ok
        times.append(t)
    print(f"seal_verify_ms_k{k}={min(times) * 1e3:.2f}")
    print(f"seal_bytes_k{k}={len(seal.to_bytes())}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a few seconds")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (at least 5 in full runs)")
    parser.add_argument("--k", type=int, action="append", help="only these k (repeatable)")
    args = parser.parse_args(argv)
    reps = args.reps or (3 if args.quick else 5)
    if not args.quick:
        reps = max(reps, 5)
    engine = NumpyEngine()
    sgemm_engine = NumpyEngine(cpu_path="sgemm") if engine.int_tile is not None else None
    blas = find_blas()
    print(f"machine={platform.machine()} cores={os.cpu_count()} engine_threads={engine.threads}")
    print(f"blas={'sgemm from ' + os.path.basename(blas.path) if blas else 'np.matmul'}")
    print(f"openblas_coretype_env={os.environ.get('OPENBLAS_CORETYPE', '')}")
    print(f"engine_path={engine.path}")
    print(f"block={engine.block_rows}x{engine.block_cols} reps={reps} (best and median of reps)")
    print(
        "baseline=int8->float32 copies + float32 sgemm (np.matmul) + int32 C; "
        f"k in exact chunks of {EXACT_K_CHUNK} accumulated in int32 when k > {EXACT_K_CHUNK}"
    )
    shapes = [(512, 1024, 512), (512, 2048, 512)] if args.quick else [
        (2048, 4096, 2048),
        (2048, 16384, 2048),
    ]  # fmt: skip
    for m, k, n in shapes:
        if not args.k or k in args.k:
            bench_shape(engine, sgemm_engine, m, k, n, reps, f"k{k}")
    for k in (1024, 2048) if args.quick else (4096, 16384):
        if not args.k or k in args.k:
            bench_seal(engine, k, reps)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
