"""Blob announcements over P2P (docs/P2P.md, "Blob announcements"): the `blobs`
message and its caps, the store's listener, the miner trying peer sources, and three
real nodes where the job's URL is dead and the miner fetches A and B from the buyer's
node because it announced them, skipping (and discouraging) a peer that announced A
and serves corrupt rows."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from chain.address import address_from_pubkey, encode_address
from chain.encoding import DecodeError
from chain.keys import devnet_key
from compute.blobs import MAX_BLOB_LINES, MAX_LINE_BYTES, BlobInfo, BlobStore
from consensus.commitments import commit_cols, commit_rows
from node.market_miner import MarketMiner
from p2p.protocol import (
    BLOB_ITEM_BYTES,
    MAX_BLOBS,
    MAX_PAYLOAD,
    BlobAnn,
    Blobs,
    MsgType,
    Ping,
    Pong,
    decode,
    encode,
)
from tests.marketutil import exact_product, operands
from tests.p2putil import WirePeer, free_port
from tests.test_market_blobs import BadPeer
from tests.test_market_e2e import Proc, market_genesis, wait_for
from wallet.jobs import JobClient, submit_tx, upload_blob
from wallet.rpc import read_cookie
from wallet.rpc_calls import get_account, send_raw_transaction

ROOT = b"\x07" * 32


# --- the message ---------------------------------------------------------------------


def test_blobs_round_trip() -> None:
    msg = Blobs((
        BlobAnn(ROOT, "a", 64, 128, 29335),
        BlobAnn(b"\x08" * 32, "bt", MAX_BLOB_LINES, MAX_LINE_BYTES, 1),
        BlobAnn(b"\x09" * 32, "c", 1, 4, 65535),
    ))  # fmt: skip
    frame = encode(msg)
    assert frame[0] == MsgType.BLOBS and len(frame) == 1 + 2 + 3 * BLOB_ITEM_BYTES
    assert decode(frame) == msg and encode(decode(frame)) == frame
    full = Blobs(tuple(BlobAnn(i.to_bytes(32, "big"), "a", 1, 1, 1) for i in range(MAX_BLOBS)))
    assert len(encode(full)) - 1 == MAX_PAYLOAD[MsgType.BLOBS]
    assert decode(encode(full)) == full
    assert decode(encode(Blobs(()))) == Blobs(())


def _item(kind: int = 1, rows: int = 4, line: int = 8, port: int = 80) -> bytes:
    return (
        ROOT + bytes([kind]) + rows.to_bytes(4, "big") + line.to_bytes(4, "big")
        + port.to_bytes(2, "big")
    )  # fmt: skip


def test_blobs_caps_are_checked_before_decoding() -> None:
    head = bytes([MsgType.BLOBS])
    with pytest.raises(DecodeError, match="exceeds"):  # payload cap, before any parsing
        decode(head + bytes(MAX_PAYLOAD[MsgType.BLOBS] + 1))
    with pytest.raises(DecodeError, match="cap"):  # count cap, before reading items
        decode(head + (MAX_BLOBS + 1).to_bytes(2, "big"))
    one = (1).to_bytes(2, "big")
    assert decode(head + one + _item()) == Blobs((BlobAnn(ROOT, "a", 4, 8, 80),))
    for bad, why in [
        (_item(kind=0), "kind"),
        (_item(kind=4), "kind"),
        (_item(rows=0), "rows"),
        (_item(rows=MAX_BLOB_LINES + 1), "rows"),
        (_item(line=0), "line"),
        (_item(line=MAX_LINE_BYTES + 1), "line"),
        (_item(kind=3, line=6), "line"),  # C lines are int32
        (_item(port=0), "port"),
    ]:
        with pytest.raises(DecodeError, match=why):
            decode(head + one + bad)
    with pytest.raises(DecodeError):  # truncated
        decode(head + one + _item()[:-1])
    with pytest.raises(DecodeError, match="trailing"):
        decode(head + one + _item() + b"\x00")
    with pytest.raises(DecodeError):  # count says 2, one item follows
        decode(head + (2).to_bytes(2, "big") + _item())


# --- the P2P service's table of sources ---------------------------------------------


def _bare_service(tmp: Path) -> Any:
    """The blob relay over a real peer manager, with no node and no sockets."""
    from p2p.addrbook import AddressBook, BanList
    from p2p.blobrelay import BlobRelay
    from p2p.peer import P2PSettings
    from p2p.peers import PeerManager

    settings = P2PSettings(blobs_burst=20, blobs_rate=0.0)
    pm = PeerManager(None, settings, AddressBook(tmp / "peers.json"), BanList(tmp / "bans.json"))  # type: ignore[arg-type]
    return BlobRelay(pm)


def _peer(svc: Any, host: str) -> Any:
    from p2p.peer import Peer

    peer = Peer(None, True, host, 1, settings=svc.pm.settings)  # type: ignore[arg-type]
    svc.pm.peers[peer.id] = peer
    return peer


def test_blob_sources_are_bounded_and_rate_limited(tmp_path: Path) -> None:
    import p2p.blobrelay as service

    svc = _bare_service(tmp_path)
    roots = [i.to_bytes(32, "big") for i in range(40)]
    p = _peer(svc, "10.0.0.1")
    svc.on_blobs(p, Blobs(tuple(BlobAnn(r, "a", 4, 8, 9000) for r in roots)))  # noqa: SLF001
    assert len(svc.table) == 20  # the bucket's burst; the rest was ignored
    assert svc.blob_sources(roots[0]) == ["http://10.0.0.1:9000"]
    assert svc.blob_sources(roots[0], "bt", 4, 8) == ["http://10.0.0.1:9000"]  # a ~ bt
    assert svc.blob_sources(roots[0], "c", 4, 8) == []
    assert svc.blob_sources(roots[0], "a", 5, 8) == [] == svc.blob_sources(roots[25])
    v6 = _peer(svc, "::1")
    svc.on_blobs(v6, Blobs((BlobAnn(roots[0], "a", 4, 8, 9001),)))  # noqa: SLF001
    assert svc.blob_sources(roots[0])[-1] == "http://[::1]:9001"
    crowd = [_peer(svc, f"10.0.1.{i}") for i in range(service.MAX_BLOB_SOURCES + 3)]
    for q in crowd:
        svc.on_blobs(q, Blobs((BlobAnn(roots[1], "a", 4, 8, 80),)))  # noqa: SLF001
    assert len(svc.blob_sources(roots[1])) == service.MAX_BLOB_SOURCES
    svc.forget_sources(p)  # noqa: SLF001 - p disconnected
    assert svc.blob_sources(roots[0]) == ["http://[::1]:9001"] and roots[2] not in svc.table
    assert len(svc.blob_sources(roots[1])) == service.MAX_BLOB_SOURCES - 1
    svc.report_blob_source(roots[0], "http://[::1]:9001", "HTTP 404", misbehaved=False)
    assert roots[0] not in svc.table and roots[0] not in v6.blob_roots
    old_cap = service.MAX_BLOB_ROOTS_PER_PEER
    service.MAX_BLOB_ROOTS_PER_PEER = 3
    try:
        q = _peer(svc, "10.0.2.1")
        svc.on_blobs(q, Blobs(tuple(BlobAnn(r, "c", 2, 4, 80) for r in roots[30:35])))  # noqa: SLF001
        assert list(q.blob_roots) == roots[32:35] and roots[30] not in svc.table
    finally:
        service.MAX_BLOB_ROOTS_PER_PEER = old_cap


# --- the store's listener, and the miner's use of peer sources ----------------------


def test_store_announces_new_blobs_and_lists_recent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "s")
    seen: list[BlobInfo] = []
    store.listeners.append(seen.append)
    a, b = operands(16, 64, 8)
    ra = store.put("a", a)
    rb = store.put("bt", b.T)
    store.flush()  # (written behind) then aged a minute and half a minute: an order sure
    now = time.time()  # on any file system's timestamps
    for root, age in ((ra, 60), (rb, 30)):
        for path in (tmp_path / "s").glob(f"{root.hex()}.*"):
            os.utime(path, (now - age, now - age))
    assert [i.root for i in store.recent(10)] == [rb, ra]
    assert [i.root for i in store.recent(1)] == [rb]
    store.put("a", a)  # already held: not announced again, but counted as stored now
    assert [(i.root, i.kind, i.rows, i.line_bytes) for i in seen] == [
        (ra, "a", 16, 64), (rb, "bt", 8, 64),
    ]  # fmt: skip
    assert [i.root for i in store.recent(10)] == [ra, rb]


class FakePeers:
    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.asked: list[tuple[bytes, str | None, int | None, int | None]] = []
        self.reports: dict[str, tuple[str, bool]] = {}

    def blob_sources(
        self, root: bytes, kind: str | None = None, rows: int | None = None,
        line_bytes: int | None = None,
    ) -> list[str]:  # fmt: skip
        self.asked.append((root, kind, rows, line_bytes))
        return list(self.urls)

    def report_blob_source(self, root: bytes, url: str, reason: str, misbehaved: bool) -> None:
        self.reports[url] = (reason, misbehaved)


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    return runner, f"http://127.0.0.1:{port}"


def test_miner_fetches_from_peer_sources(tmp_path: Path) -> None:
    """The job's URL is dead; of the peer sources, a corrupt one is reported as
    misbehaving, a dead one only as failed, and the honest one serves A."""
    a, _ = operands(64, 128, 8)
    src = BlobStore(tmp_path / "src")
    root = src.put("a", a)
    dead = f"http://127.0.0.1:{free_port()}"

    async def run() -> tuple[np.ndarray, FakePeers, BlobStore]:
        runners, urls = [], []
        for mode in ("corrupt", "honest"):
            runner, url = await _serve(BadPeer(src, mode).app())
            runners.append(runner)
            urls.append(url)
        try:
            peers = FakePeers([urls[0], f"http://127.0.0.1:{free_port()}", urls[1]])
            mine = BlobStore(tmp_path / "mine")
            miner = MarketMiner(
                None,  # type: ignore[arg-type]
                mine,
                SimpleNamespace(key=devnet_key(1), extra_sources=(), fetch_timeout=2.0),  # type: ignore[arg-type]
                lambda tx: None,
                lambda address: 0,
                peers=peers,
            )
            job = SimpleNamespace(data_url=dead.encode())
            got = await miner.operands.operand(root, "a", 64, 128, job)  # type: ignore[arg-type]
            return got, peers, mine
        finally:
            for r in runners:
                await r.cleanup()

    got, peers, mine = asyncio.run(run())
    assert np.array_equal(got, a) and mine.find(root) is not None
    assert peers.asked == [(root, "a", 64, 128)]
    corrupt, dead_peer, honest = peers.urls
    assert peers.reports[corrupt][1] is True and "leaf" in peers.reports[corrupt][0]
    assert peers.reports[dead_peer][1] is False
    assert honest not in peers.reports and dead not in peers.reports  # the job URL is not a peer's


# --- three real nodes -----------------------------------------------------------------


class LoopThread:
    """An event loop on a thread, for the scripted peers while the test blocks on RPC."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def _listen(peer: WirePeer, got: list[BlobAnn], closed: asyncio.Event) -> None:
    """Answer pings, record blob announcements, note when the node hangs up."""
    try:
        while True:
            msg = await peer.recv(timeout=300)
            if msg is None:
                break
            if isinstance(msg, Ping):
                await peer.send(Pong(msg.nonce))
            elif isinstance(msg, Blobs):
                got.extend(msg.items)
    except Exception:  # noqa: BLE001 - the node closed the socket
        pass
    closed.set()


def test_miner_fetches_operands_announced_by_peers(tmp_path: Path) -> None:
    genesis = market_genesis(tmp_path)
    from chain.network import load_network

    net = load_network("devnet", genesis)
    a, b = operands(256, 128, 256, seed=11)  # 1024 tiles: the job block wins soon
    h_a, h_b = commit_rows(a), commit_cols(b)
    loop = LoopThread()
    procs: list[Proc] = []
    peers: list[WirePeer] = []
    runners: list[web.AppRunner] = []
    try:
        n0 = Proc(tmp_path / "n0", genesis)  # the buyer's node: holds A and B
        procs.append(n0)
        n1 = Proc(tmp_path / "n1", genesis, "--market-key", "1",
                  "--connect", f"127.0.0.1:{n0.p2p}")  # fmt: skip
        procs.append(n1)
        n2 = Proc(tmp_path / "n2", genesis, "--connect", f"127.0.0.1:{n1.p2p}")  # only n1
        procs.append(n2)
        rpc0 = n0.rpc()
        n1.rpc(), n2.rpc()
        wait_for("blocks", lambda: rpc0.call("getblockcount") >= 2, procs=procs)
        genesis_hash = bytes.fromhex(rpc0.call("getblockhash", 0))

        # A liar on 127.0.0.2 announces A to the miner first and serves corrupt rows.
        liar_store = BlobStore(tmp_path / "liar")
        liar_store.put("a", a)

        async def start_liar() -> asyncio.Event:
            runner = web.AppRunner(BadPeer(liar_store, "corrupt").app())
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.2", 0)
            await site.start()
            runners.append(runner)
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
            peer = WirePeer(n1.p2p, net, genesis_hash, "127.0.0.2")
            peers.append(peer)
            await peer.connect()
            await peer.handshake()
            await peer.send(Blobs((BlobAnn(h_a, "a", 256, 128, port),)))
            closed = asyncio.Event()
            asyncio.get_running_loop().create_task(_listen(peer, [], closed))
            return closed

        async def start_watcher(got: list[BlobAnn]) -> None:
            peer = WirePeer(n1.p2p, net, genesis_hash, "127.0.0.3")
            peers.append(peer)
            await peer.connect()
            await peer.handshake()
            asyncio.get_running_loop().create_task(_listen(peer, got, asyncio.Event()))

        liar_closed = loop.run(start_liar())
        heard: list[BlobAnn] = []  # what the miner announces to a peer of its own
        loop.run(start_watcher(heard))
        n1_log = n1.log_path
        wait_for("the liar's announcement",
                 lambda: f"announced blob sources: {h_a.hex()[:16]}" in n1_log.read_text(),
                 timeout=15, procs=procs)  # fmt: skip

        # The buyer's node gets A and B (and announces them); the job's URL is dead.
        auth = read_cookie(n0.datadir, "devnet")
        upload_blob(f"http://127.0.0.1:{n0.blob}", "a", a, auth)
        upload_blob(f"http://127.0.0.1:{n0.blob}", "bt", b.T, auth)
        buyer = devnet_key(0)
        buyer_addr = encode_address(net.hrp, address_from_pubkey(buyer.public_key))
        nonce = get_account(rpc0, buyer_addr).pending_nonce
        expires = int(rpc0.call("getblockchaininfo")["mediantime"]) + 600
        dead = f"http://127.0.0.1:{free_port()}"
        tx = submit_tx(net, buyer, nonce, a, b, 1_000_000, expires, url=dead)
        job_id = send_raw_transaction(rpc0, tx.to_bytes())

        client = JobClient(buyer, net, rpc0, f"http://127.0.0.1:{n0.blob}", blob_auth=auth)
        status = wait_for("commit", lambda: (s := client.status(job_id))["status"] in
                          ("committed", "paid") and s, timeout=60, procs=procs)  # fmt: skip
        miner = encode_address(net.hrp, address_from_pubkey(devnet_key(1).public_key))
        assert status["claimant"] == miner
        log1 = n1_log.read_text()
        assert "discouraging 127.0.0.2" in log1 and "bad blob" in log1, log1[-3000:]
        wait_for("the liar dropped", liar_closed.is_set, timeout=5, procs=procs)
        assert "operands unavailable" not in log1

        # The miner stored A, B and C and announced each to its peers: blobs spread.
        def announced() -> set[bytes]:
            return {x.root for x in heard if x.port == n1.blob}

        result_root = bytes.fromhex(status["result_root"])
        wait_for("announcements", lambda: {h_a, h_b, result_root} <= announced(), timeout=15)
        assert {(x.root, x.kind) for x in heard} >= {(h_a, "a"), (h_b, "bt"), (result_root, "c")}
        n2_log = tmp_path / "n2.log"
        for root in (h_a, h_b):  # n2 talks only to n1, so it learned these from the miner
            wait_for(f"n2 learns {root.hex()[:16]}", lambda r=root: any(
                "announced blob sources" in line and r.hex()[:16] in line
                for line in n2_log.read_text().splitlines()
            ), timeout=15, procs=procs)  # fmt: skip

        res = client.result(job_id, a, b)
        assert res.verified and np.array_equal(res.c, exact_product(a, b))
    finally:
        for p in peers:
            try:
                loop.run(p.close(), timeout=5)
            except Exception:  # noqa: BLE001, S110 - already closed by the node
                pass
        for r in runners:
            loop.run(r.cleanup(), timeout=5)
        loop.close()
        for proc in procs:
            proc.stop()


def test_job_client_polls_a_node_without_waitforjob() -> None:
    """An older node answers waitforjob with "method not found": wait() falls back to
    polling getjob, once, and still returns when the part is delivered."""
    from chain.keys import devnet_key
    from chain.network import load_network
    from wallet.jobs import JobClient
    from wallet.rpc import RpcError

    class OldNode:
        timeout = 30.0

        def __init__(self) -> None:
            self.calls: list[str] = []
            self.polls = 0

        def call(self, method: str, *params: object) -> object:
            self.calls.append(method)
            if method == "waitforjob":
                raise RpcError(-32601, "Method not found", method)
            assert method == "getjob"
            self.polls += 1
            if self.polls < 3:
                return {"job_id": params[0], "status": "open"}
            return {"job_id": params[0], "status": "committed", "result_root": "00" * 32,
                    "result_url": "", "m": 8, "n": 8}  # fmt: skip

    node = OldNode()
    client = JobClient(devnet_key(0), load_network("devnet"), node, "http://127.0.0.1:1")
    status = client.wait("ab" * 32, timeout=10)
    assert status["status"] == "committed"
    assert node.calls.count("waitforjob") == 1 and node.polls >= 3
