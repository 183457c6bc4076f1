"""Blob announcements (docs/P2P.md "Blob announcements"): which peers serve which
compute-market blob, and announcing the blobs this node holds."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2p.addrbook import join_host_port
from p2p.peer import BAN_SCORE, Peer
from p2p.protocol import BLOBS_VERSION, MAX_BLOBS, BlobAnn, Blobs

if TYPE_CHECKING:
    from compute.blobs import BlobInfo, BlobStore
    from p2p.peers import PeerManager

log = logging.getLogger("pouw.p2p")

MAX_BLOB_SOURCES = 8  # peer blob endpoints remembered per root
MAX_BLOB_ROOTS = 20_000  # roots with remembered sources, all peers together
MAX_BLOB_ROOTS_PER_PEER = 4096  # roots remembered from one peer (oldest forgotten)


@dataclass
class BlobSource:
    """A peer blob endpoint for one root, with the shape its announcers claimed."""

    kind: str
    rows: int
    line_bytes: int
    peers: set[int] = field(default_factory=set)  # ids of the peers that announced it


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def blob_url(host: str, port: int) -> str:
    return f"http://{join_host_port(host, port)}"


class BlobRelay:
    def __init__(self, pm: PeerManager) -> None:
        self.pm = pm
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the service starts
        self.stopping = False
        self.table: OrderedDict[bytes, dict[str, BlobSource]] = OrderedDict()
        self.store: BlobStore | None = None
        self.port = 0
        self.local_only = True
        self.own: OrderedDict[bytes, BlobAnn] = OrderedDict()  # newest last

    def attach_blobs(self, store: BlobStore, port: int, bind: str) -> None:
        """Announce the blobs of ``store``, served over HTTP on ``port`` (node/blobs.py
        calls this once its server is up). A server bound to a loopback address is
        announced only to peers on this machine."""
        self.store = store
        self.port = port
        self.local_only = _loopback(bind)
        self.own.clear()
        for info in reversed(store.recent(MAX_BLOBS)):
            self.own[info.root] = self.ann(info)
        store.listeners.append(self.on_blob_stored)
        for peer in self.pm.ready_peers():
            self.send_inventory(peer)

    def detach_blobs(self, store: BlobStore) -> None:
        with contextlib.suppress(ValueError):
            store.listeners.remove(self.on_blob_stored)
        if self.store is store:
            self.store = None
            self.own.clear()

    def ann(self, info: BlobInfo) -> BlobAnn:
        return BlobAnn(info.root, info.kind, info.rows, info.line_bytes, self.port)

    def announces_to(self, peer: Peer) -> bool:
        v = peer.version
        return (
            self.store is not None and v is not None and v.protocol >= BLOBS_VERSION
            and (not self.local_only or _loopback(peer.host))
        )  # fmt: skip

    def send_inventory(self, peer: Peer) -> None:
        """After the handshake: the newest blobs we hold (at most MAX_BLOBS)."""
        if not self.announces_to(peer):
            return
        items = [a for a in reversed(self.own.values()) if a.root not in peer.known]
        for a in items:
            peer.learn(a.root)
        if items:
            self.pm.send(peer, Blobs(tuple(items[:MAX_BLOBS])))

    def on_blob_stored(self, info: BlobInfo) -> None:
        """BlobStore listener: may run on any thread; the work is done on the loop."""
        loop = self.loop
        if loop is None or self.stopping:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.announce(info)
        else:
            with contextlib.suppress(RuntimeError):  # loop closed: nothing to announce to
                loop.call_soon_threadsafe(self.announce, info)

    def announce(self, info: BlobInfo) -> None:
        if self.store is None:
            return
        ann = self.ann(info)
        self.own[info.root] = ann
        self.own.move_to_end(info.root)
        while len(self.own) > MAX_BLOBS:
            self.own.popitem(last=False)
        self.table.pop(info.root, None)  # held now: no need for sources
        for peer in self.pm.ready_peers():
            if self.announces_to(peer) and info.root not in peer.known:
                peer.learn(info.root)
                self.pm.send(peer, Blobs((ann,)))

    def on_blobs(self, peer: Peer, msg: Blobs) -> None:
        if not peer.host or peer.host == "?":
            return  # no address to reach its blob endpoint at
        url_of: dict[int, str] = {}
        added: list[bytes] = []
        for ann in msg.items:
            if not peer.blob_bucket.take():
                break  # rate limited: the rest is ignored (like addr)
            peer.learn(ann.root)
            if ann.root in self.own:
                continue
            url = url_of.setdefault(ann.port, blob_url(peer.host, ann.port))
            if self.add_source(peer, ann, url):
                added.append(ann.root)
        if added:
            more = f" (+{len(added) - 4} more)" if len(added) > 4 else ""
            log.info(
                "peer %d announced blob sources: %s%s",
                peer.id, " ".join(r.hex()[:16] for r in added[:4]), more,
            )  # fmt: skip

    def add_source(self, peer: Peer, ann: BlobAnn, url: str) -> bool:
        sources = self.table.get(ann.root)
        if sources is None:
            sources = self.table[ann.root] = {}
            while len(self.table) > MAX_BLOB_ROOTS:
                self.table.popitem(last=False)
        src = sources.get(url)
        if src is None:
            if len(sources) >= MAX_BLOB_SOURCES:
                return False
            src = sources[url] = BlobSource(ann.kind, ann.rows, ann.line_bytes)
        elif (src.kind, src.rows, src.line_bytes) != (ann.kind, ann.rows, ann.line_bytes):
            return False  # same endpoint, another shape: keep the first claim
        new = peer.id not in src.peers
        src.peers.add(peer.id)
        old_url = peer.blob_roots.pop(ann.root, None)
        if old_url is not None and old_url != url:
            self.unlink_source(ann.root, old_url, peer.id)
        peer.blob_roots[ann.root] = url
        while len(peer.blob_roots) > MAX_BLOB_ROOTS_PER_PEER:
            root, old = peer.blob_roots.popitem(last=False)
            self.unlink_source(root, old, peer.id)
        return new

    def unlink_source(self, root: bytes, url: str, peer_id: int) -> None:
        sources = self.table.get(root)
        src = sources.get(url) if sources is not None else None
        if sources is None or src is None:
            return
        src.peers.discard(peer_id)
        if not src.peers:
            del sources[url]
            if not sources:
                del self.table[root]

    def forget_sources(self, peer: Peer) -> None:
        for root, url in peer.blob_roots.items():
            self.unlink_source(root, url, peer.id)
        peer.blob_roots.clear()

    def blob_sources(
        self, root: bytes, kind: str | None = None, rows: int | None = None,
        line_bytes: int | None = None,
    ) -> list[str]:  # fmt: skip
        """URLs of connected peers' blob endpoints that announced ``root``, oldest
        first; with a shape given, only those whose announcement matches it (A and Bᵀ
        lines are alike, so "a" and "bt" match each other)."""
        sources = self.table.get(root)
        if not sources:
            return []
        out = []
        for url, src in sources.items():
            if kind is not None and (src.kind == "c") != (kind == "c"):
                continue
            if rows is not None and src.rows != rows:
                continue
            if line_bytes is not None and src.line_bytes != line_bytes:
                continue
            out.append(url)
        return out

    def report_blob_source(self, root: bytes, url: str, reason: str, misbehaved: bool) -> None:
        """A download from ``url`` (from ``blob_sources``) failed. It is forgotten for
        ``root``; when it served data that does not match what it announced
        (``misbehaved``), the peers that announced it are discouraged."""
        announcers = [p for p in self.pm.peers.values() if p.blob_roots.get(root) == url]
        sources = self.table.get(root)
        if sources is not None:
            sources.pop(url, None)
            if not sources:
                del self.table[root]
        for peer in announcers:
            peer.blob_roots.pop(root, None)
            if misbehaved:
                why = f"bad blob {root.hex()[:16]} from {url}: {reason}"
                self.pm.misbehave(peer, BAN_SCORE, why)
        if not misbehaved:
            log.info("blob source %s failed for %s: %s", url, root.hex()[:16], reason)
