"""End to end on a devnet of three real node processes (P2P, RPC, blob endpoints):
a client submits a 512x1024 . 1024x512 job on node 0, the market miner on node 1 mines
it, the client gets C equal to the exact product, the bounty reaches the miner after
the window and the ledger counts the delivered multiply-adds. A second job is
committed wrong on purpose: the client's check finds it and its challenge refunds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from chain.address import address_from_pubkey, encode_address
from chain.keys import devnet_key
from tests.p2putil import P2P_ENV, free_port, write_genesis
from wallet.jobs import JobClient
from wallet.rpc import RpcClient, read_cookie

ROOT = Path(__file__).resolve().parent.parent
# Blocks come several per second on this easy devnet: windows of a few seconds.
WINDOW = {"commit_blocks": 40, "challenge_blocks": 30, "max_expiry_blocks": 5000}


class Proc:
    def __init__(self, datadir: Path, genesis: Path, *extra: str) -> None:
        self.datadir, self.p2p, self.rpc_port, self.blob = (
            datadir,
            free_port(),
            free_port(),
            free_port(),
        )
        self.log_path = datadir.with_suffix(".log")
        cmd = [sys.executable, "-m", "tests.market_node", "--blob-port", str(self.blob),
               "--network", "devnet", "--datadir", str(datadir), "--genesis-file", str(genesis),
               "--p2p-bind", "127.0.0.1", "--p2p-port", str(self.p2p),
               "--rpc-port", str(self.rpc_port), *extra]  # fmt: skip
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **P2P_ENV}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def rpc(self) -> RpcClient:
        deadline = time.monotonic() + 30
        while True:
            try:
                user, password = read_cookie(self.datadir, "devnet")
                client = RpcClient(f"http://127.0.0.1:{self.rpc_port}", user, password)
                client.call("getblockcount")
                return client
            except Exception:  # noqa: BLE001
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(self.log_path.read_text()[-3000:]) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def wait_for(what: str, fn: Any, timeout: float = 60.0, procs: list[Proc] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
        except Exception:  # noqa: BLE001 - e.g. the job is not in a block yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(p.log_path.read_text()[-2000:] for p in procs or [])
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.25)


def test_market_end_to_end(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    write_genesis(genesis, 0)
    data = json.loads(genesis.read_text())
    data["market"] = WINDOW
    genesis.write_text(json.dumps(data))
    from chain.network import load_network

    net = load_network("devnet", genesis)
    n0 = Proc(tmp_path / "n0", genesis)
    procs = [n0]
    try:
        n1 = Proc(tmp_path / "n1", genesis, "--market-key", "1", "--corrupt-odd",
                  "--connect", f"127.0.0.1:{n0.p2p}")  # fmt: skip
        procs.append(n1)
        n2 = Proc(tmp_path / "n2", genesis, "--connect", f"127.0.0.1:{n0.p2p}",
                  "--connect", f"127.0.0.1:{n1.p2p}")  # fmt: skip
        procs.append(n2)
        rpc0, rpc1, rpc2 = n0.rpc(), n1.rpc(), n2.rpc()
        wait_for("blocks", lambda: rpc0.call("getblockcount") >= 2, procs=procs)
        buyer = devnet_key(0)
        client = JobClient(buyer, net, rpc0, f"http://127.0.0.1:{n0.blob}",
                           blob_auth=read_cookie(n0.datadir, "devnet"))  # fmt: skip
        rng = np.random.default_rng(5)
        a = rng.integers(-64, 64, (512, 1024), dtype=np.int8)
        b = rng.integers(-64, 64, (1024, 512), dtype=np.int8)
        t0 = time.monotonic()
        job_id = client.submit(a, b, bounty=2_000_000, expiry_blocks=500)
        status = wait_for("commit", lambda: (s := client.status(job_id))["status"] in
                          ("committed", "paid") and s, timeout=90, procs=procs)  # fmt: skip
        miner = encode_address(net.hrp, address_from_pubkey(devnet_key(1).public_key))
        assert status["miner"] == miner
        res = client.result(job_id)
        exact = a.astype(np.int64) @ b.astype(np.int64)
        assert res.verified and np.array_equal(res.c, exact)
        print(f"job verified after {time.monotonic() - t0:.1f} s, timings {res.timings}")
        wait_for("payout", lambda: client.status(job_id)["status"] == "paid", procs=procs)
        # node 2 sees the payout once the settling block has reached it
        def paid_on_node_2() -> bool:
            return bool(rpc2.call("getcontribution", miner)["bounties"] > 0)

        wait_for("payout on node 2", paid_on_node_2, procs=procs)
        contrib = rpc2.call("getcontribution", miner)
        assert contrib["delivered"] == 512 * 1024 * 512 and contrib["bounties"] == 2_000_000
        assert any(j["job_id"] == job_id for j in rpc1.call("listjobs", status="paid"))
        # the same through the CLI, which needs no key to read a job's state
        cli = subprocess.run(
            [sys.executable, "-m", "node.cli", "job", "status", job_id, "--json",
             "--network", "devnet", "--datadir", str(n0.datadir), "--genesis-file", str(genesis),
             "--rpc", f"http://127.0.0.1:{n0.rpc_port}"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["status"] == "paid"

        # a wrong C (odd bounty): the client's check fails and its challenge wins
        a2, b2 = a[:64, :128].copy(), b[:128, :64].copy()
        job2 = client.submit(a2, b2, bounty=1_000_001, expiry_blocks=500)
        wait_for("commit 2", lambda: "result_root" in client.status(job2), timeout=60, procs=procs)
        res2 = client.result(job2)
        assert not res2.verified and res2.challenge_txid is not None
        wait_for("refund", lambda: client.status(job2)["status"] == "refunded", procs=procs)
        assert rpc0.call("getcontribution", miner)["challenges_lost"] == 1
    finally:
        for p in procs:
            p.stop()
