"""Sync over a slow, lossy link (issue 15, point 4): a node joining late behind 300 ms
of latency, 5 % packet loss and 64 KiB/s in each direction (tests/netimpair.py: two
network namespaces joined by a user-space switch) must finish syncing, with the
node's own timeouts (no test shortcuts). The 300-header reply (~1.6 MB) needs ~25 s
there: a fixed 20 s headers timeout never lets it arrive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netimpair import lossy_link, skip_reason
from tests.p2putil import NodeProc, premine, procs_fixture, write_genesis  # noqa: F401

BLOCKS = 300  # ~5.4 KB each: a 300-header reply is ~1.6 MB over the lossy link
DELAY_S = 0.3  # one way
LOSS = 0.05  # each direction
RATE = 64 * 1024  # bytes per second, each direction


class NsNodeProc(NodeProc):
    """A node process inside network namespace ``ns``, listening on ``bind``."""

    def __init__(self, datadir: Path, genesis: Path, ns: str, bind: str) -> None:
        super().__init__(datadir, genesis, port=18600)
        self.ns = ns
        self.bind = bind

    @property
    def addr(self) -> str:
        return f"{self.bind}:{self.port}"

    def start(self, *extra: str, env: dict[str, str] | None = None) -> NodeProc:
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [
            "ip", "netns", "exec", self.ns, sys.executable, "-m", "node.cli", "node",
            "--network", "devnet", "--datadir", str(self.datadir),
            "--genesis-file", str(self.genesis), "--p2p-bind", self.bind,
            "--p2p-port", str(self.port), "--norpc", *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
        return self


@pytest.mark.slow
def test_late_node_syncs_over_lossy_high_latency_link(
    tmp_path: Path, procs: list[NodeProc]
) -> None:
    why = skip_reason()
    if why is not None:
        pytest.skip(why)
    genesis = tmp_path / "genesis.json"
    write_genesis(genesis, BLOCKS)
    premine(tmp_path / "a", write_genesis(genesis, BLOCKS), BLOCKS)
    with lossy_link(DELAY_S, LOSS, RATE) as link:
        a = NsNodeProc(tmp_path / "a", genesis, link.ns_a, link.ip_a)
        procs.append(a)
        a.start()
        a.wait_log("p2p listening")
        b = NsNodeProc(tmp_path / "b", genesis, link.ns_b, link.ip_b)
        procs.append(b)
        t0 = time.monotonic()
        b.start("--connect", a.addr)
        b.wait_height(BLOCKS, timeout=400)
        took = time.monotonic() - t0
        log = b.log()
        print(f"synced {BLOCKS} blocks over {DELAY_S * 1000:.0f} ms / {LOSS:.0%} / "
              f"{RATE // 1024} KiB/s in {took:.0f} s; "
              f"drops: {log.count('disconnected (')}")  # fmt: skip
        for p in (b, a):
            p.stop()
