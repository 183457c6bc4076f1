"""Edge cases third-party clients hit: null params, strict JSON both ways, nesting depth,
integer overflow, and the method fixes of issue 13 (setban, getchaintips, blocktime)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from chain.address import encode_address
from chain.block import Block
from node.rpc.errors import (
    CLIENT_INVALID_IP_OR_SUBNET,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)
from node.rpc.protocol import MAX_JSON_DEPTH, CallContext, NoParams
from node.template import build_template
from tests.chainutil import address_of, seal_template, transfer
from tests.test_rpc_util import Harness, run_node


def strict(text: str) -> Any:
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in the reply")

    return json.loads(text, parse_constant=refuse)


async def post_text(h: Harness, text: str | bytes) -> tuple[int, Any]:
    async with h.session.post(h.url, data=text, headers=h.headers()) as resp:
        body = await resp.text()
        assert resp.content_type == "application/json" or resp.status == 204, body
        return resp.status, (strict(body) if body else None)


def test_null_params_mean_the_default(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        tip = await h.result("getbestblockhash")
        # Positional nulls (python bitcoinrpc's getrawtransaction sends [txid, true, null]).
        assert (await h.result("getblock", tip, None))["hash"] == tip
        assert (await h.result("getblock", tip, None, None, None))["hash"] == tip
        assert await h.result("getblock", tip, 0, None) == await h.result("getblock", tip, 0)
        assert (await h.result("getblockheader", tip, None))["hash"] == tip
        assert await h.result("getblockcount", None) == 0
        # Named nulls too; a required param given as null is reported missing.
        assert (await h.result("getblock", blockhash=tip, verbosity=None))["tx"] == []
        err = await h.error("getblock", None, 1)
        assert err["code"] == INVALID_PARAMS and "'blockhash'" in err["message"]
        err = await h.error("getblock", blockhash=None)
        assert err["code"] == INVALID_PARAMS and "'blockhash'" in err["message"]
        # A non-null beyond the params is still refused; an unknown name even when null.
        err = await h.error("getblock", tip, 1, None, 5)
        assert err["code"] == INVALID_PARAMS and "at most 2" in err["message"]
        err = await h.error("getblock", blockhash=tip, verbose=None)
        assert err["code"] == INVALID_PARAMS and "'verbose'" in err["message"]

    run_node(tmp_path, body)


def test_strict_json_in_and_out(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for text in (
            '{"jsonrpc":"2.0","id":NaN,"method":"getblockcount"}',
            '{"jsonrpc":"2.0","id":1,"method":"getblockhash","params":[Infinity]}',
            '{"jsonrpc":"2.0","id":1,"method":"getblockhash","params":[-Infinity]}',
            '{"jsonrpc":"2.0","id":1e400,"method":"getblockcount"}',
            '{"jsonrpc":"2.0","id":1,"method":"waitfornewblock","params":[1e310]}',
            '{"jsonrpc":"2.0","id":1,"method":"getblockhash","params":[' + "9" * 5000 + "]}",
        ):
            status, reply = await post_text(h, text)
            assert status == 200 and reply["error"]["code"] == PARSE_ERROR, (text[:60], reply)
            assert reply["id"] is None
            assert "sys." not in reply["error"]["message"], reply  # (Python's own advice)
        assert reply["error"]["message"] == (
            "parse error: an integer of more than 4300 digits (no param takes one that long)"
        )

        # A method whose result JSON cannot carry answers -32603, still as valid JSON.
        def nan(ctx: CallContext, p: NoParams) -> float:
            return float("nan")

        h.rpc.registry.add("nan", nan, category="control")
        status, reply = await post_text(h, '{"jsonrpc":"2.0","id":3,"method":"nan"}')
        assert reply == {"jsonrpc": "2.0", "error": {"code": INTERNAL_ERROR,
                                                     "message": "internal error"}, "id": 3}
        status, reply = await post_text(
            h, '[{"jsonrpc":"2.0","id":4,"method":"nan"},{"jsonrpc":"2.0","id":5,"method":"x"}]'
        )
        assert [r["error"]["code"] for r in reply] == [INTERNAL_ERROR, METHOD_NOT_FOUND]
        assert await h.result("getblockcount") == 0

    run_node(tmp_path, body)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nesting_depth_is_capped_over_http_and_websocket(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ok_params = nested(MAX_JSON_DEPTH - 1)  # the request object is one level more
        deep_params = nested(MAX_JSON_DEPTH)
        base = '{"jsonrpc":"2.0","id":1,"method":"getblockhash","params":%s}'
        _, reply = await post_text(h, base % ok_params)
        assert reply["error"]["code"] == INVALID_PARAMS  # reached the method's validation
        _, reply = await post_text(h, base % deep_params)
        assert reply["error"]["code"] == INVALID_REQUEST and reply["id"] == 1
        assert "nested deeper" in reply["error"]["message"]
        for depth in (1000, 100_000):  # past Python's recursion limit: the parser gives up
            status, reply = await post_text(h, base % nested(depth))
            assert status == 200 and reply["error"]["code"] in (PARSE_ERROR, INVALID_REQUEST)
            assert reply["id"] in (None, 1)
        _, reply = await post_text(h, nested(5000))
        assert reply["error"] == {"code": PARSE_ERROR, "message":
            "parse error: nested too deep for the parser (about 1000 levels); a request may "
            f"nest at most {MAX_JSON_DEPTH} arrays and objects"}  # fmt: skip
        async with h.session.ws_connect(h.url + "ws", headers={"Authorization": h.auth}) as ws:
            await ws.send_str(base % nested(1000))
            reply = strict((await ws.receive(timeout=10)).data)
            assert reply["error"]["code"] in (PARSE_ERROR, INVALID_REQUEST)
            await ws.send_str('{"jsonrpc":"2.0","id":2,"method":"getblockcount"}')
            assert strict((await ws.receive(timeout=10)).data)["result"] == 0

    run_node(tmp_path, body)


def test_huge_integers_are_invalid_params_not_internal_errors(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        address = encode_address(h.node.network.hrp, address_of(0))
        cases: list[tuple[str, list[Any]]] = [
            ("waitfornewblock", [10**310]),
            ("getaddresshistory", [address, 2**70]),
            ("getaddresshistory", [address, 0, 2**70]),
            ("getblockhash", [2**64]),
            ("setban", ["10.0.0.1", "add", 2**80]),
            ("getblocktemplate", [address, [2**70, 2**70, 2**70]]),
            ("estimatefee", [2**63]),
        ]
        for method, params in cases:
            err = await h.error(method, *params)
            assert err["code"] == INVALID_PARAMS, (method, err)
        # The largest allowed skip pages past the end cleanly.
        page = await h.result("getaddresshistory", address, 2**53 - 1)
        assert page == {"address": address, "txs": [], "next_skip": None}

    run_node(tmp_path, body)


def test_setban_validates_the_address(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for bad in ("not-an-ip", "10.0.0.0/24", "", "1.2.3.4:8333", "300.1.1.1"):
            err = await h.error("setban", bad, "add")
            assert err["code"] == CLIENT_INVALID_IP_OR_SUBNET, (bad, err)
        # A good address gets past validation to the P2P service (absent here: -31).
        assert (await h.error("setban", "10.0.0.1", "add"))["code"] == -31
        assert (await h.error("setban", "::1", "remove"))["code"] == -31

    run_node(tmp_path, body)


def test_getchaintips_keeps_the_active_tip_with_an_invalid_child(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        chain = h.node.chain
        net = h.node.network
        shape = (net.filler.m, net.filler.k, net.filler.n)
        template = build_template(chain, address_of(4), [], shape, int(chain.clock()))
        bad = dataclasses.replace(template.header, state_root=b"\x01" * 32)
        block = await asyncio.to_thread(
            seal_template, chain, dataclasses.replace(template, header=bad)
        )
        assert isinstance(block, Block)
        result = h.node.submit_block(block)
        assert not result.check.ok and block.hash in chain.index  # stored, then invalid
        tips = await h.result("getchaintips")
        genesis = await h.result("getblockhash", 0)
        assert tips == [
            {"height": 0, "hash": genesis, "branchlen": 0, "status": "active"},
            {"height": 1, "hash": block.hash.hex(), "branchlen": 1, "status": "invalid"},
        ]

    run_node(tmp_path, body)


def test_gettransaction_of_a_pooled_tx_has_every_documented_field(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        tx = transfer(h.node.network, 0, 0, address_of(7), 1000)
        assert await h.result("sendrawtransaction", tx.to_bytes().hex()) == tx.txid.hex()
        info = await h.result("gettransaction", tx.txid.hex())
        documented = {
            "txid", "chain_id", "kind", "type", "sender", "sender_pubkey", "nonce", "fee",
            "recipient",
            "amount", "payload", "signature", "size", "hex", "confirmations", "blockhash",
            "height", "blocktime", "in_mempool",
        }  # fmt: skip
        assert set(info) == documented
        assert info["blocktime"] is None and info["confirmations"] == 0 and info["in_mempool"]
        assert info["kind"] == 1 and info["type"] == "transfer"

    run_node(tmp_path, body)


def test_getblock_cached_encoding_keeps_chain_position_fields_live(tmp_path: Path) -> None:
    from tests.test_rpc_methods import mine_and_submit

    async def body(h: Harness) -> None:
        net = h.node.network
        for nonce in range(3):
            assert h.node.submit_transaction(transfer(net, 0, nonce, address_of(7), 500)).ok
        await mine_and_submit(h)
        b1 = await h.result("getblockhash", 1)
        first = await h.result("getblock", b1, 2)
        assert first["confirmations"] == 1 and "nextblockhash" not in first
        assert len(first["tx"]) == 3 and first["tx"][0]["amount"] == 500
        header = await h.result("getblockheader", b1)
        assert {k: first[k] for k in header} == header  # the same header fields
        cache = h.rpc.methods.block_cache
        hits = cache.hits
        await mine_and_submit(h)
        again = await h.result("getblock", b1, 2)
        assert cache.hits == hits + 1  # served from the cache...
        b2 = await h.result("getblockhash", 2)
        assert again["confirmations"] == 2 and again["nextblockhash"] == b2  # ...but live
        assert {k: v for k, v in again.items() if k not in ("confirmations", "nextblockhash")} \
            == {k: v for k, v in first.items() if k != "confirmations"}  # fmt: skip
        txids = await h.result("getblock", b1, 1)
        assert txids["tx"] == [t["txid"] for t in first["tx"]] and txids["nextblockhash"] == b2
        # In a batch, next to other answers, the cached text is spliced in as JSON.
        status, reply = await post_text(h, json.dumps([
            {"jsonrpc": "2.0", "id": 1, "method": "getblock", "params": [b1, 2]},
            {"jsonrpc": "2.0", "id": 2, "method": "getblockcount"},
        ]))  # fmt: skip
        assert reply[0]["result"] == again and reply[1]["result"] == 2

    run_node(tmp_path, body)
