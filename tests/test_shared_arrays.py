"""node/shared_arrays.py: a paid job's operands and C handed to a worker process
through a memory-backed file."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.shared_arrays import PREFIX, MappedOrders, OrderFile, SharedRef, sweep


def _worker_multiplies(orders: Any, done: Any) -> None:
    maps = MappedOrders()
    while (ref := orders.get()) is not None:
        arrays = maps.arrays(ref)
        a, b = arrays["a"], arrays["b"]
        arrays["c"][...] = a.astype(np.int32) @ b.astype(np.int32)
        done.put(ref.path)


def test_a_worker_process_reads_the_operands_and_writes_c_in_place(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    shared = OrderFile([tmp_path])
    ctx = mp.get_context("spawn")  # as the miner starts its workers
    orders, done = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_worker_multiplies, args=(orders, done))
    proc.start()
    paths = []
    try:
        for m, k, n in ((48, 96, 40), (32, 64, 40), (96, 128, 80)):  # the last one is larger
            a = rng.integers(-64, 64, (m, k), dtype=np.int8)
            b = rng.integers(-64, 64, (k, n), dtype=np.int8)
            orders.put(shared.put({"a": a, "b": b}, {"c": ((m, n), "<i4")}))
            paths.append(done.get(timeout=60))
            assert np.array_equal(shared.array("c"), a.astype(np.int32) @ b.astype(np.int32))
    finally:
        orders.put(None)
        proc.join(30)
    assert proc.exitcode == 0
    assert paths[0] == paths[1] != paths[2]  # reused, then made anew for more room
    assert [p.name for p in tmp_path.iterdir()] == [Path(paths[2]).name]
    assert Path(paths[2]).name.startswith(f"{PREFIX}{os.getpid()}-")
    assert oct(Path(paths[2]).stat().st_mode & 0o777) == "0o600"
    shared.close()
    assert not list(tmp_path.iterdir())


def test_the_next_directory_is_tried_and_none_with_room_is_a_clear_error(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.int8).reshape(3, 4)
    shared = OrderFile([tmp_path / "missing", tmp_path])
    ref = shared.put({"a": a})
    assert Path(ref.path).parent == tmp_path
    assert np.array_equal(MappedOrders().arrays(ref)["a"], a)
    shared.close()
    with pytest.raises(OSError, match="free some space there"):
        OrderFile([tmp_path / "missing", tmp_path / "gone"]).put({"a": a})
    assert not list(tmp_path.glob(PREFIX + "*"))


def test_a_file_gone_or_of_another_size_is_an_oserror(tmp_path: Path) -> None:
    shared = OrderFile([tmp_path])
    ref = shared.put({"a": np.ones((4, 4), np.int8)})
    with pytest.raises(OSError, match="is not"):
        MappedOrders().arrays(SharedRef(ref.path, ref.size + 64, ref.slots))
    shared.close()
    with pytest.raises(OSError):
        MappedOrders().arrays(ref)


def test_sweep_removes_only_the_files_of_miners_that_no_longer_run(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f"{PREFIX}{int(gone.stdout)}-abc"
    ours = tmp_path / f"{PREFIX}{os.getpid()}-abc"
    alive = tmp_path / f"{PREFIX}1-abc"  # init runs as long as we do
    odd = tmp_path / f"{PREFIX}notapid"
    for path in (dead, ours, alive, odd):
        path.write_bytes(b"x")
    assert sweep([tmp_path, tmp_path / "missing"]) == 1
    assert not dead.exists() and ours.exists() and alive.exists() and odd.exists()
