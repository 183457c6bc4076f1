"""The block index record: one known header, on the active chain or a side chain, as
chain/storage.py stores it under ``b"i" + hash`` (its encoding is part of the
database's schema version, chain/storage.SCHEMA_VERSION)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from chain.storage_errors import CorruptionError

HASH_LEN = 32
MAX_WORK_BYTES = 64  # cumulative work is capped at 2**512 - 1
_U64_MAX = 2**64 - 1


def check_hash(value: bytes, what: str = "hash") -> bytes:
    if type(value) is not bytes:
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    if len(value) != HASH_LEN:
        raise ValueError(f"{what} must be {HASH_LEN} bytes, got {len(value)}")
    return value


def check_height(height: int) -> int:
    if isinstance(height, bool) or not isinstance(height, int):
        raise TypeError(f"height must be int, not {type(height).__name__}")
    if not 0 <= height <= _U64_MAX:
        raise ValueError(f"height {height} out of u64 range")
    return height


class BlockStatus(enum.IntFlag):
    """Validation progress of a block in the index (stored as u32)."""

    NONE = 0
    HEADER_VALID = 1  # header checked (PoUW seal, difficulty, time)
    DATA_STORED = 2  # the body is stored under b"b" + hash
    VALID = 4  # fully validated (connected at least once)
    INVALID = 8  # failed validation; never connect it or its descendants


_STATUS_ALL = int(
    BlockStatus.HEADER_VALID | BlockStatus.DATA_STORED | BlockStatus.VALID | BlockStatus.INVALID
)

# hash(32) parent(32) height(u64) work_len(u16) | work(work_len) | status(u32) timestamp(u64)
_INDEX_HEAD = struct.Struct(">32s32sQH")
_INDEX_TAIL = struct.Struct(">IQ")
INDEX_RECORD_MIN_LEN = _INDEX_HEAD.size + _INDEX_TAIL.size  # 86
INDEX_RECORD_MAX_LEN = INDEX_RECORD_MIN_LEN + MAX_WORK_BYTES  # 150


@dataclass(frozen=True, slots=True)
class IndexRecord:
    """One block index entry: a known header, on the active chain or a side chain.

    ``parent`` is 32 zero bytes for the genesis block. ``cumulative_work`` is the
    chain work up to and including this block (non-negative, at most 64 bytes).

    Encoding (big-endian): hash 32 | parent 32 | height u64 | work length u16 |
    work bytes (minimal, no leading zero byte; empty for 0) | status u32 | timestamp u64.
    """

    hash: bytes
    parent: bytes
    height: int
    cumulative_work: int
    status: BlockStatus
    timestamp: int

    def __post_init__(self) -> None:
        check_hash(self.hash, "hash")
        check_hash(self.parent, "parent")
        check_height(self.height)
        work = self.cumulative_work
        if isinstance(work, bool) or not isinstance(work, int):
            raise TypeError("cumulative_work must be int")
        if work < 0 or work.bit_length() > 8 * MAX_WORK_BYTES:
            raise ValueError(f"cumulative_work out of range (0 .. 2**{8 * MAX_WORK_BYTES}-1)")
        status = self.status
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError("status must be a BlockStatus")
        if int(status) & ~_STATUS_ALL:
            raise ValueError(f"unknown status bits in {int(status):#x}")
        if not isinstance(status, BlockStatus):
            object.__setattr__(self, "status", BlockStatus(int(status)))
        ts = self.timestamp
        if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= _U64_MAX:
            raise ValueError("timestamp must be an int in u64 range")

    def to_bytes(self) -> bytes:
        work = self.cumulative_work
        work_bytes = work.to_bytes((work.bit_length() + 7) // 8, "big")
        return (
            _INDEX_HEAD.pack(self.hash, self.parent, self.height, len(work_bytes))
            + work_bytes
            + _INDEX_TAIL.pack(int(self.status), self.timestamp)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> IndexRecord:
        """Decode strictly; anything but a canonical encoding raises CorruptionError."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("from_bytes needs bytes")
        data = bytes(data)
        n = len(data)
        if n < INDEX_RECORD_MIN_LEN:
            raise CorruptionError(
                f"index record too short: {n} bytes (minimum {INDEX_RECORD_MIN_LEN})"
            )
        block_hash, parent, height, work_len = _INDEX_HEAD.unpack_from(data, 0)
        if work_len > MAX_WORK_BYTES:
            raise CorruptionError(f"index record work length {work_len} > {MAX_WORK_BYTES}")
        if n != INDEX_RECORD_MIN_LEN + work_len:
            raise CorruptionError(
                f"index record length {n} does not match its work length {work_len} "
                f"(expected {INDEX_RECORD_MIN_LEN + work_len})"
            )
        off = _INDEX_HEAD.size
        work_bytes = data[off : off + work_len]
        if work_len and work_bytes[0] == 0:
            raise CorruptionError("index record work is not minimally encoded")
        status, timestamp = _INDEX_TAIL.unpack_from(data, off + work_len)
        if status & ~_STATUS_ALL:
            raise CorruptionError(f"index record has unknown status bits {status:#x}")
        return cls(
            hash=block_hash,
            parent=parent,
            height=height,
            cumulative_work=int.from_bytes(work_bytes, "big"),
            status=BlockStatus(status),
            timestamp=timestamp,
        )
