"""The standalone miner's worker processes (node/miner_worker.py) as its main process
(node/remote_miner.py) runs them: one spawned per device, each with a queue of orders
and a file for its paid jobs' operands and C (node/shared_arrays.py), a queue of
messages back from each (not one shared by all: a worker killed while it writes to a
queue dies holding that queue's write lock, and every other worker writing to it would
wait for ever), and the workers that are gone."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import queue
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from node.miner_worker import WorkerSpec, worker_main
from node.shared_arrays import OrderFile, SharedRef


class WorkerPool:
    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self._results: list[Any] = []  # each worker's queue of messages back
        self._next = 0  # the worker whose queue is read first (taken in turn)
        self._jobs: list[Any] = []  # each worker's queue of orders
        self._procs: list[Any] = []
        self.gone: set[int] = set()  # workers that failed or exited
        self._orders: dict[int, OrderFile] = {}  # worker -> its file for paid jobs

    def start(self, specs: Iterable[WorkerSpec]) -> None:
        """Spawn a worker process for each spec. They start with SIGINT ignored (a
        spawned process keeps it so while it imports its engine): Ctrl-C is the miner's."""
        try:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: nothing to hand down
            previous = None
        try:
            for spec in specs:
                jobs, results = self._ctx.Queue(), self._ctx.Queue()
                proc = self._ctx.Process(
                    target=worker_main, args=(spec, jobs, results),
                    name=f"pouw-miner-{spec.index}",
                )  # fmt: skip
                proc.daemon = True
                proc.start()
                self._jobs.append(jobs)
                self._results.append(results)
                self._procs.append(proc)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def __len__(self) -> int:
        """The workers started, gone ones included."""
        return len(self._jobs)

    def left(self) -> int:
        """The workers not gone."""
        return len(self._procs) - len(self.gone)

    def get(self, timeout: float) -> tuple[Any, ...]:
        """The next message of a worker not gone, the workers taken in turn; waits up
        to ``timeout`` seconds for one (queue.Empty if none came)."""
        live = [i for i in range(len(self._results)) if i not in self.gone]
        for waited in (False, True):
            if waited:
                readers = [self._results[i]._reader for i in live]
                if not live or not mp.connection.wait(readers, timeout):
                    break
            for k in range(len(live)):
                index = live[(self._next + k) % len(live)]
                with contextlib.suppress(queue.Empty):
                    message = self._results[index].get_nowait()
                    self._next = (self._next + k + 1) % len(live)
                    return message  # type: ignore[no-any-return]
        raise queue.Empty

    def send(self, index: int, order: tuple[Any, ...]) -> None:
        self._jobs[index].put(order)

    def broadcast(self, order: tuple[Any, ...]) -> None:
        for q in self._jobs:
            q.put(order)

    def put_order(
        self,
        index: int,
        arrays: Mapping[str, npt.NDArray[np.generic]],
        empty: Mapping[str, tuple[tuple[int, ...], str]],
    ) -> SharedRef:
        """Write a paid job's ``arrays`` into worker ``index``'s order file, with ``empty``
        slots for the worker to fill (OrderFile.put; OSError if there is no room)."""
        return self._orders.setdefault(index, OrderFile()).put(arrays, empty)

    def product(self, index: int) -> npt.NDArray[np.int32] | None:
        """A read-only copy of the C worker ``index`` wrote into its order file (None
        without a file): copied before the worker counts as free, since its next order
        overwrites the file."""
        order_file = self._orders.get(index)
        if order_file is None:
            return None
        c = np.array(order_file.array("c"), np.int32)
        c.flags.writeable = False
        return c

    def drop_order(self, index: int) -> None:
        """Remove worker ``index``'s order file (the worker failed, or we stop)."""
        order_file = self._orders.pop(index, None)
        if order_file is not None:
            order_file.close()

    def reap(self, handle: Callable[[tuple[Any, ...]], None]) -> list[tuple[int, str]]:
        """The workers not yet gone that died without a word (killed, out of memory, a
        driver crash: a worker that fails on its own reports an error and exits with 0),
        each with how it ended. What they sent before they died goes to ``handle``
        first (a product, say), which may find some of them gone."""
        dead = [i for i, p in enumerate(self._procs) if i not in self.gone and p.exitcode]
        for index in dead:
            with contextlib.suppress(queue.Empty):
                while True:
                    handle(self._results[index].get_nowait())
        ended = []
        for index in dead:
            if index not in self.gone:
                code = self._procs[index].exitcode
                assert code is not None
                why = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                ended.append((index, why))
        return ended

    def stop(self) -> None:
        """Tell every worker to quit, give them 10 s in all (then kill the ones still
        running), and remove the order files."""
        for q in self._jobs:
            with contextlib.suppress(Exception):
                q.put(None)
        deadline = time.monotonic() + 10
        for p in self._procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(2)
        self._procs.clear()
        for index in list(self._orders):
            self.drop_order(index)
