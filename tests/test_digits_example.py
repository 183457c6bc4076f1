"""The README's digits example (docs/examples/digits_mlp.py), reduced, against a real
devnet node: the mined int8 inference predicts exactly what plain NumPy int inference
does, and its products win blocks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chain.address import address_from_pubkey, encode_address
from chain.keys import devnet_key
from tests.p2putil import write_genesis
from tests.test_market_e2e import ROOT, Proc


def test_digits_example_mines_with_its_inference(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    net = write_genesis(genesis, 0)
    node = Proc(tmp_path / "n0", genesis)  # it does not mine: only the example's products do
    try:
        rpc = node.rpc()
        address = encode_address(net.hrp, address_from_pubkey(devnet_key(3).public_key))
        out = subprocess.run(
            [sys.executable, "docs/examples/digits_mlp.py", "--rpc",
             f"http://127.0.0.1:{node.rpc_port}", "--datadir", str(node.datadir),
             "--genesis-file", str(genesis), "--address", address, "--samples", "200",
             "--epochs", "150", "--rounds", "3"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        lines = dict(
            kv.split("=", 1) for line in out.stdout.splitlines() for kv in line.split() if "=" in kv
        )
        assert lines["identical_predictions"] == "True"
        assert lines["int8_mined_accuracy"] == lines["int8_numpy_accuracy"]
        assert float(lines["int8_mined_accuracy"]) > 0.8
        assert int(lines["blocks_accepted"]) >= 1 and int(lines["node_errors"]) == 0
        assert rpc.call("getblockcount") >= int(lines["blocks_accepted"])
    finally:
        node.stop()
