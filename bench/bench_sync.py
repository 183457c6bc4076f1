"""Initial sync from one peer on loopback vs connecting the same blocks locally.

A chain of N blocks (default 10,000; --quick 1,000), each with a few transfers from the
funded devnet keys, is mined straight into a datadir (the easy test devnet of
tests/p2putil.py). Then:
  baseline  the same blocks read from that datadir and connected in this process with
            ChainState.process_block on an empty datadir (decode, header and seal check,
            signatures, state transition, state root, one synced batch per block)
  sync      a real `pouw node` serving that datadir on 127.0.0.1 and a second, empty
            one started with --connect to it: header-first sync over the WebSocket
            transport, timed from the second node's log (ms timestamps), from its
            handshake with the peer to its `new tip height=N` line
Both node processes are stopped (killed if they do not stop) before the script exits.
Prints name=value lines:
  sync_blocks_per_s           blocks/s of the initial sync (handshake to tip)
  sync_transfers_per_s        transfers/s of the same sync
  local_connect_blocks_per_s  blocks/s of the in-process baseline
  sync_vs_local_ratio         the first over the third (1.0: networking costs nothing)
Usage: .venv/bin/python bench/bench_sync.py [--quick] [--blocks N] [--txs-per-block K]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections import deque
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain.block import Block  # noqa: E402
from chain.chainstate import ChainState  # noqa: E402
from chain.network import Network  # noqa: E402
from chain.storage import open_chain  # noqa: E402
from tests.chainutil import Clock, address_of, mine_block, transfer  # noqa: E402
from tests.p2putil import LogReader, NodeProc, read_tip, write_genesis  # noqa: E402

MINER_KEY = 4  # devnet keys 0..4 are funded; 4 takes the rewards, 0..3 send
SENDERS = 4
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)
TIP_LINE = re.compile(r"^(\S+ \S+) \S+ \S+ new tip height=(\d+) ", re.M)
# Nodes of this benchmark dial only what they are told (no address-book dialling).
NODE_ENV = {"POUW_P2P_MAX_OUTBOUND": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def log_time(line_start: str) -> float:
    """Epoch seconds of a node log line's asctime (``2025-01-31 12:00:00,123``)."""
    return datetime.strptime(line_start, "%Y-%m-%d %H:%M:%S,%f").timestamp()


class LogTail(LogReader):
    """Waits for lines of a node's log, read incrementally (a 10,000-block sync logs
    10,000+ lines)."""

    def __init__(self, node: NodeProc) -> None:
        super().__init__(node)
        self.pending: deque[str] = deque()  # read but not yet looked at

    def wait_for(self, rx: re.Pattern[str], timeout: float) -> tuple[float, re.Match[str]]:
        """(log time, match) of the first new line matching ``rx``."""
        deadline = time.monotonic() + timeout
        while True:
            self.pending.extend(self.lines())
            while self.pending:
                line = self.pending.popleft()
                m = rx.search(line)
                if m:
                    ts = LOG_TIME.match(line)
                    assert ts, line
                    return log_time(ts.group(1)), m
            proc = self.node.proc
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"node exited ({proc.returncode}):\n{self.node.log()[-3000:]}")
            if time.monotonic() > deadline:
                tail = self.node.log()[-3000:]
                raise RuntimeError(f"timed out waiting for {rx.pattern!r}:\n{tail}")
            time.sleep(0.2)


def premine_with_transfers(datadir: Path, network: Network, blocks: int, per_block: int) -> int:
    """Mine ``blocks`` blocks (one second apart), each with ``per_block`` transfers."""
    db = open_chain(datadir / "devnet", network="devnet")
    try:
        clock = Clock(network.genesis_time)
        chain = ChainState(db, network, clock)
        nonces = [0] * SENDERS
        n_tx = 0
        for i in range(blocks):
            clock.now = chain.tip_header.timestamp + 1
            txs = []
            for j in range(per_block):
                key = (i * per_block + j) % SENDERS
                txs.append(
                    transfer(
                        network, key, nonces[key], address_of(5 + n_tx % 97), 1 + n_tx % 1000, fee=1
                    )
                )
                nonces[key] += 1
                n_tx += 1
            result = chain.process_block(mine_block(chain, txs, miner=address_of(MINER_KEY)))
            assert result.accepted, result.check
        return n_tx
    finally:
        db.close()


def local_connect(src: Path, dst: Path, network: Network, blocks: int) -> tuple[float, bytes]:
    """Seconds to read, decode and connect blocks 1..N of ``src`` into an empty ``dst``."""
    src_db = open_chain(src / "devnet", network="devnet")
    dst_db = open_chain(dst / "devnet", network="devnet")
    try:
        chain = ChainState(dst_db, network)
        started = time.perf_counter()
        for height in range(1, blocks + 1):
            h = src_db.active_hash_at(height)
            assert h is not None
            raw = src_db.get_block(h)
            assert raw is not None
            result = chain.process_block(Block.from_bytes(raw))
            assert result.accepted, result.check
        elapsed = time.perf_counter() - started
        return elapsed, chain.tip.hash
    finally:
        src_db.close()
        dst_db.close()


def network_sync(
    tmp: Path, genesis: Path, blocks: int, timeout: float
) -> tuple[dict[str, float], str, str]:
    peer = NodeProc(tmp / "peer", genesis)
    syncer = NodeProc(tmp / "sync", genesis)
    try:
        peer.start(env=NODE_ENV)
        LogTail(peer).wait_for(re.compile(r"p2p listening on"), 60)
        tail = LogTail(syncer)
        launched = time.time()
        syncer.start("--connect", peer.addr, env=NODE_ENV)
        t_up, _ = tail.wait_for(re.compile(r"node up: "), 60)
        t_conn, _ = tail.wait_for(re.compile(r"peer \d+ connected: "), 60)
        done = re.compile(rf"new tip height={blocks} hash=([0-9a-f]{{64}})")
        t_done, m = tail.wait_for(done, timeout)
        detected = time.time()
        tip_hash = m.group(1)
        for node in (syncer, peer):
            node.stop()
        text = syncer.log()
        progress = text.count("sync progress height=")
        # blocks/s over each quarter of the heights (does the rate hold as the chain grows?)
        tip_times = {int(m.group(2)): log_time(m.group(1)) for m in TIP_LINE.finditer(text)}
        marks = [t_conn] + [tip_times[blocks * q // 4] for q in (1, 2, 3, 4)]
        pairs = zip(marks, marks[1:], strict=False)
        quarters = ",".join(f"{(blocks // 4) / max(b - a, 1e-3):.0f}" for a, b in pairs)
        timings = {
            "startup_s": t_up - launched,
            "seconds": t_done - t_conn,
            "wall_s": detected - launched,
            "progress_lines": progress,
        }
        return timings, tip_hash, quarters
    finally:
        for node in (syncer, peer):
            node.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 blocks")
    parser.add_argument("--blocks", type=int, default=None)
    parser.add_argument("--txs-per-block", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="sync timeout, seconds")
    args = parser.parse_args()
    blocks = args.blocks or (1000 if args.quick else 10_000)
    per_block = args.txs_per_block
    print(f"cpu_count={os.cpu_count()} blocks={blocks} transfers_per_block={per_block}")
    with tempfile.TemporaryDirectory(prefix="bench_sync_") as tmp_name:
        tmp = Path(tmp_name)
        genesis = tmp / "genesis.json"
        network = write_genesis(genesis, blocks)
        t0 = time.perf_counter()
        n_tx = premine_with_transfers(tmp / "peer", network, blocks, per_block)
        peer_tip = read_tip(tmp / "peer", network)
        assert peer_tip[0] == blocks
        print(f"premine_seconds={time.perf_counter() - t0:.1f} transfers={n_tx}")

        local_s, local_tip = local_connect(tmp / "peer", tmp / "local", network, blocks)
        assert local_tip == peer_tip[1], "local connect ended on another tip"
        local_bps = blocks / local_s
        print(f"local_connect_seconds={local_s:.2f}")
        print(f"local_connect_blocks_per_s={local_bps:.0f}")
        print(f"local_connect_transfers_per_s={n_tx / local_s:.0f}")

        r, sync_tip, quarters = network_sync(tmp, genesis, blocks, args.timeout)
        assert sync_tip == peer_tip[1].hex(), "synced node ended on another tip"
        assert read_tip(tmp / "sync", network) == peer_tip, "synced datadir differs"
        sync_bps = blocks / r["seconds"]
        print(f"sync_node_startup_seconds={r['startup_s']:.2f}")
        print(f"sync_seconds={r['seconds']:.2f} (log: handshake with the peer -> tip {blocks})")
        print(f"sync_wall_seconds={r['wall_s']:.2f} (process launch -> tip seen)")
        print(f"sync_progress_lines={r['progress_lines']:.0f}")
        print(f"sync_blocks_per_s={sync_bps:.0f}")
        print(f"sync_blocks_per_s_by_quarter={quarters}")
        print(f"sync_transfers_per_s={n_tx / r['seconds']:.0f}")
        print(f"sync_vs_local_ratio={sync_bps / local_bps:.3f}")


if __name__ == "__main__":
    main()
