"""The inbound handshake gate (p2p/handshake_cap.py) on byte streams cut every way:
frames split over reads, several frames in one read, pings between, and each refusal.
The stream starts at the socket's first byte (the HTTP upgrade request). The node-level
cases (a real node, real sockets) are in tests/test_p2p_hostile.py."""

from __future__ import annotations

import os

import pytest

from p2p.handshake_cap import PRE_HANDSHAKE_BYTES, HandshakeGate
from p2p.protocol import Empty, Inv, InvType, MsgType, Ping, Version, encode
from tests.p2putil import RawWsPeer

REQUEST = (
    b"GET /p2p HTTP/1.1\r\nHost: 127.0.0.1:1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def version_frame() -> bytes:
    v = Version(protocol=1, chain_id=1, genesis=bytes(32), best_height=0, best_work=0,
                nonce=7, listen_port=0, user_agent="/t/")  # fmt: skip
    return RawWsPeer.frame(encode(v))


def ping_control_frame() -> bytes:
    """A WebSocket ping (opcode 9), masked, 4 bytes of payload."""
    return bytes([0x89, 0x84]) + os.urandom(4) + b"abcd"


def feed(stream: bytes, step: int) -> tuple[HandshakeGate, list[str], int]:
    """The gate fed ``REQUEST + stream`` in chunks of ``step`` bytes: itself, the
    refusals, and how many bytes it let through (to aiohttp) before one."""
    gate, refused, passed = HandshakeGate(), [], 0
    data = REQUEST + stream
    for at in range(0, len(data), step):
        chunk = data[at : at + step]
        why = gate.check(chunk)
        if why is not None:
            refused.append(why)
            break
        passed += len(chunk)
    return gate, refused, passed


AFTER = b"".join(
    RawWsPeer.frame(encode(m))
    for m in (Inv(tuple((InvType.TX, bytes([i]) * 32) for i in range(200))), Ping(5))
) + RawWsPeer.frame(bytes([MsgType.BLOCK]) + bytes(70_000))  # fmt: skip


@pytest.mark.parametrize("step", [1, 3, 7, 64, 1 << 20])
def test_an_honest_handshake_passes_and_the_gate_steps_out(step: int) -> None:
    stream = version_frame() + ping_control_frame() + RawWsPeer.frame(
        encode(Empty(MsgType.VERACK))
    ) + AFTER  # fmt: skip
    gate, refused, passed = feed(stream, step)
    assert refused == [] and passed == len(REQUEST + stream) and gate.done
    # done at the verack: what follows is never judged (a 70 KB frame above, any frame)
    assert gate.check(RawWsPeer.frame(bytes([MsgType.BLOCK]), declared=1 << 24)) is None


def test_bytes_sent_with_the_upgrade_request_are_judged_too() -> None:
    """A peer that sends a frame in the same write as its HTTP request (before the
    node's 101) reaches the gate in the request's chunk: judged all the same."""
    big = RawWsPeer.frame(bytes([MsgType.BLOCK]) + bytes(99), declared=1 + (8 << 20))
    why = HandshakeGate().check(REQUEST + version_frame() + big)
    assert why == f"BLOCK of {1 + (8 << 20)} bytes before the handshake"
    honest = REQUEST + version_frame() + RawWsPeer.frame(encode(Empty(MsgType.VERACK))) + big
    gate = HandshakeGate()
    assert gate.check(honest) is None and gate.done


REFUSED = [
    (RawWsPeer.frame(encode(Empty(MsgType.VERACK))), "VERACK out of order in the handshake"),
    (version_frame() + version_frame(), "VERSION out of order in the handshake"),
    (RawWsPeer.frame(encode(Ping(1))), "PING before the handshake"),
    (version_frame() + RawWsPeer.frame(bytes([MsgType.BLOCK]) + bytes(99),
                                       declared=1 + (20 << 20)),
     f"BLOCK of {1 + (20 << 20)} bytes before the handshake"),
    (RawWsPeer.frame(b""), "an empty frame before the handshake"),
    (RawWsPeer.frame(bytes([250])), "message type 250 before the handshake"),
    (bytes([0x81, 0x81]) + bytes(4) + b"x", "a fragmented or text frame before the handshake"),
    (ping_control_frame() * (PRE_HANDSHAKE_BYTES // 10 + 1), "bytes before the handshake"),
]  # fmt: skip


# (ids from the reasons: the frames' masks are random, and every pytest-xdist worker
# must collect the same names)
@pytest.mark.parametrize(("stream", "why"), REFUSED, ids=[why for _, why in REFUSED])
@pytest.mark.parametrize("step", [1, 5, 1 << 20])
def test_anything_else_before_the_verack_cuts_the_socket(
    stream: bytes, why: str, step: int
) -> None:
    gate, refused, passed = feed(stream, step)
    assert len(refused) == 1 and why in refused[0] and gate.done, refused
    assert passed < len(REQUEST + stream)  # the refused chunk never reached aiohttp


def test_only_the_p2p_upgrade_request_opens_the_gate() -> None:
    """A request body (aiohttp reads it before any upgrade) or another request (a 404 kept
    alive) would carry fake frames past the gate: anything but the bodiless upgrade to
    /p2p is cut, without discouraging a stray HTTP client."""
    fake = version_frame() + RawWsPeer.frame(encode(Empty(MsgType.VERACK)))
    with_body = REQUEST.replace(b"\r\n\r\n", f"\r\nContent-Length: {len(fake)}\r\n\r\n".encode())
    chunked = REQUEST.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    elsewhere = REQUEST.replace(b"GET /p2p ", b"GET /x ")
    plain = REQUEST.replace(b"Upgrade: websocket\r\n", b"")
    cases = ((with_body, "with a body"), (chunked, "with a body"),
             (elsewhere, "not a P2P upgrade"), (plain, "not a P2P upgrade"))  # fmt: skip
    for request, why in cases:
        gate = HandshakeGate()
        refused = gate.check(request + fake)
        assert refused is not None and why in refused and not gate.discourage, refused
    gate = HandshakeGate()  # blank lines before the request line are skipped, as parsers do
    assert gate.check(b"\r\n\r\n" + REQUEST + fake) is None and gate.done
    assert HandshakeGate().check(b"x" * (17 * 1024)) is not None  # a head without end
