"""Content-addressed matrix blobs (A, B, C of market jobs) and a fetcher that checks
every piece it receives.

A blob is a matrix addressed by the Merkle root the chain already knows:

* kind ``"a"``: A (m x k int8), root hA over its rows;
* kind ``"bt"``: B stored transposed (n x k int8), root hB over the columns of B;
* kind ``"c"``: C (m x n int32), root hC (consensus/result.py) over its row roots.

So every blob is "lines" (rows of the stored matrix), each line has a 32-byte leaf
(line_leaf for int8 kinds, the result row root for C), and the root is the Merkle
root of the leaves. A downloader first gets the leaf list (32 bytes per line) and
checks it against the root, then fetches row ranges and checks each row against its
leaf as it arrives; a peer that sends a wrong row, more bytes than asked, or stalls is
dropped and the range is asked from the next one. Nothing unchecked is ever stored.

Store layout: ``<dir>/<root hex>.<kind>.npy`` plus ``.leaves``; a quota on total bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from compute.priority import lower_thread_priority
from consensus.hashing import TAG_MERKLE_NODE, TAG_RESULT_ROW

if TYPE_CHECKING:
    from compute.fast_commit import Words

log = logging.getLogger("pouw.blobs")

KINDS = ("a", "bt", "c")
DEFAULT_QUOTA = 8 << 30  # bytes of blobs a node keeps
MAX_BLOB_LINES = 1 << 17  # above any network's m_max / n_max
MAX_LINE_BYTES = 4 * (1 << 17)  # a row of C at n = 131072, or a line of k_max int8
FETCH_RANGE_BYTES = 1 << 20  # rows asked per request
FETCH_PARALLEL = 4  # range requests in flight at once (hides each request's round trip)
INFO_LIMIT = 4096


class BlobError(Exception):
    """A blob is missing, malformed, does not match its root, or over the quota."""


# An upload's body at most (node/blobs.py): the largest A or Bᵀ a mainnet job may have
# (65536 rows of k_max = 16384 int8) and the .npy header; past it, 413 before any byte
# is read. A C can be larger (m x n int32 up to 4 GiB): a standalone miner, which
# uploads C, leaves such jobs (node/remote_market.py); the in-node miner stores C itself.
NPY_HEADER_ROOM = 4096  # what an upload's .npy header may take of MAX_UPLOAD
MAX_UPLOAD = (1 << 30) + NPY_HEADER_ROOM


def blob_dtype(kind: str) -> np.dtype:  # type: ignore[type-arg]
    if kind not in KINDS:
        raise BlobError(f"unknown blob kind {kind!r}")
    return np.dtype("<i4") if kind == "c" else np.dtype(np.int8)


def check_blob_shape(kind: str, shape: tuple[int, ...]) -> None:
    """The shapes a blob may have: what a peer's announcement of it may say
    (p2p/protocol.py ``_read_blob``), so that no blob we hold makes peers drop us."""
    if len(shape) != 2 or not 0 < shape[0] <= MAX_BLOB_LINES or shape[1] <= 0:
        raise BlobError(
            f"blob shape {shape} is not allowed (1..{MAX_BLOB_LINES} rows, 1 column or more)"
        )
    if shape[1] * blob_dtype(kind).itemsize > MAX_LINE_BYTES:
        raise BlobError(f"blob lines are too long (at most {MAX_LINE_BYTES} bytes)")


def blob_node_tag(kind: str) -> str:
    return TAG_RESULT_ROW if kind == "c" else TAG_MERKLE_NODE


# compute/fast_commit (Numba kernels) is imported on first use, not with this module:
# the CLI imports this module for commands that never hash a blob.


def line_leaf_array(kind: str, matrix: npt.NDArray[np.integer]) -> Words:
    """The leaves of a blob's lines (row roots for C), as count x 8 words."""
    from compute.fast_commit import line_leaf_words, result_row_root_words

    if kind == "c":
        return result_row_root_words(matrix)
    return line_leaf_words(matrix)  # type: ignore[arg-type]


def to_digests(words: Words) -> list[bytes]:
    from compute.fast_commit import to_digests as digests

    return digests(words)


def merkle_root_of(leaves: Words | list[bytes], node_tag: str) -> bytes:
    from compute.fast_commit import merkle_root_of as root_of

    return root_of(leaves, node_tag)


def line_leaves(kind: str, matrix: npt.NDArray[np.integer]) -> list[bytes]:
    return to_digests(line_leaf_array(kind, matrix))


def blob_root(kind: str, matrix: npt.NDArray[np.integer]) -> bytes:
    return merkle_root_of(line_leaf_array(kind, matrix), blob_node_tag(kind))


def bt_root_of(b: npt.NDArray[np.int8]) -> bytes:
    """blob_root("bt", B^T) from B itself: its columns hashed in place (no transpose)."""
    from compute.fast_commit import column_leaf_words

    return merkle_root_of(column_leaf_words(b), TAG_MERKLE_NODE)


@dataclass(frozen=True)
class BlobInfo:
    root: bytes
    kind: str
    rows: int
    cols: int

    @property
    def line_bytes(self) -> int:
        return self.cols * blob_dtype(self.kind).itemsize

    @property
    def nbytes(self) -> int:
        return self.rows * self.line_bytes


class BlobStore:
    """Blobs on disk under ``directory``, at most ``quota`` bytes in all (thread-safe).

    Writes are behind: ``put`` checks a blob, holds it in memory (served at once by
    every read) and hands it to one writer thread. Writing 16 MB to a fresh file took
    30-60 ms here, on the path from a buyer's upload to a miner's product and from a
    product to its commit; it is off that path now. ``flush`` waits for the writes
    (a node's shutdown calls it); a blob whose write did not finish before a crash is
    simply not there after the restart, as if it had never been received.
    """

    def __init__(self, directory: Path, quota: int = DEFAULT_QUOTA) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.quota = quota
        self._lock = threading.Lock()
        self._pending: dict[bytes, tuple[BlobInfo, npt.NDArray[np.integer], bytes]] = {}
        self._writer: ThreadPoolExecutor | None = None
        self._writes: list[Future[None]] = []
        self._used: int | None = None  # bytes on disk and pending (scanned once)
        # called with the BlobInfo of every blob newly stored (not of one already held),
        # on the thread that stored it; the P2P service announces it (p2p/service.py)
        self.listeners: list[Callable[[BlobInfo], None]] = []
        # called (on the storing thread, without the lock) with the size of a blob that
        # does not fit under the quota, to delete blobs no longer needed
        # (node/blob_retention.py)
        self.make_room: Callable[[int], None] | None = None
        self._clear_leftovers()

    def _clear_leftovers(self) -> None:
        """Delete what a write cut short by a crash left (a ``.tmp.npy``, a ``.leaves``
        whose ``.npy`` never came, a ``.npy`` without its leaves): no blob, yet its
        bytes counted against the quota for good, since no pruning lists it. Only the
        node opens its store (under its datadir lock), so no write is under way."""
        removed = 0
        for path in self.dir.glob("*.*.*"):
            root_hex, kind, rest = path.name.split(".", 2)
            if rest == "tmp.npy":
                gone = True
            elif rest == "leaves":
                gone = not (self.dir / f"{root_hex}.{kind}.npy").exists()
            elif rest == "npy":
                gone = not (self.dir / f"{root_hex}.{kind}.leaves").exists()
            else:
                continue
            if gone:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("blob store: %d files left by an interrupted write deleted", removed)

    def _path(self, root: bytes, kind: str, suffix: str) -> Path:
        return self.dir / f"{root.hex()}.{kind}.{suffix}"

    def used(self) -> int:
        with self._lock:
            return self._used_locked()

    def _used_locked(self) -> int:
        if self._used is None:  # a blob being written counts once, as pending
            writing = {root.hex() for root in self._pending}
            on_disk = 0
            for path in self.dir.glob("*.*.*"):
                if path.name.split(".", 1)[0] not in writing:
                    try:
                        on_disk += path.stat().st_size
                    except OSError:  # deleted meanwhile
                        continue
            self._used = on_disk + sum(
                info.nbytes + len(leaves) for info, _, leaves in self._pending.values()
            )  # fmt: skip
        return self._used

    def find(self, root: bytes) -> BlobInfo | None:
        pending = self._pending.get(root)
        if pending is not None:
            return pending[0]
        for kind in KINDS:
            path = self._path(root, kind, "npy")
            if path.exists():
                try:
                    arr = np.load(path, mmap_mode="r")
                except (OSError, ValueError, EOFError):  # gone, or cut short (a crash)
                    return None
                if arr.ndim != 2:
                    return None
                return BlobInfo(root, kind, int(arr.shape[0]), int(arr.shape[1]))
        return None

    def recent(self, limit: int) -> list[BlobInfo]:
        """The ``limit`` most recently stored blobs, newest first."""
        queued = list(self._pending.values())  # the writer empties it meanwhile
        out = [info for info, _, _ in reversed(queued)][:limit]
        listed = {info.root for info, _, _ in queued}  # once, though written since
        paths = []
        for path in self.dir.glob("*.*.npy"):
            root_hex, kind, rest = path.name.split(".", 2)
            try:
                root = bytes.fromhex(root_hex) if len(root_hex) == 64 else None
            except ValueError:  # not a file of the store's
                root = None
            pending = root is None or root in listed or root in self._pending
            if kind in KINDS and rest == "npy" and not pending:  # not a write's leftover
                try:
                    paths.append((path.stat().st_mtime, root_hex, kind, path))
                except OSError:
                    continue
        paths.sort(reverse=True)
        for _, root_hex, kind, path in paths[: max(0, limit - len(out))]:
            try:
                arr = np.load(path, mmap_mode="r")
                check_blob_shape(kind, arr.shape)
            except (OSError, ValueError, EOFError, BlobError):  # cut short, or not ours
                continue
            out.append(BlobInfo(bytes.fromhex(root_hex), kind, *map(int, arr.shape)))
        return out

    def put(
        self, kind: str, matrix: npt.NDArray[np.integer], root: bytes | None = None,
        leaves: list[bytes] | None = None, owned: bool = False,
    ) -> bytes:  # fmt: skip
        """Store ``matrix`` as a blob of ``kind``; returns its root. If ``root`` is given
        the matrix must match it (a mismatch is dropped with BlobError). ``leaves``,
        with ``root``: the matrix's line leaves, already checked against the root and
        every line against its leaf (fetch_blob does), so they are not hashed again.
        The store keeps its own copy (the caller may change ``matrix`` afterwards),
        unless the caller hands it ``owned``: then the matrix becomes read-only."""
        want = blob_dtype(kind)
        check_blob_shape(kind, matrix.shape)  # before a conversion allocates anything
        if matrix.dtype != want:
            if matrix.dtype.kind not in "iu":
                raise BlobError(f"a blob of kind {kind} holds integers, not {matrix.dtype}")
            bounds = np.iinfo(want)
            if int(matrix.min()) < bounds.min or int(matrix.max()) > bounds.max:
                raise BlobError(f"a blob of kind {kind} holds {want} entries: some do not fit")
        mat = np.ascontiguousarray(matrix, dtype=want)
        if leaves is not None and root is not None and len(leaves) == mat.shape[0]:
            got = root
        else:
            words = line_leaf_array(kind, mat)
            leaves = to_digests(words)
            got = merkle_root_of(words, blob_node_tag(kind))
        if root is not None and got != root:
            raise BlobError(f"blob does not match its root {root.hex()}: dropped")
        if not owned and np.shares_memory(mat, matrix):
            mat = mat.copy()
        mat.flags.writeable = False
        info = BlobInfo(got, kind, int(mat.shape[0]), int(mat.shape[1]))
        joined = b"".join(leaves)
        size = mat.nbytes + len(joined)
        with self._lock:
            if self._have_locked(got, kind):
                return got
            full = self._used_locked() + size > self.quota
        if full and self.make_room is not None:
            self.make_room(size)
        with self._lock:
            if self._have_locked(got, kind):
                return got
            if self._used_locked() + size > self.quota:
                raise BlobError(
                    f"blob store quota of {self.quota} bytes is full of blobs that jobs in "
                    "flight still need: raise blob_quota_mb"
                )
            self._used = self._used_locked() + size
            self._pending[got] = (info, mat, joined)
            if self._writer is None:
                # background work: it yields the CPU to serving and checking blobs
                self._writer = ThreadPoolExecutor(
                    1, thread_name_prefix="blob-writer", initializer=lower_thread_priority
                )
            self._writes = [w for w in self._writes if not w.done()]
            self._writes.append(self._writer.submit(self._write, got))
        for listener in list(self.listeners):
            try:
                listener(info)
            except Exception:  # noqa: BLE001 - a listener must not undo the store
                log.exception("blob listener failed")
        return got

    def _write(self, root: bytes) -> None:
        """The writer thread: one pending blob to disk (npy, then leaves, then rename)."""
        held = self._pending.get(root)
        if held is None:  # deleted meanwhile
            return
        info, mat, leaves = held
        tmp = self._path(root, info.kind, "tmp.npy")
        try:
            np.save(tmp, mat)
            self._path(root, info.kind, "leaves").write_bytes(leaves)
        except OSError as exc:
            log.error("blob %s not written to disk: %s", root.hex()[:16], exc)
            with self._lock:
                if self._pending.pop(root, None) is not None:
                    self._used = None
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            if self._pending.get(root) is held:
                os.replace(tmp, self._path(root, info.kind, "npy"))
                del self._pending[root]
                return
        tmp.unlink(missing_ok=True)  # deleted while it was being written
        self._path(root, info.kind, "leaves").unlink(missing_ok=True)

    def flush(self) -> None:
        """Wait until every blob put so far is on disk."""
        with self._lock:
            writes = list(self._writes)
        for write in writes:
            write.result()

    def close(self) -> None:
        self.flush()
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)

    def get(self, root: bytes) -> npt.NDArray[np.integer] | None:
        pending = self._pending.get(root)
        if pending is not None:
            return pending[1]
        info = self.find(root)
        if info is None:
            return None
        try:
            return np.load(self._path(root, info.kind, "npy"), mmap_mode="r")
        except (OSError, ValueError, EOFError):  # deleted (stored(), pruned) since find
            return None

    def leaves(self, root: bytes) -> bytes | None:
        pending = self._pending.get(root)
        if pending is not None:
            return pending[2]
        info = self.find(root)
        if info is None:
            return None
        want = 32 * info.rows  # one leaf per line: more is not this blob's leaves file
        try:
            with open(self._path(root, info.kind, "leaves"), "rb") as f:
                data = f.read(want + 1)
        except OSError:  # deleted since find
            return None
        return data if len(data) == want else None

    def leaf_words(self, root: bytes) -> Words | None:
        """The blob's line leaves as (lines, 8) words, checked against its root: None
        if the blob is not here or its leaves file does not match it."""
        info = self.find(root)
        raw = self.leaves(root)
        if info is None or raw is None or len(raw) != 32 * info.rows:
            return None
        from compute.fast_commit import leaf_bytes_to_words

        words = leaf_bytes_to_words(raw)
        return words if merkle_root_of(words, blob_node_tag(info.kind)) == root else None

    def rows(self, root: bytes, start: int, count: int) -> bytes | None:
        arr = self.get(root)
        if arr is None or not (0 <= start and 0 < count and start + count <= arr.shape[0]):
            return None
        return arr[start : start + count].tobytes()

    def _have_locked(self, root: bytes, kind: str) -> bool:
        """The blob is here, readable: stored again, it counts as stored now (``touch``).
        A file that does not read back (cut short by a crash) is written anew."""
        if root in self._pending:
            return True
        info = self.find(root)
        if info is None or info.kind != kind:
            return False
        return self._touch_locked(self._path(root, kind, "npy"))

    @staticmethod
    def _touch_locked(path: Path) -> bool:
        try:
            os.utime(path)
        except OSError:
            return False
        return True

    def touch(self, root: bytes) -> bool:
        """Count the blob as stored now (the retention keeps it as long as a new one);
        False if it is not here."""
        with self._lock:
            if root in self._pending:
                return True
            return any(self._touch_locked(self._path(root, k, "npy")) for k in KINDS)

    def delete_stale(self, root: bytes, stored_before: float) -> int:
        """Delete the blob if it was stored (or touched) before ``stored_before`` (a
        time.time()); the bytes freed, 0 if it was kept. Checked under the lock, so
        that a blob stored again or touched meanwhile stays."""
        with self._lock:
            if root in self._pending:
                return 0
            for kind in KINDS:
                npy, leaves = self._path(root, kind, "npy"), self._path(root, kind, "leaves")
                try:
                    stat = npy.stat()
                except OSError:
                    continue
                if stat.st_mtime >= stored_before:
                    return 0
                size = stat.st_size
                with contextlib.suppress(OSError):
                    size += leaves.stat().st_size
                npy.unlink(missing_ok=True)
                leaves.unlink(missing_ok=True)
                self._used = None  # rescanned once, at the next put: files, not estimates
                return size
            return 0

    def stored(self) -> list[tuple[bytes, float, int]]:
        """Every blob written to disk (not one still being written) as (root, when it
        was stored (mtime), bytes on disk), oldest first."""
        out = []
        for path in self.dir.glob("*.*.npy"):
            root_hex, kind, rest = path.name.split(".", 2)
            if kind not in KINDS or rest != "npy" or len(root_hex) != 64:
                continue  # a write's leftover (.tmp.npy) or not a file of the store's
            try:
                root = bytes.fromhex(root_hex)
                stat = path.stat()
                size = stat.st_size + self._path(root, kind, "leaves").stat().st_size
            except (ValueError, OSError):
                continue
            if root not in self._pending:
                out.append((root, stat.st_mtime, size))
        out.sort(key=lambda item: item[1])
        return out

    def delete(self, root: bytes) -> None:
        with self._lock:
            if self._pending.pop(root, None) is not None or self._used is not None:
                self._used = None  # rescanned on the next put
            for path in self.dir.glob(f"{root.hex()}.*"):
                path.unlink(missing_ok=True)
