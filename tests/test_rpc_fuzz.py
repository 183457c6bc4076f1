"""Hypothesis fuzzing of the JSON-RPC dispatcher (over HTTP, against a real node) and of
the blob upload endpoint: only typed JSON-RPC errors or 4xx answers may come back,
never -32603, a 5xx, a closed socket or a reply that is not strict JSON."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import zipfile
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.address import encode_address
from compute.blobs import BlobStore
from node.blobs import BlobServer
from node.rpc import errors
from tests.chainutil import address_of
from tests.test_rpc_util import Harness, rpc_node

T = TypeVar("T")
FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
# Every typed code the server may answer; -32603 (a bug) is not among them.
TYPED_CODES = {
    v for k, v in vars(errors).items() if k.isupper() and isinstance(v, int)
} - {errors.INTERNAL_ERROR}
# Methods left out: stop ends the node; waitfornewblock (timeout 0 = forever) and
# getblocktemplate (a longpollid waits for a change) are meant to block.
SKIPPED = {"stop", "waitfornewblock", "getblocktemplate"}


class LoopThread:
    """An event loop in a thread, so synchronous hypothesis tests can drive async code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def node(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    cm = rpc_node(tmp_path_factory.mktemp("fuzz-node"))
    harness = loop_thread.run(cm.__aenter__())
    yield harness
    loop_thread.run(cm.__aexit__(None, None, None))


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def post(h: Harness, body: bytes) -> tuple[int, str]:
    async with h.session.post(h.url, data=body, headers=h.headers()) as resp:
        return resp.status, await resp.text()


def check_reply(status: int, text: str) -> None:
    if status == 204:
        assert text == ""
        return
    assert status == 200 or 400 <= status < 500, (status, text)
    reply = json.loads(text, parse_constant=refuse_constant)
    for item in reply if isinstance(reply, list) else [reply]:
        assert item["jsonrpc"] == "2.0" and ("result" in item) != ("error" in item), item
        if "error" in item:
            assert item["error"]["code"] in TYPED_CODES, item
            assert isinstance(item["error"]["message"], str)


scalars = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["00" * 32, "ff" * 32, "", "00", "add", "remove", "onetry", "10.0.0.1",
                       "account", "contribution", "all", "newHeads", "help", "getblock",
                       encode_address("dpw", address_of(0)), 2**53 - 1, 2**64, -1, 0, 1])
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn, methods: list[str]) -> Any:
    req: dict[str, Any] = {}
    if draw(st.booleans()):
        req["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "1.0", 2]))
    req["method"] = draw(st.sampled_from(methods) | json_values)
    if draw(st.booleans()):
        req["id"] = draw(st.integers() | st.text(max_size=5) | st.none() | json_values)
    if draw(st.integers(0, 3)):
        req["params"] = draw(st.lists(json_values, max_size=5)
                             | st.dictionaries(st.sampled_from(["blockhash", "verbosity",
                                               "address", "height", "txid", "x"]) | st.text(
                                               max_size=8), json_values, max_size=4)
                             | json_values)  # fmt: skip
    return req


def rpc_methods() -> list[str]:
    """Every method the node registers (read from the code, so a new one is fuzzed
    without editing this list), the operator's ``logging`` and an unknown name."""
    import inspect

    from node.rpc.methods import Methods

    names = {
        name for klass in Methods.__mro__ for name, fn in vars(klass).items()
        if not name.startswith("_") and callable(fn)
        and list(inspect.signature(fn).parameters)[1:] == ["ctx", "p"]
    }  # fmt: skip
    return sorted((names | {"logging", "nosuchmethod"}) - SKIPPED)


METHODS = rpc_methods()


def test_fuzz_targets_every_served_method(node: Harness) -> None:
    served = set(node.rpc.registry.methods) - SKIPPED
    assert served <= set(METHODS), served - set(METHODS)


@FUZZ
@given(body=st.one_of(
    requests(METHODS),
    st.lists(requests(METHODS), min_size=0, max_size=6),
    json_values,
))  # fmt: skip
def test_fuzz_dispatcher_answers_only_typed_errors(
    loop_thread: LoopThread, node: Harness, body: Any
) -> None:
    status, text = loop_thread.run(post(node, json.dumps(body).encode()))
    check_reply(status, text)
    if isinstance(body, dict) and status == 200 and "id" in body:
        reply = json.loads(text)
        assert reply["id"] in (body["id"], None)


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzz_dispatcher_raw_bodies(loop_thread: LoopThread, node: Harness, raw: bytes) -> None:
    status, text = loop_thread.run(post(node, raw))
    check_reply(status, text)


@FUZZ
@given(
    prefix=st.sampled_from(["", "[", '{"jsonrpc":"2.0","id":1,"method":"getblock","params":']),
    depth=st.integers(0, 3000),
    filler=st.sampled_from(["[", '{"a":', "[1,", '{"":[']),
)
def test_fuzz_dispatcher_deep_nesting(
    loop_thread: LoopThread, node: Harness, prefix: str, depth: int, filler: str
) -> None:
    status, text = loop_thread.run(post(node, (prefix + filler * depth).encode()))
    check_reply(status, text)


# --- blob upload ---------------------------------------------------------------------

AUTH = ("__cookie__", "fuzz")
HEADERS = {"Authorization": "Basic " + base64.b64encode(b"__cookie__:fuzz").decode()}


def npy(matrix: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, matrix)
    return buf.getvalue()


def npz(matrix: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, a=matrix)
    return buf.getvalue()


@pytest.fixture(scope="module")
def blob_url(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = BlobServer(BlobStore(tmp_path_factory.mktemp("fuzz-blobs")), port=0, auth=AUTH)
    loop_thread.run(server.start())
    yield server.url
    loop_thread.run(server.stop())


async def upload(url: str, body: bytes, query: str = "kind=a") -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/blob?{query}", data=body, headers=HEADERS) as resp:
            return resp.status, await resp.text()


GOOD = np.arange(-64, 64, dtype=np.int8).reshape(8, 16)


def test_upload_refuses_what_is_not_one_npy_matrix_with_400(
    loop_thread: LoopThread, blob_url: str
) -> None:
    status, text = loop_thread.run(upload(blob_url, npy(GOOD)))
    assert status == 200 and len(json.loads(text)["root"]) == 64
    header_end = npy(GOOD).index(b"\n") + 1
    cases = {
        "zip magic only": bytes.fromhex("504b0304"),
        "a valid .npz": npz(GOOD),
        "an empty zip": _empty_zip(),
        "malformed .npy header": npy(GOOD)[:10] + b"{'descr': '<i1', 'fortran_order': (" + b" " * 9,
        "truncated header": npy(GOOD)[:20],
        "empty body": b"",
        "header promises more": npy(GOOD)[:header_end] + b"\x00" * 10,
        "huge shape": npy(GOOD).replace(b"(8, 16)", b"(99999999999, 99999999)"),
        "1-D": npy(np.arange(16, dtype=np.int8)),
        "3-D": npy(np.zeros((2, 2, 2), dtype=np.int8)),
        "floats": npy(GOOD.astype(np.float64)),
        "object array": npy(np.array([[1, "x"]], dtype=object)),
        "zero rows": npy(np.zeros((0, 16), dtype=np.int8)),
        "pickle": b"\x80\x04K\x01.",
    }
    for name, body in cases.items():
        status, text = loop_thread.run(upload(blob_url, body))
        assert status == 400, (name, status, text)
    status, _ = loop_thread.run(upload(blob_url, npy(GOOD), "kind=a&root=abcd"))
    assert status == 400


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w"):
        pass
    return buf.getvalue()


@FUZZ
@given(
    data=st.data(),
    cut=st.integers(0, 200),
    kind=st.sampled_from(["a", "bt", "c", "x"]),
)
def test_fuzz_blob_upload_answers_200_or_4xx(
    loop_thread: LoopThread, blob_url: str, data: st.DataObject, cut: int, kind: str
) -> None:
    base = npy(GOOD if kind != "c" else GOOD.astype("<i4"))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "splice", "random"]))
    if mutation == "flip":
        pos = data.draw(st.integers(0, len(base) - 1))
        body = base[:pos] + bytes([base[pos] ^ data.draw(st.integers(1, 255))]) + base[pos + 1:]
    elif mutation == "truncate":
        body = base[: min(cut, len(base))]
    elif mutation == "splice":
        body = base[:cut] + data.draw(st.binary(max_size=64)) + base[cut:]
    else:
        body = data.draw(st.binary(max_size=300))
    status, text = loop_thread.run(upload(blob_url, body, f"kind={kind}"))
    assert status == 200 or 400 <= status < 500, (status, text)
