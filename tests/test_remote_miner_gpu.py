"""``pouw miner --backend cupy`` against a real node (needs a CUDA GPU; pytest -m gpu)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from compute.select import gpu_usable
from tests.test_remote_miner import (
    MINER_ADDRESS,
    easy_genesis,
    needs_rpc,
    run_cli,
    running_node,
)

pytestmark = [pytest.mark.gpu, needs_rpc]


@pytest.fixture(autouse=True)
def _need_gpu() -> None:
    ok, why = gpu_usable()
    if not ok:
        pytest.skip(f"no usable GPU: {why}")


def test_cupy_worker_mines_10_blocks_through_rpc(tmp_path: Path) -> None:
    genesis = easy_genesis(tmp_path / "genesis.json")
    with running_node(tmp_path / "node", genesis, "--nop2p") as node:
        t0 = time.monotonic()
        res = run_cli(
            "miner", "--rpc", node.url, "--address", MINER_ADDRESS, "--datadir",
            str(node.datadir), "--genesis-file", str(genesis), "--backend", "cupy",
            "--devices", "0", "--max-blocks", "10", timeout=300,
        )  # fmt: skip
        elapsed = time.monotonic() - t0
        assert res.returncode == 0, res.stderr
        assert "worker 0 ready: cupy engine on device 0" in res.stderr, res.stderr
        assert res.stderr.count("block accepted") == 10, res.stderr
        assert node.height() == 10
        print(f"cupy: 10 blocks through RPC in {elapsed:.1f} s\n{res.stderr[-600:]}")
