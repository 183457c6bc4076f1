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

import asyncio
import builtins
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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


def _dtype(kind: str) -> np.dtype:  # type: ignore[type-arg]
    if kind not in KINDS:
        raise BlobError(f"unknown blob kind {kind!r}")
    return np.dtype("<i4") if kind == "c" else np.dtype(np.int8)


def _node_tag(kind: str) -> str:
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
    return merkle_root_of(line_leaf_array(kind, matrix), _node_tag(kind))


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
        return self.cols * _dtype(self.kind).itemsize

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

    def _path(self, root: bytes, kind: str, suffix: str) -> Path:
        return self.dir / f"{root.hex()}.{kind}.{suffix}"

    def used(self) -> int:
        with self._lock:
            return self._used_locked()

    def _used_locked(self) -> int:
        if self._used is None:
            on_disk = sum(p.stat().st_size for p in self.dir.glob("*.*.*"))
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
                except (OSError, ValueError):
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
                out.append(BlobInfo(bytes.fromhex(root_hex), kind, *map(int, arr.shape)))
            except (OSError, ValueError):
                continue
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
        mat = np.ascontiguousarray(matrix, dtype=_dtype(kind))
        if mat.ndim != 2 or not 0 < mat.shape[0] <= MAX_BLOB_LINES:
            raise BlobError(f"blob shape {mat.shape} is not allowed")
        if mat.shape[1] * mat.itemsize > MAX_LINE_BYTES:
            raise BlobError("blob lines are too long")
        if leaves is not None and root is not None and len(leaves) == mat.shape[0]:
            got = root
        else:
            words = line_leaf_array(kind, mat)
            leaves = to_digests(words)
            got = merkle_root_of(words, _node_tag(kind))
        if root is not None and got != root:
            raise BlobError(f"blob does not match its root {root.hex()}: dropped")
        if not owned and np.shares_memory(mat, matrix):
            mat = mat.copy()
        mat.flags.writeable = False
        info = BlobInfo(got, kind, int(mat.shape[0]), int(mat.shape[1]))
        joined = b"".join(leaves)
        with self._lock:
            if got in self._pending or self._path(got, kind, "npy").exists():
                return got
            if self._used_locked() + mat.nbytes + len(joined) > self.quota:
                raise BlobError(f"blob store quota of {self.quota} bytes is full")
            self._used = self._used_locked() + mat.nbytes + len(joined)
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
        return np.load(self._path(root, info.kind, "npy"), mmap_mode="r")

    def leaves(self, root: bytes) -> bytes | None:
        pending = self._pending.get(root)
        if pending is not None:
            return pending[2]
        info = self.find(root)
        return None if info is None else self._path(root, info.kind, "leaves").read_bytes()

    def leaf_words(self, root: bytes) -> Words | None:
        """The blob's line leaves as (lines, 8) words, checked against its root: None
        if the blob is not here or its leaves file does not match it."""
        info = self.find(root)
        raw = self.leaves(root)
        if info is None or raw is None or len(raw) != 32 * info.rows:
            return None
        from compute.fast_commit import leaf_bytes_to_words

        words = leaf_bytes_to_words(raw)
        return words if merkle_root_of(words, _node_tag(info.kind)) == root else None

    def rows(self, root: bytes, start: int, count: int) -> bytes | None:
        arr = self.get(root)
        if arr is None or not (0 <= start and 0 < count and start + count <= arr.shape[0]):
            return None
        return arr[start : start + count].tobytes()

    def delete(self, root: bytes) -> None:
        with self._lock:
            if self._pending.pop(root, None) is not None or self._used is not None:
                self._used = None  # rescanned on the next put
            for path in self.dir.glob(f"{root.hex()}.*"):
                path.unlink(missing_ok=True)


# --- fetching ------------------------------------------------------------------------


@dataclass
class FetchReport:
    """What a fetch did: which peers failed and how (for logs, bans and tests).

    ``bad_peers`` holds every source dropped; ``bad_data`` only those that answered
    with data that cannot come from an honest holder of the blob (leaves not matching
    the root, a row not matching its leaf, more or fewer bytes than asked). A source
    that is unreachable, stalls or answers an HTTP error is in ``bad_peers`` only.
    """

    bad_peers: dict[str, str] = field(default_factory=dict)
    bad_data: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    requests: int = 0
    leaves: list[builtins.bytes] | None = None  # the blob's line leaves, all rows matched


class _TooMuch(BlobError):
    """The peer sent more bytes than asked."""


async def _read_into(resp: object, dest: memoryview) -> int:
    """The body straight into ``dest`` (no copy of its own); returns its length,
    refusing (_TooMuch) anything longer than ``dest``."""
    content = resp.content  # type: ignore[attr-defined]
    got = 0
    while True:
        part = await content.readany()
        if not part:
            return got
        if got + len(part) > len(dest):
            raise _TooMuch(f"peer sent more than the {len(dest)} bytes asked")
        dest[got : got + len(part)] = part
        got += len(part)


async def fetch_blob(
    urls: Sequence[str],
    root: bytes,
    kind: str,
    rows: int,
    cols: int,
    store: BlobStore | None = None,
    timeout: float = 20.0,
    report: FetchReport | None = None,
) -> npt.NDArray[np.integer]:
    """Download the blob ``root`` (shape known from the chain) from ``urls``, checking
    the leaves against the root and every row against its leaf. Raises BlobError."""
    import aiohttp

    report = report if report is not None else FetchReport()
    dtype = _dtype(kind)
    line_bytes = cols * dtype.itemsize
    if not 0 < rows <= MAX_BLOB_LINES or not 0 < line_bytes <= MAX_LINE_BYTES:
        raise BlobError("blob shape out of bounds")
    out = np.empty((rows, cols), dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    per = max(1, FETCH_RANGE_BYTES // line_bytes)
    peers = [u.rstrip("/") for u in urls if u]
    client_timeout = aiohttp.ClientTimeout(total=timeout, sock_read=timeout)

    def drop(peer: str, why: str, lied: bool = False) -> None:
        report.bad_peers[peer] = why
        if lied:
            report.bad_data[peer] = why
        if peer in peers:
            peers.remove(peer)

    async with aiohttp.ClientSession(timeout=client_timeout) as session:

        async def get_into(peer: str, path: str, dest: memoryview) -> int:
            report.requests += 1
            async with session.get(f"{peer}{path}") as resp:
                if resp.status != 200:
                    raise BlobError(f"HTTP {resp.status}")
                got = await asyncio.wait_for(_read_into(resp, dest), timeout)
                report.bytes += got
                return got

        leaves: list[bytes] | None = None
        for peer in list(peers):
            got_leaves = bytearray(32 * rows)
            try:
                size = await get_into(peer, f"/blob/{root.hex()}/leaves", memoryview(got_leaves))
                raw = bytes(got_leaves[:size])
            except (BlobError, aiohttp.ClientError, TimeoutError) as exc:
                drop(peer, f"leaves: {str(exc) or type(exc).__name__}", isinstance(exc, _TooMuch))
                continue
            cand = [raw[i : i + 32] for i in range(0, len(raw), 32)]
            if len(raw) != 32 * rows or merkle_root_of(cand, _node_tag(kind)) != root:
                drop(peer, "leaves do not match the root", lied=True)
                continue
            leaves = cand
            break
        if leaves is None:
            raise BlobError(f"no peer served the leaves of {root.hex()}: {report.bad_peers}")
        limit = asyncio.Semaphore(FETCH_PARALLEL)

        async def fetch_range(start: int) -> None:
            assert leaves is not None
            count = min(per, rows - start)
            want = count * line_bytes
            async with limit:
                await fetch_rows(start, count, want, leaves)

        async def fetch_rows(start: int, count: int, want: int, leaves: list[bytes]) -> None:
            while True:
                if not peers:
                    raise BlobError(f"no peer left for rows {start}..: {report.bad_peers}")
                peer = peers[0]
                # straight into place: a range that fails its check is fetched again
                # into the same place from another peer
                dest = view[start * line_bytes : start * line_bytes + want]
                try:
                    got_bytes = await get_into(
                        peer, f"/blob/{root.hex()}/rows?start={start}&count={count}", dest
                    )
                except (BlobError, aiohttp.ClientError, TimeoutError) as exc:
                    why = f"rows {start}: {str(exc) or type(exc).__name__}"
                    drop(peer, why, isinstance(exc, _TooMuch))
                    continue
                if got_bytes != want:
                    drop(peer, f"rows {start}: {got_bytes} bytes, expected {want}", lied=True)
                    continue
                lines = np.frombuffer(dest, dtype).reshape(count, cols)
                got = to_digests(line_leaf_array(kind, lines))
                bad = next((i for i in range(count) if got[i] != leaves[start + i]), None)
                if bad is not None:
                    drop(peer, f"row {start + bad} does not match its leaf", lied=True)
                    continue
                return

        try:  # the first range no peer can serve cancels the others
            async with asyncio.TaskGroup() as group:
                for start in range(0, rows, per):
                    group.create_task(fetch_range(start))
        except* BlobError as failed:
            raise failed.exceptions[0] from None
    report.leaves = leaves
    if store is not None:  # written to disk behind; ``out`` becomes read-only
        store.put(kind, out, root, leaves=leaves, owned=True)
    return out
