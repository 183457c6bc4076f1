"""Wire encoding: round trips, and every cap checked before decoding."""

from __future__ import annotations

import pytest

from chain.encoding import DecodeError
from p2p.protocol import (
    MAX_FRAME,
    MAX_HEADERS,
    MAX_INV,
    MAX_PAYLOAD,
    Addr,
    Empty,
    GetHeaders,
    Inv,
    InvType,
    MsgType,
    Ping,
    Version,
    decode,
    encode,
)


@pytest.mark.parametrize(
    "msg",
    [
        Version(1, 3, bytes(32), 7, 2**200, 99, 29333, "/pouw:0.1/"),
        Empty(MsgType.VERACK),
        Ping(5),
        Inv(((InvType.BLOCK, b"\x01" * 32), (InvType.TX, b"\x02" * 32))),
        GetHeaders((b"\x03" * 32,), bytes(32)),
        GetHeaders((b"\x03" * 32,), bytes(32), 300_000),
        Addr((("127.0.0.1", 29333, 1_700_000_000),)),
    ],
)
def test_round_trip(msg: object) -> None:
    frame = encode(msg)  # type: ignore[arg-type]
    assert decode(frame) == msg
    assert encode(decode(frame)) == frame


def test_caps_are_checked_before_decoding() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        decode(bytes([MsgType.PING]) + bytes(9))
    with pytest.raises(DecodeError, match="cap"):
        decode(bytes([MsgType.INV]) + (MAX_INV + 1).to_bytes(2, "big"))
    with pytest.raises(DecodeError, match="cap"):
        decode(bytes([MsgType.HEADERS]) + (MAX_HEADERS + 1).to_bytes(2, "big"))
    with pytest.raises(DecodeError):
        decode(bytes(MAX_FRAME + 1))
    with pytest.raises(DecodeError, match="unknown message type"):
        decode(b"\xfe")
    with pytest.raises(DecodeError, match="trailing"):
        decode(encode(GetHeaders((), bytes(32), 5)) + b"\x00")
    with pytest.raises(DecodeError):  # max_bytes is a u32: 1 to 3 bytes are truncated
        decode(encode(GetHeaders((), bytes(32))) + b"\x00")
    with pytest.raises(DecodeError, match="max_bytes 0"):  # one encoding per value
        decode(encode(GetHeaders((), bytes(32))) + bytes(4))
    assert len(encode(GetHeaders((), bytes(32), 1))) == len(encode(GetHeaders((), bytes(32)))) + 4
    assert MAX_PAYLOAD[MsgType.VERACK] == 0
