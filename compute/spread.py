"""Run a nogil kernel over a range split between the cores this process may use.

The transposes and hashes on a buyer's and a miner's path (16 MB of B, 8 MB of C)
are Numba kernels that release the GIL and take a [lo, hi) range; on two cores two
threads halve them. A process pinned to one core (a miner standing in for one GPU)
runs them in the caller's thread, as before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

MIN_SPLIT = 64  # units (rows, 8-byte column groups) below which one thread does it all

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def cores() -> int:
    """The cores this process may use (its affinity: one for a pinned miner)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def spread(fn: Callable[[int, int], object], total: int) -> None:
    """fn(lo, hi) over [0, total), in as many pieces as there are usable cores."""
    global _pool
    parts = min(cores(), max(1, total // MIN_SPLIT))
    if parts <= 1:
        fn(0, total)
        return
    with _lock:
        if _pool is None or _pool._max_workers < parts:  # noqa: SLF001 - grow once
            _pool = ThreadPoolExecutor(parts, thread_name_prefix="spread")
        pool = _pool
    bounds = [total * i // parts for i in range(parts + 1)]
    futures = [pool.submit(fn, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]
    for future in futures:
        future.result()
