"""Address gossip: answering getaddr and taking addr messages into the address book
(p2p/addrbook.py stores it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2p.addrbook import AddressBook
from p2p.netgroup import netgroup
from p2p.peer import Peer
from p2p.protocol import MAX_ADDR, Addr, Empty
from p2p.ratelimit import KeyedBuckets

if TYPE_CHECKING:
    from p2p.service import P2PService

MAX_ADDR_SOURCES = 10_000  # source groups whose addr allowance is remembered


class AddrManager:
    def __init__(self, svc: P2PService, book: AddressBook) -> None:
        self.svc = svc
        self.book = book
        s = svc.settings
        # One allowance per source group, shared by all its connections: reconnecting
        # does not refill it.
        self.buckets = KeyedBuckets(s.addr_burst, s.addr_rate, MAX_ADDR_SOURCES)

    def on_getaddr(self, peer: Peer, msg: Empty) -> None:
        if peer.getaddr_answered:
            return  # once per connection
        peer.getaddr_answered = True
        addrs = tuple((e.host, e.port, e.last_seen) for e in self.book.sample(MAX_ADDR))
        self.svc.pm.send(peer, Addr(addrs))

    def on_addr(self, peer: Peer, msg: Addr) -> None:
        bucket = self.buckets.get(netgroup(peer.host))
        for host, port, seen in msg.addrs:
            if not bucket.take():
                break  # rate limited: the rest is ignored
            self.book.add(host, port, seen, source=peer.host)
