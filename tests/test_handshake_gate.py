"""The inbound handshake gate (p2p/handshake_cap.py) on byte streams cut every way:
frames split over reads, several frames in one read, pings between, and each refusal.
The node-level cases (a real node, real sockets) are in tests/test_p2p_hostile.py."""

from __future__ import annotations

import asyncio
import os

import pytest

from p2p.handshake_cap import PRE_HANDSHAKE_BYTES, HandshakeGate
from p2p.protocol import Empty, Inv, InvType, MsgType, Ping, Version, encode
from tests.p2putil import RawWsPeer


class Transport(asyncio.Transport):
    """The socket side: which protocol it talks to, and whether it was cut."""

    def __init__(self, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.aborted = False

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class Inner(asyncio.Protocol):
    """aiohttp's side: the bytes it was given."""

    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data


def version_frame() -> bytes:
    v = Version(protocol=1, chain_id=1, genesis=bytes(32), best_height=0, best_work=0,
                nonce=7, listen_port=0, user_agent="/t/")  # fmt: skip
    return RawWsPeer.frame(encode(v))


def ping_control_frame() -> bytes:
    """A WebSocket ping (opcode 9), masked, 4 bytes of payload."""
    return bytes([0x89, 0x84]) + os.urandom(4) + b"abcd"


def feed(stream: bytes, step: int) -> tuple[Transport, Inner, list[str]]:
    inner, refused = Inner(), []
    transport = Transport(inner)
    gate = HandshakeGate.install(transport, refused.append)
    assert gate is not None and transport.protocol is gate
    for at in range(0, len(stream), step):
        protocol = transport.protocol
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(stream[at : at + step])
        if transport.aborted:
            break
    return transport, inner, refused


AFTER = b"".join(
    RawWsPeer.frame(encode(m))
    for m in (Inv(tuple((InvType.TX, bytes([i]) * 32) for i in range(200))), Ping(5))
) + RawWsPeer.frame(bytes([MsgType.BLOCK]) + bytes(70_000))  # fmt: skip


@pytest.mark.parametrize("step", [1, 3, 7, 64, 1 << 20])
def test_an_honest_handshake_passes_and_the_gate_steps_out(step: int) -> None:
    stream = version_frame() + ping_control_frame() + RawWsPeer.frame(
        encode(Empty(MsgType.VERACK))
    ) + AFTER  # fmt: skip
    transport, inner, refused = feed(stream, step)
    assert refused == [] and not transport.aborted
    assert bytes(inner.data) == stream  # every byte passed on, in order
    assert transport.protocol is inner  # released: later bytes go straight to aiohttp


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
    transport, inner, refused = feed(stream, step)
    assert transport.aborted and len(refused) == 1 and why in refused[0], refused
    assert len(inner.data) < len(stream)  # the refused bytes never reached aiohttp
