"""The CPU engine's threads and timing: a pool of worker threads whose caller polls a
stop event while they run, the split of a range into per-thread pieces, and the clock
of a product's stages (MiningStats.seconds)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from compute.priority import lower_thread_priority

STOP_POLL_S = 0.005  # how often the calling thread looks at ``stop`` while workers run


class Workers:
    """Runs ``fn(worker_index)`` on n threads while the caller polls ``stop``."""

    def __init__(self, count: int, nice: int = 0) -> None:
        self.count = count
        self._pool = ThreadPoolExecutor(
            max_workers=count, thread_name_prefix="pouw-cpu",
            initializer=lower_thread_priority if nice else None, initargs=(nice,) if nice else (),
        )  # fmt: skip

    def map(self, fn: Callable[[int], object]) -> list[object]:
        return list(self._pool.map(fn, range(self.count)))

    def run_polling(
        self, fn: Callable[[int], object], stop: threading.Event | None, flag: np.ndarray
    ) -> list[object]:
        futures = [self._pool.submit(fn, w) for w in range(self.count)]
        if stop is not None:
            while not all(f.done() for f in futures):
                if stop.wait(STOP_POLL_S):
                    flag[0] = 1
                    break
        return [f.result() for f in futures]


def split_range(total: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """[lo, hi) ranges covering 0..total, boundaries multiples of ``align``."""
    units = total // align
    out = []
    for p in range(parts):
        lo = units * p // parts * align
        hi = units * (p + 1) // parts * align if p < parts - 1 else total
        if hi > lo:
            out.append((lo, hi))
    return out


class StageClock:
    """``with clock("name"):`` adds the block's seconds to ``into["name"]``."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into

    def __call__(self, name: str) -> _Timer:
        return _Timer(self.into, name)


class _Timer:
    def __init__(self, into: dict[str, float], name: str) -> None:
        self.into, self.name = into, name

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.into[self.name] = self.into.get(self.name, 0.0) + time.perf_counter() - self.t
