"""The standalone miner's worker process: one per GPU (or CPU engine).

It mines the latest filler job from the coordinator (node/remote_miner.py) until a
newer one or a paid product arrives; a paid product is computed next, and only once.
Workers get only the header (h_a, h_b and seal blank): they never see transactions.
Filler seeds are ``parent | miner | session salt | worker | attempt``, so neither two
workers nor two miner processes for one address ever multiply the same operands.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from chain.header import Header
from compute.engine import engine_path, packs_b_from_rows
from compute.priority import lower_thread_priority
from compute.transpose import transposed
from consensus.ints import u32, u64
from consensus.params import PouwParams
from node.shared_arrays import MappedOrders
from node.template import BlockTemplate


def filler_seed(parent: bytes, miner: bytes, salt: bytes, worker: int, attempt: int) -> bytes:
    return parent + miner + salt + u32(worker) + u64(attempt)


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    backend: str  # "numpy" or "cupy"
    device: int | None  # CUDA device id (cupy)
    params: PouwParams
    salt: bytes
    threads: int | None = None  # numpy threads


def make_engine(spec: WorkerSpec) -> Any:
    if spec.backend == "cupy":
        import cupy  # noqa: PLC0415 - only in GPU workers

        from compute.cupy_engine import CupyEngine  # noqa: PLC0415

        if spec.device is not None:
            cupy.cuda.Device(spec.device).use()
        engine = CupyEngine(device_id=spec.device)
        engine.prepare()
        return engine
    from compute.numpy_engine import NumpyEngine  # noqa: PLC0415

    return NumpyEngine(threads=spec.threads)


def exit_with_parent() -> None:
    """Exit this process as soon as the process that started it is gone. A worker is a
    daemon process, stopped when its miner exits, but not when the miner is killed
    (SIGKILL, the OOM killer, a crash): it would mine filler for nobody, on every
    core it has, until the machine restarts."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="pouw-parent-watch", daemon=True).start()


def worker_main(spec: WorkerSpec, jobs: Any, results: Any) -> None:
    """Entry point of a worker process: mine the latest job until told to quit."""
    # Ctrl-C and a service manager's stop reach the whole process group: the miner
    # stops and tells its workers to quit (else each would print a traceback, or be
    # reported as killed, for what is a clean stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # quietly: not "killed by 15"
    exit_with_parent()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        engine = make_engine(spec)
    except Exception as exc:  # noqa: BLE001 - report and exit: the parent decides
        results.put(("error", spec.index, f"{type(exc).__name__}: {exc}"))
        return
    path = engine_path(engine)  # how it multiplies, where the engine has a choice
    results.put(("ready", spec.index, engine.name, spec.device, os.getpid(), path))
    stop = threading.Event()
    state: dict[str, Any] = {"job": None, "product": None, "quit": False}
    changed = threading.Condition()

    def listen() -> None:
        while True:
            msg = jobs.get()
            with changed:
                if msg is None:
                    state["quit"] = True
                elif msg[0] == "product":  # a paid job: computed next, and only once
                    state["product"] = msg
                else:
                    state["job"] = msg
                stop.set()
                changed.notify_all()
            if msg is None:
                return

    threading.Thread(target=listen, name="pouw-jobs", daemon=True).start()
    # A CPU engine mines filler at a lower priority, in a thread and on engine workers
    # of its own (as the in-node miner does): the coordinator's downloads, RPC and
    # hand-off of a paid job get the cores first, and paid products run at full
    # priority here. A GPU engine's filler thread keeps the process's priority.
    twin = getattr(engine, "low_priority_twin", None)
    filler_engine = twin() if callable(twin) else engine
    nice = lower_thread_priority if callable(twin) else None
    filler_thread = ThreadPoolExecutor(1, thread_name_prefix="pouw-filler", initializer=nice)
    maps = MappedOrders()  # the coordinator's order file, mapped once
    attempt = 0
    while True:
        with changed:
            while state["job"] is None and state["product"] is None and not state["quit"]:
                changed.wait()
            if state["quit"]:
                return
            stop.clear()  # before reading the job: a newer one sets it again
            product, state["product"] = state["product"], None
            if product is None:
                job_no, header_bytes = state["job"]
        if product is not None:
            if not mine_product(spec, engine, product, stop, results, maps):
                return
            continue
        header = Header.from_bytes(header_bytes)
        attempt += 1
        seed = filler_seed(header.parent, header.miner, spec.salt, spec.index, attempt)
        try:
            run = filler_thread.submit(_mine_filler, spec, filler_engine, header, seed, stop)
            out = run.result()
        except Exception as exc:  # noqa: BLE001
            results.put(("error", spec.index, f"{type(exc).__name__}: {exc}"))
            return
        if out.stopped:
            continue
        results.put(("stats", spec.index, header.m * header.k * header.n, out.stats.tickets))
        for seal in out.seals[:1]:
            results.put(("found", spec.index, job_no, out.work.h_a, out.work.h_b, seal.to_bytes()))


def _mine_filler(spec: WorkerSpec, engine: Any, header: Header, seed: bytes, stop: Any) -> Any:
    from consensus.pouw import filler_matrices  # noqa: PLC0415

    a, b = filler_matrices(seed, header.m, header.k, header.n)
    return engine.mine(spec.params, a, b, BlockTemplate(header, ()), stop)


def mine_product(spec: WorkerSpec, engine: Any, order: tuple[Any, ...], stop: Any,
                 results: Any, maps: MappedOrders) -> bool:  # fmt: skip
    """Compute a paid job's product once, the lottery riding on the template that names
    the job. A tip change kills the lottery, not the product. False on an engine error.
    The operands and C's slot are in the worker's order file (node/shared_arrays.py,
    mapped through ``maps``): ``a``, ``b`` and ``c``. B comes as B^T's rows
    (``as_bt``): an engine that packs from them reads the view ``bt.T``, any other gets
    B transposed here; or it comes as B. The operands' leaves were checked on download.
    C is written into its slot, and the coordinator told so with ("product", worker,
    job id)."""
    _, job_no, header_bytes, job_id, ref, as_bt, leaves = order
    header = Header.from_bytes(header_bytes)
    try:
        arrays = maps.arrays(ref)
        a, operand = np.asarray(arrays["a"], np.int8), np.asarray(arrays["b"], np.int8)
        a.flags.writeable = operand.flags.writeable = False
        given: dict[str, Any] = {}
        if not as_bt:
            b = operand
        elif packs_b_from_rows(engine, spec.params):
            b, given = operand.T, {"b_t": operand}
        else:
            b = transposed(operand)
        out = engine.mine(spec.params, a, b, BlockTemplate(header, ()), stop,
                          keep_product_on_stop=True, operand_leaves=leaves, **given)  # fmt: skip
        if out.product is None:
            raise ValueError("the engine returned no product")
        arrays["c"][...] = out.product
    except Exception as exc:  # noqa: BLE001
        results.put(("error", spec.index, f"{type(exc).__name__}: {exc}"))
        return False
    results.put(("stats", spec.index, header.m * header.k * header.n, out.stats.tickets))
    results.put(("product", spec.index, job_id))
    if not out.stopped:
        for seal in out.seals[:1]:
            results.put(("found", spec.index, job_no, out.work.h_a, out.work.h_b, seal.to_bytes()))
    return True
