"""A sync that cannot progress (issue 15, point 4): the only peer sends valid headers
but never the blocks. The node keeps it (no other peer could serve them), asks again
with a stall window that doubles each time, and says so at WARNING."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from chain.genesis import genesis_block
from chain.header import Header
from chain.network import Network
from p2p.protocol import GetData, GetHeaders, Headers
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
