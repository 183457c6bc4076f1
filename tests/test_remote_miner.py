"""The standalone miner (``pouw miner``) against real node processes on 127.0.0.1.

The node runs an easy private devnet from ``--genesis-file`` (tests/chainutil.easy_devnet's
parameters) with no miner inside; ``pouw miner`` mines through getblocktemplate /
submitblock. Helpers here (``NodeProc``, ``cli``) are shared with tests/test_wallet.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chain.address import address_from_pubkey, encode_address
from chain.keys import devnet_key
from chain.network import Network, load_network
from chain.tx import transactions_root
from compute.numpy_engine import NumpyEngine
from consensus.pouw import filler_matrices
from node.miner_worker import filler_seed
from node.remote_template import TemplateError, template_from_json
from tests.chainutil import EASY_WORK, transfer
from tests.p2putil import free_port
from wallet.rpc import RpcClient
from wallet.rpc_calls import get_block_template, submit_block

HAVE_RPC = find_spec("node.rpc.service") is not None
needs_rpc = pytest.mark.skipif(not HAVE_RPC, reason="node/rpc (the JSON-RPC server) is absent")
ROOT = Path(__file__).resolve().parent.parent
MINER_ADDRESS = encode_address("dpw", address_from_pubkey(devnet_key(4).public_key))


def easy_genesis(path: Path) -> Path:
    """tests/chainutil.easy_devnet's parameters as a genesis file."""
    data = json.loads(resources.files("genesis").joinpath("devnet.json").read_text())
    data["difficulty"]["max_target"] = hex(2**256 // 2**12)
    data["difficulty"]["genesis_target"] = hex(2**256 // EASY_WORK)
    data["filler"] = {"m": 64, "k": 128, "n": 64}
    data["subsidy"]["coinbase_maturity"] = 3
    path.write_text(json.dumps(data))
    return path


def _wired(command: str) -> bool:
    """True once node/cli.py registers ``command`` (else run its module directly)."""
    return f"add_{command}_parser" in (ROOT / "node" / "cli.py").read_text()


def cli(*args: str) -> list[str]:
    """``pouw ARGS`` as a command line: through node.cli once wired, else the module."""
    module = "node.cli"
    if args[0] == "wallet" and not _wired("wallet"):
        module = "wallet.cli"
    elif args[0] == "miner" and not _wired("miner"):
        module = "node.miner_cli"
    return [sys.executable, "-m", module, *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    return subprocess.run(
        cli(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


class NodeProc:
    """A ``pouw node`` process with RPC on a free port and no miner inside."""

    def __init__(
        self, datadir: Path, genesis: Path, *extra: str, rpc_port: int | None = None
    ) -> None:
        self.datadir = datadir
        self.genesis = genesis
        self.rpc_port = rpc_port or free_port()
        self.blob_port = free_port()
        self.p2p_port = free_port()
        self.url = f"http://127.0.0.1:{self.rpc_port}/"
        self.log = datadir.with_suffix(".log")
        datadir.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            cli("node", "--network", "devnet", "--datadir", str(datadir),
                "--genesis-file", str(genesis), "--rpc-port", str(self.rpc_port),
                "--blob-port", str(self.blob_port),
                "--p2p-port", str(self.p2p_port), "--p2p-bind", "127.0.0.1", *extra),
            stdout=self._log_file, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        cookie = datadir / "devnet" / ".cookie"
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited: {self.log.read_text()}")
            if cookie.exists():
                try:
                    self.rpc = RpcClient.from_options(self.url, "devnet", datadir)
                    self.rpc.call("getblockcount")
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node RPC never came up: {self.log.read_text()}")
            time.sleep(0.1)

    def height(self) -> int:
        return int(self.rpc.call("getblockcount"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()


@contextlib.contextmanager
def running_node(datadir: Path, genesis: Path, *extra: str) -> Iterator[NodeProc]:
    node = NodeProc(datadir, genesis, *extra)
    try:
        yield node
    finally:
        node.stop()


def mine_blocks(node: NodeProc, count: int, address: str = MINER_ADDRESS) -> Any:
    """Run ``pouw miner`` until it has ``count`` blocks accepted."""
    return run_cli(
        "miner", "--rpc", node.url, "--address", address, "--datadir", str(node.datadir),
        "--genesis-file", str(node.genesis), "--backend", "numpy", "--threads", "2",
        "--max-blocks", str(count), timeout=180,
    )  # fmt: skip


@pytest.fixture
def genesis(tmp_path: Path) -> Path:
    return easy_genesis(tmp_path / "genesis.json")


@pytest.fixture
def easy(genesis: Path) -> Network:
    return load_network("devnet", genesis)


# --- templates (no node) ------------------------------------------------------------


def _template_json(net: Network, txs: list[Any]) -> dict[str, Any]:
    return {
        "version": 1, "height": 5, "parent": "11" * 32, "timestamp": 1764547300,
        "target": f"{2**240:064x}", "tx_root": transactions_root(txs).hex(),
        "state_root": "22" * 32, "miner": MINER_ADDRESS, "job_id": "00" * 32,
        "m": 64, "k": 128, "n": 64, "longpollid": "abc",
        "transactions": [{"data": tx.to_bytes().hex()} for tx in txs],
    }  # fmt: skip


def test_template_from_json_rebuilds_and_checks(easy: Network) -> None:
    txs = [transfer(easy, 0, 0, address_from_pubkey(devnet_key(1).public_key), 5)]
    data = _template_json(easy, txs)
    rt = template_from_json(data, easy, address_from_pubkey(devnet_key(4).public_key))
    h = rt.header
    assert (h.height, h.target, h.m, h.k, h.n, rt.longpollid) == (5, 2**240, 64, 128, 64, "abc")
    assert rt.template.txs == tuple(txs) and h.h_a == bytes(32) and h.seal == b""
    # the same header from the bitcoind-style spelling of txs
    alt = {**data, "txs": [tx.to_bytes().hex() for tx in txs]}
    del alt["transactions"]
    assert template_from_json(alt, easy).header == h
    with pytest.raises(TemplateError, match="tx_root"):
        template_from_json({**data, "transactions": []}, easy)
    with pytest.raises(TemplateError, match="not our address"):
        template_from_json(data, easy, bytes(20))
    with pytest.raises(TemplateError):
        template_from_json({**data, "parent": "zz"}, easy)
    with pytest.raises(TemplateError):
        template_from_json({k: v for k, v in data.items() if k != "state_root"}, easy)


def test_filler_seeds_differ_per_worker_and_session() -> None:
    seeds = {
        filler_seed(b"p" * 32, b"m" * 20, salt, w, a)
        for salt in (b"s" * 8, b"t" * 8) for w in range(3) for a in range(3)
    }  # fmt: skip
    assert len(seeds) == 18


# --- real processes ---------------------------------------------------------------------


@needs_rpc
def test_remote_miner_mines_10_blocks_through_rpc(tmp_path: Path, genesis: Path) -> None:
    with running_node(tmp_path / "node", genesis, "--nop2p") as node:
        assert node.height() == 0
        started = time.monotonic()
        res = mine_blocks(node, 10)
        elapsed = time.monotonic() - started
        assert res.returncode == 0, res.stderr
        assert res.stderr.count("block accepted") == 10, res.stderr
        assert node.height() == 10
        for h in range(1, 11):
            block = node.rpc.call("getblock", node.rpc.call("getblockhash", h), 1)
            assert block["miner"] == MINER_ADDRESS
        print(f"10 blocks through RPC in {elapsed:.1f} s (process start included)")


@needs_rpc
def test_stale_submission_after_a_tip_change(tmp_path: Path, genesis: Path, easy: Network) -> None:
    """Two wins on one template: the first becomes the tip, the second is a valid side
    block ("inconclusive"), and sending the first again is a "duplicate"."""
    engine = NumpyEngine(threads=2)
    with running_node(tmp_path / "node", genesis, "--nop2p") as node:
        data = get_block_template(node.rpc, MINER_ADDRESS)
        rt = template_from_json(data, easy, address_from_pubkey(devnet_key(4).public_key))
        blocks = []
        for attempt in range(10_000):
            h = rt.header
            a, b = filler_matrices(
                filler_seed(h.parent, h.miner, b"t" * 8, 0, attempt), h.m, h.k, h.n
            )
            out = engine.mine(easy.pouw, a, b, rt.template)
            if out.seals:
                blocks.append(rt.template.block_with_seal(out.work, out.seals[0]))
                if len(blocks) == 2:
                    break
        first, second = blocks
        assert first.hash != second.hash
        # a long-poll on the old template returns at once when the tip moves
        assert submit_block(node.rpc, first.to_bytes()) is None
        t0 = time.monotonic()
        fresh = get_block_template(
            node.rpc, MINER_ADDRESS, longpollid=data["longpollid"], timeout=30
        )
        assert time.monotonic() - t0 < 5 and fresh["parent"] == first.hash.hex()
        assert submit_block(node.rpc, second.to_bytes()) == "inconclusive"
        assert submit_block(node.rpc, first.to_bytes()) == "duplicate"
        assert node.rpc.call("getbestblockhash") == first.hash.hex()
        assert node.height() == 1


class _Results(list):  # type: ignore[type-arg]
    """A worker's result queue, kept in a list."""

    def put(self, item: Any) -> None:
        self.append(item)


class _ReadsB(NumpyEngine):
    """The NumPy engine without its pack-from-B^T path (as a GPU engine reads B)."""

    def packs_b_from_rows(self, params: Any) -> bool:
        return False


def test_a_paid_product_from_bt_and_checked_leaves_mines_as_from_b(easy: Network) -> None:
    """A worker gets B^T as downloaded and the leaves checked on the way in, in a shared
    file: the product it writes there and the seals (hA, hB, tickets) are those of
    mining from B, whether the engine packs from B^T's rows, transposes it in the
    worker, or gets B (a GPU worker)."""
    from chain.header import Header
    from compute.blobs import line_leaves
    from compute.fast_commit import leaf_bytes_to_words
    from node.miner_worker import WorkerSpec, mine_product
    from node.shared_arrays import MappedOrders, OrderFile
    from node.template import BlockTemplate

    rng = np.random.default_rng(5)
    a = rng.integers(-64, 64, (64, 128), dtype=np.int8)
    b = rng.integers(-64, 64, (128, 64), dtype=np.int8)
    bt = np.ascontiguousarray(b.T)
    leaves = tuple(
        leaf_bytes_to_words(b"".join(line_leaves(kind, x))) for kind, x in (("a", a), ("bt", bt))
    )
    data = {**_template_json(easy, []), "target": f"{2**256 - 1:064x}"}  # every ticket wins
    header = template_from_json(data, easy).header.to_bytes()
    spec = WorkerSpec(0, "numpy", None, easy.pouw, b"s" * 8, threads=1)
    outs = []
    cases = (
        (NumpyEngine(threads=1), bt, True, leaves),  # packs B' from B^T's rows
        (_ReadsB(threads=1), bt, True, None),  # B transposed in the worker
        (_ReadsB(threads=1), b, False, None),  # B as the coordinator sends it to a GPU
    )
    shared, maps = OrderFile(), MappedOrders()  # one file, reused from order to order
    for engine, operand, as_bt, given in cases:
        results = _Results()
        ref = shared.put({"a": a, "b": operand}, {"c": ((64, 64), "<i4")})
        order = ("product", 7, header, "job", ref, as_bt, given)
        assert mine_product(spec, engine, order, threading.Event(), results, maps)
        out = {kind: rest for kind, _, *rest in results}
        assert out["product"] == ["job"]
        outs.append({**out, "c": shared.array("c").copy()})
    path = shared.path
    shared.close()
    assert path is not None and not path.exists()
    plain = NumpyEngine(threads=1).mine(
        easy.pouw, a, b, BlockTemplate(Header.from_bytes(header), ()), keep_product_on_stop=True
    )  # from B, hashing the operands itself
    assert plain.seals and np.array_equal(plain.product, a.astype(np.int64) @ b.astype(np.int64))
    found = [plain.work.h_a, plain.work.h_b, plain.seals[0].to_bytes()]
    for out in outs:
        assert np.array_equal(out["c"], plain.product)
        assert out["found"][1:] == found


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--workers", "0"], "--workers must be 1 to 64"),
        (["--workers", "65"], "--workers must be 1 to 64"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--backend", "cupy", "--workers", "2"], "--workers is for the numpy backend"),
        # a price that is no price: nan or inf claimed nothing, silently
        (["--min-bounty-per-mac", "nan"], "give a finite number, 0 or more"),
        (["--min-bounty-per-mac", "-1"], "give a finite number, 0 or more"),
    ],
)
def test_miner_worker_flags_out_of_range_are_usage_errors(flags: list[str], said: str) -> None:
    got = run_cli("miner", "--address", MINER_ADDRESS, "--rpc", "http://127.0.0.1:9",
                  "--rpc-user", "u", "--rpc-password", "p", *flags, timeout=60)  # fmt: skip
    assert got.returncode == 2, got.stderr
    assert said in got.stderr and "Traceback" not in got.stderr


def test_a_bad_cpu_path_is_a_usage_error_of_the_numpy_miner() -> None:
    got = run_cli("miner", "--address", MINER_ADDRESS, "--rpc", "http://127.0.0.1:9",
                  "--rpc-user", "u", "--rpc-password", "p", "--backend", "numpy",
                  env={"POUW_CPU_PATH": "avx9000"}, timeout=60)  # fmt: skip
    assert got.returncode == 2, got.stderr
    assert "POUW_CPU_PATH='avx9000' is not a CPU path: use one of auto" in got.stderr
    assert "Traceback" not in got.stderr


@needs_rpc
def test_a_miner_whose_only_worker_dies_stops_and_says_so(tmp_path: Path, genesis: Path) -> None:
    """A worker killed without a word (SIGKILL, as the OOM killer does): the miner used
    to go on forever with nothing mining. It notices, logs how the worker ended and
    where to look, and exits with status 1."""
    import re
    import signal

    with running_node(tmp_path / "node", genesis, "--nop2p") as node:
        log_path = tmp_path / "miner.log"
        with log_path.open("w") as log:
            miner = subprocess.Popen(
                cli("miner", "--rpc", node.url, "--address", MINER_ADDRESS, "--datadir",
                    str(node.datadir), "--genesis-file", str(node.genesis), "--backend", "numpy",
                    "--threads", "1"),
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            try:
                ready = re.compile(r"worker 0 ready: numpy engine, [\w.-]+ \(pid (\d+)\)")
                deadline = time.monotonic() + 60
                while not (found := ready.search(log_path.read_text())):
                    assert time.monotonic() < deadline and miner.poll() is None, (
                        log_path.read_text()
                    )
                    time.sleep(0.05)
                os.kill(int(found.group(1)), signal.SIGKILL)
                assert miner.wait(30) == 1
            finally:
                if miner.poll() is None:
                    miner.kill()
        text = log_path.read_text()
        assert "worker 0 killed by signal 9; 0 worker(s) left: the miner stops" in text, text
        assert "Traceback" not in text, text


def test_a_market_wallet_names_the_address_or_must_match_it(tmp_path: Path) -> None:
    """Without --address the market wallet's address mines; a given one must be the
    wallet's; a file that is no keystore is a usage error. All before any work."""
    from wallet.wallet import Wallet

    keystore = tmp_path / "miner.json"
    Wallet.create(keystore, "pw", load_network("devnet"), seed=devnet_key(2).seed, scrypt_n=2**10)
    (tmp_path / "pw").write_text("pw\n")
    base = ("miner", "--rpc", "http://127.0.0.1:9", "--rpc-user", "u", "--rpc-password", "p",
            "--password-file", str(tmp_path / "pw"), "--workers", "0")  # fmt: skip
    (tmp_path / "junk.json").write_text("[]")
    (tmp_path / "empty").write_text("\n")
    runs = [
        # an empty password file is said as such (it read as a wrong password before)
        (run_cli(*base[:7], "--password-file", str(tmp_path / "empty"),
                 "--market-wallet", str(keystore), timeout=60), "is empty"),
        # --workers 0 stops it right after the address is settled: the wallet's was taken
        (run_cli(*base, "--market-wallet", str(keystore), timeout=60),
         "--workers must be 1 to 64"),
        (run_cli(*base[:-2], "--address", MINER_ADDRESS, "--market-wallet", str(keystore),
                 "--backend", "numpy", timeout=60), "not --address"),
        (run_cli(*base, "--market-wallet", str(tmp_path / "junk.json"), timeout=60),
         "junk.json is not a keystore"),
        (run_cli(*base[:-2], timeout=60), "needs --address ADDRESS, or --market-wallet"),
        # a blob port the RPC URL cannot give (its port + 3 is past 65535): said, no traceback
        (run_cli("miner", "--rpc", "http://127.0.0.1:65534", "--rpc-user", "u", "--rpc-password",
                 "p", "--password-file", str(tmp_path / "pw"), "--market-wallet", str(keystore),
                 "--backend", "numpy", timeout=60), "its port + 3 is no port: pass --blob-url"),
    ]  # fmt: skip
    for got, said in runs:
        assert got.returncode == 2 and said in got.stderr, got.stderr
        assert "Traceback" not in got.stderr


def test_a_miner_started_before_its_node_waits_for_the_cookie(
    tmp_path: Path, genesis: Path
) -> None:
    """`pouw miner --datadir D` started while D's node has not written its RPC cookie
    yet (a service manager started the miner first) says so once and waits, then mines
    once the node is up. Before, it exited at once (exit 2, "cannot read the RPC
    cookie"). A --datadir that holds no node at all is still said at once."""
    datadir = tmp_path / "node"
    init = run_cli("init", "--network", "devnet", "--datadir", str(datadir),
                   "--genesis-file", str(genesis), timeout=60)  # fmt: skip
    assert init.returncode == 0, init.stderr
    rpc_port = free_port()
    miner = subprocess.Popen(
        cli("miner", "--rpc", f"http://127.0.0.1:{rpc_port}/", "--address", MINER_ADDRESS,
            "--datadir", str(datadir), "--genesis-file", str(genesis), "--backend", "numpy",
            "--threads", "1", "--max-blocks", "2"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert miner.stdout is not None
        ready, _, _ = select.select([miner.stdout], [], [], 60)
        first = miner.stdout.readline() if ready else "(nothing in 60 s)"
        assert "waiting for the node: no RPC cookie" in first, first
        node = NodeProc(datadir, genesis, "--nop2p", rpc_port=rpc_port)  # the port it asks
        try:
            out, _ = miner.communicate(timeout=120)
            assert miner.returncode == 0, out
            assert out.count("block accepted") == 2 and "Traceback" not in out, out
        finally:
            node.stop()
    finally:
        if miner.poll() is None:
            miner.kill()
    # a datadir that holds no node (nothing, or a wallet's folder alone) is said at once
    (tmp_path / "wallet-only" / "devnet" / "wallets").mkdir(parents=True)
    for where in ("none", "wallet-only"):
        got = run_cli("miner", "--address", MINER_ADDRESS, "--datadir", str(tmp_path / where),
                      "--backend", "numpy", timeout=60)  # fmt: skip
        assert got.returncode == 2 and "cannot read the RPC cookie" in got.stderr, got.stderr


def test_a_miner_whose_credentials_the_node_refuses_stops_and_says_so(
    tmp_path: Path, genesis: Path
) -> None:
    """Credentials the node refuses (HTTP 401, three times in a row: a cookie read
    again during a restart gets its chances) stop the miner with the node's words,
    instead of a retry every 30 s for ever."""
    with running_node(tmp_path / "node", genesis, "--nop2p") as node:
        got = run_cli("miner", "--rpc", node.url, "--address", MINER_ADDRESS,
                      "--rpc-user", "nobody", "--rpc-password", "wrong",
                      "--backend", "numpy", "--threads", "1", timeout=90)  # fmt: skip
        # ... and so does a URL that is no node's RPC (its blob port: HTTP 404 or 405)
        other = run_cli("miner", "--rpc", f"http://127.0.0.1:{node.blob_port}",
                        "--address", MINER_ADDRESS, "--rpc-user", "u", "--rpc-password", "p",
                        "--backend", "numpy", "--threads", "1", timeout=90)  # fmt: skip
    assert got.returncode != 0, got.stderr
    assert "refused the credentials (HTTP 401)" in got.stderr, got.stderr
    assert "Traceback" not in got.stderr
    assert other.returncode != 0 and "is it the node's RPC port" in other.stderr, other.stderr
