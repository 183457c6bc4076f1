"""/metrics, /health and /ready of real node processes: a fresh node syncing from one
with a chain is not ready until it has caught up, and its metrics follow the blocks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.p2putil import NodeProc, free_port, premine, write_genesis

BLOCKS = 30


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metrics(port: int) -> dict[str, float]:
    """Every sample as name{labels} -> value, parsed by prometheus-client's own parser."""
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


def test_ready_and_metrics_while_a_fresh_node_syncs(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    net = write_genesis(genesis, BLOCKS)
    premine(tmp_path / "a", net, BLOCKS)
    a = NodeProc(tmp_path / "a", genesis)
    b = NodeProc(tmp_path / "b", genesis)
    mport = free_port()
    try:
        # B starts first and cannot reach A yet: alive, not ready.
        b.start("--connect", a.addr, "--metrics", "--metrics-port", str(mport))
        b.wait_log(r"metrics on http://127\.0\.0\.1:\d+/metrics")
        assert get(f"http://127.0.0.1:{mport}/health")[0] == 200
        status, body = get(f"http://127.0.0.1:{mport}/ready")
        assert status == 503 and json.loads(body)["reasons"] == ["no peers"], body
        m = metrics(mport)
        assert m["pouw_chain_height"] == 0 and m["pouw_ready"] == 0
        assert m["pouw_peers{direction=outbound}"] == 0
        assert m["pouw_blocks_connected_total"] == 0
        assert m["pouw_market_open_jobs"] == 0 and m["pouw_mining_backend{backend=none}"] == 1

        a.start()
        b.wait_height(BLOCKS, timeout=60)

        def ready() -> dict | None:  # type: ignore[type-arg]
            status, body = get(f"http://127.0.0.1:{mport}/ready")
            return json.loads(body) if status == 200 else None

        info = wait_for(ready, 30, "B ready")
        assert info["height"] == BLOCKS and info["peers"] >= 1 and info["reasons"] == []
        m = metrics(mport)
        assert m["pouw_chain_height"] == BLOCKS and m["pouw_headers_height"] == BLOCKS
        assert m["pouw_blocks_connected_total"] == BLOCKS
        assert m["pouw_sync_progress"] == 1.0 and m["pouw_ready"] == 1
        assert m["pouw_peers{direction=outbound}"] >= 1
        assert m["pouw_mempool_transactions"] == 0 and m["pouw_mempool_bytes"] == 0
        assert m["pouw_orphan_transactions"] == 0
    finally:
        b.stop()
        a.stop()
