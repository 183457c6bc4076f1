"""The JSON-RPC 2.0 specification's own examples (section 7, verbatim) and Bitcoin Core's
interface_rpc.py / rpc_users.py cases, against the node's real server over HTTP.

The spec's example methods (subtract, sum, update, notify_hello, get_data) are added to
the node's registry with the same Params machinery as every real method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.rpc.errors import INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR
from node.rpc.protocol import CallContext, NoParams, Params
from tests.test_rpc_util import Harness, basic, run_node


class SubtractParams(Params):
    minuend: int
    subtrahend: int


class SumParams(Params):
    a: int = 0
    b: int = 0
    c: int = 0


class UpdateParams(Params):
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0
    e: int = 0


class HelloParams(Params):
    value: int


def add_spec_methods(h: Harness) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def subtract(ctx: CallContext, p: SubtractParams) -> int:
        return p.minuend - p.subtrahend

    def sum_(ctx: CallContext, p: SumParams) -> int:
        return p.a + p.b + p.c

    def update(ctx: CallContext, p: UpdateParams) -> None:
        seen.append(("update", p))

    def notify_hello(ctx: CallContext, p: HelloParams) -> None:
        seen.append(("notify_hello", p.value))

    def get_data(ctx: CallContext, p: NoParams) -> list[Any]:
        return ["hello", 5]

    reg = h.rpc.registry
    reg.add("subtract", subtract, SubtractParams, category="control")
    reg.add("sum", sum_, SumParams, category="control")
    reg.add("update", update, UpdateParams, category="control")
    reg.add("notify_hello", notify_hello, HelloParams, category="control")
    reg.add("get_data", get_data, category="control")
    return seen


def shape(reply: Any) -> Any:
    """The reply with error messages dropped (the spec's texts are examples)."""
    if isinstance(reply, list):
        return [shape(r) for r in reply]
    if isinstance(reply, dict) and "error" in reply:
        return {**reply, "error": {"code": reply["error"]["code"]}}
    return reply


def err(code: int, req_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code}, "id": req_id}


def ok(result: Any, req_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "id": req_id}


# (request text, HTTP status, expected reply without messages), in the spec's order.
SPEC_EXAMPLES: list[tuple[str, int, Any]] = [
    ('{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}', 200, ok(19, 1)),
    ('{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}', 200, ok(-19, 2)),
    ('{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, '
     '"id": 3}', 200, ok(19, 3)),
    ('{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, '
     '"id": 4}', 200, ok(19, 4)),
    ('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}', 204, None),
    ('{"jsonrpc": "2.0", "method": "foobar"}', 204, None),
    ('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}', 200, err(METHOD_NOT_FOUND, "1")),
    ('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]', 200, err(PARSE_ERROR, None)),
    ('{"jsonrpc": "2.0", "method": 1, "params": "bar"}', 200, err(INVALID_REQUEST, None)),
    ('[\n  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},\n'
     '  {"jsonrpc": "2.0", "method"\n]', 200, err(PARSE_ERROR, None)),
    ("[]", 200, err(INVALID_REQUEST, None)),
    ("[1]", 200, [err(INVALID_REQUEST, None)]),
    ("[1,2,3]", 200, [err(INVALID_REQUEST, None)] * 3),
    ('[\n  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},\n'
     '  {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},\n'
     '  {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},\n'
     '  {"foo": "boo"},\n'
     '  {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},\n'
     '  {"jsonrpc": "2.0", "method": "get_data", "id": "9"}\n]', 200,
     [ok(7, "1"), ok(19, "2"), err(INVALID_REQUEST, None), err(METHOD_NOT_FOUND, "5"),
      ok(["hello", 5], "9")]),
    ('[\n  {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},\n'
     '  {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}\n]', 204, None),
]  # fmt: skip


def test_json_rpc_2_spec_examples(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        seen = add_spec_methods(h)
        for text, status, expected in SPEC_EXAMPLES:
            got_status, reply = await h.post(text)
            assert (got_status, shape(reply)) == (status, expected), text
        # The notifications ran although nothing was answered.
        assert [s[0] for s in seen] == ["update", "notify_hello", "notify_hello"]
        assert seen[0][1] == UpdateParams(a=1, b=2, c=3, d=4, e=5)

    run_node(tmp_path, body)


def test_bitcoin_core_interface_rpc_cases(tmp_path: Path) -> None:
    """test/functional/interface_rpc.py: batches, notifications and HTTP status codes."""

    async def body(h: Harness) -> None:
        genesis = await h.result("getblockhash", 0)
        # test_batch_request: legacy (no "jsonrpc") and 2.0 calls mixed, answered in order.
        status, reply = await h.post([
            {"method": "getblockchaininfo", "id": 1},
            {"method": "invalidmethod", "id": 2},
            {"jsonrpc": "2.0", "method": "getblockhash", "id": 3, "params": [0]},
            {"jsonrpc": "2.0", "method": "getblockhash", "params": [0]},  # notification
            {"jsonrpc": "2.0", "method": "getblockhash", "id": 4, "params": [42]},
            {"jsonrpc": "2.0", "method": "getblockhash", "id": 5, "params": ["x"]},
        ])  # fmt: skip
        assert status == 200 and [r["id"] for r in reply] == [1, 2, 3, 4, 5]
        assert reply[0]["result"]["chain"] == "devnet" and "error" not in reply[0]
        assert reply[1]["error"]["code"] == METHOD_NOT_FOUND and "result" not in reply[1]
        assert reply[2]["result"] == genesis
        assert reply[3]["error"]["code"] == -8  # RPC_INVALID_PARAMETER: out of range
        assert reply[4]["error"]["code"] == -32602
        # test_http_status_codes, JSON-RPC 2.0: every answer is HTTP 200, notifications
        # 204 whether they succeed or fail.
        for method, params, has_id, want in (
            ("getblockcount", [], True, 200),
            ("invalidmethod", [], True, 200),
            ("getblockhash", [42], True, 200),
            ("getblockcount", [], False, 204),
            ("invalidmethod", [], False, 204),
            ("getblockhash", [42], False, 204),
        ):
            req: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
            if has_id:
                req["id"] = 7
            got, _ = await h.post(req)
            assert got == want, (method, has_id)
        # An explicit null id is an id, not a notification (bitcoind agrees).
        _, reply = await h.post({"jsonrpc": "2.0", "method": "getblockcount", "id": None})
        assert reply == ok(0, None)
        # "params" must be an array or object; "jsonrpc" other than 2.0 is refused.
        for bad in ({"jsonrpc": "2.0", "method": "getblockcount", "params": 3, "id": 1},
                    {"jsonrpc": "3.0", "method": "getblockcount", "id": 1}):  # fmt: skip
            _, reply = await h.post(bad)
            assert shape(reply) == err(INVALID_REQUEST, 1)

    run_node(tmp_path, body)


def test_bitcoin_core_rpc_users_cases(tmp_path: Path) -> None:
    """test/functional/rpc_users.py: the configured user, the cookie, wrong credentials."""
    password = "c0mpl3x:pässword with spaces"

    async def body(h: Harness) -> None:
        req = {"jsonrpc": "2.0", "method": "getbestblockhash", "id": 1}
        user, _, secret = h.node.config.network_dir.joinpath(".cookie").read_text().partition(":")
        good = [basic("rt", password), basic(user, secret), h.auth]
        bad = [
            basic("rt", password + "x"),
            basic("rtwrong", password),
            basic("rt", ""),
            basic(user, secret[:-1]),
            basic(user, ""),
            "Basic !!!notbase64",
            "Basic " + "cnQ=",  # "rt" without ":password"
        ]
        for auth in good:
            status, reply = await h.post(req, auth=auth)
            assert status == 200 and len(reply["result"]) == 64, auth
        for auth in bad:
            async with h.session.post(h.url, json=req, headers=h.headers(auth)) as resp:
                assert resp.status == 401, auth
                assert resp.headers["WWW-Authenticate"] == 'Basic realm="jsonrpc"'
        async with h.session.post(h.url, json=req) as resp:  # no Authorization at all
            assert resp.status == 401

    run_node(tmp_path, body, rpc_user="rt", rpc_password=password)
