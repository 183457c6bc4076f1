"""LevelDB (plyvel) storage for the chain: one database at ``<datadir>/chain``.

This layer stores opaque bytes. Block, header, undo and state *formats* belong to the
chain code; this module opens the database, reads it, and guards against opening the
wrong one (metadata). The key layout is in chain/storage_keys.py, the block index record
in chain/index_record.py (:class:`IndexRecord`), the typed reads and single-key writes
of each record in chain/chain_records.py (:class:`ChainRecords`), the atomic write of a
connect or disconnect in chain/atomic_batch.py (:class:`AtomicBatch`).

Key layout (one LevelDB, the first byte of every key is a prefix):

====================  ===========================================  =====================
key                   value                                        written by
====================  ===========================================  =====================
``b"b" + hash``       block body (opaque bytes)                    put_block
``b"d" + hash``       that block's header bytes (served to peers   put_block, put_header
                      without the body; absent for blocks stored
                      before it existed: the body is read then)
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
from chain.chain_records import ChainRecords
from chain.datadir import Closeable, DataDir, DatadirLockedError
from chain.index_record import (
    HASH_LEN,
    MAX_WORK_BYTES,
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
    META_NETWORK,
    META_SCHEMA,
    SCHEMA_VERSION,
    record_kind,
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


# --- the database -----------------------------------------------------------------


class ChainDB(ChainRecords, Closeable):
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
            raise self._translate(exc, f"reading a {record_kind(key)} record") from None
        return value

    def _iter(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._iter_gen(self._handle(), prefix)

    def _iter_gen(self, db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            with db.iterator(prefix=prefix, verify_checksums=True) as it:
                yield from it
        except plyvel.Error as exc:
            raise self._translate(exc, f"reading the {record_kind(prefix)} records") from None

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
        from chain.salvage import finish_interrupted_salvage  # it builds on this module

        finish_interrupted_salvage(datadir.sub(CHAIN_DB_DIRNAME))  # (a --repair cut short)
        if repair:
            from chain.salvage import repair as repair_and_salvage

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
