"""p2p/relay: after a reorg, the txs that came back to the pool are announced again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from chain.address import address_from_pubkey
from chain.keys import devnet_key
from chain.network import load_network
from node.events import TipChange
from p2p.protocol import MAX_INV, Inv, InvType
from tests.chainutil import transfer


def _relay(tmp: Path, pooled: set[bytes]) -> tuple[Any, list[tuple[Any, Any]]]:
    """A Relay over a real peer manager, whose node's pool holds ``pooled``; what it
    sends is recorded instead of written to sockets."""
    from p2p.addrbook import AddressBook, BanList
    from p2p.peer import P2PSettings
    from p2p.peers import PeerManager
    from p2p.relay import Relay

    pm = PeerManager(
        None, P2PSettings(), AddressBook(tmp / "peers.json"), BanList(tmp / "bans.json")
    )  # type: ignore[arg-type]
    sent: list[tuple[Any, Any]] = []
    pm.send = lambda peer, msg: sent.append((peer, msg))  # type: ignore[method-assign]
    svc = SimpleNamespace(pm=pm, node=SimpleNamespace(mempool=pooled))
    return Relay(svc), sent  # type: ignore[arg-type]


def _ready_peer(relay: Any, host: str) -> Any:
    from p2p.peer import Peer

    peer = Peer(None, True, host, 1, settings=relay.pm.settings)  # type: ignore[arg-type]
    peer.ready = True
    relay.pm.peers[peer.id] = peer
    return peer


def test_txs_back_in_the_pool_after_a_reorg_are_announced_again(tmp_path: Path) -> None:
    """A miner announces its tx, mines it at once, and answers the peer's getdata with
    notfound (the tx left the pool); its block is then reorged away and the tx comes
    back to its pool. The tx is announced again, to a peer that was told of it
    before too, lowest nonce first; txs of the old block not in the pool (confirmed
    in the new branch) are not."""
    net = load_network("devnet")
    recipient = address_from_pubkey(devnet_key(0).public_key)
    txs = [transfer(net, 1, nonce, recipient, 5) for nonce in (2, 0, 1)]
    confirmed = transfer(net, 2, 0, recipient, 5)
    old_block = SimpleNamespace(txs=[confirmed, *txs])
    relay, sent = _relay(tmp_path, {tx.txid for tx in txs})
    told_before, other = _ready_peer(relay, "10.0.0.1"), _ready_peer(relay, "10.0.0.2")
    for tx in txs:
        told_before.learn(tx.txid)
    relay.on_tip_changed(TipChange(disconnected=(old_block,), connected=()))  # type: ignore[arg-type]
    by_nonce = [tx.txid for tx in sorted(txs, key=lambda tx: tx.nonce)]
    assert {peer.id for peer, _ in sent} == {told_before.id, other.id}
    for _peer, msg in sent:
        assert isinstance(msg, Inv)
        assert list(msg.items) == [(InvType.TX, txid) for txid in by_nonce]


def test_the_announcement_after_a_reorg_is_capped(tmp_path: Path) -> None:
    """Many txs back in the pool: MAX_READDED_ANNOUNCED at most, in invs of MAX_INV."""
    from p2p.relay import MAX_READDED_ANNOUNCED

    many = [
        SimpleNamespace(txid=i.to_bytes(32, "big"), nonce=i)
        for i in range(MAX_READDED_ANNOUNCED + 5)
    ]
    relay, sent = _relay(tmp_path, {tx.txid for tx in many})
    _ready_peer(relay, "10.0.0.1")
    relay.on_tip_changed(TipChange(disconnected=(SimpleNamespace(txs=many),), connected=()))  # type: ignore[arg-type]
    assert all(len(msg.items) <= MAX_INV for _peer, msg in sent)
    announced = [h for _peer, msg in sent for _kind, h in msg.items]
    assert announced == [tx.txid for tx in many[:MAX_READDED_ANNOUNCED]]
