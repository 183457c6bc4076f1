"""A sync that cannot progress (issue 15, point 4): the only peer sends valid headers
but never the blocks. The node keeps it (no other peer could serve them), asks again
with a stall window that doubles each time, and says so at WARNING. A peer that
answers a stalled request late, after the node asked again, is not punished for the
second copy."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from chain.block import Block
from chain.chainstate import ChainState
from chain.genesis import genesis_block
from chain.header import Header
from chain.network import Network
from chain.storage import open_chain
from p2p.protocol import BlockMsg, GetData, GetHeaders, Headers
from tests.p2putil import (
    NodeProc,
    WirePeer,
    premine,
    procs_fixture,  # noqa: F401 - the "procs" fixture
    write_genesis,
)
from tests.test_p2p_attacks import _fork_headers

BLOCKS = 40


async def _withhold(node: NodeProc, network: Network, headers: list[Header], seconds: float) -> int:
    """Serve ``headers`` once, never a block; returns how many block requests came."""
    ghash = genesis_block(network).hash
    p = WirePeer(node.port, network, ghash, "127.0.0.61")
    await p.connect()
    await p.handshake(best_height=len(headers), best_work=2**200)
    served = False
    asked = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await p.recv(left)
        except AssertionError:
            break
        assert msg is not None, "the node dropped its only peer"
        if isinstance(msg, GetHeaders):
            await p.send(Headers(() if served else tuple(headers)))
            served = True
        elif isinstance(msg, GetData):
            asked += len(msg.items)
    await p.close()
    return asked


def test_stalled_sync_keeps_only_peer_widens_window_and_warns(
    tmp_path: Path, procs: list[NodeProc]
) -> None:
    genesis = tmp_path / "genesis.json"
    network = write_genesis(genesis, BLOCKS)
    premine(tmp_path / "source", network, BLOCKS)
    headers = _fork_headers(tmp_path / "source", network)
    node = NodeProc(tmp_path / "node", genesis)
    procs.append(node)
    node.start(env={"POUW_P2P_SYNC_WARN_S": "4", "POUW_P2P_BLOCK_STALL": "2"})
    node.wait_log("p2p listening")
    asked = asyncio.run(_withhold(node, network, headers, 9.0))
    log = node.log()
    windows = [int(w) for w in re.findall(r"stall window (\d+)s\)", log)]
    assert asked > 16  # the same blocks were asked again after the stall
    assert windows and windows[0] == 4 and max(windows) >= 8, windows  # 2 s, doubling
    assert "WARNING pouw.p2p: sync is not progressing: height 0 of 40" in log
    assert "stalling block download" not in log


async def _late_copies(node: NodeProc, network: Network, blocks: list[Block]) -> int:
    """Serve the headers, withhold the first batch of blocks until the node asks again
    after the stall, then answer the second request and, once the node has stored those
    blocks, the first one (late copies); the rest once. Returns how many went out."""
    ghash = genesis_block(network).hash
    p = WirePeer(node.port, network, ghash, "127.0.0.62")
    await p.connect()
    await p.handshake(best_height=len(blocks), best_work=2**200)
    try:
        return await _serve_late(node, p, blocks)
    finally:
        await p.close()


async def _serve_late(node: NodeProc, p: WirePeer, blocks: list[Block]) -> int:
    by_hash = {b.hash: b for b in blocks}
    served, withheld, sent = False, set[bytes](), 0
    deadline = time.monotonic() + 30
    while node.tip() is None or node.tip()[0] < len(blocks):  # type: ignore[index]
        left = deadline - time.monotonic()
        assert left > 0, "the node did not sync"
        try:
            msg = await p.recv(min(left, 1.0))
        except AssertionError:
            continue
        assert msg is not None, "the node dropped the peer that serves late copies"
        if isinstance(msg, GetHeaders):
            await p.send(Headers(() if served else tuple(b.header for b in blocks)))
            served = True
        elif isinstance(msg, GetData):
            hashes = [h for _, h in msg.items]
            if not withheld and not sent:
                withheld = set(hashes)
                continue
            for h in hashes:
                await p.send(BlockMsg(by_hash[h]))
                sent += 1
            late = [h for h in hashes if h in withheld]
            if late:  # the answers to the first request, once the node stored the blocks
                withheld -= set(late)
                await asyncio.sleep(1.5)
                for h in late:
                    await p.send(BlockMsg(by_hash[h]))
                    sent += 1
    return sent


def test_late_copy_of_a_block_asked_again_is_not_punished(
    tmp_path: Path, procs: list[NodeProc]
) -> None:
    genesis = tmp_path / "genesis.json"
    network = write_genesis(genesis, BLOCKS)
    premine(tmp_path / "source", network, BLOCKS)
    blocks = _blocks(tmp_path / "source", network)
    node = NodeProc(tmp_path / "node", genesis)
    procs.append(node)
    node.start(env={"POUW_P2P_BLOCK_STALL": "1"})
    node.wait_log("p2p listening")
    sent = asyncio.run(_late_copies(node, network, blocks))
    assert sent >= BLOCKS + 16  # the first batch went twice
    log = node.log()
    assert "stalled on peer" in log
    assert "re-sent an already judged block" not in log and "misbehaving" not in log


def _blocks(datadir: Path, network: Network) -> list[Block]:
    db = open_chain(datadir / "devnet", network="devnet")
    try:
        chain = ChainState(db, network)
        out = []
        for height in range(1, chain.tip.height + 1):
            h = chain.active_hash(height)
            raw = db.get_block(h) if h is not None else None
            assert raw is not None
            out.append(Block.from_bytes(raw))
        return out
    finally:
        db.close()
