"""Numba's on-disk cache of our kernels, dropped when a module they were built from changes.

Numba keys a cached function on the contents of the file that defines it, and nothing
else. Our kernels take code and constants from other files: the SHA-256 intrinsic
(compute/sha256_lanes.py) is inlined into kernels.py's and fasthash.py's functions,
fasthash.py calls keccak_lanes.py's permutation, int8_kernels.py freezes constants of
kernels.py and int_tile.py, and fasthash.py the tags of consensus/hashing.py. After an
update that changes only such a module (a `git pull` touching sha256_lanes.py and not
kernels.py), Numba would go on loading machine code built from the old one: a node
that hashes the old way, with no error anywhere.

``drop_stale()`` runs before any cached kernel is built or loaded (each module with
cached kernels calls it at import, before its first ``@njit``): it fingerprints the
modules in ``FED_MODULES`` and, when the fingerprint differs from the one stored beside
the cache, deletes the cache's entries so that every kernel is compiled again (about
22 s of CPU on a 2-core machine) and stores the new fingerprint. tests/test_numba_cache.py
checks that ``FED_MODULES`` covers every project module a cached-kernel module imports.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from contextlib import suppress
from pathlib import Path

log = logging.getLogger("pouw.compute")
_ROOT = Path(__file__).resolve().parent.parent
# The modules whose code or constants end up inside cached kernels of another file.
FED_MODULES = (
    "compute/int_tile.py",
    "compute/keccak_lanes.py",
    "compute/kernels.py",
    "compute/sha256_lanes.py",
    "consensus/hashing.py",
)
STAMP_NAME = "pouw-kernel-sources.sha256"
# numba.core.caching's locators for a function in a source file, in Numba's order.
_LOCATORS = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
_CACHE_SUFFIXES = (".nbi", ".nbc")
_checked = False


def sources_fingerprint(root: Path = _ROOT) -> str:
    """SHA-256 over the names and contents of ``FED_MODULES``."""
    digest = hashlib.sha256(b"pouw numba cache sources v1\0")
    for name in FED_MODULES:
        data = (root / name).read_bytes()
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def cache_dir(source: Path = _ROOT / "compute" / "kernels.py") -> Path | None:
    """The directory where Numba keeps the cache of kernels defined beside ``source``
    (created if need be), chosen as Numba chooses it: NUMBA_CACHE_DIR if set, else the
    source's __pycache__ if writable, else the user-wide cache; None if none works."""
    from numba.core import caching

    for name in _LOCATORS:  # Numba 0.62 dropped the leading underscore of these names
        locator_class = getattr(caching, name, None) or getattr(caching, "_" + name)
        locator = locator_class.from_function(cache_dir, str(source))
        if locator is not None:
            return Path(locator.get_cache_path())
    return None


def drop_stale() -> None:
    """Once per process: delete the cached kernels if they may have been built from
    other versions of ``FED_MODULES``."""
    global _checked
    if _checked:
        return
    _checked = True
    try:
        directory = cache_dir()
    except (ImportError, AttributeError) as exc:  # a Numba whose locators moved again
        log.warning(
            "cannot check Numba's cache against the kernels' sources (%s): if kernels "
            "misbehave after an update, delete compute/__pycache__",
            exc,
        )
        return
    if directory is not None:
        with suppress(OSError):  # a cache we cannot write is not ours to fix
            _drop_if_stale(directory, sources_fingerprint())


def _drop_if_stale(directory: Path, fingerprint: str) -> bool:
    """True if entries were dropped. Serialized with other processes by a lock file, so
    that two processes started together do not delete each other's fresh entries."""
    stamp = directory / STAMP_NAME
    with open(directory / (STAMP_NAME + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with suppress(FileNotFoundError):
                if stamp.read_text().strip() == fingerprint:
                    return False
            # No stamp, or another one: entries of unknown or other sources (none on a
            # fresh checkout, where this stamps the empty cache before the first build).
            dropped = False
            for entry in directory.iterdir():
                if entry.suffix in _CACHE_SUFFIXES:
                    with suppress(FileNotFoundError):
                        entry.unlink()
                        dropped = True
            tmp = directory / f"{STAMP_NAME}.{os.getpid()}.tmp"
            tmp.write_text(fingerprint + "\n")
            tmp.replace(stamp)
            return dropped
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
