"""The transaction pool across a restart: ``<network dir>/mempool.dat``.

Written at a clean stop, read at the next start (as Bitcoin Core's mempool.dat), so a
wallet's transaction sent to a node that stops before a block takes it is not silently
gone. The file is deleted once read: a crash (no clean stop) loses the pool, and never
brings back an older one (a tx replaced meanwhile would come back with it).

Format (little-endian): ``MAGIC`` (8 bytes), u32 count, then per transaction u64 the
Unix second it entered the pool, u32 its length and its encoding. Each is offered to
the pool again, lowest nonce first (each sender's run in order, whatever order fee
bumps arrived in: a late replacement of a low nonce must not leave the rest queued
behind a gap), through the pool's own checks (one the tip no longer allows is
dropped) with its old entry time, then the usual expiry runs. Caps, checked before
anything is read: the file's size (the pool's byte cap plus each entry's 12 bytes for
the most entries that many bytes hold), each length (``MAX_TX_SIZE``) and the count
(what the size allows). A file that does not read
back is moved aside to ``mempool.dat.bad`` with a warning: the pool starts empty.
"""

from __future__ import annotations

import logging
import struct
import time
from pathlib import Path

from chain.datadir import atomic_write_bytes
from chain.mempool import Mempool
from chain.tx import MAX_TX_SIZE, TX_FIXED_SIZE, Transaction

log = logging.getLogger("pouw.node")

FILENAME = "mempool.dat"
MAGIC = b"pouwmp01"
_HEAD = struct.Struct("<8sI")
_ENTRY = struct.Struct("<QI")


class MempoolFileError(ValueError):
    """mempool.dat is not one this node wrote (damaged, cut short, too large)."""


def max_file_bytes(pool: Mempool) -> int:
    """The largest file a pool of ``pool.max_bytes`` can leave."""
    most = pool.max_bytes // TX_FIXED_SIZE + 1
    return _HEAD.size + pool.max_bytes + most * _ENTRY.size


def encode(pool: Mempool) -> bytes:
    entries = pool.entries()
    out = [_HEAD.pack(MAGIC, len(entries))]
    for when, tx in entries:
        raw = tx.to_bytes()
        out.append(_ENTRY.pack(max(0, when), len(raw)))
        out.append(raw)
    return b"".join(out)


def decode(data: bytes, max_bytes: int) -> list[tuple[int, Transaction]]:
    """The file's (time, tx) entries; MempoolFileError when it is not well formed."""
    if len(data) > max_bytes:
        raise MempoolFileError(f"{len(data)} bytes, more than a full pool leaves ({max_bytes})")
    if len(data) < _HEAD.size:
        raise MempoolFileError("cut short before its header")
    magic, count = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise MempoolFileError("not a pouw mempool file of this version")
    if count > (len(data) - _HEAD.size) // (_ENTRY.size + TX_FIXED_SIZE):
        raise MempoolFileError(f"{count} entries cannot fit in {len(data)} bytes")
    out = []
    pos = _HEAD.size
    for _ in range(count):
        if pos + _ENTRY.size > len(data):
            raise MempoolFileError("cut short")
        when, length = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        if length > MAX_TX_SIZE or pos + length > len(data):
            raise MempoolFileError(f"an entry of {length} bytes does not fit")
        try:
            tx = Transaction.from_bytes(data[pos : pos + length])
        except ValueError as exc:
            raise MempoolFileError(f"a transaction does not decode ({exc})") from None
        pos += length
        out.append((when, tx))
    if pos != len(data):
        raise MempoolFileError(f"{len(data) - pos} bytes after the last entry")
    return out


def save(pool: Mempool, network_dir: Path) -> int:
    """Write the pool (how many txs); an OSError is logged, never raised: the chain
    is safe either way, only the pool is lost."""
    path = Path(network_dir) / FILENAME
    try:
        atomic_write_bytes(path, encode(pool))
    except OSError as exc:
        log.warning("cannot save the mempool to %s (%s): its %d txs are lost on this stop",
                    path, exc.strerror or exc, len(pool))  # fmt: skip
        return 0
    return len(pool)


def load(pool: Mempool, network_dir: Path, now: int | None = None) -> tuple[int, int]:
    """Offer the saved txs to ``pool``: (taken, dropped). No file: (0, 0)."""
    path = Path(network_dir) / FILENAME
    try:
        most = max_file_bytes(pool)
        with open(path, "rb") as f:  # at most one byte past the cap, whatever it grew to
            data = f.read(most + 1)
        if len(data) > most:
            raise MempoolFileError(f"over {most} bytes, more than a full pool leaves")
        entries = decode(data, most)
    except FileNotFoundError:
        return 0, 0
    except (OSError, MempoolFileError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        log.warning("ignoring the saved mempool %s (%s): moved to %s.bad; the pool starts "
                    "empty (wallets may send their txs again)", path, why, path.name)  # fmt: skip
        try:
            path.replace(path.with_name(path.name + ".bad"))
        except OSError:
            pass
        return 0, 0
    try:
        path.unlink()  # read: a later crash must not bring this pool back
    except OSError as exc:
        log.warning("cannot delete %s after reading it (%s)", path, exc.strerror or exc)
    taken = 0
    clock = int(time.time()) if now is None else now
    for when, tx in sorted(entries, key=lambda e: e[1].nonce):  # (stable: arrival order)
        # an entry time from the future (a clock set back, or a doctored file) counts
        # as now: else that transaction would outlive the pool's expiry for ever
        if pool.add(tx, min(when, clock)).ok:
            taken += 1
    pool.expire(clock)
    taken = min(taken, len(pool))
    return taken, len(entries) - taken
