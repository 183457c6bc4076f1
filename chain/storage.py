"""LevelDB (plyvel) storage for the chain: one database at ``<datadir>/chain``.

This layer stores opaque bytes. Block, header, undo and state *formats* belong to the
chain code; this module opens the database, reads it, and guards against opening the
wrong one (metadata). The key layout is in chain/storage_keys.py, the block index record
in chain/index_record.py (:class:`IndexRecord`), the atomic write of a connect or
disconnect in chain/atomic_batch.py (:class:`AtomicBatch`).

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

import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import plyvel

from chain.atomic_batch import AtomicBatch
from chain.datadir import Closeable, DataDir, DatadirLockedError
from chain.index_record import (
    HASH_LEN,
    MAX_WORK_BYTES,
    IndexRecord,
    check_hash,
)
from chain.storage_errors import (
    BatchClosedError,
    CorruptBlockError,
    CorruptionError,
    DiskFullError,
    NetworkMismatchError,
    SchemaVersionError,
    StorageError,
    classify,
    reindex_command,
    repair_chain_db,
    repair_command,
)
from chain.storage_keys import (
    CHAIN_DB_DIRNAME,
    MAX_RECEIPT,
    META_GENESIS,
    META_NETWORK,
    META_REINDEX,
    META_REORG,
    META_SCHEMA,
    META_TIP,
    PREFIX_ADDRESS_TX,
    PREFIX_BLOCK,
    PREFIX_INDEX,
    PREFIX_TX,
    SCHEMA_VERSION,
    block_key,
    check_bytes,
    height_key,
    index_key,
    state_key,
    undo_key,
)

__all__ = [
    "CHAIN_DB_DIRNAME",
    "HASH_LEN",
    "MAX_WORK_BYTES",
    "SCHEMA_VERSION",
    "AtomicBatch",
    "BatchClosedError",
    "ChainDB",
    "CorruptBlockError",
    "CorruptionError",
    "DatadirLockedError",
    "DiskFullError",
    "NetworkMismatchError",
    "SchemaVersionError",
    "StorageError",
    "open_chain",
    "reindex_command",
    "repair_command",
    "repair_chain_db",
]

# Stop writing while less than this is free on the database's filesystem (Bitcoin Core
# keeps the same 50 MB margin): LevelDB then still has room to finish a compaction and
# the stop happens before a write fails half-way, not after.
MIN_FREE_BYTES = 50 * 1024 * 1024

_E = TypeVar("_E", bound=StorageError)
_U32 = struct.Struct(">I")


def _stored_hash(raw: bytes | None, what: str) -> bytes | None:
    if raw is not None and len(raw) != HASH_LEN:
        raise CorruptionError(f"{what} holds {len(raw)} bytes, expected {HASH_LEN}")
    return raw


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

    def __init__(
        self,
        datadir: DataDir,
        *,
        network: str,
        create_if_missing: bool = True,
        repaired: bool = False,
        durable: bool = True,
    ) -> None:
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
        # fsync the writes that ask for it; False for a database its maker can rebuild
        # (tests and benchmarks building a chain): each write is still atomic, and it
        # survives the process being killed, not the machine losing power
        self.durable = durable
        self._db: Any = None
        self.min_free_bytes = MIN_FREE_BYTES
        # (raw, hash) -> why the bytes are not that block, or None. Bodies are opaque
        # here; the chain code, which knows the block format, installs the check.
        self.block_check: Callable[[bytes, bytes], str | None] | None = None
        # Told of every fault before it is raised (the node stops on one, whoever
        # hit it: a peer's request, an RPC call, the miner).
        self.on_fault: Callable[[StorageError], None] | None = None
        try:
            # paranoid_checks: a damaged log or table stops the open with Corruption
            # instead of LevelDB silently skipping what it cannot read.
            # A folder with files but no CURRENT is damaged, not new: LevelDB would
            # start an empty database there and delete the tables it does not know.
            fresh = not self._path.exists() or not any(self._path.iterdir())
            db = plyvel.DB(
                str(self._path),
                create_if_missing=create_if_missing and fresh,
                paranoid_checks=True,
            )
        except plyvel.Error as exc:
            raise self._translate(exc, "opening") from None
        try:
            self._check_or_init_meta(db, repaired)
        except plyvel.Error as exc:
            db.close()
            raise self._translate(exc, "opening") from None
        except BaseException:
            db.close()
            raise
        self._db = db

    def _check_or_init_meta(self, db: Any, repaired: bool) -> None:
        """Check the schema and network records (write them into a new database, or
        into one just repaired, which can lose them with the table that held them)."""
        raw_schema = db.get(META_SCHEMA)
        if raw_schema is None:
            with db.iterator(include_value=False) as it:
                empty = next(it, None) is None
            if not empty and not repaired:
                raise SchemaVersionError(
                    self._path, None, SCHEMA_VERSION, repair_command(self._path, self._network)
                )
            with db.write_batch(transaction=True, sync=True) as wb:
                wb.put(META_SCHEMA, _U32.pack(SCHEMA_VERSION))
                wb.put(META_NETWORK, self._network.encode("utf-8"))
            return
        if len(raw_schema) != _U32.size:
            raise CorruptionError(f"schema version record has {len(raw_schema)} bytes, not 4")
        (found,) = _U32.unpack(raw_schema)
        if found != SCHEMA_VERSION:
            raise SchemaVersionError(self._path, found, SCHEMA_VERSION)
        raw_net = db.get(META_NETWORK)
        if raw_net is None and repaired:
            db.put(META_NETWORK, self._network.encode("utf-8"), sync=True)
            raw_net = self._network.encode("utf-8")
        if raw_net is None:
            raise CorruptionError(
                f"chain database {self._path} has no network record: run "
                f"`{repair_command(self._path, self._network)}`"
            )
        try:
            stored = raw_net.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptionError("network record is not utf-8") from exc
        if stored != self._network:
            raise NetworkMismatchError(self._path, stored, self._network)

    # --- faults

    def _fault(self, error: _E) -> _E:
        if self.on_fault is not None:
            self.on_fault(error)
        return error

    def _translate(self, exc: BaseException, doing: str) -> StorageError:
        """A plyvel error as our own, with the cause and the command that fixes it."""
        return self._fault(classify(exc, self._path, self._network, doing))

    def check_free_space(self) -> None:
        """DiskFullError when less than ``min_free_bytes`` is free for the database."""
        try:
            st = os.statvfs(self._path)
        except OSError:
            return  # cannot tell: the write itself reports a full disk
        free = st.f_bavail * st.f_frsize
        if free < self.min_free_bytes:
            raise self._fault(
                DiskFullError(
                    f"disk nearly full: {free // 1024**2} MiB free for the chain database "
                    f"{self._path}, the node needs at least {self.min_free_bytes // 1024**2} MiB. "
                    "The node stopped before writing; free space on that filesystem and start "
                    "the node again"
                )
            )

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
            value: bytes | None = self._handle().get(key, verify_checksums=True)
        except plyvel.Error as exc:
            raise self._translate(exc, f"reading a {key[:1]!r} record") from None
        return value

    def _iter(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._iter_gen(self._handle(), prefix)

    def _iter_gen(self, db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            with db.iterator(prefix=prefix, verify_checksums=True) as it:
                yield from it
        except plyvel.Error as exc:
            raise self._translate(exc, f"reading the {prefix[:1]!r} records") from None

    @contextmanager
    def atomic(self, *, sync: bool = True) -> Iterator[AtomicBatch]:
        """Collect writes into one WriteBatch, written on normal exit (``sync`` fsyncs).

        An exception inside the block discards every write. ChainDB reads inside the
        block see the database as before the batch; use ``batch.pending_state``.
        """
        self.check_free_space()
        wb = self._handle().write_batch(transaction=True, sync=sync and self.durable)
        batch = AtomicBatch(self, wb)
        try:
            with wb:  # transaction=True: plyvel writes on clean exit, drops on exception
                yield batch
        except plyvel.Error as exc:
            raise self._translate(exc, "writing") from None
        finally:
            batch._open = False

    def _put_one(self, key: bytes, value: bytes, sync: bool) -> None:
        self.check_free_space()
        try:
            self._handle().put(key, value, sync=sync and self.durable)
        except plyvel.Error as exc:
            raise self._translate(exc, "writing") from None

    def _delete_one(self, key: bytes, sync: bool) -> None:
        try:
            self._handle().delete(key, sync=sync and self.durable)
        except plyvel.Error as exc:
            raise self._translate(exc, "writing") from None

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
        raw = self._tx_entry(txid)
        return None if raw is None else raw[HASH_LEN + 12 :].decode(errors="replace")

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

def open_chain(
    path: str | os.PathLike[str],
    *,
    network: str,
    create_if_missing: bool = True,
    repair: bool = False,
    durable: bool = True,
) -> ChainDB:
    """Lock the datadir at ``path`` and open its ChainDB; ``close()`` releases both.

    ``repair`` repairs the database first, under the lock (chain/salvage.py);
    ``durable`` False skips the fsyncs (ChainDB: a database its maker can rebuild).
    Raises :class:`DatadirLockedError` if another process holds the datadir.
    """
    datadir = DataDir(path)
    try:
        if repair:
            from chain.salvage import repair as repair_and_salvage  # it builds on this module

            repair_and_salvage(datadir.sub(CHAIN_DB_DIRNAME))
        db = ChainDB(
            datadir, network=network, create_if_missing=create_if_missing, repaired=repair,
            durable=durable,
        )  # fmt: skip
    except BaseException:
        datadir.close()
        raise
    db._owns_datadir = True
    return db
