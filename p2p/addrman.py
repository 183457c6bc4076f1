"""Address gossip: answering getaddr and taking addr messages into the address book
(p2p/addrbook.py stores it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2p.addrbook import AddressBook
from p2p.peer import Peer
from p2p.protocol import MAX_ADDR, Addr, Empty

if TYPE_CHECKING:
    from p2p.service import P2PService


class AddrManager:
    def __init__(self, svc: P2PService, book: AddressBook) -> None:
        self.svc = svc
        self.book = book

    def on_getaddr(self, peer: Peer, msg: Empty) -> None:
        if peer.getaddr_answered:
            return  # once per connection
        peer.getaddr_answered = True
        addrs = tuple((e.host, e.port, e.last_seen) for e in self.book.sample(MAX_ADDR))
        self.svc.pm.send(peer, Addr(addrs))

    def on_addr(self, peer: Peer, msg: Addr) -> None:
        for host, port, seen in msg.addrs:
            if not peer.addr_bucket.take():
                break  # rate limited: the rest is ignored
            self.book.add(host, port, seen, source=peer.host)
