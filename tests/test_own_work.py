"""Own products mine blocks through the Python API (node/own_work.py), real processes:
C is the exact product (padded and cut shapes too), a won block is accepted by the
node and reaches a second one, and a node that is down costs the lottery, not C."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chain.address import address_from_pubkey, encode_address
from chain.keys import devnet_key
from chain.network import load_network
from compute.numpy_engine import NumpyEngine
from node.own_work import OwnWork, OwnWorkError
from tests.p2putil import free_port, write_genesis
from tests.test_market_e2e import Proc, wait_for
from wallet.rpc import RpcClient, read_cookie


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.astype(np.int64) @ b.astype(np.int64)


def test_own_products_mine_blocks_a_second_node_accepts(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    net = write_genesis(genesis, 0)
    n0 = Proc(tmp_path / "n0", genesis)  # neither node mines: only our products do
    n1 = Proc(tmp_path / "n1", genesis, "--connect", f"127.0.0.1:{n0.p2p}")
    try:
        rpc0, rpc1 = n0.rpc(), n1.rpc()
        user, password = read_cookie(n0.datadir, "devnet")
        address = encode_address(net.hrp, address_from_pubkey(devnet_key(1).public_key))
        work = OwnWork(rpc0, net, address, engine=NumpyEngine(threads=1))
        rng = np.random.default_rng(4)
        for shape in ((64, 128, 64), (50, 100, 30), (16, 5000, 8)):  # as is, padded, k cut
            m, k, n = shape
            a = rng.integers(-64, 64, (m, k), dtype=np.int8)
            b = rng.integers(-64, 64, (k, n), dtype=np.int8)
            c = work.matmul(a, b)
            assert c.shape == (m, n) and np.array_equal(c, _exact(a, b)), shape
        for _ in range(20):  # a few more products until one wins (easy devnet)
            if work.stats.blocks_accepted:
                break
            a = rng.integers(-64, 64, (64, 128), dtype=np.int8)
            b = rng.integers(-64, 64, (128, 64), dtype=np.int8)
            assert np.array_equal(work.matmul(a, b), _exact(a, b))
        assert work.stats.blocks_accepted >= 1 and work.stats.products >= 4
        height = rpc0.call("getblockcount")
        assert height >= 1
        wait_for("the second node", lambda: rpc1.call("getblockcount") >= height,
                 procs=[n0, n1])  # fmt: skip
        block = rpc1.call("getblock", rpc1.call("getblockhash", height), 1)
        assert block["miner"] == address
        with pytest.raises(OwnWorkError, match="outside"):
            work.matmul(np.full((8, 64), 100, np.int16), np.ones((64, 8), np.int8))
        with pytest.raises(OwnWorkError, match="inner dimensions"):
            work.matmul(np.ones((8, 64), np.int8), np.ones((32, 8), np.int8))
    finally:
        n1.stop()
        n0.stop()
    # the node is gone: C all the same, the lottery lost and counted
    dead = RpcClient(f"http://127.0.0.1:{free_port()}", user, password, timeout=2)
    down = OwnWork(dead, load_network("devnet", genesis), address, engine=NumpyEngine(threads=1))
    a = np.arange(64 * 128, dtype=np.int64).reshape(64, 128) % 127 - 64
    b = np.ones((128, 64), np.int8)
    assert np.array_equal(down.matmul(a, b), _exact(a, b))
    assert down.stats.node_errors == 1 and down.stats.blocks_found == 0


class _DeviceArray:
    """Stands in for a CuPy array: the CUDA array interface and ``.get()``."""

    def __init__(self, host: np.ndarray) -> None:
        self._host = host
        self.__cuda_array_interface__ = {"shape": host.shape, "typestr": "|i1", "version": 3}

    def get(self) -> np.ndarray:
        return self._host

    def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed")


def test_device_arrays_are_copied_to_the_host_not_refused() -> None:
    from node.own_work import _host

    a = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    assert np.array_equal(_host(_DeviceArray(a)), a)
    with pytest.raises(TypeError):
        np.asarray(_DeviceArray(a))  # what OwnWork.matmul used to hit
