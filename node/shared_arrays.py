"""Arrays handed to a worker process through a memory-backed file instead of a pipe.

A paid job's operands are 18 MB for a 512x4096x4096 product (A and B^T) and its C is
8 MB. Pickled through a multiprocessing queue, the operands took about 55 ms to reach
the standalone miner's worker and C 8-16 ms to come back (measured here, the miner and
its worker on one core: every 64 KiB of pipe is a switch between the two processes).
Instead the coordinator writes the operands into a file of the worker's on a tmpfs
(/dev/shm where there is one) that also has room for C, and sends the worker its path
and layout; the worker maps the file, reads the operands in place and writes C into
its slot; the coordinator copies C out. The file and both mappings are kept for the
worker's next order.

The file's space is reserved with posix_fallocate when it is made: a full tmpfs (a
container's /dev/shm is 64 MiB by default) fails there with an OSError, and the next
directory (the temp dir) is tried, instead of a SIGBUS when a page is first written.

Files are named ``pouw-order-<pid>-<random>``, one per worker, as large as the largest
order it had. The coordinator removes them when it stops, and ``sweep`` removes those
of coordinators that no longer run (a miner killed with SIGKILL leaves its files).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

PREFIX = "pouw-order-"
ALIGN = 64  # each array starts on a cache line


def default_directories() -> list[Path]:
    """Where order files go, best first: the tmpfs, then the temp dir."""
    shm = Path("/dev/shm")
    found = [shm] if shm.is_dir() and os.access(shm, os.W_OK) else []
    return [*found, Path(tempfile.gettempdir())]


@dataclass(frozen=True)
class Slot:
    name: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class SharedRef:
    """What a worker needs to map an order's file (small: it goes through the queue)."""

    path: str
    size: int
    slots: tuple[Slot, ...]


Arrays = dict[str, npt.NDArray[np.generic]]


def _views(base: npt.NDArray[np.uint8], slots: Sequence[Slot]) -> Arrays:
    """The slots' arrays over ``base`` (a mapping, kept alive while a view lives)."""
    return {
        s.name: base[s.offset : s.offset + s.nbytes].view(s.dtype).reshape(s.shape) for s in slots
    }


class OrderFile:
    """The coordinator's side: one worker's file, reused from order to order (its pages
    stay allocated and mapped: a fresh 26 MB tmpfs file cost 16 ms to allocate and fill
    here, a copy into the mapped one 2-4 ms) and made anew, larger, when an order needs
    more room. ``put`` writes an order; ``close`` removes the file."""

    def __init__(self, directories: Sequence[Path] | None = None) -> None:
        self.directories = list(directories or default_directories())
        self.path: Path | None = None
        self.size = 0
        self._base: npt.NDArray[np.uint8] | None = None
        self._arrays: Arrays = {}

    def put(
        self,
        arrays: Mapping[str, npt.NDArray[np.generic]],
        empty: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
    ) -> SharedRef:
        """Write ``arrays`` and lay out empty slots of the given (shape, dtype) for the
        worker to fill; the arrays of an earlier order are overwritten. Raises OSError
        when no directory has room."""
        slots, offset = [], 0
        shapes = {name: (tuple(x.shape), x.dtype.str) for name, x in arrays.items()}
        for name, (shape, dtype) in {**shapes, **(empty or {})}.items():
            slot = Slot(name, offset, tuple(int(d) for d in shape), np.dtype(dtype).str)
            slots.append(slot)
            offset += -(-slot.nbytes // ALIGN) * ALIGN
        if self.path is None or offset > self.size:
            self._make(max(offset, 1))
        assert self._base is not None and self.path is not None
        self._arrays = _views(self._base, slots)
        for name, x in arrays.items():
            self._arrays[name][...] = x
        return SharedRef(str(self.path), self.size, tuple(slots))

    def array(self, name: str) -> npt.NDArray[np.generic]:
        """One of the last order's arrays, in place (overwritten by the next ``put``)."""
        return self._arrays[name]

    def close(self) -> None:
        """Remove the file; the memory goes once no view of it is left."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
        self.path, self.size, self._base, self._arrays = None, 0, None, {}

    def _make(self, size: int) -> None:
        self.close()
        error: OSError | None = None
        for directory in self.directories:
            path = directory / f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                error = exc
                continue
            try:
                os.posix_fallocate(fd, 0, size)  # ENOSPC now, not SIGBUS later
                buffer = mmap.mmap(fd, size)
            except OSError as exc:
                error = exc
                path.unlink(missing_ok=True)
                continue
            finally:
                os.close(fd)
            self.path, self.size, self._base = path, size, np.frombuffer(buffer, np.uint8)
            return
        raise OSError(
            f"no room for a job's {size} bytes of operands and product in "
            f"{', '.join(map(str, self.directories))} ({error}): free some space there"
        )


class MappedOrders:
    """The worker's side: the arrays of an order, mapped in place. The last file stays
    mapped for the next order; a new file (the coordinator grew it) replaces it."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._size = 0
        self._base: npt.NDArray[np.uint8] | None = None

    def arrays(self, ref: SharedRef) -> Arrays:
        """Raises OSError if the file is gone or is not the size the coordinator made it."""
        if self._base is None or (ref.path, ref.size) != (self._path, self._size):
            self._base = None
            with open(ref.path, "r+b") as f:
                if os.fstat(f.fileno()).st_size != ref.size:
                    raise OSError(f"{ref.path} is not {ref.size} bytes")
                buffer = mmap.mmap(f.fileno(), ref.size)
            self._path, self._size, self._base = ref.path, ref.size, np.frombuffer(buffer, np.uint8)
        return _views(self._base, ref.slots)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep(directories: Sequence[Path] | None = None) -> int:
    """Remove the order files of coordinators that no longer run; returns how many."""
    removed = 0
    for directory in directories or default_directories():
        with contextlib.suppress(OSError):
            for path in directory.glob(PREFIX + "*"):
                pid = path.name[len(PREFIX) :].split("-", 1)[0]
                if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed += 1
    return removed
