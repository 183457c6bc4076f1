"""Fetching a blob from peers (compute/blobs.py says what a blob is): the leaf list
first, checked against the root the chain knows, then row ranges, each row checked
against its leaf as it arrives; a source that sends a wrong row, more bytes than
asked, or stalls is dropped and the range asked from the next one."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from compute.blobs import (
    FETCH_PARALLEL,
    FETCH_RANGE_BYTES,
    MAX_BLOB_LINES,
    MAX_LINE_BYTES,
    BlobError,
    BlobStore,
    blob_dtype,
    blob_node_tag,
    line_leaf_array,
    merkle_root_of,
    to_digests,
)


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
    lines: range | None = None,
) -> npt.NDArray[np.integer]:
    """Download the blob ``root`` (shape known from the chain) from ``urls``, checking
    the leaves against the root and every row against its leaf. Raises BlobError.
    ``lines``: only those rows (a probe's row of C), returned alone and not stored;
    ``report.leaves`` still has every row's leaf."""
    import aiohttp

    report = report if report is not None else FetchReport()
    dtype = blob_dtype(kind)
    line_bytes = cols * dtype.itemsize
    if not 0 < rows <= MAX_BLOB_LINES or not 0 < line_bytes <= MAX_LINE_BYTES:
        raise BlobError("blob shape out of bounds")
    lines = range(rows) if lines is None else lines
    if not (0 <= lines.start < lines.stop <= rows and lines.step == 1):
        raise BlobError(f"rows {lines.start}..{lines.stop} are not rows of the blob")
    first = lines.start
    out = np.empty((len(lines), cols), dtype)
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
            # never where a peer points us: a redirect could aim our requests at any
            # host (a service on our loopback, a metadata address)
            async with session.get(f"{peer}{path}", allow_redirects=False) as resp:
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
            if len(raw) != 32 * rows or merkle_root_of(cand, blob_node_tag(kind)) != root:
                drop(peer, "leaves do not match the root", lied=True)
                continue
            leaves = cand
            break
        if leaves is None:
            raise BlobError(f"no peer served the leaves of {root.hex()}: {report.bad_peers}")
        limit = asyncio.Semaphore(FETCH_PARALLEL)

        async def fetch_range(start: int) -> None:
            assert leaves is not None
            count = min(per, lines.stop - start)
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
                dest = view[(start - first) * line_bytes : (start - first) * line_bytes + want]
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
                got_lines = np.frombuffer(dest, dtype).reshape(count, cols)
                got = to_digests(line_leaf_array(kind, got_lines))
                bad = next((i for i in range(count) if got[i] != leaves[start + i]), None)
                if bad is not None:
                    drop(peer, f"row {start + bad} does not match its leaf", lied=True)
                    continue
                return

        try:  # the first range no peer can serve cancels the others
            async with asyncio.TaskGroup() as group:
                for start in range(first, lines.stop, per):
                    group.create_task(fetch_range(start))
        except* BlobError as failed:
            raise failed.exceptions[0] from None
    report.leaves = leaves
    if store is not None and len(lines) == rows:  # written behind; ``out`` read-only
        store.put(kind, out, root, leaves=leaves, owned=True)
    return out
