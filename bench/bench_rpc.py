"""JSON-RPC throughput of the node vs a bare aiohttp handler returning identical bytes.

For each method, in the same run: a real node (its RPC service as `pouw node` runs it,
auth, timing and all) in one process, a bare aiohttp handler that answers every POST
with the node's exact reply bytes in another, and a load generator in a third: `hey`
when it is on PATH (as issue 13 measured), else an aiohttp client process. Servers are
pinned to core 0, the load generator to core 1. Each method is measured ``--runs``
times alternating node and baseline; the medians are printed as name=value lines:
req/s, p99 latency (ms) and the node's ratio to the baseline for both.

Methods: getblockcount, getaccount, getblock verbosity 2 of a 20-transaction block.

    .venv/bin/python bench/bench_rpc.py [--seconds 3] [--concurrency 32] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SERVER_CORE, LOAD_CORE = 0, 1
BLOCK_TXS = 20  # the getblock verbosity 2 case of issue 13


def _pin(core: int) -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[core % len(cpus)]})
    except (AttributeError, OSError):
        pass


# --- servers (child processes) --------------------------------------------------------


def _serve_bare(q: mp.Queue, reply: bytes) -> None:  # type: ignore[type-arg]
    """The baseline: aiohttp, one POST route that reads the body and sends ``reply``."""
    from aiohttp import web

    _pin(SERVER_CORE)

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=reply, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        q.put(site.port)
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_node(q: mp.Queue, datadir: str) -> None:  # type: ignore[type-arg]
    """A node on the easy test devnet whose tip holds BLOCK_TXS transactions."""
    from node.config import NodeConfig
    from node.service import Node
    from tests.chainutil import address_of, mine_block, transfer
    from tests.test_rpc_util import easy_genesis_file
    from wallet.rpc import read_cookie

    _pin(SERVER_CORE)
    path = Path(datadir)
    config = NodeConfig(network="devnet", datadir=path, genesis_file=easy_genesis_file(path),
                        p2p=False, mine=False, rpc_port=0)  # fmt: skip
    node = Node(config)
    rpc = next(s for s in node.services if s.name == "rpc")

    async def main() -> None:
        await rpc.start()
        net = node.network
        txs = [transfer(net, 0, i, address_of(5 + i % 3), 1000 + i) for i in range(BLOCK_TXS)]
        block = mine_block(node.chain, txs)
        assert node.submit_block(block).accepted
        user, password = read_cookie(config.datadir, config.network)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        q.put((rpc.port, f"Basic {token}", block.hash.hex()))  # type: ignore[attr-defined]
        await asyncio.Event().wait()

    asyncio.run(main())


def _start(ctx: Any, target: Any, *args: Any) -> tuple[Any, Any]:
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(q, *args), daemon=True)
    proc.start()
    return proc, q.get(timeout=120)


# --- load generators ------------------------------------------------------------------


def _hey(url: str, auth: str, body: bytes, seconds: float, conc: int) -> tuple[float, float]:
    """Run hey on the load core; (requests/s, p99 ms)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(body)
    try:
        out = subprocess.run(
            ["hey", "-z", f"{seconds}s", "-c", str(conc), "-m", "POST", "-T",
             "application/json", "-H", f"Authorization: {auth}", "-D", f.name, url],
            capture_output=True, text=True, check=True, preexec_fn=lambda: _pin(LOAD_CORE),
        )  # fmt: skip
    finally:
        os.unlink(f.name)
    statuses = re.findall(r"\[(\d+)\]\s+(\d+) responses", out.stdout)
    assert statuses and all(code == "200" for code, _ in statuses), out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    p99 = float(re.search(r"99% in ([\d.]+) secs", out.stdout).group(1))  # type: ignore[union-attr]
    return rps, p99 * 1000


def _aiohttp_load(
    q: mp.Queue, url: str, auth: str, body: bytes, seconds: float, conc: int  # type: ignore[type-arg]
) -> None:
    """The fallback load generator, in its own process."""
    import aiohttp

    _pin(LOAD_CORE)
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    latencies: list[float] = []

    async def main() -> float:
        conn = aiohttp.TCPConnector(limit=conc)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def one() -> None:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 200

            await asyncio.gather(*(one() for _ in range(conc)))  # open the connections
            end = time.perf_counter() + seconds

            async def worker() -> None:
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    await one()
                    latencies.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(conc)))
            return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    q.put((len(latencies) / elapsed, p99 * 1000))


def _load(
    ctx: Any, url: str, auth: str, body: bytes, seconds: float, conc: int
) -> tuple[float, float]:
    if shutil.which("hey"):
        return _hey(url, auth, body, seconds, conc)
    proc, result = _start(ctx, _aiohttp_load, url, auth, body, seconds, conc)
    proc.join(30)
    return result  # type: ignore[no-any-return]


def _post(url: str, auth: str, body: bytes) -> bytes:
    req = urllib.request.Request(
        url, data=body, headers={"Authorization": auth, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from chain.address import encode_address
    from tests.chainutil import address_of

    ctx = mp.get_context("spawn")
    tool = "hey" if shutil.which("hey") else "aiohttp-process"
    for key, value in (("load_generator", tool), ("concurrency", args.concurrency),
                       ("seconds", args.seconds), ("runs", args.runs), ("cores", os.cpu_count()),
                       ("loadavg_start", f"{os.getloadavg()[0]:.2f}")):  # fmt: skip
        print(f"{key}={value}")
    with tempfile.TemporaryDirectory() as tmp:
        node_proc, (port, auth, block_hash) = _start(ctx, _serve_node, tmp)
        url = f"http://127.0.0.1:{port}/"
        address = encode_address("dpw", address_of(0))
        calls = {
            "getblockcount": ("getblockcount", []),
            "getaccount": ("getaccount", [address]),
            "getblock2": ("getblock", [block_hash, 2]),
        }
        try:
            for name, (method, params) in calls.items():
                body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                   "params": params}).encode()  # fmt: skip
                reply = _post(url, auth, body)
                assert b'"result"' in reply, reply[:200]
                bare_proc, bare_port = _start(ctx, _serve_bare, reply)
                bare_url = f"http://127.0.0.1:{bare_port}/"
                try:
                    assert _post(bare_url, auth, body) == reply  # identical bytes
                    node_runs, bare_runs = [], []
                    for _ in range(args.runs):
                        bare_runs.append(_load(ctx, bare_url, auth, body, args.seconds,
                                               args.concurrency))  # fmt: skip
                        node_runs.append(_load(ctx, url, auth, body, args.seconds,
                                               args.concurrency))  # fmt: skip
                finally:
                    bare_proc.terminate()
                    bare_proc.join(10)
                rps = statistics.median(r for r, _ in node_runs)
                p99 = statistics.median(p for _, p in node_runs)
                base_rps = statistics.median(r for r, _ in bare_runs)
                base_p99 = statistics.median(p for _, p in bare_runs)
                print(f"{name}_reply_bytes={len(reply)}")
                print(f"{name}_rps={rps:.0f}")
                print(f"{name}_bare_rps={base_rps:.0f}")
                print(f"{name}_rps_ratio={rps / base_rps:.3f}")
                print(f"{name}_p99_ms={p99:.2f}")
                print(f"{name}_bare_p99_ms={base_p99:.2f}")
                print(f"{name}_p99_ratio={p99 / base_p99:.3f}")
        finally:
            node_proc.terminate()
            node_proc.join(10)
    print(f"loadavg_end={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
