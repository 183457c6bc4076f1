"""The wallet pays the node's ``estimatefee`` unless told a fee, and refuses an estimate
over its limit. A real in-process node, its RPC over HTTP, real signed transactions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chain.keys import devnet_key
from tests.chainutil import address_of, transfer
from tests.test_rpc_methods import addr, mine_and_submit
from tests.test_rpc_util import Harness, run_node
from wallet.keystore import WalletError
from wallet.rpc import RpcClient
from wallet.wallet import MAX_ESTIMATED_FEE, Wallet


def test_wallet_send_pays_the_estimated_fee(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        net = h.node.network
        rpc = RpcClient.from_datadir(tmp_path, "devnet", port=h.rpc.port)
        w = Wallet(devnet_key(1), net)
        to = addr(h, 7)

        def send(**kw: int) -> int:
            txid = w.send(rpc, to, 1000, **kw)
            return int(rpc.call("gettransaction", txid)["fee"])

        # An empty chain: the estimate is the pool's entry minimum.
        floor = (await h.result("estimatefee"))["fee"]
        assert floor == (await h.result("getmempoolinfo"))["min_fee"]
        assert await asyncio.to_thread(send) == floor
        # Blocks of well-paying txs raise the estimate, and the wallet follows it.
        for nonce in range(4):
            tx = transfer(net, 0, nonce, address_of(8), 10, fee=50_000 + nonce)
            assert h.node.submit_transaction(tx).ok
        await mine_and_submit(h)
        estimate = (await h.result("estimatefee", 1))["fee"]
        assert estimate > 50_000
        assert await asyncio.to_thread(send, blocks=1) == estimate
        assert await asyncio.to_thread(send, fee=777) == 777  # an explicit fee wins
        # An estimate over the wallet's limit is refused before anything is signed.
        for nonce in range(4, 8):
            tx = transfer(net, 0, nonce, address_of(8), 10, fee=MAX_ESTIMATED_FEE + 1)
            assert h.node.submit_transaction(tx).ok
        await mine_and_submit(h)
        pooled = await h.result("getrawmempool")
        with pytest.raises(WalletError, match="over the wallet's limit"):
            await asyncio.to_thread(w.send, rpc, to, 1000, None, None, 1)
        assert await h.result("getrawmempool") == pooled

    run_node(tmp_path, body)
