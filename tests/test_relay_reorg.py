"""p2p/relay: after a reorg, the txs that came back to the pool are announced again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from chain.address import address_from_pubkey
from chain.keys import devnet_key
from chain.network import load_network
from node.events import TipChange
from p2p.protocol import MAX_INV, GetData, InvType, NotFound
from tests.chainutil import transfer

NEW_TIP = b"\x07" * 32  # the tip the reorg moved to


def _relay(tmp: Path, pooled: dict[bytes, Any]) -> tuple[Any, list[tuple[Any, Any]]]:
    """A Relay over a real peer manager, whose node's pool holds ``pooled`` (txid ->
    tx); what it sends is recorded instead of written to sockets."""
    from p2p.addrbook import AddressBook, BanList
    from p2p.peer import P2PSettings
    from p2p.peers import PeerManager
    from p2p.relay import Relay

    pm = PeerManager(
        None, P2PSettings(), AddressBook(tmp / "peers.json"), BanList(tmp / "bans.json")
    )  # type: ignore[arg-type]
    sent: list[tuple[Any, Any]] = []
    pm.send = lambda peer, msg: sent.append((peer, msg))  # type: ignore[method-assign]
    svc = SimpleNamespace(
        pm=pm, node=SimpleNamespace(mempool=pooled),
        chain=SimpleNamespace(db=None, tip=SimpleNamespace(hash=NEW_TIP)),
    )  # fmt: skip
    return Relay(svc), sent  # type: ignore[arg-type]


def _ready_peer(relay: Any, host: str) -> Any:
    from p2p.peer import Peer

    peer = Peer(None, True, host, 1, settings=relay.pm.settings)  # type: ignore[arg-type]
    peer.ready = True
    relay.pm.peers[peer.id] = peer
    return peer


def test_txs_back_in_the_pool_after_a_reorg_are_announced_to_who_missed_them(
    tmp_path: Path,
) -> None:
    """A miner announces its txs, mines them at once, and answers a peer's getdata
    with notfound (they left the pool); its block is then reorged away and the txs
    come back to its pool. They are announced again to that peer, even though it was
    told of them before, lowest nonce first, and to a peer on the new branch that
    never heard of them (it mined apart: ours may be the only node that has them); a
    peer told of them that never asked gets nothing (it has them, or fetches them
    elsewhere), nor one still on the old branch (it has them confirmed), nor do txs
    of the old block not in the pool."""
    net = load_network("devnet")
    recipient = address_from_pubkey(devnet_key(0).public_key)
    txs = [transfer(net, 1, nonce, recipient, 5) for nonce in (2, 0, 1)]
    confirmed = transfer(net, 2, 0, recipient, 5)
    old_block = SimpleNamespace(txs=[confirmed, *txs])
    relay, sent = _relay(tmp_path, {tx.txid: tx for tx in txs})
    asked, told = _ready_peer(relay, "10.0.0.1"), _ready_peer(relay, "10.0.0.2")
    apart, behind = _ready_peer(relay, "10.0.0.3"), _ready_peer(relay, "10.0.0.4")
    apart.learn(NEW_TIP)  # it sent us the new branch
    for tx in txs:
        asked.learn(tx.txid)
        told.learn(tx.txid)
    relay.svc.node.mempool = {}  # mined: the getdata finds nothing
    relay.on_getdata(asked, GetData(tuple((InvType.TX, tx.txid) for tx in (*txs, confirmed))))
    assert [type(msg) for _peer, msg in sent] == [NotFound]
    sent.clear()
    relay.svc.node.mempool = {tx.txid: tx for tx in txs}  # the reorg brought them back
    relay.on_tip_changed(TipChange(disconnected=(old_block,), connected=()))  # type: ignore[arg-type]
    by_nonce = [tx.txid for tx in sorted(txs, key=lambda tx: tx.nonce)]
    assert sorted((peer.id, list(msg.items)) for peer, msg in sent) == sorted(
        (p.id, [(InvType.TX, txid) for txid in by_nonce]) for p in (asked, apart)
    )
    assert not {told.id, behind.id} & {peer.id for peer, _ in sent}
    sent.clear()  # announced once: a second reorg does not repeat it
    relay.on_tip_changed(TipChange(disconnected=(old_block,), connected=()))  # type: ignore[arg-type]
    assert sent == []


def test_the_announcement_after_a_reorg_is_capped(tmp_path: Path) -> None:
    """Many txs back in the pool: MAX_READDED_ANNOUNCED at most, in invs of MAX_INV;
    the notfound answers a peer is remembered for are capped too."""
    from p2p.peer import MAX_TX_NOTFOUND
    from p2p.relay import MAX_READDED_ANNOUNCED

    many = [
        SimpleNamespace(txid=i.to_bytes(32, "big"), nonce=i)
        for i in range(MAX_READDED_ANNOUNCED + 5)
    ]
    relay, sent = _relay(tmp_path, {tx.txid: tx for tx in many})
    peer = _ready_peer(relay, "10.0.0.1")
    for tx in many:  # told of each, asked for each, answered notfound
        peer.learn(tx.txid)
        peer.answered_notfound(tx.txid)
    assert len(peer.tx_notfound) == MAX_TX_NOTFOUND  # the newest kept
    relay.on_tip_changed(TipChange(disconnected=(SimpleNamespace(txs=many),), connected=()))  # type: ignore[arg-type]
    assert all(len(msg.items) <= MAX_INV for _peer, msg in sent)
    announced = [h for _peer, msg in sent for _kind, h in msg.items]
    remembered = {tx.txid for tx in many[-MAX_TX_NOTFOUND:]}
    assert announced == [tx.txid for tx in many[:MAX_READDED_ANNOUNCED] if tx.txid in remembered]


def test_a_tx_sent_again_is_announced_to_the_peers_that_lack_it(tmp_path: Path) -> None:
    """A wallet sends again a tx our pool holds (sendrawtransaction: tx_resent): the
    peers that never heard of it get an inv, those told of it (or that told us) none."""
    net = load_network("devnet")
    tx = transfer(net, 1, 0, address_from_pubkey(devnet_key(0).public_key), 5)
    relay, sent = _relay(tmp_path, {tx.txid: tx})
    told, new = _ready_peer(relay, "10.0.0.1"), _ready_peer(relay, "10.0.0.2")
    told.learn(tx.txid)
    relay.announce_tx(tx)
    assert [(peer.id, list(msg.items)) for peer, msg in sent] == [
        (new.id, [(InvType.TX, tx.txid)])
    ]
    sent.clear()
    relay.announce_tx(tx)  # now both know it
    assert sent == []
