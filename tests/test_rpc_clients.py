"""Clients nobody here wrote: python's ``bitcoinrpc`` (httpx + orjson) and the plain
``websockets`` library, against the node's real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chainutil import address_of, transfer
from tests.test_rpc_util import Harness, run_node

bitcoinrpc = pytest.importorskip("bitcoinrpc")
websockets = pytest.importorskip("websockets")


def test_bitcoinrpc_positional_nulls_and_named_params(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        user, _, secret = h.node.config.network_dir.joinpath(".cookie").read_text().partition(":")
        async with bitcoinrpc.BitcoinRPC.from_config(h.url, (user, secret)) as rpc:
            assert await rpc.getblockcount() == 0
            best = await rpc.getbestblockhash()
            assert await rpc.getblockhash(0) == best
            block = await rpc.getblock(best, 2)
            assert block["hash"] == best and block["tx"] == []
            tips = await rpc.getchaintips()
            assert tips[0]["status"] == "active"
            tx = transfer(h.node.network, 0, 0, address_of(7), 1000)
            await rpc.acall("sendrawtransaction", [tx.to_bytes().hex()])
            # getrawtransaction(txid, True) sends [txid, true, null]: the null is a default.
            raw = await rpc.getrawtransaction(tx.txid.hex(), True)
            assert raw["txid"] == tx.txid.hex() and raw["in_mempool"] is True
            assert await rpc.getrawtransaction(tx.txid.hex(), False) == tx.to_bytes().hex()
            assert (await rpc.acall("getblock", [best, None]))["hash"] == best
            # Named params through the same client.
            assert await rpc.acall("getblockhash", {"height": 0}) == best  # type: ignore[arg-type]
            header = await rpc.acall("getblockheader", {"blockhash": best, "verbose": None})  # type: ignore[arg-type]
            assert header["hash"] == best
            with pytest.raises(bitcoinrpc.RPCError) as exc:
                await rpc.getblockhash(99)
            assert exc.value.error["code"] == -8
            with pytest.raises(bitcoinrpc.RPCError) as exc:
                await rpc.acall("getblock", [best, "2"])
            assert exc.value.error["code"] == -32602

    run_node(tmp_path, body)


def test_plain_websockets_client_calls_and_subscribes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        url = h.url.replace("http://", "ws://") + "ws"
        async with websockets.connect(url, additional_headers={"Authorization": h.auth}) as ws:

            async def call(req: dict) -> dict:
                await ws.send(json.dumps(req))
                return json.loads(await ws.recv())

            reply = await call({"jsonrpc": "2.0", "id": "a", "method": "getblockcount"})
            assert reply == {"jsonrpc": "2.0", "result": 0, "id": "a"}
            sub = await call({"jsonrpc": "2.0", "id": 2, "method": "subscribe",
                              "params": ["newTransactions"]})  # fmt: skip
            batch = [{"jsonrpc": "2.0", "id": 3, "method": "getblockhash", "params": [0, None]},
                     {"jsonrpc": "2.0", "method": 1}]  # fmt: skip
            await ws.send(json.dumps(batch))
            answers = json.loads(await ws.recv())
            assert len(answers[0]["result"]) == 64 and answers[1]["error"]["code"] == -32600
            tx = transfer(h.node.network, 0, 0, address_of(7), 1000)
            assert h.node.submit_transaction(tx).ok
            note = json.loads(await ws.recv())
            assert note["method"] == "subscription"
            assert note["params"]["subscription"] == sub["result"]
            assert note["params"]["result"]["txid"] == tx.txid.hex()
            # Bad JSON on the socket is answered, and the socket stays open.
            await ws.send('{"jsonrpc": "2.0", "id": NaN, "method": "getblockcount"}')
            assert json.loads(await ws.recv())["error"]["code"] == -32700
            assert (await call({"jsonrpc": "2.0", "id": 5, "method": "uptime"}))["id"] == 5
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(url):
                pass

    run_node(tmp_path, body)
