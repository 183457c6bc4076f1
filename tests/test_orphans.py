"""p2p/orphans.py and the relay's use of it: a peer's tx too far ahead of its sender's
nonce is held, not rejected, and enters the pool once the gap fills.

Every transaction is really signed; the relay tests run a real Relay over a real
PeerManager and a real Mempool, and the last test real node processes and sockets.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from chain.genesis import genesis_block
from chain.mempool import MAX_NONCE_GAP, Mempool
from chain.mempool_result import MempoolResult
from chain.tx import Transaction
from node.events import NodeEvents, TipChange
from p2p.orphans import MAX_ORPHANS_PER_PEER, ORPHAN_EXPIRY_S, OrphanTxs
from p2p.protocol import Inv, InvType, TxMsg
from tests.chainutil import address_of, transfer
from tests.p2putil import (
    NodeProc,
    WirePeer,
    free_port,
    premine,
    procs_fixture,  # noqa: F401 - the "procs" fixture
    write_genesis,
)
from tests.test_mempool import ADDRS, CHAIN_ID, KEYS, State, mk
from wallet.rpc import RpcClient

FAR = MAX_NONCE_GAP + 1  # the first nonce the pool refuses for an account at nonce 0


# --- the buffer --------------------------------------------------------------------


def test_orphans_come_back_in_nonce_order_once_within_reach() -> None:
    held = OrphanTxs()
    txs = [mk(0, n) for n in (FAR + 2, FAR, FAR + 1)] + [mk(1, FAR)]
    for tx in txs:
        assert held.add(tx, tx.txid, 1, 0.0) == []
    assert held.add(txs[0], txs[0].txid, 2, 0.0) == []  # a second copy: held once
    assert len(held) == 4 and held.held_by(1) == 4 and held.held_by(2) == 0
    assert held.bytes == sum(len(tx.to_bytes()) for tx in txs)
    assert held.take(ADDRS[0], FAR - 1) == []
    assert [o.tx.nonce for o in held.take(ADDRS[0], FAR + 1, limit=1)] == [FAR]
    assert [o.tx.nonce for o in held.take(ADDRS[0], FAR + 1)] == [FAR + 1]
    assert [o.tx.nonce for o in held.take(ADDRS[0], 10**9)] == [FAR + 2]
    assert not held.has_sender(ADDRS[0]) and held.has_sender(ADDRS[1])
    assert len(held) == 1 and held.bytes == len(txs[3].to_bytes())


def test_a_flooding_peer_evicts_its_own_orphans_first() -> None:
    held = OrphanTxs(max_count=8, max_per_peer=5)
    honest = [mk(0, FAR + i) for i in range(3)]
    for tx in honest:
        held.add(tx, tx.txid, 1, 0.0)
    flood = [mk(1, FAR + i) for i in range(20)]
    evicted = [o for tx in flood for o in held.add(tx, tx.txid, 2, 1.0)]
    assert held.held_by(2) == 5 and held.held_by(1) == 3  # the honest peer keeps all
    assert [o.txid for o in evicted] == [tx.txid for tx in flood[:15]]  # oldest first
    # A full buffer (8): a third peer's newcomer evicts the oldest of the heaviest peer.
    newcomer = mk(2, FAR)
    assert [o.txid for o in held.add(newcomer, newcomer.txid, 3, 2.0)] == [flood[15].txid]
    assert len(held) == 8 and all(tx.txid in held for tx in honest)


def test_a_departed_peers_orphans_leave_with_it() -> None:
    """Reconnecting cannot spread one peer's flood over fresh per-peer caps."""
    held = OrphanTxs(max_count=10, max_per_peer=4)
    honest = [mk(0, FAR + i) for i in range(4)]
    for tx in honest:
        held.add(tx, tx.txid, 1, 0.0)
    evicted = []
    for connection in range(2, 12):  # the same attacker, one connection after another
        for i in range(3):
            tx = mk(1 + connection % 7, FAR + 3 * connection + i)
            evicted += held.add(tx, tx.txid, connection, 1.0)
        held.drop_peer(connection)
    assert evicted == [] and all(tx.txid in held for tx in honest) and len(held) == 4
    assert held.drop_peer(99) == [] and len(held.drop_peer(1)) == 4 and held.bytes == 0


def test_orphans_are_capped_in_bytes_and_expire() -> None:
    small, big = mk(0, FAR), mk(1, FAR, payload=b"x" * 1000)
    held = OrphanTxs(max_bytes=len(small.to_bytes()) + len(big.to_bytes()) - 1)
    held.add(small, small.txid, 1, 0.0)
    assert [o.txid for o in held.add(big, big.txid, 2, 5.0)] == [small.txid]
    assert held.bytes == len(big.to_bytes())
    huge = mk(2, FAR, payload=b"y" * 1024)
    tiny = OrphanTxs(max_bytes=100)
    assert [o.txid for o in tiny.add(huge, huge.txid, 1, 0.0)] == [huge.txid]  # never held
    assert len(tiny) == 0
    assert held.expire(5.0 + ORPHAN_EXPIRY_S - 1) == []
    assert [o.txid for o in held.expire(5.0 + ORPHAN_EXPIRY_S)] == [big.txid]
    assert len(held) == 0 and held.bytes == 0
    with pytest.raises(ValueError):
        OrphanTxs(max_per_peer=0)


# --- the relay over a real pool ----------------------------------------------------


class _PoolNode:
    """What the relay needs of the node: its pool, and the one entry for transactions
    that announces what entered (as node/service.NodeService.submit_transaction)."""

    def __init__(self, mempool: Mempool) -> None:
        self.mempool = mempool
        self.events = NodeEvents()

    def submit_transaction(self, tx: Transaction) -> MempoolResult:
        result = self.mempool.add(tx, int(time.time()))
        if result.ok:
            self.events.tx_accepted.emit(tx)
        return result


class _Chain:
    """The chain and sync views the relay reads on a new tip: caught up at height 2."""

    tip = type("Tip", (), {"height": 2, "hash": bytes(32)})()


class _Sync:
    dl = type("Dl", (), {"target_height": staticmethod(lambda: 2)})()


class _Block:
    def __init__(self, txs: list[Transaction]) -> None:
        self.txs = txs


def _relay(tmp: Path, state: State) -> tuple[Any, Any, list[tuple[Any, Any]]]:
    from types import SimpleNamespace

    from p2p.addrbook import AddressBook, BanList
    from p2p.peer import P2PSettings, Peer
    from p2p.peers import PeerManager
    from p2p.relay import Relay

    settings = P2PSettings(tx_waste_rate=0.0)  # no refill: the tests count tokens
    pm = PeerManager(None, settings, AddressBook(tmp / "peers.json"), BanList(tmp / "bans.json"))  # type: ignore[arg-type]
    sent: list[tuple[Any, Any]] = []
    pm.send = lambda peer, msg: sent.append((peer, msg))  # type: ignore[method-assign]
    node = _PoolNode(Mempool(CHAIN_ID, state.lookup))
    svc = SimpleNamespace(pm=pm, node=node, chain=_Chain(), sync=_Sync())
    relay = Relay(svc)  # type: ignore[arg-type]
    node.events.tx_accepted.connect(relay.on_tx_accepted)
    peer = Peer(None, True, "10.0.0.1", 1, settings=pm.settings)  # type: ignore[arg-type]
    peer.ready = True
    pm.peers[peer.id] = peer
    return relay, peer, sent


def _deliver(relay: Any, peer: Any, tx: Transaction) -> None:
    """The peer announced ``tx``, we asked for it, it sent it."""
    relay.on_inv(peer, Inv(((InvType.TX, tx.txid),)))
    relay.on_tx(peer, TxMsg(tx))


def test_a_burst_out_of_order_beyond_the_window_all_enters_the_pool(tmp_path: Path) -> None:
    """Nonces 0..FAR+40 arrive highest first: every one enters once the gap fills, the
    peer is charged nothing in the end, and nothing is remembered as rejected."""
    state = State({ADDRS[0]: 10**9})
    relay, peer, sent = _relay(tmp_path, state)
    waste_before = peer.tx_waste.available()
    burst = [mk(0, n, amount=1) for n in range(FAR + 41)]
    for tx in reversed(burst):
        _deliver(relay, peer, tx)
    pool = relay.svc.node.mempool
    assert len(pool) == len(burst) and len(relay.orphans) == 0
    assert pool.pending_count == len(burst)
    assert not relay.policy_rejects and not relay.recent_rejects
    assert peer.tx_waste.available() == waste_before
    pool._check_consistency()


def test_an_orphan_is_held_not_fetched_again_and_adopted_after_a_block(tmp_path: Path) -> None:
    state = State({ADDRS[0]: 10**9})
    relay, peer, sent = _relay(tmp_path, state)
    orphan = mk(0, FAR, amount=1)
    _deliver(relay, peer, orphan)
    pool = relay.svc.node.mempool
    assert orphan.txid not in pool and orphan.txid in relay.orphans
    assert relay.judged_tx(orphan.txid)  # announced again: not asked for
    sent.clear()
    relay.on_inv(peer, Inv(((InvType.TX, orphan.txid),)))
    relay.on_tx(peer, TxMsg(orphan))  # pushed again: ignored, not scored
    assert sent == [] and peer.score == 0
    # A block confirms the sender's nonce 0 (a tx this node never saw): its window now
    # reaches the orphan, which is adopted and announced to the peers not knowing it.
    first = mk(0, 0, amount=1)
    state.apply([first])
    pool.remove_confirmed([first])
    other = _second_peer(relay)
    relay.on_tip_changed(TipChange(disconnected=(), connected=(_Block([first]),)))  # type: ignore[arg-type]
    assert orphan.txid in pool and len(relay.orphans) == 0
    assert (other.id, (InvType.TX, orphan.txid)) in [
        (p.id, item) for p, msg in sent if isinstance(msg, Inv) for item in msg.items
    ]


def test_an_orphan_that_fails_once_adopted_is_remembered_and_stays_charged(
    tmp_path: Path,
) -> None:
    state = State({ADDRS[0]: 150})  # enough for nonce 0, not for the orphan after it
    relay, peer, _sent = _relay(tmp_path, state)
    waste_before = peer.tx_waste.available()
    orphan = mk(0, FAR)
    _deliver(relay, peer, orphan)
    assert peer.tx_waste.available() == waste_before - 1
    _deliver(relay, peer, mk(0, 0))
    assert orphan.txid not in relay.svc.node.mempool and len(relay.orphans) == 0
    assert orphan.txid in relay.policy_rejects
    assert peer.tx_waste.available() == waste_before - 1


def test_a_flood_of_orphans_is_bounded_per_peer(tmp_path: Path) -> None:
    state = State({a: 10**9 for a in ADDRS})
    relay, peer, _sent = _relay(tmp_path, state)
    flood = [mk(i % len(KEYS), FAR + i // len(KEYS), amount=1) for i in range(150)]
    for tx in flood:
        _deliver(relay, peer, tx)
    assert len(relay.orphans) == MAX_ORPHANS_PER_PEER
    assert sum(tx.txid in relay.policy_rejects for tx in flood) == 150 - MAX_ORPHANS_PER_PEER
    assert peer.score == 0  # within its allowance of rejected txs (200)
    relay.peer_closed(peer)  # what it sent leaves with it, remembered as rejected
    assert len(relay.orphans) == 0
    assert all(tx.txid in relay.policy_rejects for tx in flood)


def test_a_broke_or_cheap_sender_is_not_held(tmp_path: Path) -> None:
    """Only what the pool refused for the gap alone is held: a far-ahead tx of an
    unfunded key is an ordinary policy reject."""
    relay, peer, _sent = _relay(tmp_path, State({ADDRS[0]: 10**9}))
    broke = mk(1, FAR)
    _deliver(relay, peer, broke)
    assert broke.txid not in relay.orphans and broke.txid in relay.policy_rejects


def test_listeners_see_the_gap_filler_before_what_it_lets_in(tmp_path: Path) -> None:
    """On the event loop adoption runs after the event that moved the window: a
    listener connected after the relay (the market miner, RPC subscriptions) sees the
    tx that filled the gap first, then the adopted one."""
    relay, peer, _sent = _relay(tmp_path, State({ADDRS[0]: 10**9}))
    seen: list[int] = []
    relay.svc.node.events.tx_accepted.connect(lambda tx: seen.append(tx.nonce))

    async def body() -> None:
        _deliver(relay, peer, mk(0, FAR, amount=1))
        _deliver(relay, peer, mk(0, 0, amount=1))
        assert seen == [0] and len(relay.orphans) == 1  # not yet: scheduled
        await asyncio.sleep(0)

    asyncio.run(body())
    assert seen == [0, FAR] and len(relay.orphans) == 0


def _second_peer(relay: Any) -> Any:
    from p2p.peer import Peer

    peer = Peer(None, True, "10.0.0.2", 1, settings=relay.pm.settings)  # type: ignore[arg-type]
    peer.ready = True
    relay.pm.peers[peer.id] = peer
    return peer


# --- real nodes --------------------------------------------------------------------


def test_a_node_holds_an_early_tx_and_adopts_it_when_the_gap_fills(
    tmp_path: Path, procs: list[NodeProc]
) -> None:
    """A node process: a tx pushed by a peer FAR ahead of its sender's nonce is held
    (getnetworkinfo counts it, the pool does not have it); once the peer sends the
    sender's nonce 0, both are in the pool, and a second peer is told of both."""
    genesis = tmp_path / "genesis.json"
    network = write_genesis(genesis, 10)
    premine(tmp_path / "node", network, 10)  # key 4 mines: its coinbases have matured
    rpc_port = free_port()
    node = NodeProc(tmp_path / "node", genesis)
    procs.append(node)
    node.start("--rpc", "--rpc-port", str(rpc_port), "--noblobs")
    node.wait_log("p2p listening")
    rpc = _rpc(node, rpc_port)
    early, first = (transfer(network, 4, n, address_of(3), 1000) for n in (FAR, 0))
    ghash = genesis_block(network).hash

    async def scenario() -> list[bytes]:
        sender = WirePeer(node.port, network, ghash, "127.0.0.51")
        watcher = WirePeer(node.port, network, ghash, "127.0.0.52")
        for p in (sender, watcher):
            await p.connect()
            await p.handshake()
        await sender.send(TxMsg(early))
        await _until(lambda: rpc.call("getnetworkinfo")["orphan_txs"] == 1)
        assert early.txid.hex() not in rpc.call("getrawmempool")
        await sender.send(TxMsg(first))
        told: list[bytes] = []
        deadline = time.monotonic() + 20
        while not {first.txid, early.txid} <= set(told) and time.monotonic() < deadline:
            msgs = await watcher.collect(0.2)
            told += [h for m in msgs if isinstance(m, Inv) for _k, h in m.items]
        for p in (sender, watcher):
            await p.close()
        return told

    told = asyncio.run(scenario())
    assert {first.txid, early.txid} <= set(told)
    assert {first.txid.hex(), early.txid.hex()} <= set(rpc.call("getrawmempool"))
    assert rpc.call("getnetworkinfo")["orphan_txs"] == 0


async def _until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _rpc(node: NodeProc, port: int) -> RpcClient:
    deadline = time.monotonic() + 20
    while True:
        try:  # the cookie file appears once RPC is up
            rpc = RpcClient.from_datadir(node.datadir, "devnet", port)
            rpc.call("getblockcount")
            return rpc
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
