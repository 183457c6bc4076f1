"""LevelDB (plyvel) storage for the chain: one database at ``<datadir>/chain``.

This layer stores opaque bytes. Block, header, undo and state *formats* belong to the
chain code; this module only defines the key layout, the block index record
(:class:`IndexRecord`) and the metadata that guards against opening the wrong database.

Key layout (one LevelDB, the first byte of every key is a prefix):

====================  ===========================================  =====================
key                   value                                        written by
====================  ===========================================  =====================
``b"b" + hash``       block body (opaque bytes)                    put_block
``b"i" + hash``       :class:`IndexRecord` bytes (every known      put_index
                      header, side chains too)
``b"h" + u64 BE``     hash of the active chain at that height      set_active_hash
``b"s" + key``        state value (opaque key and value)           put_state
``b"u" + hash``       undo data for connecting that block          put_undo
``b"m" + name``       metadata: tip, genesis, schema, network      set_tip, set_genesis
====================  ===========================================  =====================

Hashes are always 32 bytes. Heights are big-endian so that LevelDB's byte order is
height order.

Atomicity
---------
Connecting or disconnecting a block is one :meth:`ChainDB.atomic` batch: every write
inside ``with db.atomic() as batch:`` goes into one plyvel ``WriteBatch`` that is written
on normal exit, with ``sync=True`` by default, so a ``kill -9`` at any instant leaves
either all of it or none of it. An exception inside the block discards everything.

Reads inside a batch: the ``ChainDB`` getters (``db.get_state`` ...) keep returning the
database *as it was before the batch* until the batch exits, because nothing is
written before then. :meth:`AtomicBatch.pending_state` reads the state as it will be
after the batch (the batch's own writes so far, else the database). The database is
meant to have one writer (the chain's connect/disconnect path); batches from two
threads at once are each atomic but do not see each other.

Processes
---------
LevelDB runs a background thread: ``fork()`` after a :class:`ChainDB` is open can hang
the child. Worker processes must be started with the *spawn* method
(``multiprocessing.get_context("spawn")`` / ``ProcessPoolExecutor(mp_context=...)``),
and must not use a ``ChainDB`` they inherited; a ``ChainDB`` used in a process other
than the one that opened it raises :class:`StorageError`.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plyvel

from chain.datadir import Closeable, DataDir, DatadirLockedError

__all__ = [
    "CHAIN_DB_DIRNAME",
    "HASH_LEN",
    "MAX_WORK_BYTES",
    "SCHEMA_VERSION",
    "AtomicBatch",
    "BatchClosedError",
    "BlockStatus",
    "ChainDB",
    "CorruptionError",
    "DatadirLockedError",
    "IndexRecord",
    "NetworkMismatchError",
    "SchemaVersionError",
    "StorageError",
    "open_chain",
]

# --- layout constants -------------------------------------------------------------

# Bump on any change to the key layout or IndexRecord encoding (2: tx receipts, market v2).
SCHEMA_VERSION = 2
CHAIN_DB_DIRNAME = "chain"  # the LevelDB lives at <datadir>/chain
HASH_LEN = 32
MAX_WORK_BYTES = 64  # cumulative work is capped at 2**512 - 1

PREFIX_BLOCK = b"b"  # b"b" + hash(32)       -> block body bytes
PREFIX_INDEX = b"i"  # b"i" + hash(32)       -> IndexRecord.to_bytes()
PREFIX_HEIGHT = b"h"  # b"h" + height(u64 BE) -> hash(32) of the active chain at height
PREFIX_STATE = b"s"  # b"s" + key            -> state value bytes
PREFIX_UNDO = b"u"  # b"u" + hash(32)        -> undo data for that block
PREFIX_META = b"m"  # b"m" + name            -> metadata (names below)
# b"t" + txid(32) -> block hash(32) | u64 height | u32 position [| failure reason utf-8]
# for each active-chain tx; the reason is there for a job tx included as failed.
PREFIX_TX = b"t"
MAX_RECEIPT = 200  # bytes of a failure reason kept in the tx index
# b"x" + address(20) + u64 height + u32 position -> txid(32): every active-chain tx that
# sends from or pays to the address, in chain order (wallet history).
PREFIX_ADDRESS_TX = b"x"

META_TIP = PREFIX_META + b"tip"  # hash(32) of the active tip
META_GENESIS = PREFIX_META + b"genesis"  # hash(32) of the genesis block
META_SCHEMA = PREFIX_META + b"schema"  # u32 BE schema version
META_NETWORK = PREFIX_META + b"network"  # utf-8 network name (devnet, testnet, ...)

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_U64_MAX = 2**64 - 1

# --- errors -----------------------------------------------------------------------


class StorageError(Exception):
    """Base class of storage errors."""


class CorruptionError(StorageError):
    """Stored bytes do not decode, or LevelDB reports corruption."""


class BatchClosedError(StorageError):
    """An :class:`AtomicBatch` was used outside its ``with`` block."""


class SchemaVersionError(StorageError):
    """The database was written with a different (or no) schema version."""

    def __init__(self, path: Path, found: int | None, expected: int = SCHEMA_VERSION) -> None:
        self.path = path
        self.found = found
        self.expected = expected
        if found is None:
            what = "holds data but no pouw schema version (not a pouw chain database?)"
        elif found > expected:
            what = f"has schema version {found}, newer than this pouw supports ({expected})"
        else:
            what = f"has schema version {found}; this pouw needs version {expected}"
        super().__init__(
            f"chain database {path} {what}. Run the pouw version that created it, or "
            "move it aside / use a new --datadir and resync (or rebuild with --reindex "
            "where the stored blocks are still readable)."
        )


class NetworkMismatchError(StorageError):
    """The database belongs to another network."""

    def __init__(self, path: Path, found: str, expected: str) -> None:
        self.path = path
        self.found = found
        self.expected = expected
        super().__init__(
            f"chain database {path} was created for network {found!r}, not {expected!r}. "
            f"Start with --network {found} to use it, or pass a different --datadir "
            f"for {expected}."
        )


# --- helpers ----------------------------------------------------------------------


def _check_hash(value: bytes, what: str = "hash") -> bytes:
    if type(value) is not bytes:
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    if len(value) != HASH_LEN:
        raise ValueError(f"{what} must be {HASH_LEN} bytes, got {len(value)}")
    return value


def _check_bytes(value: bytes, what: str) -> bytes:
    if type(value) is not bytes:
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    return value


def _check_height(height: int) -> int:
    if isinstance(height, bool) or not isinstance(height, int):
        raise TypeError(f"height must be int, not {type(height).__name__}")
    if not 0 <= height <= _U64_MAX:
        raise ValueError(f"height {height} out of u64 range")
    return height


def _height_key(height: int) -> bytes:
    return PREFIX_HEIGHT + _U64.pack(_check_height(height))


def _block_key(block_hash: bytes) -> bytes:
    return PREFIX_BLOCK + _check_hash(block_hash)


def _index_key(block_hash: bytes) -> bytes:
    return PREFIX_INDEX + _check_hash(block_hash)


def _undo_key(block_hash: bytes) -> bytes:
    return PREFIX_UNDO + _check_hash(block_hash)


def _state_key(key: bytes) -> bytes:
    return PREFIX_STATE + _check_bytes(key, "state key")


def _stored_hash(raw: bytes | None, what: str) -> bytes | None:
    if raw is not None and len(raw) != HASH_LEN:
        raise CorruptionError(f"{what} holds {len(raw)} bytes, expected {HASH_LEN}")
    return raw


# --- block index record -----------------------------------------------------------


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
        _check_hash(self.hash, "hash")
        _check_hash(self.parent, "parent")
        _check_height(self.height)
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


# --- atomic batch -----------------------------------------------------------------

_DELETED: Any = object()


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
        self._put(_block_key(block_hash), _check_bytes(data, "block data"))

    def delete_block(self, block_hash: bytes) -> None:
        self._delete(_block_key(block_hash))

    def put_index(self, record: IndexRecord) -> None:
        if not isinstance(record, IndexRecord):
            raise TypeError("put_index needs an IndexRecord")
        self._put(_index_key(record.hash), record.to_bytes())

    def delete_index(self, block_hash: bytes) -> None:
        self._delete(_index_key(block_hash))

    def put_undo(self, block_hash: bytes, data: bytes) -> None:
        self._put(_undo_key(block_hash), _check_bytes(data, "undo data"))

    def delete_undo(self, block_hash: bytes) -> None:
        self._delete(_undo_key(block_hash))

    # active chain
    def set_active_hash(self, height: int, block_hash: bytes) -> None:
        self._put(_height_key(height), _check_hash(block_hash))

    def delete_active_hash(self, height: int) -> None:
        self._delete(_height_key(height))

    # state
    def put_state(self, key: bytes, value: bytes) -> None:
        self._put(_state_key(key), _check_bytes(value, "state value"))
        self._state[key] = value

    def delete_state(self, key: bytes) -> None:
        self._delete(_state_key(key))
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
        where = _check_hash(block_hash) + height.to_bytes(8, "big") + position.to_bytes(4, "big")
        self._put(PREFIX_TX + _check_hash(txid), where + failure.encode()[:MAX_RECEIPT])
        for address in set(addresses):
            self._put(_address_tx_key(address, height, position), txid)

    def delete_tx_location(
        self, txid: bytes, height: int, position: int, addresses: Iterable[bytes]
    ) -> None:
        self._delete(PREFIX_TX + _check_hash(txid))
        for address in set(addresses):
            self._delete(_address_tx_key(address, height, position))

    def set_tip(self, block_hash: bytes) -> None:
        self._put(META_TIP, _check_hash(block_hash))

    def set_genesis(self, block_hash: bytes) -> None:
        self._put(META_GENESIS, _check_hash(block_hash))


# --- the database -----------------------------------------------------------------


class ChainDB(Closeable):
    """The chain's LevelDB at ``<datadir>/chain``; see the module docstring.

    ``datadir`` must be held (locked) for the lifetime of the ChainDB; the ChainDB
    does not close it unless it was opened through :func:`open_chain`.

    Raises :class:`NetworkMismatchError` / :class:`SchemaVersionError` when the
    database was created for another network or with another schema version, and
    :class:`CorruptionError` when LevelDB reports corruption.

    Single-key writers (``put_block`` ...) are a one-operation batch; ``sync``
    defaults to False except for the tip and genesis pointers. A batch written with
    ``sync=False`` survives a process crash but may be lost (never torn) on an OS
    crash or power loss.
    """

    def __init__(self, datadir: DataDir, *, network: str, create_if_missing: bool = True) -> None:
        if not isinstance(datadir, DataDir):
            raise TypeError("ChainDB needs a DataDir (which holds the datadir lock)")
        if not datadir.locked:
            raise StorageError(f"datadir {datadir.path} is not locked (closed DataDir?)")
        if not isinstance(network, str) or not network:
            raise ValueError("network must be a non-empty string")
        self._datadir = datadir
        self._owns_datadir = False
        self._network = network
        self._path = datadir.sub(CHAIN_DB_DIRNAME)
        self._pid = os.getpid()
        self._db: Any = None
        try:
            db = plyvel.DB(str(self._path), create_if_missing=create_if_missing)
        except plyvel.CorruptionError as exc:
            raise CorruptionError(
                f"chain database {self._path} is corrupted ({exc}); move it aside and "
                "resync, or try plyvel.repair_db"
            ) from exc
        except plyvel.Error as exc:
            raise StorageError(f"cannot open chain database {self._path}: {exc}") from exc
        try:
            self._check_or_init_meta(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _check_or_init_meta(self, db: Any) -> None:
        raw_schema = db.get(META_SCHEMA)
        if raw_schema is None:
            with db.iterator(include_value=False) as it:
                empty = next(it, None) is None
            if not empty:
                raise SchemaVersionError(self._path, None)
            with db.write_batch(transaction=True, sync=True) as wb:
                wb.put(META_SCHEMA, _U32.pack(SCHEMA_VERSION))
                wb.put(META_NETWORK, self._network.encode("utf-8"))
            return
        if len(raw_schema) != _U32.size:
            raise CorruptionError(f"schema version record has {len(raw_schema)} bytes, not 4")
        (found,) = _U32.unpack(raw_schema)
        if found != SCHEMA_VERSION:
            raise SchemaVersionError(self._path, found)
        raw_net = db.get(META_NETWORK)
        if raw_net is None:
            raise CorruptionError(f"chain database {self._path} has no network record")
        try:
            stored = raw_net.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptionError("network record is not utf-8") from exc
        if stored != self._network:
            raise NetworkMismatchError(self._path, stored, self._network)

    # --- lifecycle

    def _handle(self) -> Any:
        db = self._db
        if db is None:
            raise StorageError(f"chain database {self._path} is closed")
        if os.getpid() != self._pid:
            raise StorageError(
                "ChainDB used in a forked child process; LevelDB does not survive fork(). "
                "Start worker processes with the 'spawn' method and open nothing inherited."
            )
        return db

    @property
    def path(self) -> Path:
        return self._path

    @property
    def datadir(self) -> DataDir:
        return self._datadir

    @property
    def network(self) -> str:
        return self._network

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    @property
    def closed(self) -> bool:
        return self._db is None

    def close(self) -> None:
        """Close LevelDB (and the datadir, when opened by :func:`open_chain`). Idempotent."""
        db, self._db = self._db, None
        try:
            if db is not None and os.getpid() == self._pid:
                db.close()
        finally:
            if self._owns_datadir:
                self._datadir.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"ChainDB({str(self._path)!r}, network={self._network!r}, {state})"

    # --- raw access

    def _get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._handle().get(key)
        except plyvel.CorruptionError as exc:
            raise CorruptionError(f"LevelDB corruption reading {key[:1]!r} key: {exc}") from exc
        return value

    def _iter(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._iter_gen(self._handle(), prefix)

    @staticmethod
    def _iter_gen(db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            with db.iterator(prefix=prefix) as it:
                yield from it
        except plyvel.CorruptionError as exc:
            raise CorruptionError(f"LevelDB corruption iterating {prefix[:1]!r}: {exc}") from exc

    @contextmanager
    def atomic(self, *, sync: bool = True) -> Iterator[AtomicBatch]:
        """Collect writes into one WriteBatch, written on normal exit (``sync`` fsyncs).

        An exception inside the block discards every write. ChainDB reads inside the
        block see the database as before the batch; use ``batch.pending_state``.
        """
        wb = self._handle().write_batch(transaction=True, sync=sync)
        batch = AtomicBatch(self, wb)
        try:
            with wb:  # transaction=True: plyvel writes on clean exit, drops on exception
                yield batch
        finally:
            batch._open = False

    def _put_one(self, key: bytes, value: bytes, sync: bool) -> None:
        self._handle().put(key, value, sync=sync)

    def _delete_one(self, key: bytes, sync: bool) -> None:
        self._handle().delete(key, sync=sync)

    # --- blocks

    def get_block(self, block_hash: bytes) -> bytes | None:
        return self._get(_block_key(block_hash))

    def has_block(self, block_hash: bytes) -> bool:
        return self.get_block(block_hash) is not None

    def put_block(self, block_hash: bytes, data: bytes, *, sync: bool = False) -> None:
        self._put_one(_block_key(block_hash), _check_bytes(data, "block data"), sync)

    # --- index

    def get_index(self, block_hash: bytes) -> IndexRecord | None:
        """The index record for ``block_hash``; CorruptionError if it does not decode."""
        raw = self._get(_index_key(block_hash))
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
        self._put_one(_index_key(record.hash), record.to_bytes(), sync)

    def iter_index(self) -> Iterator[IndexRecord]:
        """Every index record (all known headers, side chains too), in hash order."""
        for key, raw in self._iter(PREFIX_INDEX):
            record = IndexRecord.from_bytes(raw)
            if record.hash != key[1:]:
                raise CorruptionError(f"index record under {key[1:].hex()} is for another hash")
            yield record

    # --- undo

    def get_undo(self, block_hash: bytes) -> bytes | None:
        return self._get(_undo_key(block_hash))

    def put_undo(self, block_hash: bytes, data: bytes, *, sync: bool = False) -> None:
        self._put_one(_undo_key(block_hash), _check_bytes(data, "undo data"), sync)

    # --- active chain

    def active_hash_at(self, height: int) -> bytes | None:
        """Hash of the active chain's block at ``height``, or None."""
        return _stored_hash(self._get(_height_key(height)), f"height {height} entry")

    def set_active_hash(self, height: int, block_hash: bytes, *, sync: bool = False) -> None:
        self._put_one(_height_key(height), _check_hash(block_hash), sync)

    # --- state

    def get_state(self, key: bytes) -> bytes | None:
        return self._get(_state_key(key))

    def put_state(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._put_one(_state_key(key), _check_bytes(value, "state value"), sync)

    def delete_state(self, key: bytes, *, sync: bool = False) -> None:
        self._delete_one(_state_key(key), sync)

    def iter_state(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for state keys starting with ``prefix``, in key order.

        Keys are returned without the storage prefix. The iterator reads a consistent
        snapshot taken when iteration starts.
        """
        full = _state_key(prefix)
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
        raw = self._tx_entry(txid)
        return None if raw is None else raw[HASH_LEN + 12 :].decode(errors="replace")

    def _tx_entry(self, txid: bytes) -> bytes | None:
        raw = self._get(PREFIX_TX + _check_hash(txid))
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
        self._put_one(META_TIP, _check_hash(block_hash), sync)

    def get_genesis(self) -> bytes | None:
        return _stored_hash(self._get(META_GENESIS), "genesis record")

    def set_genesis(self, block_hash: bytes, *, sync: bool = True) -> None:
        self._put_one(META_GENESIS, _check_hash(block_hash), sync)


def _address_tx_key(address: bytes, height: int, position: int) -> bytes:
    if len(address) != 20:
        raise ValueError("addresses are 20 bytes")
    return PREFIX_ADDRESS_TX + address + height.to_bytes(8, "big") + position.to_bytes(4, "big")


def open_chain(
    path: str | os.PathLike[str], *, network: str, create_if_missing: bool = True
) -> ChainDB:
    """Lock the datadir at ``path`` and open its ChainDB; ``close()`` releases both.

    Raises :class:`DatadirLockedError` if another process holds the datadir.
    """
    datadir = DataDir(path)
    try:
        db = ChainDB(datadir, network=network, create_if_missing=create_if_missing)
    except BaseException:
        datadir.close()
        raise
    db._owns_datadir = True
    return db
