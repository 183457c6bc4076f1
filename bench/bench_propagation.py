"""Block propagation over 10 real nodes on 127.0.0.1 vs a loopback round trip.

Ten `pouw node` processes (empty datadirs, the easy test devnet of tests/p2putil.py) are
joined in a random connected topology (seeded): a random spanning tree plus a few extra
edges, each edge one --connect; address-book dialling is off (POUW_P2P_MAX_OUTBOUND=0)
so the topology is exactly that. Node 0 mines with its own NumPy miner; the genesis
target is calibrated here so that a block comes about every --interval seconds. Blocks
mined before every node has all its connections are warm-up; for each of the next N
blocks (default 20; --quick 6), the propagation time is
    (latest `new tip height>=H` line over the 10 logs) - (node 0's `new tip height=H`)
from the nodes' log timestamps (ms resolution, one clock).
Baselines, measured in the same run:
  ws_echo_rtt_ms    median round trip of a 9-byte binary frame (a ping's size) to a bare
                    aiohttp WebSocket echo server in another process
  node_ping_rtt_ms  median round trip of a protocol ping to a live node (a scripted
                    peer, tests/p2putil.WirePeer), after the miner is stopped
Prints name=value lines, among them propagation_median_ms, propagation_worst_ms,
propagation_vs_ws_echo_ratio and propagation_vs_node_ping_ratio. Every node process is
stopped (killed if it does not stop) before the script exits. On a 2-core machine the
miner keeps one core busy while blocks propagate: the figures include that contention.
Usage: .venv/bin/python bench/bench_propagation.py [--quick] [--blocks N] [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import deque
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain.genesis import genesis_block  # noqa: E402
from chain.network import Network, load_network  # noqa: E402
from p2p.protocol import Ping, Pong  # noqa: E402
from tests.p2putil import LogReader, NodeProc, WirePeer, miner_address, write_genesis  # noqa: E402

NODES = 10
EXTRA_EDGES = 4
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
NEW_TIP = re.compile(r"new tip height=(\d+) hash=([0-9a-f]{64})")
CONNECTED = re.compile(r"peer \d+ connected: ")
NODE_ENV = {"POUW_P2P_MAX_OUTBOUND": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
FILLER_MACS = 64 * 128 * 64  # the easy devnet's filler product (tests/p2putil.write_genesis)


# --- topology ------------------------------------------------------------------------


def topology(seed: int, n: int = NODES, extra: int = EXTRA_EDGES) -> list[tuple[int, int]]:
    """Edges (a, b), a < b: a random spanning tree plus ``extra`` other random edges."""
    rng = random.Random(seed)
    edges = {(rng.randrange(i), i) for i in range(1, n)}
    others = [(a, b) for a in range(n) for b in range(a + 1, n) if (a, b) not in edges]
    edges |= set(rng.sample(others, min(extra, len(others))))
    return sorted(edges)


def hops_from(src: int, edges: list[tuple[int, int]], n: int = NODES) -> list[int]:
    adj: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    dist = [-1] * n
    dist[src] = 0
    todo = deque([src])
    while todo:
        u = todo.popleft()
        for v in adj[u]:
            if dist[v] < 0:
                dist[v] = dist[u] + 1
                todo.append(v)
    assert min(dist) >= 0, "topology is not connected"
    return dist


# --- logs ----------------------------------------------------------------------------


def log_time(line: str) -> float | None:
    m = LOG_TIME.match(line)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


class LogWatch(LogReader):
    """Incrementally parsed node log: tip lines and the number of handshakes."""

    def __init__(self, node: NodeProc) -> None:
        super().__init__(node)
        self.connected = 0
        self.tips: list[tuple[float, int, str]] = []  # (log time, height, hash)

    def poll(self) -> None:
        for line in self.lines():
            if CONNECTED.search(line):
                self.connected += 1
            m = NEW_TIP.search(line)
            if m:
                t = log_time(line)
                assert t is not None, line
                self.tips.append((t, int(m.group(1)), m.group(2)))

    @property
    def height(self) -> int:
        return self.tips[-1][1] if self.tips else 0

    def reached(self, height: int) -> float | None:
        """Log time of the first tip at or above ``height`` (one miner: no forks)."""
        for t, h, _ in self.tips:
            if h >= height:
                return t
        return None

    def check_alive(self) -> None:
        proc = self.node.proc
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"node exited ({proc.returncode}):\n{self.node.log()[-3000:]}")


# --- calibration ---------------------------------------------------------------------


def products_per_s(seconds: float = 1.0) -> float:
    """Template + filler product per second with the NumPy engine (one thread, like the node)."""
    from chain.chainstate import ChainState
    from consensus.ints import u64
    from consensus.pouw import filler_matrices
    from node.template import build_template
    from tests.chainutil import _ENGINE, MINER, Clock, easy_devnet, open_db

    net = easy_devnet()
    with tempfile.TemporaryDirectory(prefix="bench_prop_cal_") as tmp:
        db = open_db(Path(tmp) / "cal", net)
        try:
            chain = ChainState(db, net, Clock(net.genesis_time + 100))
            shape = (net.filler.m, net.filler.k, net.filler.n)
            n = 0
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                # The node's miner builds a fresh template for every product.
                template = build_template(chain, MINER, [], shape, net.genesis_time + 100)
                a, b = filler_matrices(template.header.parent + u64(n), *shape)
                _ENGINE.mine(net.pouw, a, b, template)
                n += 1
            return n / (time.perf_counter() - started)
        finally:
            db.close()


def write_paced_genesis(path: Path, block_work: int) -> Network:
    """The easy test devnet, with a genesis target worth ``block_work`` multiply-adds."""
    write_genesis(path, 0)
    data = json.loads(path.read_text())
    data["difficulty"]["genesis_target"] = hex(2**256 // block_work)
    path.write_text(json.dumps(data))
    return load_network("devnet", path)


# --- baselines -----------------------------------------------------------------------


def _echo_server(q: mp.Queue) -> None:
    from aiohttp import WSMsgType, web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, compress=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/echo", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        q.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


async def _echo_rtts(port: int, count: int) -> list[float]:
    import aiohttp

    frame = bytes([3]) + os.urandom(8)  # a ping frame: type u8 | nonce u64
    rtts = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{port}/echo", compress=0) as ws:
            for i in range(count + 20):
                t0 = time.perf_counter()
                await ws.send_bytes(frame)
                msg = await ws.receive()
                assert msg.data == frame
                if i >= 20:  # warm-up
                    rtts.append(time.perf_counter() - t0)
    return rtts


def ws_echo_rtt_ms(count: int = 500) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_echo_server, args=(q,), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=60)
        return statistics.median(asyncio.run(_echo_rtts(port, count))) * 1000
    finally:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


async def _node_ping_rtts(node: NodeProc, network: Network, count: int) -> list[float]:
    peer = WirePeer(node.port, network, genesis_block(network).hash, "127.0.0.1")
    rtts = []
    try:
        await peer.connect()
        await peer.handshake()
        await asyncio.sleep(0.2)
        for i in range(count):  # <= 20: the node's ping burst, no misbehaviour
            nonce = 1000 + i
            t0 = time.perf_counter()
            await peer.send(Ping(nonce))
            while True:
                msg = await peer.recv()
                if msg is None:
                    raise RuntimeError("the node closed the connection during pings")
                if isinstance(msg, Pong) and msg.nonce == nonce:
                    break
            rtts.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)
    finally:
        await peer.close()
    return rtts


# --- the run -------------------------------------------------------------------------


def run_network(
    tmp: Path, genesis: Path, network: Network, edges: list[tuple[int, int]], n_blocks: int,
    warmup_blocks: int, timeout: float,
) -> tuple[list[float], list[float], list[float], str]:  # fmt: skip
    """Per block: propagation (s), origin time; node ping RTTs (s); the final tip."""
    nodes = [NodeProc(tmp / f"n{i}", genesis) for i in range(NODES)]
    watches = [LogWatch(n) for n in nodes]
    degree = [sum(i in e for e in edges) for i in range(NODES)]
    try:
        # Edge (a, b), a < b: b dials a. Node 0 mines from the start; its early blocks
        # are warm-up.
        for i, node in enumerate(nodes):
            dials = [a for a, b in edges if b == i]
            args = [x for a in dials for x in ("--connect", nodes[a].addr)]
            if i == 0:
                reward = miner_address(network, 1)
                args += ["--mine", "--engine", "numpy", "--miner-address", reward]
            node.start(*args, env=NODE_ENV)
        deadline = time.monotonic() + timeout
        while True:
            for w in watches:
                w.poll()
                w.check_alive()
            if all(w.connected >= d for w, d in zip(watches, degree, strict=True)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all connected: {[w.connected for w in watches]}")
            time.sleep(0.1)
        # Measure blocks mined after every edge is up, and after a settling warm-up.
        first = watches[0].height + 1 + warmup_blocks
        last = first + n_blocks - 1
        while not all(w.height >= last for w in watches):
            if time.monotonic() > deadline:
                raise RuntimeError(f"heights {[w.height for w in watches]} < {last}")
            time.sleep(0.1)
            for w in watches:
                w.poll()
                w.check_alive()
        nodes[0].stop()
        origin = {h: (t, hh) for t, h, hh in watches[0].tips}
        props, origins = [], []
        for height in range(first, last + 1):
            t0, h_hash = origin[height]
            for w in watches[1:]:  # same hash wherever that height was logged
                assert all(hh == h_hash for _, h, hh in w.tips if h == height), height
            reached = [w.reached(height) for w in watches]
            props.append(max(t for t in reached if t is not None) - t0)
            origins.append(t0)
        rtts = asyncio.run(_node_ping_rtts(nodes[1], network, 15))
        final = origin[last][1]
        for node in nodes[1:]:
            node.stop()
        return props, origins, rtts, final
    finally:
        for node in nodes:
            node.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="6 blocks")
    parser.add_argument("--blocks", type=int, default=None, help="blocks measured (20)")
    parser.add_argument("--seed", type=int, default=1, help="topology seed")
    parser.add_argument("--interval", type=float, default=0.75, help="target block interval, s")
    parser.add_argument("--warmup", type=int, default=2, help="blocks skipped once connected")
    parser.add_argument("--timeout", type=float, default=150.0)
    args = parser.parse_args()
    n_blocks = args.blocks or (6 if args.quick else 20)
    edges = topology(args.seed)
    hops = hops_from(0, edges)
    print(f"cpu_count={os.cpu_count()} nodes={NODES} blocks={n_blocks} seed={args.seed}")
    print(f"topology_edges={' '.join(f'{a}-{b}' for a, b in edges)}")
    print(f"miner_hops_max={max(hops)} miner_hops_mean={statistics.mean(hops[1:]):.2f}")

    echo_ms = ws_echo_rtt_ms()
    print(f"ws_echo_rtt_ms={echo_ms:.3f}")

    rate = products_per_s()
    block_work = max(int(args.interval * rate * FILLER_MACS), 2**17)
    print(f"calibration_products_per_s={rate:.0f} block_work={block_work}")
    with tempfile.TemporaryDirectory(prefix="bench_prop_") as tmp_name:
        tmp = Path(tmp_name)
        genesis = tmp / "genesis.json"
        network = write_paced_genesis(genesis, block_work)
        props, origins, rtts, tip = run_network(
            tmp, genesis, network, edges, n_blocks, args.warmup, args.timeout
        )
    ms = sorted(p * 1000 for p in props)
    gaps = [b - a for a, b in zip(origins, origins[1:], strict=False)]
    node_ping_ms = statistics.median(rtts) * 1000
    median = statistics.median(ms)
    print(f"block_interval_mean_s={statistics.mean(gaps):.2f} tip={tip[:16]}")
    print(f"propagation_ms_all={','.join(f'{m:.0f}' for m in ms)}")
    print(f"propagation_median_ms={median:.1f}")
    print(f"propagation_p90_ms={ms[min(len(ms) - 1, int(0.9 * len(ms)))]:.1f}")
    print(f"propagation_worst_ms={ms[-1]:.1f}")
    print(f"propagation_median_per_hop_ms={median / max(hops):.1f}")
    print(f"node_ping_rtt_ms={node_ping_ms:.3f}")
    print(f"propagation_vs_ws_echo_ratio={median / echo_ms:.1f}")
    print(f"propagation_vs_node_ping_ratio={median / node_ping_ms:.1f}")


if __name__ == "__main__":
    main()
