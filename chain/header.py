"""Block headers: the prefix every seed is derived from, and the seal that proves it.

Canonical encoding (all integers big-endian):

    version u32 | height u64 | parent 32 | timestamp u64 | target u256 | tx_root 32 |
    state_root 32 | miner 20 | job_id 32 | m u32 | k u32 | n u32 | h_a 32 | h_b 32
    -- the prefix ends here --
    seal varbytes (u32 length, at most MAX_SEAL_SIZE)

prefix_hash = H_header_prefix(prefix) is what the PoUW seeds bind, so the seal
commits to every other field. The block hash H_header(prefix || seal bytes) also
covers the seal, so two different winning tiles make two distinct blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from chain.encoding import DecodeError, Reader, Writer
from consensus.hashing import TAG_HEADER, TAG_HEADER_PREFIX, tagged_hash
from consensus.params import MAX_K, MAX_TILE_SIDE
from consensus.seal import Seal, SealDecodeError, WorkStatement

HEADER_VERSION = 1
ADDRESS_SIZE = 20
NO_JOB = bytes(32)  # job_id of self-chosen work (a miner's own workload or filler)
PREFIX_SIZE = 4 + 8 + 32 + 8 + 32 + 32 + 32 + 20 + 32 + 12 + 32 + 32
# The largest seal params allow: 2*64 revealed lines of MAX_K bytes, 128 branches of
# 32 hashes and the fixed fields. Checked before the seal bytes are read.
MAX_SEAL_SIZE = 10 + 2 * MAX_TILE_SIDE * MAX_K + 2 * MAX_TILE_SIDE * (1 + 32 * 32) + 32


@dataclass(frozen=True)
class Header:
    version: int
    height: int
    parent: bytes
    timestamp: int
    target: int
    tx_root: bytes
    state_root: bytes
    miner: bytes
    job_id: bytes
    m: int
    k: int
    n: int
    h_a: bytes
    h_b: bytes
    seal: bytes = b""  # encoded consensus.seal.Seal; empty only in the genesis block

    def write_prefix(self, w: Writer) -> None:
        w.u32(self.version).u64(self.height).bytes_n(self.parent, 32).u64(self.timestamp)
        w.u256(self.target).bytes_n(self.tx_root, 32).bytes_n(self.state_root, 32)
        w.bytes_n(self.miner, ADDRESS_SIZE).bytes_n(self.job_id, 32)
        w.u32(self.m).u32(self.k).u32(self.n).bytes_n(self.h_a, 32).bytes_n(self.h_b, 32)

    @cached_property
    def prefix_bytes(self) -> bytes:
        w = Writer()
        self.write_prefix(w)
        return w.getvalue()

    @cached_property
    def prefix_hash(self) -> bytes:
        return tagged_hash(TAG_HEADER_PREFIX, self.prefix_bytes)

    @cached_property
    def hash(self) -> bytes:
        return tagged_hash(TAG_HEADER, self.prefix_bytes, self.seal)

    def to_bytes(self) -> bytes:
        return Writer().raw(self.prefix_bytes).varbytes(self.seal).getvalue()

    def write_to(self, w: Writer) -> None:
        w.raw(self.prefix_bytes).varbytes(self.seal)

    @classmethod
    def read_from(cls, r: Reader) -> Header:
        return cls(
            version=r.u32("version"),
            height=r.u64("height"),
            parent=r.bytes_n(32, "parent"),
            timestamp=r.u64("timestamp"),
            target=r.u256("target"),
            tx_root=r.bytes_n(32, "tx_root"),
            state_root=r.bytes_n(32, "state_root"),
            miner=r.bytes_n(ADDRESS_SIZE, "miner"),
            job_id=r.bytes_n(32, "job_id"),
            m=r.u32("m"),
            k=r.u32("k"),
            n=r.u32("n"),
            h_a=r.bytes_n(32, "h_a"),
            h_b=r.bytes_n(32, "h_b"),
            seal=r.varbytes(MAX_SEAL_SIZE, "seal"),
        )

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Header:
        r = Reader(data)
        header = cls.read_from(r)
        r.finish()
        return header

    def work_statement(self) -> WorkStatement:
        return WorkStatement(
            self.prefix_hash, self.m, self.k, self.n, self.h_a, self.h_b, self.target
        )

    def decoded_seal(self) -> Seal:
        """The seal object; raises DecodeError for a malformed one."""
        try:
            return Seal.from_bytes(self.seal)
        except SealDecodeError as exc:
            raise DecodeError(f"seal: {exc}") from exc

    def with_seal(self, seal: Seal) -> Header:
        return Header(
            self.version, self.height, self.parent, self.timestamp, self.target,
            self.tx_root, self.state_root, self.miner, self.job_id, self.m, self.k,
            self.n, self.h_a, self.h_b, seal.to_bytes(),
        )  # fmt: skip
