"""A scriptable hostile peer against a real node, while an honest node keeps syncing.

Each scenario connects from its own loopback address (127.0.0.x), so discouraging it
does not touch the honest peer on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest

from chain.block import Block
from chain.chainstate import ChainState
from chain.genesis import genesis_block
from chain.network import Network
from chain.storage import open_chain
from node.template import build_template
from p2p.addrbook import AddressBook, BanList
from p2p.protocol import (
    MAX_FRAME,
    BlockMsg,
    Empty,
    Headers,
    Inv,
    InvType,
    MsgType,
    Ping,
    Pong,
    TxMsg,
    decode,
    encode,
)
from tests.chainutil import Clock, address_of, seal_template, transfer
from tests.p2putil import (
    NodeProc,
    RawWsPeer,
    WirePeer,
    clone_datadir,
    premine,
    procs_fixture,  # noqa: F401 - the "procs" fixture
    write_genesis,
)

BLOCKS = 300


def _bad_blocks(datadir: Path, network: Network) -> tuple[Block, Block, Block]:
    """(a block with a broken seal, a sealed block with a badly signed tx, a good block)."""
    db = open_chain(datadir / "devnet", network="devnet")
    try:
        chain = ChainState(db, network, Clock(network.genesis_time))
        now = chain.tip_header.timestamp + 1
        shape = (network.filler.m, network.filler.k, network.filler.n)
        good = seal_template(chain, build_template(chain, address_of(4), [], shape, now))
        seal = bytearray(good.header.seal)
        seal[-1] ^= 1
        bad_seal = Block(dataclasses.replace(good.header, seal=bytes(seal)), good.txs)
        tx = transfer(network, 0, 0, address_of(3), 1000)
        sig = bytearray(tx.signature)
        sig[0] ^= 1
        bad_tx = dataclasses.replace(tx, signature=bytes(sig))
        template = build_template(chain, address_of(4), [tx], shape, now)
        sealed = seal_template(chain, dataclasses.replace(template, txs=(bad_tx,)), b"x")
        # The tx root must commit to the bad tx, or the block fails on its root first.
        bad_sig = seal_template(
            chain,
            dataclasses.replace(
                template,
                txs=(bad_tx,),
                header=dataclasses.replace(template.header, tx_root=sealed.computed_tx_root()),
            ),
            b"y",
        )
        return bad_seal, bad_sig, good
    finally:
        db.close()


async def _refused(port: int, network: Network, ghash: bytes, ip: str) -> bool:
    peer = WirePeer(port, network, ghash, ip)
    try:
        await peer.connect()
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status == 403
    finally:
        await peer.close()
    return False


async def _scenarios(
    target: NodeProc, network: Network, blocks: tuple[Block, Block, Block]
) -> None:
    ghash = genesis_block(network).hash
    port = target.port

    async def peer(ip: str, handshake: bool = True) -> WirePeer:
        p = WirePeer(port, network, ghash, ip)
        await p.connect()
        if handshake:
            await p.handshake()
        return p

    # Wrong genesis: disconnected (not discouraged: it is just another network).
    p = await peer("127.0.0.11", handshake=False)
    await p.send(p.version(genesis=bytes(32)))
    assert await p.closed_by_node()
    await p.close()
    assert not await _refused(port, network, ghash, "127.0.0.11")

    # A message before the handshake: disconnected and discouraged.
    p = await peer("127.0.0.12", handshake=False)
    await p.send(Ping(1))
    assert await p.closed_by_node()
    await p.close()
    assert await _refused(port, network, ghash, "127.0.0.12")

    # A frame before the handshake is judged by its type and size, not decoded.
    p = await peer("127.0.0.23", handshake=False)
    await p.send_raw(bytes([MsgType.BLOCK]) + bytes(1 << 15))
    assert await p.closed_by_node()
    await p.close()

    # A frame cut short before the handshake is judged on its first bytes: the node cuts
    # the socket at once, never waiting for (or holding) the 8 MiB it declares.
    raw = RawWsPeer(port, "127.0.0.24")
    await raw.connect()
    t0 = time.monotonic()
    await raw.write(RawWsPeer.frame(bytes([MsgType.BLOCK]) + bytes(1023), declared=1 + (8 << 20)))
    await raw.closed_by_node()  # (its version, then the cut)
    assert time.monotonic() - t0 < 2  # not the handshake timeout (3 s in tests)
    raw.close()

    # The same sent in one write with the upgrade request, before the node's answer
    raw = RawWsPeer(port, "127.0.0.26")
    t0 = time.monotonic()
    ours = WirePeer(port, network, ghash, "").version()
    await raw.connect(also=RawWsPeer.frame(encode(ours)) + RawWsPeer.frame(
        bytes([MsgType.BLOCK]) + bytes(1023), declared=1 + (8 << 20)
    ))  # fmt: skip
    await raw.closed_by_node()
    assert time.monotonic() - t0 < 2
    raw.close()

    # An honest peer's verack and what it sends right after it, all in one write (a
    # busy node reads them at once): everything after the verack goes through.
    raw = RawWsPeer(port, "127.0.0.25")
    await raw.connect()
    await raw.write(RawWsPeer.frame(encode(WirePeer(port, network, ghash, "").version())))
    while (got := await raw.read_message()) is not None and got[0] != MsgType.VERSION:
        pass
    assert got is not None
    invs = [Inv(tuple((InvType.TX, os.urandom(32)) for _ in range(1000))) for _ in range(3)]
    burst = [Empty(MsgType.VERACK), *invs, Empty(MsgType.GETADDR)]
    await raw.write(b"".join(RawWsPeer.frame(encode(msg)) for msg in burst))
    while (got := await raw.read_message()) is not None and got[0] != MsgType.ADDR:
        pass
    assert got is not None, "the node cut an honest peer"
    raw.close()

    # Garbage bytes after the handshake.
    p = await peer("127.0.0.13")
    await p.send_raw(b"\xfe garbage \x00\x01")
    assert await p.closed_by_node()
    await p.close()

    # Oversized for its type (a ping with a 1 KiB payload), then beyond the frame cap.
    p = await peer("127.0.0.14")
    await p.send_raw(bytes([MsgType.PING]) + bytes(1024))
    assert await p.closed_by_node()
    await p.close()
    p = await peer("127.0.0.15")
    try:
        await p.send_raw(bytes([MsgType.BLOCK]) + bytes(MAX_FRAME))
    except ConnectionError:
        pass  # the node closed it mid-frame: that is the expected outcome
    assert await p.closed_by_node()
    await p.close()

    bad_seal, bad_sig, good = blocks
    for ip, block in (("127.0.0.16", bad_seal), ("127.0.0.17", bad_sig)):
        p = await peer(ip)
        await p.send(BlockMsg(block))
        assert await p.closed_by_node(), ip
        await p.close()
        assert await _refused(port, network, ghash, ip)

    # 10,000 unrequested headers (in messages of 500): disconnected at the first.
    p = await peer("127.0.0.18")
    frame = encode(Headers(tuple([good.header] * 500)))
    for _ in range(20):
        try:
            await p.send_raw(frame)
        except (ConnectionError, RuntimeError):
            break
    assert await p.closed_by_node()
    await p.close()

    # A ping flood: the first pings are answered, then the peer is dropped.
    p = await peer("127.0.0.19")
    for i in range(400):
        await p.send(Ping(i))
    pongs = 0
    while True:
        msg = await p.recv(10)
        if msg is None:
            break
        pongs += isinstance(msg, Pong)
    assert 0 < pongs < 400
    await p.close()

    # A transaction with a bad signature.
    p = await peer("127.0.0.20")
    await p.send(TxMsg(bad_sig.txs[0]))
    assert await p.closed_by_node()
    await p.close()

    # A peer that never finishes the handshake is dropped by the timeout (3 s in tests).
    p = await peer("127.0.0.21", handshake=False)
    t0 = time.monotonic()
    assert await p.closed_by_node(timeout=8)
    assert time.monotonic() - t0 < 6
    await p.close()

    # The honest block relayed by a well-behaved peer is accepted.
    p = await peer("127.0.0.22")
    await p.send(BlockMsg(good))
    await asyncio.sleep(0.5)
    await p.send(Empty(MsgType.GETADDR))
    got = await p.recv(5)
    while got is not None and not hasattr(got, "addrs"):
        got = await p.recv(5)
    assert got is not None
    await p.close()
    _ = decode  # the wire helpers stay importable for ad-hoc scripts


def test_hostile_peer_is_disconnected_while_honest_peer_syncs(
    tmp_path: Path, procs: list[NodeProc]
) -> None:
    genesis = tmp_path / "genesis.json"
    network = write_genesis(genesis, BLOCKS)
    premine(tmp_path / "base", network, BLOCKS)
    clone_datadir(tmp_path / "base", tmp_path / "target")
    blocks = _bad_blocks(tmp_path / "base", network)
    target = NodeProc(tmp_path / "target", genesis).start()
    procs.append(target)
    target.wait_log("p2p listening")
    honest = NodeProc(tmp_path / "honest", genesis)
    procs.append(honest)
    honest.start("--connect", target.addr)
    asyncio.run(_scenarios(target, network, blocks))
    honest.wait_height(BLOCKS + 1, timeout=30)
    log = target.log()
    for ip in ("127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15", "127.0.0.16",
               "127.0.0.17", "127.0.0.18", "127.0.0.19", "127.0.0.20"):  # fmt: skip
        assert f"discouraging {ip} " in log, ip
    assert "discouraging 127.0.0.1 " not in log
    assert "discouraging 127.0.0.11 " not in log and "wrong network" in log
    assert "discouraging 127.0.0.22 " not in log
    assert "handshake timeout" in log
    assert "discouraging 127.0.0.23 " in log and f"BLOCK of {1 + (1 << 15)} bytes before" in log
    assert "discouraging 127.0.0.24 " in log and f"BLOCK of {1 + (8 << 20)} bytes before" in log
    assert "discouraging 127.0.0.25 " not in log
    assert "discouraging 127.0.0.26 (before its handshake)" in log


def test_restart_keeps_address_book_and_bans(tmp_path: Path, procs: list[NodeProc]) -> None:
    genesis = tmp_path / "genesis.json"
    network = write_genesis(genesis, 5)
    premine(tmp_path / "a", network, 5)
    a = NodeProc(tmp_path / "a", genesis).start()
    procs.append(a)
    a.wait_log("p2p listening")
    b = NodeProc(tmp_path / "b", genesis)
    procs.append(b)
    b.start("--addnode", a.addr)
    b.wait_height(5)
    b.stop()
    a.stop()
    book = AddressBook(tmp_path / "b" / "devnet" / "peers.json")
    assert f"127.0.0.1:{a.port}" in book.entries
    # A manual ban written by a running node (set_ban) is a bans.json entry.
    BanList(tmp_path / "a" / "devnet" / "bans.json").add("127.0.0.30", 3600, "test")
    a.start()
    a.wait_log(r"p2p listening(.|\n)*p2p listening")  # the second run's line
    ghash = genesis_block(network).hash
    assert asyncio.run(_refused(a.port, network, ghash, "127.0.0.30"))
    assert not asyncio.run(_refused(a.port, network, ghash, "127.0.0.31"))
    a.stop()
    bans = json.loads((tmp_path / "a" / "devnet" / "bans.json").read_text())
    assert [b["address"] for b in bans["bans"]] == ["127.0.0.30"]
    assert f"127.0.0.1:{a.port}" in AddressBook(tmp_path / "b" / "devnet" / "peers.json").entries


def test_a_ban_past_the_list_cap_is_refused_not_dropped_at_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ban list holds MAX_BANS: one more is refused with what to do (before, it was
    accepted and then silently dropped at the next start, which loads MAX_BANS)."""
    import p2p.addrbook as addrbook
    from p2p.addrbook import BanListFullError

    monkeypatch.setattr(addrbook, "MAX_BANS", 3)
    bans = BanList(tmp_path / "bans.json")
    for i in range(3):
        bans.add(f"10.0.0.{i}", 3600)
    bans.add("10.0.0.1", 7200)  # a ban held already is renewed
    with pytest.raises(BanListFullError, match="remove some"):
        bans.add("10.0.0.9", 3600)
    assert len(BanList(tmp_path / "bans.json").listing()) == 3


def test_a_peer_at_an_ipv6_address_is_dialled_and_synced_from(
    tmp_path: Path, procs: list[NodeProc]
) -> None:
    """--connect [::1]:PORT reaches a node listening on ::1: the dial URL brackets the
    address (http://::1:PORT/p2p was no URL, and the key ::1:PORT did not parse back)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here ({exc})")
    genesis = tmp_path / "genesis.json"
    network = write_genesis(genesis, 4)
    premine(tmp_path / "a", network, 4)
    a = NodeProc(tmp_path / "a", genesis).start("--p2p-bind", "::1")
    procs.append(a)
    a.wait_log("p2p listening")
    b = NodeProc(tmp_path / "b", genesis)
    procs.append(b)
    b.start("--connect", f"[::1]:{a.port}")
    b.wait_height(4)
    assert "Traceback" not in b.log()
