"""Session set-up: Numba's cache is filled once, before pytest-xdist starts its workers.

On a fresh checkout (every CI run) the CPU engine's kernels are not compiled yet, and
each process that mines or hashes first compiles them: about 22 s of CPU on a 2-core
machine (40 s before the SHA-256 lanes became LLVM IR). Without this, the first node
processes the tests start, in both workers, compile side by side, and a test that
times RPC answers meanwhile (test_p2p_attacks' p99 bound) measured that instead: it
failed in two of three such runs here (5:10-5:52 either way). Here they compile once,
in the controller, before any worker exists (xdist starts its workers in a
pytest_sessionstart that runs after this one); every later process loads them from
the cache in about a second. The hashing kernels compile in a second process
meanwhile (35 s of compiling took 24 s on 2 cores that way).
"""

from __future__ import annotations

import os
import time

import pytest


def _fill_numba_cache() -> float:
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    from chain.network import load_network
    from compute.engine import FixedTemplate
    from compute.fast_commit import warm_up
    from compute.numpy_engine import NumpyEngine

    started = time.monotonic()
    # The blob store's and the fetcher's hashing kernels (a third of the compile time)
    # are built by a second process meanwhile: both cores compile.
    hashing = subprocess.Popen(
        [sys.executable, "-c", "from compute.fast_commit import warm_up; warm_up()"],
        cwd=Path(__file__).resolve().parent.parent,
    )
    net = load_network("devnet")
    f = net.filler
    rng = np.random.default_rng(0)
    a = rng.integers(-64, 64, (f.m, f.k), dtype=np.int8)
    b_t = rng.integers(-64, 64, (f.n, f.k), dtype=np.int8)
    template = FixedTemplate(bytes(32), 1)
    engine = NumpyEngine()
    engine.mine(net.pouw, a, np.ascontiguousarray(b_t.T), template)  # a node's filler
    engine.mine(net.pouw, a, b_t.T, template, b_t=b_t)  # a market job (B^T downloaded)
    if hashing.wait() != 0:
        warm_up()  # (here, then: a failure says itself)
    return time.monotonic() - started


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker: the controller did it
        return
    took = _fill_numba_cache()
    if took > 5:
        print(f"\nNumba's cache filled in {took:.0f} s (once per checkout)", flush=True)
