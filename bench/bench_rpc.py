"""JSON-RPC throughput: getblockcount and getaccount vs a bare aiohttp handler.

The server (a real Node with its RpcService, or the baseline: a bare aiohttp handler
answering a constant JSON-RPC reply) runs in a child process pinned to core 0; the
concurrent aiohttp load generator runs here, pinned to core 1. Prints name=value lines:
requests/s, p99 latency in ms, and each method's ratio to the baseline.

    .venv/bin/python bench/bench_rpc.py [--seconds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _pin(core: int) -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[core % len(cpus)]})
    except (AttributeError, OSError):
        pass


def _serve_baseline(q: mp.Queue) -> None:  # type: ignore[type-arg]
    from aiohttp import web

    _pin(0)
    body = json.dumps({"jsonrpc": "2.0", "result": 0, "id": 1})

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        q.put((port, "Basic eDp4"))
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_node(q: mp.Queue, datadir: str) -> None:  # type: ignore[type-arg]
    from node.config import NodeConfig
    from node.service import Node
    from wallet.rpc import read_cookie

    _pin(0)
    config = NodeConfig(network="devnet", datadir=Path(datadir), listen=False, rpc_port=0)
    node = Node(config)
    rpc = next(s for s in node.services if s.name == "rpc")

    async def main() -> None:
        await rpc.start()
        user, password = read_cookie(config.datadir, config.network)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        q.put((rpc.port, f"Basic {token}"))  # type: ignore[attr-defined]
        await asyncio.Event().wait()

    asyncio.run(main())


async def _load(
    port: int, auth: str, payload: dict, seconds: float, conc: int
) -> tuple[float, float]:
    import aiohttp

    url = f"http://127.0.0.1:{port}/"
    data = json.dumps(payload)
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    latencies: list[float] = []
    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one() -> None:
            async with session.post(url, data=data, headers=headers) as resp:
                reply = await resp.json()
                assert "result" in reply, reply

        for _ in range(conc):  # warm the connections
            await one()
        end = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                await one()
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return len(latencies) / elapsed, p99 * 1000


def _measure(target, args, payload: dict, seconds: float, conc: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(q, *args), daemon=True)
    proc.start()
    try:
        port, auth = q.get(timeout=60)
        return asyncio.run(_load(port, auth, payload, seconds, conc))
    finally:
        proc.terminate()
        proc.join(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    _pin(1)
    from chain.address import address_from_pubkey, encode_address
    from chain.keys import devnet_key

    address = encode_address("dpw", address_from_pubkey(devnet_key(0).public_key))
    calls = {
        "getblockcount": {"jsonrpc": "2.0", "id": 1, "method": "getblockcount", "params": []},
        "getaccount": {"jsonrpc": "2.0", "id": 1, "method": "getaccount", "params": [address]},
    }
    print(f"cores=2 (server core 0, load core 1) concurrency={args.concurrency} "
          f"seconds={args.seconds}")  # fmt: skip
    base_rps, base_p99 = _measure(
        _serve_baseline, (), calls["getblockcount"], args.seconds, args.concurrency
    )
    print(f"baseline_bare_aiohttp_rps={base_rps:.0f}")
    print(f"baseline_bare_aiohttp_p99_ms={base_p99:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, payload in calls.items():
            rps, p99 = _measure(_serve_node, (tmp,), payload, args.seconds, args.concurrency)
            print(f"{name}_rps={rps:.0f}")
            print(f"{name}_p99_ms={p99:.2f}")
            print(f"{name}_vs_baseline={rps / base_rps:.3f}")


if __name__ == "__main__":
    main()
