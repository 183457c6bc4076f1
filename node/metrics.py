"""Prometheus metrics of the node, and the small HTTP server for /metrics, /health, /ready.

The metrics server is its own aiohttp app on ``--metrics-bind`` (127.0.0.1) and
``--metrics-port`` (default: the RPC port + 2), enabled by ``--metrics``. It
is unauthenticated, so it is separate from the RPC port: binding the RPC port to a
LAN does not expose metrics, and scraping needs no RPC credentials.

Counters (blocks, rejections, reorgs, RPC calls) are updated from the node's events
and from ``Node.submit_block``; gauges (height, peers, mempool, mining rates, market)
are read from the live node at each scrape.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from chain.chainstate import ProcessResult
from chain.validation import Verdict
from node.config import VERSION as NODE_VERSION
from node.config import port_after_rpc
from node.events import TipChange
from node.health import best_known_height, p2p_of, readiness, ready_peers
from node.rpc.callstats import RpcCallStats

if TYPE_CHECKING:
    from node.service import Node

log = logging.getLogger("pouw.node")

VERSION = NODE_VERSION
METRICS_PORT_OFFSET = 2  # default metrics port: the RPC port + 2 (blobs take +3)
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
REORG_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 1000)


def tiles_per_product(node: Node) -> int:
    net = node.network
    rows = math.ceil(net.filler.m / net.pouw.tile_rows)
    cols = math.ceil(net.filler.n / net.pouw.tile_cols)
    return rows * cols


class _LiveCollector:
    """Gauges read from the node at scrape time."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        node = self.m.node
        chain = node.chain
        tip = chain.tip

        def gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=list(labels))
            g.add_metric(list(labels.values()), value)
            return g

        info = GaugeMetricFamily(
            "pouw_info", "Node version and network", labels=["version", "network"]
        )
        info.add_metric([VERSION, node.network.name], 1)
        yield info
        yield gauge(
            "pouw_uptime_seconds", "Seconds since the node started", time.time() - node.started
        )
        yield gauge("pouw_chain_height", "Height of the active tip", tip.height)
        yield gauge(
            "pouw_chain_tip_timestamp_seconds", "Timestamp of the active tip", tip.timestamp
        )
        best = best_known_height(node)
        yield gauge("pouw_headers_height", "Best block height known (headers, peers)", best)
        yield gauge(
            "pouw_sync_progress",
            "Tip height / best known height (0..1)",
            min(1.0, tip.height / best) if best else 1.0,
        )
        yield gauge(
            "pouw_ready", "1 when /ready answers 200", 1.0 if readiness(node).ready else 0.0
        )
        peers = GaugeMetricFamily(
            "pouw_peers", "Connected peers (handshake done)", labels=["direction"]
        )
        p2p = p2p_of(node)
        ready = ready_peers(p2p) if p2p is not None else []
        peers.add_metric(["inbound"], sum(1 for p in ready if p.inbound))
        peers.add_metric(["outbound"], sum(1 for p in ready if not p.inbound))
        yield peers
        pool = node.mempool
        yield gauge("pouw_mempool_transactions", "Transactions in the mempool", len(pool))
        yield gauge(
            "pouw_mempool_bytes", "Encoded bytes of the mempool's transactions", pool.bytes_used
        )
        yield gauge(
            "pouw_orphan_transactions",
            "Transactions from peers held until their sender's nonce gap fills",
            p2p.orphan_count() if p2p is not None else 0,
        )
        yield from self._mining(node)
        jobs, escrow = self.m.market_values()
        yield gauge("pouw_market_open_jobs", "Open compute jobs", jobs)
        yield gauge(
            "pouw_market_bounties_escrowed", "Bounty base units escrowed by open jobs", escrow
        )

    def _mining(self, node: Node) -> Iterator[Metric]:
        miner = node.miner
        backend = GaugeMetricFamily(
            "pouw_mining_backend", "Engine of the node's own miner (1)", labels=["backend"]
        )
        backend.add_metric([miner.engine.name if miner is not None else "none"], 1)
        yield backend
        mac = tickets = 0.0
        found = 0
        if miner is not None:
            c = miner.counters
            elapsed = time.monotonic() - c.started if c.started else 0.0
            mac = c.multiply_adds_per_s()
            tickets = c.products * tiles_per_product(node) / elapsed if elapsed > 0 else 0.0
            found = c.blocks_accepted
        g = GaugeMetricFamily(
            "pouw_mining_multiply_adds_per_second",
            "Useful int8 multiply-adds per second of the own miner",
        )
        g.add_metric([], mac)
        yield g
        g = GaugeMetricFamily(
            "pouw_mining_tickets_per_second", "Lottery tickets (tiles) per second of the own miner"
        )
        g.add_metric([], tickets)
        yield g
        c2 = CounterMetricFamily("pouw_mining_blocks_found", "Blocks the own miner got accepted")
        c2.add_metric([], found)
        yield c2


class NodeMetrics:
    """The node's metrics registry (one per Node, so several nodes can share a process)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        r = self.registry
        self.blocks_connected = Counter(
            "pouw_blocks_connected", "Blocks connected to the active chain", registry=r
        )
        self.blocks_disconnected = Counter(
            "pouw_blocks_disconnected", "Blocks disconnected by reorgs", registry=r
        )
        self.blocks_rejected = Counter(
            "pouw_blocks_rejected", "Invalid blocks, by reason", ["reason"], registry=r
        )
        self.blocks_deferred = Counter(
            "pouw_blocks_deferred",
            "Blocks held back (unknown parent, from the future), by reason",
            ["reason"],
            registry=r,
        )
        self.blocks_duplicate = Counter(
            "pouw_blocks_duplicate", "Blocks submitted that were already known", registry=r
        )
        self.reorgs = Counter("pouw_reorgs", "Reorganisations of the active chain", registry=r)
        self.reorg_depth = Histogram(
            "pouw_reorg_depth_blocks",
            "Blocks disconnected per reorg",
            buckets=REORG_BUCKETS,
            registry=r,
        )
        self.txs_accepted = Counter(
            "pouw_mempool_accepted", "Transactions accepted into the mempool", registry=r
        )
        # JSON-RPC calls and latency by method: counted without prometheus_client's
        # locks on the hot path (node/rpc/callstats.py), exported at scrape time.
        self.rpc_stats = RpcCallStats(RPC_BUCKETS)
        r.register(self.rpc_stats)
        r.register(_LiveCollector(self))
        # The compute market sets this: () -> (open jobs, bounty units escrowed).
        self.market_source: Callable[[], tuple[int, int]] | None = None
        node.events.tip_changed.connect(self._on_tip)
        node.events.tx_accepted.connect(lambda _tx: self.txs_accepted.inc())

    def market_values(self) -> tuple[int, int]:
        if self.market_source is None:
            return 0, 0
        try:
            return self.market_source()
        except Exception:  # noqa: BLE001 - a scrape must not fail because of the market
            log.exception("market metrics failed")
            return 0, 0

    def _on_tip(self, change: TipChange) -> None:
        self.blocks_connected.inc(len(change.connected))
        if change.disconnected:
            self.blocks_disconnected.inc(len(change.disconnected))
            self.reorgs.inc()
            self.reorg_depth.observe(len(change.disconnected))

    def block_processed(self, result: ProcessResult) -> None:
        """Called by Node.submit_block for every block, whatever its source."""
        if result.duplicate:
            self.blocks_duplicate.inc()
            return
        check = result.check
        reason = check.reason.value if check.reason is not None else "unknown"
        if check.verdict is Verdict.INVALID:
            self.blocks_rejected.labels(reason).inc()
        elif check.verdict is Verdict.DEFER:
            self.blocks_deferred.labels(reason).inc()

    def rpc_observe(self, method: str, seconds: float, outcome: str) -> None:
        self.rpc_stats.observe(method, seconds, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsService:
    """HTTP server for /metrics, /health and /ready (a Node service)."""

    name = "metrics"

    def __init__(self, node: Node) -> None:
        self.node = node
        cfg = node.config
        self.bind = cfg.metrics_bind
        default = port_after_rpc(cfg.rpc_port, node.network.rpc_port, METRICS_PORT_OFFSET)
        self.port = default if cfg.metrics_port is None else cfg.metrics_port
        self._runner: web.AppRunner | None = None

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body = self.node.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "uptime": int(time.time() - self.node.started),
                "height": self.node.chain.tip.height,
            }
        )

    async def handle_ready(self, request: web.Request) -> web.Response:
        r = readiness(self.node)
        return web.json_response(r.to_json(), status=200 if r.ready else 503)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/ready", self.handle_ready)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.make_app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port)
        await site.start()
        sockets: Any = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        if self.bind not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "metrics (unauthenticated) listening on %s:%d, not on localhost",
                self.bind,
                self.port,
            )
        log.info("metrics on http://%s:%d/metrics (also /health, /ready)", self.bind, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
