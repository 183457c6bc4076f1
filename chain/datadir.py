"""The node's data directory and its exclusive lock.

A datadir holds everything one node writes (the chain database under ``chain/``,
the RPC cookie, logs, ...). Only one process may use a datadir at a time: opening a
:class:`DataDir` takes an exclusive, non-blocking ``flock`` on ``<datadir>/LOCK`` and
writes the holder's pid into it so that a second opener can say who holds it.

The lock belongs to the open file description, so it is released when
:meth:`DataDir.close` runs, when the process exits, and also when the process is
killed (``kill -9``): a crashed node never leaves a stale lock behind. The ``LOCK``
file itself is left in place on purpose (deleting lock files races with openers).

A second :class:`DataDir` on the same folder fails with :class:`DatadirLockedError`
even inside the same process, because each one opens its own file description.
"""

from __future__ import annotations

import errno
import fcntl
import os
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "LOCK_FILENAME", "DataDir", "DatadirError", "DatadirLockedError", "atomic_write_bytes",
    "default_datadir",
]  # fmt: skip

LOCK_FILENAME = "LOCK"


def sync_folder(folder: Path) -> None:
    """fsync a folder: the names made or renamed in it survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, fsynced, then
    renamed over it (a crash leaves the old file, never half of the new one)."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync_folder(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def default_datadir() -> Path:
    """Where every ``pouw`` command looks without ``--datadir``: ``$POUW_DATADIR``,
    else ``~/.pouw`` (the node, the wallet and the miner must agree on it)."""
    return Path(os.environ.get("POUW_DATADIR", Path.home() / ".pouw"))


class Closeable(ABC):
    """``with obj:`` closes ``obj`` on the way out, whatever happened (``close()`` is
    the subclass's, and idempotent)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class DatadirError(Exception):
    """A datadir could not be opened or used."""


class DatadirLockedError(DatadirError):
    """Another process (or another :class:`DataDir` in this one) holds the datadir."""

    def __init__(self, path: Path, holder_pid: int | None) -> None:
        self.path = path
        self.holder_pid = holder_pid
        who = f"process {holder_pid}" if holder_pid is not None else "another process"
        super().__init__(
            f"datadir {path} is locked by {who} (lock file {path / LOCK_FILENAME}). "
            "Is another pouw node already running with this --datadir? "
            "Stop that node first, or pass a different --datadir."
        )


def _read_holder_pid(lock_path: Path) -> int | None:
    try:
        text = lock_path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    try:
        pid = int(text.split()[0]) if text else None
    except ValueError:
        return None
    return pid if pid is not None and pid > 0 else None


class DataDir(Closeable):
    """An exclusively locked datadir folder (created with mode 0700 if missing).

    Usage::

        with DataDir(path) as dd:
            db = ChainDB(dd, network="devnet")
            ...
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path).expanduser().absolute()
        try:
            self._path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DatadirError(
                f"cannot create datadir {self._path} ({exc.strerror or exc}): give a folder "
                "that you may create and write to (no part of its path may be a file)"
            ) from exc
        if not self._path.is_dir():
            raise DatadirError(f"datadir {self._path} exists and is not a directory")
        self._lock_path = self._path / LOCK_FILENAME
        self._fd: int | None = None
        self._owner_pid = 0
        self._acquire()

    def _acquire(self) -> None:
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DatadirError(
                f"cannot open lock file {self._lock_path} ({exc.strerror or exc}): it must be "
                "a file the node may write; move aside whatever is there in its place"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DatadirLockedError(self._path, _read_holder_pid(self._lock_path)) from None
            raise DatadirError(f"cannot lock {self._lock_path}: {exc}") from exc
        # We hold the lock: record who we are for the error message of later openers.
        stamp = f"{os.getpid()}\n".encode("ascii")
        try:
            os.pwrite(fd, stamp, 0)
            os.ftruncate(fd, len(stamp))
        except OSError:
            pass  # the pid is only informative
        self._fd = fd
        self._owner_pid = os.getpid()

    @property
    def path(self) -> Path:
        """Absolute path of the datadir."""
        return self._path

    @property
    def locked(self) -> bool:
        """True while this object holds the lock (until :meth:`close`)."""
        return self._fd is not None

    def sub(self, name: str) -> Path:
        """Path of an entry inside the datadir (not created)."""
        return self._path / name

    def close(self) -> None:
        """Release the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # A forked child shares the lock's file description: unlocking there would
            # drop the parent's lock too, so the child only closes its copy.
            if os.getpid() == self._owner_pid:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __del__(self) -> None:
        # Closing the fd is enough to drop the flock; do it if the owner forgot.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        state = "locked" if self.locked else "closed"
        return f"DataDir({str(self._path)!r}, {state})"
