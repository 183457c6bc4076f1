"""Blocks: a header and its transactions, with the size caps checked before decoding.

Encoding: header | u32 tx count | each transaction's wire form. The miner's reward is
not a transaction: the header's ``miner`` field receives it (see chain/state.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from chain.encoding import DecodeError, Reader, Writer
from chain.header import MAX_SEAL_SIZE, PREFIX_SIZE, Header
from chain.tx import MAX_TX_SIZE, TX_FIXED_SIZE, Transaction, transactions_root

# Transfers are ~200 bytes; 4 MiB of them is ~20k per block, which the connect
# benchmark sustains in well under a block interval on one core.
MAX_BLOCK_TX_BYTES = 4 * 1024 * 1024
MAX_BLOCK_TXS = MAX_BLOCK_TX_BYTES // TX_FIXED_SIZE
MAX_BLOCK_SIZE = PREFIX_SIZE + 4 + MAX_SEAL_SIZE + 4 + MAX_BLOCK_TX_BYTES


@dataclass(frozen=True)
class Block:
    header: Header
    txs: tuple[Transaction, ...]

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def to_bytes(self) -> bytes:
        w = Writer()
        self.header.write_to(w)
        w.u32(len(self.txs))
        for tx in self.txs:
            tx.write_to(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Block:
        if len(data) > MAX_BLOCK_SIZE:
            raise DecodeError(f"block is {len(data)} bytes, the maximum is {MAX_BLOCK_SIZE}")
        r = Reader(data)
        header = Header.read_from(r)
        count = r.u32("tx count")
        if count > MAX_BLOCK_TXS:
            raise DecodeError(f"block claims {count} transactions, the maximum is {MAX_BLOCK_TXS}")
        if r.remaining > MAX_BLOCK_TX_BYTES:
            raise DecodeError(
                f"block carries {r.remaining} transaction bytes, the maximum is "
                f"{MAX_BLOCK_TX_BYTES}"
            )
        if count * TX_FIXED_SIZE > r.remaining:
            raise DecodeError(f"block claims {count} transactions but has {r.remaining} bytes")
        txs = tuple(Transaction.read_from(r) for _ in range(count))
        r.finish()
        return cls(header, txs)

    @cached_property
    def tx_bytes(self) -> int:
        return sum(len(tx.to_bytes()) for tx in self.txs)

    def computed_tx_root(self) -> bytes:
        return transactions_root(self.txs)


def tx_bytes_fit(txs: Sequence[Transaction]) -> bool:
    return len(txs) <= MAX_BLOCK_TXS and sum(len(t.to_bytes()) for t in txs) <= MAX_BLOCK_TX_BYTES


assert MAX_TX_SIZE < MAX_BLOCK_TX_BYTES
