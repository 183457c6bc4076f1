"""Real `pouw` node processes on a real datadir: mining, restart, and kill -9 crash safety."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chain.chainstate import ChainState
from chain.network import load_network
from chain.state_tree import StateTree
from chain.storage import open_chain
from tests.p2putil import free_port

DEVNET = load_network("devnet")
MINED = re.compile(r"mined block height=(\d+) hash=([0-9a-f]{64})")


def pouw(*args: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", *args]


def start_node(datadir: Path, *extra: str) -> subprocess.Popen[str]:
    """The README's node (devnet, mining, P2P and RPC on), on ports of its own: the
    default ones may be another test's under pytest-xdist, or a developer's node."""
    ports = [str(free_port()) for _ in range(3)]
    return subprocess.Popen(
        pouw("node", "--network", "devnet", "--datadir", str(datadir), "--mine",
             "--p2p-port", ports[0], "--rpc-port", ports[1], "--blob-port", ports[2],
             *extra),  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("avx9000", "POUW_CPU_PATH='avx9000' is not a CPU path: use one of auto, int8-vnni"),
        ("int8-vnni", "unset it or use one of"),  # taken below where this CPU runs it
    ],
)
def test_a_bad_cpu_path_stops_the_mining_node_before_it_starts(
    tmp_path: Path, value: str, said: str
) -> None:
    from compute.int_tile import VNNI512, find_int_tile

    if value == VNNI512.path and find_int_tile(value) is not None:
        pytest.skip("this CPU runs int8-vnni")
    ports = [str(free_port()) for _ in range(3)]
    got = subprocess.run(
        pouw("node", "--network", "devnet", "--datadir", str(tmp_path), "--mine",
             "--p2p-port", ports[0], "--rpc-port", ports[1], "--blob-port", ports[2]),
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "POUW_CPU_PATH": value},
    )  # fmt: skip
    assert got.returncode == 2, got.stderr
    assert said in got.stderr and "Traceback" not in got.stderr, got.stderr
    assert "node up" not in got.stderr


def open_state(datadir: Path) -> tuple[ChainState, object]:
    db = open_chain(datadir / "devnet", network="devnet")
    return ChainState(db, DEVNET), db


def test_devnet_node_mines_12_blocks_and_resumes(tmp_path: Path) -> None:
    init = subprocess.run(
        pouw("init", "--network", "devnet", "--datadir", str(tmp_path)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    proc = start_node(tmp_path, "--max-blocks", "12")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    mined = MINED.findall(out)
    assert len(mined) == 12 and int(mined[-1][0]) == 12, out
    chain, db = open_state(tmp_path)
    try:
        assert chain.tip.height == 12
        assert chain.tip.hash.hex() == mined[-1][1]
        assert chain.tree.root == chain.tip_header.state_root
        assert StateTree.build(chain.db.iter_state()).root == chain.tip_header.state_root
    finally:
        db.close()  # type: ignore[attr-defined]
    # The node started again resumes from the same tip and keeps going.
    proc = start_node(tmp_path, "--max-blocks", "2")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert [int(h) for h, _ in MINED.findall(out)] == [13, 14]


def _until_mined(proc: subprocess.Popen[str], timeout: float) -> str:
    """The node's output up to its first mined block (a slow start, such as a busy
    machine or the engine's first compile, takes longer than a random kill time)."""
    import threading

    timer = threading.Timer(timeout, proc.kill)  # the node never mined: stop waiting
    timer.start()
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if MINED.search(line):
                break
    finally:
        timer.cancel()
    return "".join(lines)


def _crash_loop(datadir: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    reported: dict[int, str] = {}
    for kill in range(kills):
        proc = start_node(datadir)
        # the first run mines before its kill, so that every run has a block to keep
        head = _until_mined(proc, 120) if kill == 0 else ""
        time.sleep(rng.uniform(0.8, 3.0))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        out = head + out
        for height, block_hash in MINED.findall(out):
            reported[int(height)] = block_hash
        chain, db = open_state(datadir)  # raises if the tip and state disagree
        try:
            assert chain.tree.root == chain.tip_header.state_root
            for height, block_hash in reported.items():
                stored = chain.active_hash(height)
                assert stored is not None and stored.hex() == block_hash, (
                    f"block {height} was reported connected and then lost"
                )
        finally:
            db.close()  # type: ignore[attr-defined]
    assert reported, "the node never mined a block between kills"


def test_sigkill_while_mining_never_loses_a_connected_block(tmp_path: Path) -> None:
    _crash_loop(tmp_path, kills=5, seed=int(os.environ.get("POUW_CRASH_SEED", "7")))


@pytest.mark.slow
def test_sigkill_crash_loop_long(tmp_path: Path) -> None:
    """The long run: pytest -m slow tests/test_node_process.py"""
    _crash_loop(tmp_path, kills=200, seed=int(os.environ.get("POUW_CRASH_SEED", "11")))
