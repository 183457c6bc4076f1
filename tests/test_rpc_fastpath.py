"""The RPC server's per-call shortcuts keep every answer the slow path gives: remembered
credentials, remembered params, per-tip answers across a reorg, and the call metrics."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from node.rpc.auth import MAX_REMEMBERED, Authenticator
from node.rpc.encode import template_from_json
from node.rpc.errors import INVALID_PARAMS
from node.rpc.protocol import PARAMS_CACHE
from node.rpc.tipcache import TipMemo
from tests.chainutil import address_of, build_template
from tests.test_rpc_methods import addr, seal
from tests.test_rpc_util import Harness, basic, run_node


def test_remembered_credentials_never_let_a_wrong_one_in() -> None:
    auth = Authenticator()
    auth.allow("__cookie__", "ab" * 32)
    good = basic("__cookie__", "ab" * 32)
    token = good.split(" ", 1)[1]
    assert auth.check_header(good) is True
    assert auth.check_header(good) is True  # remembered
    assert auth.check_header(basic("__cookie__", "ab" * 31 + "ac")) is False
    assert auth.check_header(good[:-2] + "==") is False
    assert auth.check_header("Bearer " + token) is False
    assert auth.check_header(None) is None and auth.check_header("") is None
    assert auth.check_header("Basic \udcff") is False  # undecodable bytes from the wire
    # Other spellings of the same credential pass by the full check; the memory of
    # passed values stays bounded however many a client invents.
    spellings = [f"{s} {token}{' ' * n}" for s in ("Basic", "basic", "BASIC") for n in range(40)]
    assert all(auth.check_header(s) is True for s in spellings)
    assert len(auth._passed) <= MAX_REMEMBERED
    assert auth.check_header(basic("__cookie__", "cd" * 32)) is False


def test_remembered_credentials_over_http(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for _ in range(3):
            assert await h.result("getblockcount") == 0
        wrong = "Basic " + base64.b64encode(b"__cookie__:" + b"0" * 64).decode()
        status, reply = await h.post(
            {"jsonrpc": "2.0", "id": 1, "method": "getblockcount"}, auth=wrong
        )
        assert status == 401 and reply["error"]["code"] == -32600
        status, _ = await h.post({"jsonrpc": "2.0", "id": 1, "method": "getblockcount"}, auth=None)
        assert status == 401
        assert await h.result("getblockcount") == 0

    run_node(tmp_path, body)


def test_remembered_params_tell_json_types_apart(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        tip = await h.result("getbestblockhash")
        assert (await h.result("getblock", tip, 1))["hash"] == tip  # remembered now
        for bad in (True, 1.0, "1"):  # equal to 1 in Python, not the same JSON
            err = await h.error("getblock", tip, bad)
            assert err["code"] == INVALID_PARAMS and "'verbosity'" in err["message"], bad
        assert await h.result("getblockhash", 0) == tip
        assert (await h.error("getblockhash", False))["code"] == INVALID_PARAMS
        assert (await h.error("getblockhash", 0.0))["code"] == INVALID_PARAMS
        # Named and positional forms, with trailing nulls, give the same answer.
        assert (await h.result("getblock", blockhash=tip, verbosity=1))["hash"] == tip
        assert (await h.result("getblock", tip, 1, None))["hash"] == tip
        err = await h.error("getblock", blockhash=tip, verbosity=True)
        assert err["code"] == INVALID_PARAMS
        # Refusals are never remembered as answers; the memory stays bounded.
        for i in range(PARAMS_CACHE + 50):
            assert (await h.result("getaccount", addr(h, i)))["balance"] >= 0
        assert len(h.rpc.registry.methods["getaccount"].parsed) <= PARAMS_CACHE
        assert (await h.error("getaccount", addr(h, 0), "extra"))["code"] == INVALID_PARAMS

    run_node(tmp_path, body)


def test_per_tip_answers_follow_a_reorg(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        net = h.node.network
        miner = addr(h, 4)
        t = template_from_json(await h.result("getblocktemplate", miner), net.hrp)
        a1 = await asyncio.to_thread(seal, net, t, b"a")
        assert await h.result("submitblock", a1.to_bytes().hex()) is None
        got = await h.result("getblock", a1.hash.hex(), 2)
        assert got["confirmations"] == 1 and "nextblockhash" not in got
        before = await h.result("getaccount", miner)
        assert before["immature"] > 0 and before["height"] == 1
        # A heavier branch from genesis (b1, b2) replaces a1.
        b1 = await asyncio.to_thread(seal, net, t, b"b")
        assert h.node.submit_block(b1).accepted  # a side chain so far
        saved, h.node.chain.tip = h.node.chain.tip, h.node.chain.index[b1.hash]
        try:
            tb2 = build_template(h.node.chain, address_of(4), [], (64, 128, 64),
                                 b1.header.timestamp + 1)  # fmt: skip
        finally:
            h.node.chain.tip = saved
        b2 = await asyncio.to_thread(seal, net, tb2)
        assert h.node.submit_block(b2).reorg_depth == 1
        orphan = await h.result("getblock", a1.hash.hex(), 2)
        assert orphan["confirmations"] == -1 and "nextblockhash" not in orphan
        assert {k: v for k, v in orphan.items() if k != "confirmations"} == {
            k: v for k, v in got.items() if k != "confirmations"
        }
        now = await h.result("getblock", b1.hash.hex(), 1)
        assert now["confirmations"] == 2 and now["nextblockhash"] == b2.hash.hex()
        after = await h.result("getaccount", miner)
        assert after["height"] == 2 and after["immature"] == 2 * before["immature"]

    run_node(tmp_path, body)


def test_tip_memo_is_emptied_by_a_new_tip_and_bounded() -> None:
    memo: TipMemo[str] = TipMemo(max_items=3, max_bytes=10)
    memo.put(b"t1", "a", "x", 4)
    assert memo.get(b"t1", "a") == "x" and memo.get(b"t1", "b") is None
    assert memo.get(b"t2", "a") is None  # another tip: nothing from t1 is served
    assert memo.get(b"t1", "a") is None
    memo.put(b"t1", "big", "y" * 11, 11)  # larger than the whole memo: not kept
    assert memo.get(b"t1", "big") is None
    for key in "abcd":
        memo.put(b"t1", key, key, 1)
    assert len(memo._items) <= 3 and memo.get(b"t1", "d") == "d"


def test_call_metrics_reach_prometheus(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for _ in range(5):
            await h.result("getblockcount")
        await h.error("getblockhash", 99)  # the method raises: outcome "error"
        samples = {}
        for family in text_string_to_metric_families(h.node.metrics.render().decode()):
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                samples[key] = s.value
        calls = "pouw_rpc_calls_total"
        assert samples[(calls, (("method", "getblockcount"), ("outcome", "ok")))] == 5
        assert samples[(calls, (("method", "getblockhash"), ("outcome", "error")))] == 1
        seconds = "pouw_rpc_call_seconds"
        assert samples[(seconds + "_count", (("method", "getblockcount"),))] == 5
        assert samples[(seconds + "_bucket", (("le", "+Inf"), ("method", "getblockcount")))] == 5
        assert 0 < samples[(seconds + "_sum", (("method", "getblockcount"),))] < 1
        assert samples[(seconds + "_count", (("method", "getblockhash"),))] == 1

    run_node(tmp_path, body)
