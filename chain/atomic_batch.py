"""One atomic write to the chain database (chain/storage.py): every put and delete of a
block's connect or disconnect collected in one plyvel ``WriteBatch``, written when the
``with db.atomic()`` block exits normally, discarded on an exception."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from chain.encoding import DecodeError, Reader
from chain.header import Header
from chain.index_record import IndexRecord, check_hash
from chain.storage_errors import BatchClosedError
from chain.storage_keys import (
    DERIVED_PREFIXES,
    MAX_RECEIPT,
    META_GENESIS,
    META_REINDEX,
    META_REORG,
    META_TIP,
    PREFIX_INDEX,
    PREFIX_TX,
    address_tx_key,
    block_key,
    check_bytes,
    header_key,
    height_key,
    index_key,
    state_key,
    undo_key,
)

if TYPE_CHECKING:
    from chain.storage import ChainDB

_DELETED: Any = object()



def stored_header(block: bytes) -> bytes | None:
    """The header bytes at the start of a block's body (None if they do not decode:
    such a body is refused when read back, and has no header of its own)."""
    r = Reader(block)
    try:
        Header.read_from(r)
    except (DecodeError, ValueError):
        return None
    return block[: r.offset]

class AtomicBatch:
    """Writes collected for one atomic ``WriteBatch``; get one from :meth:`ChainDB.atomic`.

    Nothing is visible in the database until the ``with`` block exits normally; then
    all of it is, at once. Using the batch after its block has ended raises
    :class:`BatchClosedError`.
    """

    __slots__ = ("_db", "_wb", "_state", "_ops", "_open")

    def __init__(self, db: ChainDB, wb: Any) -> None:
        self._db = db
        self._wb = wb
        self._state: dict[bytes, Any] = {}  # state key -> value or _DELETED
        self._ops = 0
        self._open = True

    def _put(self, key: bytes, value: bytes) -> None:
        if not self._open:
            raise BatchClosedError("batch used outside its `with db.atomic()` block")
        self._wb.put(key, value)
        self._ops += 1

    def _delete(self, key: bytes) -> None:
        if not self._open:
            raise BatchClosedError("batch used outside its `with db.atomic()` block")
        self._wb.delete(key)
        self._ops += 1

    def __len__(self) -> int:
        """Number of put/delete operations queued so far."""
        return self._ops

    @property
    def is_open(self) -> bool:
        return self._open

    # blocks, index, undo
    def put_block(self, block_hash: bytes, data: bytes) -> None:
        """The block's body, and its header on its own (``header_key``)."""
        self._put(block_key(block_hash), check_bytes(data, "block data"))
        header = stored_header(data)
        if header is not None:
            self.put_header(block_hash, header)

    def put_header(self, block_hash: bytes, header: bytes) -> None:
        self._put(header_key(block_hash), check_bytes(header, "header"))

    def delete_block(self, block_hash: bytes) -> None:
        self._delete(block_key(block_hash))
        self._delete(header_key(block_hash))

    def put_index(self, record: IndexRecord) -> None:
        if not isinstance(record, IndexRecord):
            raise TypeError("put_index needs an IndexRecord")
        self._put(index_key(record.hash), record.to_bytes())

    def delete_index(self, block_hash: bytes) -> None:
        self._delete(index_key(block_hash))

    def put_undo(self, block_hash: bytes, data: bytes) -> None:
        self._put(undo_key(block_hash), check_bytes(data, "undo data"))

    def delete_undo(self, block_hash: bytes) -> None:
        self._delete(undo_key(block_hash))

    # active chain
    def set_active_hash(self, height: int, block_hash: bytes) -> None:
        self._put(height_key(height), check_hash(block_hash))

    def delete_active_hash(self, height: int) -> None:
        self._delete(height_key(height))

    # state
    def put_state(self, key: bytes, value: bytes) -> None:
        self._put(state_key(key), check_bytes(value, "state value"))
        self._state[key] = value

    def delete_state(self, key: bytes) -> None:
        self._delete(state_key(key))
        self._state[key] = _DELETED

    def pending_state(self, key: bytes) -> bytes | None:
        """The state value as it will be after this batch: its own writes, else the DB."""
        if not self._open:
            raise BatchClosedError("batch used outside its `with db.atomic()` block")
        value = self._state.get(key)
        if value is None:
            return self._db.get_state(key)
        return None if value is _DELETED else value

    # metadata
    def put_tx_location(
        self, txid: bytes, block_hash: bytes, height: int, position: int,
        addresses: Iterable[bytes], failure: str = "",
    ) -> None:  # fmt: skip
        """Index an active-chain transaction by id and by the addresses it touches;
        ``failure`` is the reason of a job transaction included as failed (its receipt)."""
        where = check_hash(block_hash) + height.to_bytes(8, "big") + position.to_bytes(4, "big")
        self._put(PREFIX_TX + check_hash(txid), where + failure.encode()[:MAX_RECEIPT])
        for address in set(addresses):
            self._put(address_tx_key(address, height, position), txid)

    def delete_tx_location(
        self, txid: bytes, height: int, position: int, addresses: Iterable[bytes]
    ) -> None:
        self._delete(PREFIX_TX + check_hash(txid))
        for address in set(addresses):
            self._delete(address_tx_key(address, height, position))

    def set_tip(self, block_hash: bytes) -> None:
        self._put(META_TIP, check_hash(block_hash))

    def set_reorg_target(self, block_hash: bytes | None) -> None:
        if block_hash is None:
            self._delete(META_REORG)
        else:
            self._put(META_REORG, check_hash(block_hash))

    def set_reindexing(self, on: bool) -> None:
        if on:
            self._put(META_REINDEX, b"\x01")
        else:
            self._delete(META_REINDEX)

    def delete_raw(self, key: bytes) -> None:
        """Delete a raw key (from :meth:`ChainDB.iter_keys`): derived data only."""
        if key[:1] not in DERIVED_PREFIXES:
            raise ValueError(f"delete_raw is for derived data, not {key[:1]!r} keys")
        self._delete(key)

    def delete_index_key(self, key: bytes) -> None:
        """Delete an index record by its raw key (from :meth:`ChainDB.iter_keys`),
        undecoded: a reindex drops records that do not decode, and rebuilds them."""
        if key[:1] != PREFIX_INDEX:
            raise ValueError(f"delete_index_key is for index records, not {key[:1]!r} keys")
        self._delete(key)

    def set_genesis(self, block_hash: bytes) -> None:
        self._put(META_GENESIS, check_hash(block_hash))
