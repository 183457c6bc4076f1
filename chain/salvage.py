"""``pouw node --repair``: make a damaged chain database usable again.

Step 1 is LevelDB's own repairer (``plyvel.repair_db``): it rebuilds the MANIFEST from
the table and log files, which fixes a damaged or missing MANIFEST or CURRENT and turns
a damaged log into tables, dropping the records it cannot read. It does not rewrite a
table whose data blocks fail their checksum, so step 2 reads the whole database back
and, if anything still fails, salvages it: every block body and index record that
reads back intact (scanning each key range forwards and backwards, so one damaged
region hides only itself) goes into a fresh database, which replaces the old one; the
old folder is kept beside it as ``chain.damaged``. The caller then rebuilds everything
else from the blocks (``--reindex``), and peers supply what was lost.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import plyvel

from chain.datadir import sync_folder
from chain.storage import StorageError, repair_chain_db
from chain.storage_keys import META_GENESIS, META_NETWORK, META_SCHEMA, PREFIX_BLOCK, PREFIX_INDEX

log = logging.getLogger("pouw.chain")

DAMAGED_SUFFIX = ".damaged"
SALVAGE_SUFFIX = ".salvage"
# A file beside the database: the salvaged copy is whole, and the swap of the folders
# may be under way. A start that finds it finishes the swap (a crash between the two
# renames left no `chain` folder, and a fresh empty database was made in its place).
COMPLETE_SUFFIX = ".salvage-complete"
# What is copied: everything else is derived from the blocks and rebuilt by --reindex.
KEPT_PREFIXES = (PREFIX_BLOCK, PREFIX_INDEX)
KEPT_META = (META_SCHEMA, META_NETWORK, META_GENESIS)
COPY_BATCH = 64 * 1024 * 1024  # bytes per synced write while salvaging (a few blocks)


def repair(db_path: Path) -> None:
    """Repair the (closed) chain database at ``db_path``; see the module docstring."""
    repair_chain_db(db_path)
    if _reads_back(db_path):
        return
    log.warning("%s still has damaged tables after LevelDB repair: salvaging it", db_path)
    _salvage(db_path)


def _open(path: Path, **kw: Any) -> Any:
    try:
        return plyvel.DB(str(path), **kw)
    except plyvel.Error as exc:
        raise StorageError(
            f"cannot open {path} to repair it ({exc}): move that folder aside and start "
            "the node again to resync from peers"
        ) from None


def _reads_back(db_path: Path) -> bool:
    """True when every record of the database passes its checksum."""
    db = _open(db_path)
    try:
        with db.iterator(verify_checksums=True) as it:
            for _ in it:
                pass
        return True
    except plyvel.Error:
        return False
    finally:
        db.close()


def _copy_readable(old: Any, new: Any, prefix: bytes) -> int:
    """Copy the records under ``prefix`` that read back into ``new``, scanning from
    both ends (one damaged region hides only itself), in synced batches of COPY_BATCH
    bytes: never the whole store in memory. Returns how many were copied."""
    copied: set[bytes] = set()
    for reverse in (False, True):
        batch, size = new.write_batch(sync=True), 0
        try:
            with old.iterator(prefix=prefix, reverse=reverse, verify_checksums=True) as it:
                for key, value in it:
                    if key in copied:
                        break  # (backwards) the forward scan read on from here
                    batch.put(key, value)
                    copied.add(key)
                    size += len(key) + len(value)
                    if size >= COPY_BATCH:
                        batch.write()
                        batch, size = new.write_batch(sync=True), 0
        except plyvel.Error as exc:
            log.warning("repair: skipping damaged %r records (%s)", prefix, exc)
        finally:
            batch.write()
    return len(copied)


def finish_interrupted_salvage(db_path: Path) -> bool:
    """Complete the swap of a salvaged copy (``chain.salvage``) for the damaged
    database, if a whole copy waits for it (COMPLETE_SUFFIX): the damaged one becomes
    ``chain.damaged``, the copy ``chain``. Every step may be cut short and run again.
    True if there was one to finish."""
    mark = db_path.with_name(db_path.name + COMPLETE_SUFFIX)
    if not mark.exists():
        return False
    fresh = db_path.with_name(db_path.name + SALVAGE_SUFFIX)
    damaged = db_path.with_name(db_path.name + DAMAGED_SUFFIX)
    if fresh.exists():
        if db_path.exists():
            shutil.rmtree(damaged, ignore_errors=True)
            db_path.rename(damaged)
        fresh.rename(db_path)
        sync_folder(db_path.parent)
        log.warning("repair: the salvaged copy of %s is in place", db_path)
    mark.unlink()
    sync_folder(db_path.parent)
    return True


def _salvage(db_path: Path) -> None:
    fresh = db_path.with_name(db_path.name + SALVAGE_SUFFIX)
    damaged = db_path.with_name(db_path.name + DAMAGED_SUFFIX)
    shutil.rmtree(fresh, ignore_errors=True)
    old = _open(db_path)
    new = _open(fresh, create_if_missing=True, error_if_exists=True)
    copied = 0
    try:
        for key in KEPT_META:
            try:
                value = old.get(key, verify_checksums=True)
            except plyvel.Error:
                value = None  # ChainDB writes schema and network again after a repair
            if value is not None:
                new.put(key, value)
        for prefix in KEPT_PREFIXES:
            copied += _copy_readable(old, new, prefix)
    finally:
        old.close()
        new.close()
    mark = db_path.with_name(db_path.name + COMPLETE_SUFFIX)
    with open(mark, "wb") as f:
        os.fsync(f.fileno())
    sync_folder(db_path.parent)
    finish_interrupted_salvage(db_path)
    log.warning(
        "repair: %d records salvaged into a new %s; the damaged copy is kept in %s "
        "(delete it once the node runs)", copied, db_path, damaged,
    )  # fmt: skip
