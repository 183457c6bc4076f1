"""JSON-RPC 2.0 conformance of the node's server: codes, batches, notifications, caps, auth."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from node.rpc.auth import cookie_path
from node.rpc.errors import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)
from tests.test_rpc_util import Harness, basic, run_node


def test_single_call_and_named_and_positional_params(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        assert await h.result("getblockcount") == 0
        genesis = await h.result("getblockhash", 0)
        assert genesis == await h.result("getblockhash", height=0)
        assert genesis == await h.result("getbestblockhash")
        reply = await h.call("getblockcount")
        assert reply == {"jsonrpc": "2.0", "result": 0, "id": 1}

    run_node(tmp_path, body)


def test_parse_error_and_invalid_requests(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        status, reply = await h.post(b"{not json")
        assert status == 200 and reply["error"]["code"] == PARSE_ERROR and reply["id"] is None
        status, reply = await h.post(b"\xff\xfe")
        assert reply["error"]["code"] == PARSE_ERROR
        bad = [
            "1",  # a JSON number (posted raw)
            '"getblockcount"',  # a JSON string (posted raw)
            {"jsonrpc": "2.0", "id": 1},  # no method
            {"jsonrpc": "2.0", "id": 1, "method": 5},
            {"jsonrpc": "1.0", "id": 1, "method": "getblockcount"},
            {"jsonrpc": "2.0", "id": 1, "method": "getblockcount", "params": "x"},
            {"jsonrpc": "2.0", "id": {"a": 1}, "method": "getblockcount"},
        ]
        for req in bad:
            _, reply = await h.post(req)
            assert reply["error"]["code"] == INVALID_REQUEST, (req, reply)
        _, reply = await h.post({"jsonrpc": "1.0", "id": 1, "method": "getblockcount"})
        assert reply["error"]["message"] == (
            'invalid request: this node speaks JSON-RPC 2.0: send "jsonrpc": "2.0" '
            '(or leave "jsonrpc" out, as a JSON-RPC 1.0 client does)'
        ), reply
        _, reply = await h.post([])
        assert reply["error"]["code"] == INVALID_REQUEST
        # A JSON-RPC 1.0 style call without "jsonrpc" is accepted, as bitcoind does.
        _, reply = await h.post({"id": 7, "method": "getblockcount", "params": []})
        assert reply["result"] == 0 and reply["id"] == 7

    run_node(tmp_path, body)


def test_method_not_found_and_invalid_params_name_the_param(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        err = await h.error("nosuchmethod")
        assert err["code"] == METHOD_NOT_FOUND and "nosuchmethod" in err["message"]
        err = await h.error("x" * 100_000)  # echoed up to 300 characters (RPC.md, Limits)
        said = f"method not found: {'x' * 300}... (100000 characters)"
        assert err == {"code": METHOD_NOT_FOUND, "message": said}, len(err["message"])
        err = await h.error("getblockhash", "zero")
        assert err["code"] == INVALID_PARAMS and "'height'" in err["message"]
        assert err["data"][0]["param"] == "height"
        err = await h.error("getblockhash", True)  # a bool is not an int
        assert err["code"] == INVALID_PARAMS and "'height'" in err["message"]
        err = await h.error("getblockhash", -1)
        assert err["code"] == INVALID_PARAMS and "'height'" in err["message"]
        err = await h.error("getblockhash")
        assert (
            err["code"] == INVALID_PARAMS
            and "missing required parameter 'height'" in (err["message"])
        )
        err = await h.error("getblockhash", 0, 1)
        assert err["code"] == INVALID_PARAMS and "at most 1" in err["message"]
        err = await h.error("getblockhash", heigth=0)
        assert err["code"] == INVALID_PARAMS and "'heigth'" in err["message"]
        err = await h.error("getblock", "00" * 32, "1")
        assert err["code"] == INVALID_PARAMS and "'verbosity'" in err["message"]
        err = await h.error("getblock", "xyz")
        assert err["code"] == INVALID_PARAMS and "'blockhash'" in err["message"]
        err = await h.error("getblocktemplate", "x", [1, 2])
        assert err["code"] == INVALID_PARAMS  # shape must be [m, k, n]

    run_node(tmp_path, body)


def test_batch_mixing_good_bad_and_notifications(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        batch = [
            {"jsonrpc": "2.0", "id": "a", "method": "getblockcount"},
            {"jsonrpc": "2.0", "id": "b", "method": "nosuch"},
            {"jsonrpc": "2.0", "method": "getblockcount"},  # notification: no answer
            {"jsonrpc": "2.0", "id": "c", "method": "getblockhash", "params": ["x"]},
            42,
            {"jsonrpc": "2.0", "method": "nosuch"},  # failing notification: still no answer
            {"jsonrpc": "2.0", "id": None, "method": "getbestblockhash"},
        ]
        status, reply = await h.post(batch)
        assert status == 200 and isinstance(reply, list) and len(reply) == 5
        assert reply[0] == {"jsonrpc": "2.0", "result": 0, "id": "a"}
        assert reply[1]["error"]["code"] == METHOD_NOT_FOUND and reply[1]["id"] == "b"
        assert reply[2]["error"]["code"] == INVALID_PARAMS and reply[2]["id"] == "c"
        assert reply[3]["error"]["code"] == INVALID_REQUEST and reply[3]["id"] is None
        assert reply[4]["id"] is None and len(reply[4]["result"]) == 64

    run_node(tmp_path, body)


def test_notifications_get_no_answer(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        status, reply = await h.post({"jsonrpc": "2.0", "method": "getblockcount"})
        assert status == 204 and reply is None
        status, reply = await h.post(
            [{"jsonrpc": "2.0", "method": "getblockcount"}, {"jsonrpc": "2.0", "method": "x"}]
        )
        assert status == 204 and reply is None

    run_node(tmp_path, body)


def test_batch_cap(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        calls = [{"jsonrpc": "2.0", "id": i, "method": "getblockcount"} for i in range(11)]
        _, reply = await h.post(calls)
        assert (
            reply["error"]["code"] == INVALID_REQUEST and "at most 10" in reply["error"]["message"]
        )
        _, reply = await h.post(calls[:10])
        assert len(reply) == 10
        # a batch body past MAX_BATCH_BODY is refused before it is parsed (past 1000
        # calls too here, but it is the size that is said)
        from node.rpc.protocol import MAX_BATCH_BODY

        flood = b"[" + b"{}," * (MAX_BATCH_BODY // 3) + b"{}]"
        for blanks in (b"", b" \n" * 100):  # however many blanks come before it
            _, reply = await h.post(blanks + flood)
            assert reply["error"]["code"] == INVALID_REQUEST
            assert f"at most {MAX_BATCH_BODY}" in reply["error"]["message"], reply

    run_node(tmp_path, body, extra={"rpc_max_batch": 10})


def test_body_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        big = b'{"jsonrpc":"2.0","id":1,"method":"getblockcount","params":["' + b"a" * 5000 + b'"]}'
        status, reply = await h.post(big)
        assert status == 413 and reply["error"]["code"] == INVALID_REQUEST

        async def chunks():  # no Content-Length: the cap is counted while reading
            for _ in range(10):
                yield b" " * 1000

        async with h.session.post(h.url, data=chunks(), headers=h.headers()) as resp:
            assert resp.status == 413
        status, _ = await h.post({"jsonrpc": "2.0", "id": 1, "method": "getblockcount"})
        assert status == 200

    run_node(tmp_path, body, extra={"rpc_max_body": 4096})


def test_auth_required_and_wrong_auth_is_slowed(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        # Every method needs auth by default (like bitcoind), admin ones included.
        for method in ("stop", "getblockcount"):
            status, reply = await h.post({"jsonrpc": "2.0", "id": 1, "method": method}, auth=None)
            assert status == 401 and reply["error"]["code"] == INVALID_REQUEST
        assert not h.node._stopping.is_set()
        t0 = time.monotonic()
        status, _ = await h.post(
            {"jsonrpc": "2.0", "id": 1, "method": "getblockcount"},
            auth=basic("__cookie__", "00" * 32),
        )
        assert status == 401 and time.monotonic() - t0 >= 0.24
        status, _ = await h.post(
            {"jsonrpc": "2.0", "id": 1, "method": "getblockcount"}, auth="Bearer xyz"
        )
        assert status == 401
        # The configured user works besides the cookie.
        status, reply = await h.post(
            {"jsonrpc": "2.0", "id": 1, "method": "getblockcount"}, auth=basic("alice", "s3cret")
        )
        assert status == 200 and reply["result"] == 0
        assert "s3cret" not in repr(vars(h.rpc.auth))

    run_node(tmp_path, body, rpc_user="alice", rpc_password="s3cret")


def test_anonymous_reads_allowed_only_when_configured_never_admin(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        status, reply = await h.post({"jsonrpc": "2.0", "id": 1, "method": "getblockcount"},
                                     auth=None)  # fmt: skip
        assert status == 200 and reply["result"] == 0
        for method in ("stop", "getblocktemplate", "setban"):
            status, reply = await h.post({"jsonrpc": "2.0", "id": 1, "method": method},
                                         auth=None)  # fmt: skip
            assert reply["error"] == {"code": INVALID_REQUEST,
                                      "message": f"{method} needs authentication"}  # RPC.md
        assert not h.node._stopping.is_set()

    run_node(tmp_path, body, extra={"rpc_allow_anonymous": True})


def test_warmup_answers_minus_28(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.rpc.warmup_message = "Loading block index..."
        err = await h.error("getblockcount")
        assert err["code"] == -28 and err["message"] == "Loading block index..."
        assert isinstance(await h.result("uptime"), int)
        h.rpc.warmup_message = None
        assert await h.result("getblockcount") == 0

    run_node(tmp_path, body)


def test_cookie_written_private_and_removed_at_stop(tmp_path: Path) -> None:
    seen = {}

    async def body(h: Harness) -> None:
        path = cookie_path(h.node.config.network_dir)
        seen["path"] = path
        text = path.read_text()
        assert text.startswith("__cookie__:") and len(text.split(":")[1]) == 64
        assert path.stat().st_mode & 0o077 == 0

    run_node(tmp_path, body)
    assert not seen["path"].exists()


def test_get_is_not_allowed_and_internal_errors_are_contained(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        async with h.session.get(h.url, headers=h.headers()) as resp:
            assert resp.status == 405

        def boom(ctx: object, p: object) -> None:
            raise RuntimeError("bug")

        h.rpc.registry.add("boom", boom, category="control")
        err = await h.error("boom")
        assert err["code"] == -32603
        assert await h.result("getblockcount") == 0

    run_node(tmp_path, body)


def test_third_party_client_library(tmp_path: Path) -> None:
    jsonrpcclient = pytest.importorskip("jsonrpcclient")

    async def body(h: Harness) -> None:
        req = jsonrpcclient.request("getblockhash", params=(0,))
        async with h.session.post(h.url, json=req, headers=h.headers()) as resp:
            parsed = jsonrpcclient.parse(await resp.json())
        assert isinstance(parsed, jsonrpcclient.Ok) and len(parsed.result) == 64
        req = jsonrpcclient.request("getaccount", params={"address": "nope"})
        async with h.session.post(h.url, json=req, headers=h.headers()) as resp:
            parsed = jsonrpcclient.parse(await resp.json())
        assert isinstance(parsed, jsonrpcclient.Error) and parsed.code == -5
        reqs = [jsonrpcclient.request("getblockcount"), jsonrpcclient.request("nosuch")]
        async with h.session.post(h.url, json=reqs, headers=h.headers()) as resp:
            parsed = list(jsonrpcclient.parse(await resp.json()))
        assert isinstance(parsed[0], jsonrpcclient.Ok) and parsed[0].result == 0
        assert isinstance(parsed[1], jsonrpcclient.Error) and parsed[1].code == METHOD_NOT_FOUND

    run_node(tmp_path, body)


def test_sync_client_from_datadir(tmp_path: Path) -> None:
    from wallet.rpc import RpcClient, RpcConnectionError, RpcError

    async def body(h: Harness) -> None:
        client = RpcClient.from_datadir(tmp_path, "devnet", port=h.rpc.port)

        def work() -> None:
            assert client.call("getblockcount") == 0
            assert client.call("getblockhash", height=0) == client.call("getbestblockhash")
            with pytest.raises(RpcError) as exc:
                client.call("getblockhash", 99)
            assert exc.value.code == -8
            out = client.batch([("getblockcount", []), ("nosuch", [])])
            assert out[0] == 0 and isinstance(out[1], RpcError)
            with pytest.raises(RpcConnectionError) as t:
                RpcClient(h.url, "__cookie__", "bad").call("getblockcount")
            assert t.value.status == 401

        await asyncio.to_thread(work)

    run_node(tmp_path, body)


def test_hex_and_names_past_their_length_are_refused_unread(tmp_path: Path) -> None:
    """Hex longer than the largest transaction (or block) is -32602 by its length
    before it is scanned or decoded; a name (a peer, a command) past 300 characters
    too, and the error does not echo it."""
    from chain.tx import MAX_TX_SIZE

    async def body(h: Harness) -> None:
        long_hex = "00" * (MAX_TX_SIZE + 1)
        for method, params in (("sendrawtransaction", [long_hex]),
                               ("testmempoolaccept", [[long_hex]]),
                               ("help", ["x" * 100_000])):  # fmt: skip
            status, reply = await h.post(
                {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            )
            assert reply["error"]["code"] == INVALID_PARAMS, (method, reply)
            assert len(reply["error"]["message"]) < 1000, (method, len(reply["error"]["message"]))

    run_node(tmp_path, body)
