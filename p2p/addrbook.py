"""The address book and the ban list, each a JSON file in the network's datadir.

Both are written atomically (a temporary file in the same folder, fsync, rename), so a
crash leaves the old file or the new one. Manual bans (``setban``) are persisted;
discouragement for misbehaviour is kept in memory only, as Bitcoin Core does.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chain.datadir import atomic_write_bytes
from p2p.netgroup import netgroup, valid_host

log = logging.getLogger("pouw.p2p")

MAX_TRIED = 2_000  # addresses we connected to at least once
MAX_NEW = 8_000  # addresses only heard of
MAX_ADDRESSES = MAX_TRIED + MAX_NEW
MAX_NEW_PER_GROUP = 512  # new addresses one source group may hold (about 6 %, as in Core)
MAX_BANS = 10_000


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def join_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, an IPv6 host in brackets (what ``split_host_port`` reads back and
    a URL needs)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


PEER_ADDRESS_FORMS = "give HOST:PORT, [IPv6]:PORT or HOST (the network's port), port 1-65535"


def _port(text: str) -> int | None:
    """A port written as 1..5 ASCII digits with a value 1..65535, else None (``int``
    alone would read " 80", "1_0" or "+80")."""
    if not 1 <= len(text) <= 5 or not text.isascii() or not text.isdigit():
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``HOST`` -> (host, port). HOST is an IP literal
    or a DNS name (``valid_host``: no scheme, no spaces), PORT digits only, 1-65535;
    ValueError naming the accepted forms if not."""
    text = text.strip()
    port: int | None = default_port
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or ":" not in host or (rest and not rest.startswith(":")):
            host = ""
        elif rest:
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p)
    else:  # a bare HOST, or an IPv6 literal without brackets (no port then)
        host = text
    if port is None or not valid_host(host, named=True):
        raise ValueError(f"{text[:300]!r} is not a peer address: {PEER_ADDRESS_FORMS}")
    return host, port


@dataclass
class AddrEntry:
    host: str
    port: int
    last_seen: int = 0  # unix s: last time we heard of it / talked to it
    last_try: float = 0.0
    last_success: int = 0
    failures: int = 0
    source: str = ""

    @property
    def key(self) -> str:
        return join_host_port(self.host, self.port)


class AddressBook:
    """Addresses to dial, in two tables as Bitcoin Core's addrman keeps them: *tried*
    (we connected to it once) and *new* (only heard of). Gossip only ever adds to
    *new*, and a full *new* table evicts from the announcing source's own group when
    that group holds its share, else the oldest *new* entry: an addr flood can
    neither push out a peer we connected to nor more than its share of the rest.
    Every operation is O(1), so an addr message costs microseconds per entry."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, AddrEntry] = {}
        self.new: OrderedDict[str, None] = OrderedDict()  # oldest first
        self.tried: OrderedDict[str, None] = OrderedDict()  # least recently good first
        self.groups: dict[str, OrderedDict[str, None]] = {}  # source group -> new keys
        self.group_of: dict[str, str] = {}  # new key -> its source group
        self.dirty = False
        data = _load(path)
        items = data.get("addresses") if isinstance(data, dict) else None
        if isinstance(items, list):
            for item in items[:MAX_ADDRESSES]:
                try:
                    e = AddrEntry(
                        host=str(item["host"]),
                        port=int(item["port"]),
                        last_seen=int(item.get("last_seen", 0)),
                        last_success=int(item.get("last_success", 0)),
                        failures=int(item.get("failures", 0)),
                        source=str(item.get("source", "")),
                    )
                except (KeyError, TypeError, ValueError, OverflowError):  # 1e999 is inf
                    continue
                if not valid_host(e.host) or not 0 < e.port < 65536:
                    continue
                if e.last_success:
                    self._add_tried(e)
                else:
                    self._add_new(e)

    def __len__(self) -> int:
        return len(self.entries)

    def _add_new(self, e: AddrEntry, key: str | None = None) -> None:
        key = key or e.key
        group = netgroup(e.source) if e.source else ""
        mine = self.groups.get(group)
        if mine is not None and len(mine) >= MAX_NEW_PER_GROUP:
            self._drop(next(iter(mine)))  # a source past its share replaces its own
        elif len(self.new) >= MAX_NEW:
            self._drop(next(iter(self.new)))
        mine = self.groups.get(group)  # (the drop may have removed an emptied group)
        if mine is None:
            mine = self.groups[group] = OrderedDict()
        self.entries[key] = e
        self.new[key] = None
        self.group_of[key] = group
        mine[key] = None

    def _add_tried(self, e: AddrEntry) -> None:
        while len(self.tried) >= MAX_TRIED:
            self._drop(next(iter(self.tried)))
        self.entries[e.key] = e
        self.tried[e.key] = None

    def _drop(self, key: str) -> None:
        e = self.entries.pop(key, None)
        if e is None:
            return
        self.tried.pop(key, None)
        if key in self.new:
            del self.new[key]
            group = self.group_of.pop(key, "")
            mine = self.groups.get(group)
            if mine is not None:
                mine.pop(key, None)
                if not mine:
                    del self.groups[group]
        self.dirty = True

    def add(self, host: str, port: int, last_seen: int = 0, source: str = "") -> bool:
        """Hear of ``host:port`` from ``source`` (a peer's IP, "seed", "inbound")."""
        if not 0 < port < 65536 or not valid_host(host):
            return False
        key = join_host_port(host, port)
        e = self.entries.get(key)
        now = int(time.time())
        if e is not None:
            if last_seen > e.last_seen:
                e.last_seen = min(last_seen, now)
                self.dirty = True
            return False
        self._add_new(AddrEntry(host, port, min(last_seen, now), source=source), key)
        self.dirty = True
        return True

    def remove(self, host: str, port: int) -> None:
        self._drop(join_host_port(host, port))

    def attempt(self, host: str, port: int) -> None:
        e = self.entries.get(join_host_port(host, port))
        if e is not None:
            e.last_try = time.time()

    def good(self, host: str, port: int) -> None:
        """We completed a handshake with it: it moves to (the end of) *tried*."""
        key = join_host_port(host, port)
        e = self.entries.get(key)
        if e is None:
            e = AddrEntry(host, port, source="connected")
        elif key in self.new:
            self._drop(key)
        if key in self.tried:
            self.tried.move_to_end(key)
        else:
            self._add_tried(e)
        e.last_success = e.last_seen = int(time.time())
        e.failures = 0
        self.dirty = True

    def failed(self, host: str, port: int) -> None:
        e = self.entries.get(join_host_port(host, port))
        if e is not None:
            e.failures += 1
            self.dirty = True

    def candidates(self, now: float) -> list[AddrEntry]:
        """Addresses worth a try now: backoff grows with failures, best first."""
        out = [
            e
            for e in self.entries.values()
            if now - e.last_try > min(600.0, 2.0 * 2 ** min(e.failures, 8))
        ]
        out.sort(key=lambda e: (e.failures, -e.last_success, -e.last_seen))
        return out

    def sample(self, n: int) -> list[AddrEntry]:
        fresh = sorted(self.entries.values(), key=lambda e: -e.last_seen)
        return [e for e in fresh if e.failures < 3][:n]

    def save(self) -> None:
        atomic_write_json(
            self.path,
            {"version": 1, "addresses": [
                {k: v for k, v in asdict(e).items() if k != "last_try"}
                for e in self.entries.values()
            ]},
        )  # fmt: skip
        self.dirty = False


@dataclass
class Ban:
    address: str
    created: int
    until: int
    reason: str


class BanListFullError(Exception):
    """A ban past MAX_BANS: refused rather than dropped silently at the next start."""


class BanList:
    """Manual bans by IP, persisted; expired entries are dropped as they are met."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bans: dict[str, Ban] = {}
        data = _load(path)
        items = data.get("bans") if isinstance(data, dict) else None
        if isinstance(items, list):
            for item in items[:MAX_BANS]:
                try:
                    ban = Ban(
                        str(item["address"]), int(item["created"]), int(item["until"]),
                        str(item.get("reason", "manually added")),
                    )  # fmt: skip
                except (KeyError, TypeError, ValueError, OverflowError):  # 1e999 is inf
                    continue
                self.bans[ban.address] = ban
        self.sweep()

    def sweep(self) -> None:
        now = time.time()
        for ip in [ip for ip, b in self.bans.items() if b.until <= now]:
            del self.bans[ip]

    def is_banned(self, ip: str) -> bool:
        ban = self.bans.get(ip)
        if ban is None:
            return False
        if ban.until <= time.time():
            del self.bans[ip]
            return False
        return True

    def add(self, ip: str, seconds: int, reason: str = "manually added") -> None:
        """Ban ``ip``; BanListFullError past MAX_BANS (a restart would drop the rest)."""
        if ip not in self.bans and len(self.bans) >= MAX_BANS:
            self.sweep()
            if len(self.bans) >= MAX_BANS:
                raise BanListFullError(
                    f"the ban list holds {MAX_BANS} addresses, its most: remove some "
                    "(setban IP remove, clearbanned) first"
                )
        now = int(time.time())
        self.bans[ip] = Ban(ip, now, now + seconds, reason)
        self.save()

    def remove(self, ip: str) -> bool:
        found = self.bans.pop(ip, None) is not None
        self.save()
        return found

    def clear(self) -> None:
        self.bans.clear()
        self.save()

    def listing(self) -> list[dict[str, Any]]:
        self.sweep()
        return [
            {"address": b.address, "ban_created": b.created, "banned_until": b.until,
             "ban_reason": b.reason}
            for b in sorted(self.bans.values(), key=lambda b: b.address)
        ]  # fmt: skip

    def save(self) -> None:
        bans = [asdict(b) for b in self.bans.values()]
        atomic_write_json(self.path, {"version": 1, "bans": bans})
