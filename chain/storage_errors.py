"""Storage errors, and what each tells the operator to do.

Every error the chain database raises is a :class:`StorageError`; the ones that come
from LevelDB are classified here (damage, a full disk, a lock, other I/O) into one
message naming the database, the cause and the command that fixes it.
"""

from __future__ import annotations

from pathlib import Path

import plyvel


class StorageError(Exception):
    """Base class of storage errors."""


class CorruptionError(StorageError):
    """Stored bytes do not decode, or LevelDB reports corruption."""


class DiskFullError(StorageError):
    """The filesystem of the database is (nearly) full; nothing was written."""


class CorruptBlockError(CorruptionError):
    """A stored block's bytes do not match its hash (damaged on disk)."""

    def __init__(self, message: str, block_hash: bytes, height: int | None) -> None:
        self.block_hash = block_hash
        self.height = height
        super().__init__(message)


class BatchClosedError(StorageError):
    """An :class:`AtomicBatch` was used outside its ``with`` block."""


class SchemaVersionError(StorageError):
    """The database was written with a different (or no) schema version."""

    def __init__(self, path: Path, found: int | None, expected: int, fix: str = "") -> None:
        self.path = path
        self.found = found
        self.expected = expected
        if found is None:
            what = (
                "holds data but no pouw schema version: damaged (run "
                f"`{fix}` to rebuild it) or not a pouw chain database"
            )
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
            f"chain database {path} holds a {found} chain, not a {expected} one (copied or "
            f"moved here from a {found} folder?). --network {found} looks for it in "
            f"{Path(path).parent.parent / found / 'chain'}: move it there, or pass a "
            f"different --datadir for {expected}."
        )


def repair_command(db_path: Path, network: str) -> str:
    """The command that repairs the chain database at ``<datadir>/<network>/chain``."""
    datadir = Path(db_path).parent.parent
    return f"pouw node --network {network} --datadir {datadir} --repair"


def reindex_command(db_path: Path, network: str) -> str:
    datadir = Path(db_path).parent.parent
    return f"pouw node --network {network} --datadir {datadir} --reindex"


def _is_disk_full(exc: BaseException) -> bool:
    text = leveldb_text(exc)
    return "No space left" in text or "ENOSPC" in text or "Disk quota exceeded" in text


def repair_chain_db(db_path: Path) -> None:
    """Run LevelDB's repairer on a *closed* chain database (``pouw node --repair``).

    It rebuilds the table index from every readable file and drops what is damaged;
    the chain is then rebuilt from the blocks that survived (``--reindex``).
    """
    try:
        plyvel.repair_db(str(db_path))
    except plyvel.Error as exc:
        if _is_disk_full(exc):
            raise DiskFullError(
                f"disk full while repairing {db_path} ({leveldb_text(exc)}): free space on "
                "that filesystem and run the same command again"
            ) from None
        raise StorageError(
            f"LevelDB could not repair {db_path} ({leveldb_text(exc)}): move that folder aside and "
            "start the node again to resync from peers"
        ) from None


def leveldb_text(exc: BaseException) -> str:
    """A plyvel error's message as text: plyvel carries LevelDB's status as bytes, which
    str() would show as b'...'."""
    if exc.args and isinstance(exc.args[0], bytes):
        return exc.args[0].decode(errors="replace")
    return str(exc)


def classify(exc: BaseException, path: Path, network: str, doing: str) -> StorageError:
    """A plyvel error as our own, with the cause and the command that fixes it."""
    text = leveldb_text(exc)
    # LevelDB reports a truncated table or a missing file as an IO error.
    damaged_file = isinstance(exc, plyvel.IOError) and any(
        kind in text for kind in (".ldb", ".sst", ".log", "MANIFEST", "CURRENT")
    )
    missing = "does not exist (create_if_missing is false)" in text  # no CURRENT
    if (
        isinstance(exc, plyvel.CorruptionError)
        or missing
        or (damaged_file and not _is_disk_full(exc))
    ):
        return CorruptionError(
            f"chain database {path} is damaged ({text}) while {doing}: stop the "
            f"node and run `{repair_command(path, network)}`"
        )
    if _is_disk_full(exc):
        return DiskFullError(
            f"disk full: cannot write the chain database {path} ({text}). The "
            "node stopped before the write; free space on that filesystem and start "
            "the node again"
        )
    if isinstance(exc, plyvel.IOError) and "permission denied" in text.lower():
        return StorageError(
            f"chain database {path}: permission denied ({text}): the datadir must be "
            "writable by the user running the node (check the owner of its files: ls -l)"
        )
    if isinstance(exc, plyvel.IOError) and "lock" in text.lower():
        return StorageError(
            f"chain database {path} is in use by another process ({text}): stop "
            "that process first, or pass a different --datadir"
        )
    return StorageError(
        f"chain database {path}: I/O error while {doing} ({text}); check the disk "
        f"and its permissions, then start the node again (if it persists, run "
        f"`{repair_command(path, network)}`)"
    )
