"""chain/encoding.py: canonical Writer/Reader, and every DecodeError path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.encoding import DecodeError, Reader, Writer

U64 = st.integers(0, 2**64 - 1)

# One field of an encoding: (kind, value) pairs drive both the writer and the reader.
FIELD = st.one_of(
    st.tuples(st.just("u8"), st.integers(0, 2**8 - 1)),
    st.tuples(st.just("u16"), st.integers(0, 2**16 - 1)),
    st.tuples(st.just("u32"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("u64"), U64),
    st.tuples(st.just("u256"), st.integers(0, 2**256 - 1)),
    st.tuples(st.just("bytes_n"), st.binary(max_size=40)),
    st.tuples(st.just("varbytes"), st.binary(max_size=300)),
)


def _write(fields: list[tuple[str, object]]) -> bytes:
    w = Writer()
    for kind, value in fields:
        if kind == "bytes_n":
            assert isinstance(value, bytes)
            w.bytes_n(value, len(value))
        else:
            getattr(w, kind)(value)
    return w.getvalue()


def _read(data: bytes | memoryview, fields: list[tuple[str, object]]) -> list[object]:
    r = Reader(data)
    out: list[object] = []
    for kind, value in fields:
        if kind == "bytes_n":
            assert isinstance(value, bytes)
            out.append(r.bytes_n(len(value)))
        elif kind == "varbytes":
            out.append(r.varbytes(1000))
        else:
            out.append(getattr(r, kind)())
    r.finish()
    return out


@given(st.lists(FIELD, max_size=12))
def test_round_trip(fields: list[tuple[str, object]]) -> None:
    data = _write(fields)
    assert _read(data, fields) == [v for _, v in fields]
    assert _read(memoryview(data), fields) == [v for _, v in fields]
    assert _read(bytearray(data), fields) == [v for _, v in fields]


@given(st.lists(FIELD, min_size=1, max_size=8), st.data())
def test_every_truncation_is_a_decode_error(
    fields: list[tuple[str, object]], data: st.DataObject
) -> None:
    encoded = _write(fields)
    if not encoded:
        return
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DecodeError):
        _read(encoded[:cut], fields)


@given(st.lists(FIELD, max_size=8), st.binary(min_size=1, max_size=10))
def test_trailing_bytes_are_a_decode_error(fields: list[tuple[str, object]], extra: bytes) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        _read(_write(fields) + extra, fields)


def test_big_endian_layout() -> None:
    w = Writer().u8(1).u16(0x0203).u32(0x04050607).u64(0x08090A0B0C0D0E0F)
    w.u256(1).bytes_n(b"\xaa\xbb", 2).varbytes(b"xyz")
    assert w.getvalue() == (
        bytes(range(1, 16)) + bytes(31) + b"\x01" + b"\xaa\xbb" + b"\x00\x00\x00\x03xyz"
    )
    assert len(w) == 15 + 32 + 2 + 7


def test_truncated_names_the_field_and_offset() -> None:
    r = Reader(b"\x00\x01\x02")
    with pytest.raises(DecodeError, match=r"nonce needs 8 bytes at offset 0, only 3 left"):
        r.u64("nonce")


@pytest.mark.parametrize(
    "method, size", [("u8", 1), ("u16", 2), ("u32", 4), ("u64", 8), ("u256", 32)]
)
def test_each_int_reader_truncates(method: str, size: int) -> None:
    with pytest.raises(DecodeError, match="truncated"):
        getattr(Reader(bytes(size - 1)), method)()
    assert getattr(Reader(b"\xff" * size), method)() == 2 ** (8 * size) - 1


def test_bytes_n_truncated() -> None:
    with pytest.raises(DecodeError, match="truncated: sig needs 64 bytes"):
        Reader(bytes(63)).bytes_n(64, "sig")


def test_varbytes_length_prefix_truncated() -> None:
    with pytest.raises(DecodeError, match="payload length needs 4 bytes"):
        Reader(b"\x00\x00").varbytes(10, "payload")


def test_varbytes_body_truncated() -> None:
    with pytest.raises(DecodeError, match="truncated: payload needs 5 bytes at offset 4"):
        Reader(b"\x00\x00\x00\x05abc").varbytes(10, "payload")


def test_varbytes_cap_checked_before_the_body() -> None:
    # A prefix announcing 4 GiB with no body must fail on the cap, not on truncation:
    # the cap check comes before any slicing or allocation.
    with pytest.raises(DecodeError, match="payload length 4294967295 exceeds the cap of 1024"):
        Reader(b"\xff\xff\xff\xff").varbytes(1024, "payload")
    with pytest.raises(DecodeError, match="exceeds the cap"):
        Reader(b"\x00\x00\x00\x03abc").varbytes(2)
    assert Reader(b"\x00\x00\x00\x02ab").varbytes(2) == b"ab"


def test_finish_and_offsets() -> None:
    r = Reader(b"\x01\x02\x03")
    assert r.u8() == 1 and r.offset == 1 and r.remaining == 2
    with pytest.raises(DecodeError, match="trailing data: 2 bytes"):
        r.finish()
    r.u16()
    r.finish()


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


def test_reader_accepts_non_byte_memoryview() -> None:
    import array

    arr = array.array("H", [0x0102])
    r = Reader(memoryview(arr))
    assert r.remaining == 2


@pytest.mark.parametrize(
    "method, value",
    [("u8", 256), ("u16", 2**16), ("u32", -1), ("u64", 2**64), ("u256", 2**256), ("u256", -1)],
)
def test_writer_rejects_out_of_range(method: str, value: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        getattr(Writer(), method)(value)


def test_writer_rejects_wrong_fixed_length() -> None:
    with pytest.raises(ValueError, match="needs 32 bytes, got 31"):
        Writer().bytes_n(bytes(31), 32)
