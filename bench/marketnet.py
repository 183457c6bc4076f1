"""A devnet of real node processes for the market benchmarks: a buyer's node and N
miner nodes (tests/market_node.py), each miner pinned to one core as a stand-in for
one GPU per miner process, all on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.p2putil import P2P_ENV, free_port  # noqa: E402
from wallet.rpc import RpcClient, read_cookie  # noqa: E402


def write_genesis(path: Path, spacing_s: int, block_work: int, market: dict[str, int]) -> Path:
    """A devnet genesis: blocks of about ``block_work`` multiply-adds every ``spacing_s``."""
    data = json.loads(resources.files("genesis").joinpath("devnet.json").read_text())
    data["difficulty"]["target_spacing_s"] = spacing_s
    data["difficulty"]["genesis_target"] = hex(2**256 // block_work)
    data["difficulty"]["max_target"] = hex(2**256 // 2**12)
    data["filler"] = {"m": 128, "k": 256, "n": 128}
    data["subsidy"]["coinbase_maturity"] = 3
    data["market"] = {**data["market"], **market}
    data["genesis"]["timestamp"] = int(time.time()) - 5
    path.write_text(json.dumps(data))
    return path


class Node:
    def __init__(self, root: Path, name: str, genesis: Path, *extra: str, core: int | None) -> None:
        self.datadir = root / name
        self.p2p, self.rpc_port, self.blob = free_port(), free_port(), free_port()
        self.log_path = root / f"{name}.log"
        cmd = [sys.executable, "-m", "tests.market_node", "--blob-port", str(self.blob),
               "--network", "devnet", "--datadir", str(self.datadir), "--genesis-file",
               str(genesis), "--p2p-bind", "127.0.0.1", "--p2p-port", str(self.p2p),
               "--rpc-port", str(self.rpc_port), *extra]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **P2P_ENV}
        pin: Callable[[], None] | None = None
        if core is not None:
            cores = sorted(os.sched_getaffinity(0))
            chosen = {cores[core % len(cores)]}
            pin = lambda: os.sched_setaffinity(0, chosen)  # noqa: E731
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=pin
        )
        self._rpc: RpcClient | None = None

    @property
    def blob_url(self) -> str:
        return f"http://127.0.0.1:{self.blob}"

    def rpc(self) -> RpcClient:
        if self._rpc is not None:
            return self._rpc
        deadline = time.monotonic() + 60
        while True:
            try:
                user, password = read_cookie(self.datadir, "devnet")
                client = RpcClient(f"http://127.0.0.1:{self.rpc_port}", user, password)
                client.call("getblockcount")
                self._rpc = client
                return client
            except Exception:  # noqa: BLE001 - still starting
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(self.log_path.read_text()[-3000:]) from None
                time.sleep(0.2)

    def call(self, method: str, *params: Any) -> Any:
        return self.rpc().call(method, *params)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def start_net(root: Path, genesis: Path, miners: int) -> tuple[Node, list[Node]]:
    """The buyer's node (no mining) and ``miners`` market miners (devnet keys 1..),
    each connected to the buyer's node, pinned to a core of its own where there is one."""
    buyer = Node(root, "buyer", genesis, core=None)
    nodes = [
        Node(root, f"miner{i}", genesis, "--market-key", str(i), "--connect",
             f"127.0.0.1:{buyer.p2p}", core=i - 1)
        for i in range(1, miners + 1)
    ]  # fmt: skip
    for node in [buyer, *nodes]:
        node.rpc()
    return buyer, nodes


def wait(what: str, fn: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
        except Exception:  # noqa: BLE001 - not there yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.25)


def buyer_client(buyer: Node) -> Any:
    from chain.keys import devnet_key
    from chain.network import load_network
    from wallet.jobs import JobClient

    genesis = Path(buyer.datadir).parent / "genesis.json"
    net = load_network("devnet", genesis)
    auth = read_cookie(buyer.datadir, "devnet")
    return JobClient(devnet_key(0), net, buyer.rpc(), buyer.blob_url, blob_auth=auth)
