"""A devnet of real node processes for the market benchmarks: a buyer's node and N
miner nodes (tests/market_node.py), each miner pinned to one core as a stand-in for
one GPU per miner process, or one standalone `pouw miner` beside a node of its own;
all on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_market_e2e import Proc  # noqa: E402
from wallet.rpc import RpcClient, read_cookie  # noqa: E402

# The totals of a `pouw miner` status line (node/remote_miner.RemoteMiner.line), read
# from the end of its log: status lines come every second or more often there.
STATUS_LINE = re.compile(
    r"\| (\d+) products, (\d+) multiply-adds \| paid jobs: (\d+) products, (\d+) "
    r"multiply-adds, (\d+) committed, (\d+) recomputed"
)
STATUS_TAIL_BYTES = 1 << 20


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


class Node(Proc):
    """A node process (tests/market_node.py) with the calls the benchmarks make."""

    def __init__(self, root: Path, name: str, genesis: Path, *extra: str, core: int | None) -> None:
        super().__init__(root / name, genesis, *extra, core=core)
        self._rpc: RpcClient | None = None

    @property
    def blob_url(self) -> str:
        return f"http://127.0.0.1:{self.blob}"

    def client(self) -> RpcClient:
        if self._rpc is None:
            self._rpc = self.rpc()
        return self._rpc

    def call(self, method: str, *params: Any) -> Any:
        return self.client().call(method, *params)


def start_net(root: Path, genesis: Path, miners: int, pin: bool = True) -> tuple[Node, list[Node]]:
    """The buyer's node (no mining) and ``miners`` market miners (devnet keys 1..),
    each connected to the buyer's node and, with ``pin``, pinned to a core of its own
    where there is one (else free to use every core)."""
    buyer = Node(root, "buyer", genesis, core=None)
    nodes = [
        Node(root, f"miner{i}", genesis, "--market-key", str(i), "--connect",
             f"127.0.0.1:{buyer.p2p}", core=i - 1 if pin else None)
        for i in range(1, miners + 1)
    ]  # fmt: skip
    for node in [buyer, *nodes]:
        node.client()
    return buyer, nodes


class StandaloneMiner:
    """A `pouw miner` process (one NumPy worker, the market on, its keystore holding
    devnet key ``key_no``) pinned to ``core``, on a node of its own (no miner there)
    connected to the buyer's node: the path of a GPU miner, with one core as the
    stand-in GPU."""

    def __init__(
        self, root: Path, genesis: Path, buyer: Node, core: int, key_no: int = 1, *extra: str
    ) -> None:
        from chain.address import address_from_pubkey, encode_address
        from chain.keys import devnet_key
        from chain.network import load_network
        from wallet.wallet import Wallet

        name = "pool" if key_no == 1 else f"pool{key_no}"
        self.node = Node(root, name, genesis, "--connect", f"127.0.0.1:{buyer.p2p}", core=None)
        self.node.client()  # its RPC (and cookie) is up
        net = load_network("devnet", genesis)
        key = devnet_key(key_no)
        address = encode_address(net.hrp, address_from_pubkey(key.public_key))
        keystore, password = root / f"{name}.json", root / f"{name}.pw"
        Wallet.create(keystore, "pw", net, seed=key.seed, scrypt_n=2**10)
        password.write_text("pw\n")
        self.log_path = root / f"{name}-miner.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        cores = sorted(os.sched_getaffinity(0))
        chosen = {cores[core % len(cores)]}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.miner_cli", "miner", "--rpc",
             f"http://127.0.0.1:{self.node.rpc_port}", "--address", address,
             "--datadir", str(self.node.datadir), "--genesis-file", str(genesis),
             "--backend", "numpy", "--threads", "1", "--market-wallet", str(keystore),
             "--password-file", str(password), "--blob-url", self.node.blob_url, *extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=lambda: os.sched_setaffinity(0, chosen),  # its workers inherit it
        )  # fmt: skip

    def status(self) -> dict[str, int]:
        """Totals from the miner's latest status line: ``products`` and
        ``multiply_adds`` (all its products) and ``job_products``, ``job_multiply_adds``,
        ``commits``, ``recomputed`` (paid jobs); zeros before the first line."""
        with open(self.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - STATUS_TAIL_BYTES))
            tail = f.read().decode(errors="replace")
        found = STATUS_LINE.findall(tail)
        values = [int(v) for v in found[-1]] if found else [0] * 6
        names = ("products", "multiply_adds", "job_products", "job_multiply_adds", "commits",
                 "recomputed")  # fmt: skip
        return dict(zip(names, values, strict=True))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.node.stop()


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
    return JobClient(devnet_key(0), net, buyer.client(), buyer.blob_url, blob_auth=auth)
