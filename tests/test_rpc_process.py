"""A real `pouw node` process serving JSON-RPC: cookie auth, calls, stop over RPC."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from node.rpc.auth import cookie_path
from tests.p2putil import free_port
from tests.test_rpc_util import easy_genesis_file
from wallet.rpc import RpcClient, RpcError


def test_node_process_serves_rpc_and_stops(tmp_path: Path) -> None:
    genesis = easy_genesis_file(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "node", "--network", "devnet", "--datadir",
         str(tmp_path), "--genesis-file", str(genesis), "--nop2p", "--rpc-port", str(port),
         "--noblobs"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        cookie = cookie_path(tmp_path / "devnet")
        deadline = time.monotonic() + 60
        while not cookie.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no cookie after 60 s"
            time.sleep(0.05)
        client = RpcClient.from_datadir(tmp_path, "devnet", port=port)
        for _ in range(100):  # the cookie is written just before the socket opens
            try:
                assert client.call("getblockcount") == 0
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.05)
        info = client.call("getblockchaininfo")
        assert info["chain"] == "devnet" and info["blocks"] == 0
        try:
            client.call("getblockhash", 5)
        except RpcError as exc:
            assert exc.code == -8
        assert client.call("stop") == "pouw node stopping"
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert not cookie.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
