"""The typed reads and single-key writes of each record in the chain's LevelDB (blocks,
index records, undo data, the active chain, state, the transaction index, metadata):
ChainDB's (chain/storage.py) on top of its raw access. Key layout: chain/storage_keys.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from chain.encoding import DecodeError
from chain.header import Header
from chain.index_record import HASH_LEN, IndexRecord, check_hash
from chain.storage_errors import CorruptBlockError, CorruptionError, StorageError, reindex_command
from chain.storage_keys import (
    MAX_RECEIPT,
    META_GENESIS,
    META_REINDEX,
    META_REORG,
    META_TIP,
    PREFIX_ADDRESS_TX,
    PREFIX_BLOCK,
    PREFIX_INDEX,
    PREFIX_TX,
    block_key,
    check_bytes,
    header_key,
    height_key,
    index_key,
    state_key,
    undo_key,
)

_E = TypeVar("_E", bound=StorageError)


def _stored_hash(raw: bytes | None, what: str) -> bytes | None:
    if raw is not None and len(raw) != HASH_LEN:
        raise CorruptionError(f"{what} holds {len(raw)} bytes, expected {HASH_LEN}")
    return raw


class ChainRecords:
    """The records of a ChainDB (a mixin: ChainDB supplies the raw access below)."""

    _path: Path
    _network: str
    block_check: Callable[[bytes, bytes], str | None] | None

    if TYPE_CHECKING:  # ChainDB's raw access (chain/storage.py), declared for the checker

        def _get(self, key: bytes) -> bytes | None: ...

        def _iter(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...

        def _put_one(self, key: bytes, value: bytes, sync: bool) -> None: ...

        def _delete_one(self, key: bytes, sync: bool) -> None: ...

        def _fault(self, error: _E) -> _E: ...

    # --- blocks

    def get_block(
        self, block_hash: bytes, *, report: bool = True, check: bool = True
    ) -> bytes | None:
        """The stored bytes of a block; with a ``block_check`` set (ChainState sets one),
        checked against its hash first: CorruptBlockError names the height and the fix.
        ``report=False``: the caller handles damage itself (``on_fault`` is not told);
        ``check=False``: the caller checks the bytes itself."""
        raw = self._get(block_key(block_hash))
        verify = self.block_check if check else None
        if raw is not None and verify is not None:
            problem = verify(raw, block_hash)
            if problem is not None:
                raise self.damaged_block(block_hash, problem, report=report)
        return raw

    def damaged_block(
        self, block_hash: bytes, problem: str, *, report: bool = True
    ) -> CorruptBlockError:
        """The error for a stored block that is not what its hash says (told to
        ``on_fault`` unless ``report`` is False)."""
        rec = self.get_index(block_hash)
        height = rec.height if rec is not None else None
        where = f"at height {height} " if height is not None else ""
        error = CorruptBlockError(
            f"stored block {block_hash.hex()} {where}is damaged ({problem}). Stop the node "
            f"and run `{reindex_command(self._path, self._network)}`: it rebuilds from the "
            "intact blocks and downloads the rest from peers",
            block_hash,
            height,
        )
        return self._fault(error) if report else error

    def iter_blocks(self) -> Iterator[tuple[bytes, bytes]]:
        """(hash, raw bytes) of every stored block body, unchecked (for --reindex)."""
        for key, raw in self._iter(PREFIX_BLOCK):
            yield key[1:], raw

    def has_block(self, block_hash: bytes) -> bool:
        return self._get(block_key(block_hash)) is not None

    def put_block(self, block_hash: bytes, data: bytes, *, sync: bool = False) -> None:
        self._put_one(block_key(block_hash), check_bytes(data, "block data"), sync)

    def get_header(self, block_hash: bytes) -> Header | None:
        """The block's header from its own key (``header_key``), checked against the
        hash; None when there is none (a block stored before those keys) or it is not
        that block's (the caller reads the body then, which is checked as always)."""
        raw = self._get(header_key(block_hash))
        if raw is None:
            return None
        try:
            header = Header.from_bytes(raw)
        except (DecodeError, ValueError):
            return None
        return header if header.hash == block_hash else None

    # --- index

    def get_index(self, block_hash: bytes) -> IndexRecord | None:
        """The index record for ``block_hash``; CorruptionError if it does not decode."""
        raw = self._get(index_key(block_hash))
        if raw is None:
            return None
        record = IndexRecord.from_bytes(raw)
        if record.hash != block_hash:
            raise CorruptionError(
                f"index record under {block_hash.hex()} is for {record.hash.hex()}"
            )
        return record

    def put_index(self, record: IndexRecord, *, sync: bool = False) -> None:
        if not isinstance(record, IndexRecord):
            raise TypeError("put_index needs an IndexRecord")
        self._put_one(index_key(record.hash), record.to_bytes(), sync)

    def iter_index(self) -> Iterator[IndexRecord]:
        """Every index record (all known headers, side chains too), in hash order."""
        for key, raw in self._iter(PREFIX_INDEX):
            record = IndexRecord.from_bytes(raw)
            if record.hash != key[1:]:
                raise CorruptionError(f"index record under {key[1:].hex()} is for another hash")
            yield record

    # --- undo

    def get_undo(self, block_hash: bytes) -> bytes | None:
        return self._get(undo_key(block_hash))

    def put_undo(self, block_hash: bytes, data: bytes, *, sync: bool = False) -> None:
        self._put_one(undo_key(block_hash), check_bytes(data, "undo data"), sync)

    # --- active chain

    def active_hash_at(self, height: int) -> bytes | None:
        """Hash of the active chain's block at ``height``, or None."""
        return _stored_hash(self._get(height_key(height)), f"height {height} entry")

    def set_active_hash(self, height: int, block_hash: bytes, *, sync: bool = False) -> None:
        self._put_one(height_key(height), check_hash(block_hash), sync)

    # --- state

    def get_state(self, key: bytes) -> bytes | None:
        return self._get(state_key(key))

    def put_state(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._put_one(state_key(key), check_bytes(value, "state value"), sync)

    def delete_state(self, key: bytes, *, sync: bool = False) -> None:
        self._delete_one(state_key(key), sync)

    def iter_state(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for state keys starting with ``prefix``, in key order.

        Keys are returned without the storage prefix. The iterator reads a consistent
        snapshot taken when iteration starts.
        """
        full = state_key(prefix)
        for key, value in self._iter(full):
            yield key[1:], value

    # --- transaction index

    def get_tx_location(self, txid: bytes) -> tuple[bytes, int, int] | None:
        """(block hash, height, position) of an active-chain transaction, or None."""
        raw = self._tx_entry(txid)
        if raw is None:
            return None
        return raw[:HASH_LEN], int.from_bytes(raw[32:40], "big"), int.from_bytes(raw[40:44], "big")

    def get_tx_failure(self, txid: bytes) -> str | None:
        """Why an active-chain job transaction was included as failed ("" if it
        succeeded), or None if the transaction is not in the active chain."""
        receipt = self.get_tx_receipt(txid)
        return None if receipt is None else receipt[1]

    def get_tx_receipt(self, txid: bytes) -> tuple[bytes, str] | None:
        """(the active-chain block holding the transaction, why it was included as
        failed or "" if it succeeded), or None if it is not in the active chain."""
        raw = self._tx_entry(txid)
        return (
            None if raw is None else (raw[:HASH_LEN], raw[HASH_LEN + 12 :].decode(errors="replace"))
        )

    def _tx_entry(self, txid: bytes) -> bytes | None:
        raw = self._get(PREFIX_TX + check_hash(txid))
        if raw is not None and not HASH_LEN + 12 <= len(raw) <= HASH_LEN + 12 + MAX_RECEIPT:
            raise CorruptionError(f"tx index entry of {txid.hex()} has {len(raw)} bytes")
        return raw

    def iter_address_txs(self, address: bytes) -> Iterator[tuple[int, int, bytes]]:
        """(height, position, txid) of the address's active-chain transactions, oldest first."""
        prefix = PREFIX_ADDRESS_TX + address
        for key, txid in self._iter(prefix):
            rest = key[len(prefix) :]
            yield int.from_bytes(rest[:8], "big"), int.from_bytes(rest[8:12], "big"), txid

    # --- metadata

    def get_tip(self) -> bytes | None:
        return _stored_hash(self._get(META_TIP), "tip record")

    def set_tip(self, block_hash: bytes, *, sync: bool = True) -> None:
        self._put_one(META_TIP, check_hash(block_hash), sync)

    def get_genesis(self) -> bytes | None:
        return _stored_hash(self._get(META_GENESIS), "genesis record")

    def get_reorg_target(self) -> bytes | None:
        """The chain an unfinished reorg was moving to (see META_REORG), or None."""
        return _stored_hash(self._get(META_REORG), "reorg journal")

    def reindexing(self) -> bool:
        """True while a --reindex is unfinished (its marker is stored)."""
        return self._get(META_REINDEX) is not None

    def iter_keys(self, prefix: bytes) -> Iterator[bytes]:
        """Every raw key starting with ``prefix`` (for :meth:`AtomicBatch.delete_raw`)."""
        for key, _ in self._iter(prefix):
            yield key

    def set_genesis(self, block_hash: bytes, *, sync: bool = True) -> None:
        self._put_one(META_GENESIS, check_hash(block_hash), sync)
