"""Slow and greedy clients over real sockets: header, body and keep-alive timeouts, the
connection cap and the per-WebSocket subscription cap (docs/RPC.md, "Limits")."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.test_rpc_util import Harness, run_node

TIMEOUT = 1.0  # the node's idle and body timeouts in these tests, seconds
LIMITS = {"rpc_idle_timeout": TIMEOUT, "rpc_body_timeout": TIMEOUT}
CALL = b'{"jsonrpc":"2.0","id":1,"method":"getblockcount"}'


async def open_raw(h: Harness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", h.rpc.port)


def request_head(h: Harness, length: int) -> bytes:
    return (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {h.auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def closed_after(reader: asyncio.StreamReader, limit: float) -> tuple[float, bytes]:
    """Read until the server closes; (seconds it took, what came)."""
    t0 = time.monotonic()
    data = await asyncio.wait_for(reader.read(), limit)
    return time.monotonic() - t0, data


def test_unfinished_headers_are_cut_off(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        reader, writer = await open_raw(h)
        writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        took, data = await closed_after(reader, 10 * TIMEOUT)
        assert took < 5 * TIMEOUT and data == b""
        writer.close()
        # A connection that sends nothing at all is closed too.
        reader, writer = await open_raw(h)
        took, _ = await closed_after(reader, 10 * TIMEOUT)
        assert took < 5 * TIMEOUT
        writer.close()

    run_node(tmp_path, body, extra=LIMITS)


def test_dripped_body_is_cut_off_with_408(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        reader, writer = await open_raw(h)
        writer.write(request_head(h, len(CALL)))
        t0 = time.monotonic()

        async def drip() -> None:
            for byte in CALL:
                writer.write(bytes([byte]))
                await asyncio.sleep(TIMEOUT / 3)

        async def reply_until_closed() -> bytes:
            # The node closes without reading the rest of the body: a drip byte that
            # reaches it after that is answered with a reset, which may end the read
            # after the 408 is already here (it must be).
            data = b""
            try:
                while chunk := await reader.read(65536):
                    data += chunk
            except ConnectionResetError:
                pass
            return data

        dripping = asyncio.create_task(drip())
        try:
            data = await asyncio.wait_for(reply_until_closed(), 10 * TIMEOUT)
        finally:
            dripping.cancel()
        assert time.monotonic() - t0 < 5 * TIMEOUT
        head, _, reply = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and json.loads(reply)["error"]["code"] == -32600
        writer.close()
        # A prompt body on a fresh connection is answered as usual.
        status, reply = await h.post(CALL)
        assert status == 200 and reply["result"] == 0

    run_node(tmp_path, body, extra=LIMITS)


def test_idle_keepalive_connection_is_closed(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        reader, writer = await open_raw(h)
        for _ in range(2):  # two calls on one connection, each answered
            writer.write(request_head(h, len(CALL)) + CALL)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert json.loads(await reader.readexactly(length))["result"] == 0
        took, data = await closed_after(reader, 10 * TIMEOUT)  # then idle: closed
        assert took < 5 * TIMEOUT and data == b""
        writer.close()

    run_node(tmp_path, body, extra=LIMITS)


def test_connection_cap_answers_503_past_it(tmp_path: Path) -> None:
    cap = 4

    async def body(h: Harness) -> None:
        held = [await open_raw(h) for _ in range(cap)]
        await asyncio.sleep(0.2)  # let the server accept them all
        reader, writer = await open_raw(h)
        _, data = await closed_after(reader, 10)
        head, _, reply = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert json.loads(reply)["error"] == {"code": -1, "message": "too many connections"}
        writer.close()
        # The held connections still work, and closing one makes room again.
        r0, w0 = held[0]
        w0.write(request_head(h, len(CALL)) + CALL)
        assert (await asyncio.wait_for(r0.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
        for _, w in held:
            w.close()
        await asyncio.sleep(0.3)
        status, reply = await h.post(CALL)
        assert status == 200 and reply["result"] == 0

    run_node(tmp_path, body, extra={"rpc_max_connections": cap})


def test_subscriptions_per_socket_are_capped(tmp_path: Path) -> None:
    cap = 5

    async def body(h: Harness) -> None:
        async with h.session.ws_connect(h.url + "ws", headers={"Authorization": h.auth}) as ws:

            async def call(method: str, *params: object) -> dict:
                await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                              "params": list(params)}))  # fmt: skip
                return json.loads((await ws.receive(timeout=10)).data)

            subs = [(await call("subscribe", "newHeads"))["result"] for _ in range(cap)]
            err = (await call("subscribe", "newTransactions"))["error"]
            assert err == {"code": -1, "message":
                           f"too many subscriptions on this socket (at most {cap})"}  # RPC.md
            assert (await call("unsubscribe", subs[0]))["result"] is True
            assert isinstance((await call("subscribe", "newTransactions"))["result"], str)
        # Another socket has its own allowance.
        async with h.session.ws_connect(h.url + "ws", headers={"Authorization": h.auth}) as ws:
            await ws.send_str('{"jsonrpc":"2.0","id":1,"method":"subscribe","params":["jobs"]}')
            assert "result" in json.loads((await ws.receive(timeout=10)).data)

    run_node(tmp_path, body, extra={"rpc_max_subscriptions": cap})


def test_a_subscribe_sent_as_a_notification_subscribes_nothing(tmp_path: Path) -> None:
    """Without an id the subscription's id could never reach the client: nothing is
    subscribed (nor answered), and the socket's allowance stays whole."""
    cap = 2

    async def body(h: Harness) -> None:
        async with h.session.ws_connect(h.url + "ws", headers={"Authorization": h.auth}) as ws:
            for _ in range(cap + 1):
                await ws.send_str('{"jsonrpc":"2.0","method":"subscribe","params":["newHeads"]}')
            for i in range(cap):
                await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": i, "method": "subscribe",
                                              "params": ["newHeads"]}))  # fmt: skip
                reply = json.loads((await ws.receive(timeout=10)).data)
                assert reply["id"] == i and isinstance(reply.get("result"), str), reply
            assert h.rpc.sessions and all(len(s.subs) == cap for s in h.rpc.sessions)

    run_node(tmp_path, body, extra={"rpc_max_subscriptions": cap})


def test_oversized_headers_get_400(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for extra in (f"X-Big: {'a' * 9000}\r\n",  # one header past 8190 bytes
                      "".join(f"X-{i}: 1\r\n" for i in range(200))):  # past 128 headers
            reader, writer = await open_raw(h)
            head = request_head(h, len(CALL)).replace(b"\r\n\r\n", b"\r\n" + extra.encode()
                                                      + b"\r\n")  # fmt: skip
            writer.write(head + CALL)
            _, data = await closed_after(reader, 10)
            assert data.split(b" ")[1] == b"400", data[:80]  # aiohttp's parser refuses it
            writer.close()

    run_node(tmp_path, body)


def test_waiting_calls_of_clients_that_left_free_their_connections(tmp_path: Path) -> None:
    """Long-polls (waitfornewblock with no timeout, over HTTP and WebSocket) whose
    clients hang up stop within GONE_CHECK_S: before, each kept its connection slot
    until the tip changed, so a client that opened and dropped as many as the cap
    locked every later caller out with 503 on an idle chain."""
    from node.rpc.service import GONE_CHECK_S

    cap = 4
    wait = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "waitfornewblock", "params": [0]})

    async def body(h: Harness) -> None:
        for _ in range(3):  # past the cap in all, each left waiting
            dropped = []
            for _ in range(cap - 1):
                reader, writer = await open_raw(h)
                writer.write(request_head(h, len(wait)) + wait.encode())
                dropped.append(writer)
            ws = await h.session.ws_connect(h.url + "ws", headers={"Authorization": h.auth})
            await ws.send_str(wait)
            await asyncio.sleep(0.3)  # each call is waiting now
            for writer in dropped:
                writer.close()
            await ws.close()
            deadline = time.monotonic() + 3 * GONE_CHECK_S + 2
            while True:  # every slot comes free: as many fresh calls at once are answered
                answers = await asyncio.gather(*(h.post(CALL) for _ in range(cap)))
                if all(status == 200 for status, _ in answers):
                    break
                assert time.monotonic() < deadline, f"the slots stayed taken: {answers}"
                await asyncio.sleep(0.2)
            assert all(reply["result"] == 0 for _, reply in answers)

    run_node(tmp_path, body, extra={"rpc_max_connections": cap})


def _ws_text_frame(text: str) -> bytes:
    """One masked client text frame (RFC 6455) of ``text``."""
    data = text.encode()
    mask = b"\x01\x02\x03\x04"
    n = len(data)
    head = bytes([0x81]) + (
        bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_websocket_client_that_never_reads_is_dropped(tmp_path: Path) -> None:
    """A WebSocket client that asks and never reads its replies is dropped once they
    pass WS_QUEUE (docs/RPC.md, "Limits"): before, its replies piled up in our memory
    while the writer waited on it, and it was never closed. Other callers go on."""

    async def body(h: Harness) -> None:
        reader, writer = await open_raw(h)
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {h.auth}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(
            b"HTTP/1.1 101"
        )
        call = _ws_text_frame(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "help"}))
        dropped = False
        deadline = time.monotonic() + 30
        while not dropped and time.monotonic() < deadline:
            # help's reply is kilobytes: the socket buffers fill, then the node's queue;
            # we never read, so only the node closing the socket stops the writes
            try:
                writer.write(call * 64)
                await asyncio.wait_for(writer.drain(), 5)
                await asyncio.sleep(0.01)
            except ConnectionError:
                dropped = True
            except TimeoutError:
                break  # the node stopped reading us and kept the socket: the old fault
            dropped = dropped or writer.transport.is_closing() or reader.exception() is not None
        writer.transport.abort()
        assert dropped
        status, reply = await h.post(CALL)
        assert status == 200 and reply["result"] == 0

    run_node(tmp_path, body)


def test_one_websocket_reply_larger_than_the_byte_cap_goes_when_nothing_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue's byte cap is for replies piling up: a single reply larger than it (a
    verbose getrawmempool of a full pool is ~80 MB against 64 MiB) is sent when nothing
    waits, as HTTP sends it; before, the socket was cut on every such call."""
    import node.rpc.service as service

    monkeypatch.setattr(service, "WS_QUEUE_BYTES", 500)  # help's reply: ~760 bytes

    async def body(h: Harness) -> None:
        async with h.session.ws_connect(h.url + "ws", headers={"Authorization": h.auth}) as ws:
            for i in range(3):
                await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": i, "method": "help"}))
                reply = json.loads((await ws.receive(timeout=10)).data)
                assert reply["id"] == i and len(json.dumps(reply)) > 500, reply

    run_node(tmp_path, body)
