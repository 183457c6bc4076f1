"""The compute market end to end on devnets of real node processes (P2P, RPC, blob
endpoints): three miners and a buyer whose demand exceeds their capacity settle every
job, a product split over the three comes back exact and each product is computed
once; each kind of cheating worker (wrong C, withheld C, C under another root, claim
and vanish) loses its bond to the buyer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chain.address import address_from_pubkey, encode_address
from chain.keys import PrivateKey, devnet_key
from compute.numpy_engine import NumpyEngine
from tests.marketutil import exact_product
from tests.p2putil import P2P_ENV, free_port, write_genesis
from wallet.amount import format_coins, parse_amount
from wallet.jobs import JobClient, JobError
from wallet.keystore import WalletError
from wallet.rpc import RpcClient, read_cookie

ROOT = Path(__file__).resolve().parent.parent
# Blocks come several per second on this easy devnet: windows of a few seconds (a
# claim's deadline also grows by a second per 10^9 multiply-adds of its job).
WINDOW = {
    "claim_slack_s": 12, "claim_rate": 10**9, "bond_bps": 1000, "min_bond": 1000,
    "challenge_s": 8, "reveal_s": 4, "probe_deposit": 1000, "min_window_blocks": 2,
    "max_open_s": 3600,
}  # fmt: skip


def market_genesis(tmp_path: Path, **market: int) -> Path:
    """An easy devnet with the market's windows of WINDOW, or ``market`` where given
    (a test with no challenger takes a short challenge window: its payouts come
    sooner)."""
    genesis = tmp_path / "genesis.json"
    write_genesis(genesis, 0)
    data = json.loads(genesis.read_text())
    data["market"] = {**WINDOW, **market}
    # Blocks of ~2^26 multiply-adds (a few filler products each, under a job's work):
    # fewer forks than one block per product, so claims mostly stand.
    data["difficulty"]["genesis_target"] = hex(2**256 // 2**26)
    genesis.write_text(json.dumps(data))
    return genesis


class Proc:
    """A tests/market_node.py process; ``core`` pins it to one CPU core (benchmarks)."""

    def __init__(self, datadir: Path, genesis: Path, *extra: str, core: int | None = None) -> None:
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
        pin = None
        if core is not None:
            cores = sorted(os.sched_getaffinity(0))
            chosen = {cores[core % len(cores)]}
            pin = lambda: os.sched_setaffinity(0, chosen)  # noqa: E731
        self._start = lambda: subprocess.Popen(
            cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=pin
        )
        self.proc = self._start()

    def restart(self) -> None:
        """The same node again (same datadir and ports) after ``stop``."""
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = self._start()

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


def _address(i: int) -> str:
    from chain.network import load_network

    return encode_address(load_network("devnet").hrp, address_from_pubkey(devnet_key(i).public_key))


def test_three_miners_settle_every_job_and_share_a_product(tmp_path: Path) -> None:
    genesis = market_genesis(tmp_path, challenge_s=2)
    from chain.network import load_network

    net = load_network("devnet", genesis)
    n0 = Proc(tmp_path / "n0", genesis)  # the buyer's node: relays, does not mine
    procs = [n0]
    try:
        for i in (1, 2, 3):
            procs.append(Proc(tmp_path / f"n{i}", genesis, "--market-key", str(i),
                              "--connect", f"127.0.0.1:{n0.p2p}"))  # fmt: skip
        rpcs = [p.rpc() for p in procs]
        for rpc in rpcs[1:]:  # every miner has compiled its engine and mined a product
            wait_for("a product", lambda r=rpc: r.call("getmininginfo")["localproducts"] >= 1,
                     timeout=120, procs=procs)  # fmt: skip
        wait_for("one chain", lambda: max(r.call("getblockcount") for r in rpcs) - min(
            r.call("getblockcount") for r in rpcs) <= 3 and all(
            r.call("getconnectioncount") >= 1 for r in rpcs), timeout=60, procs=procs)  # fmt: skip
        products = n0.datadir / "devnet" / "products"  # where `pouw job` keeps manifests
        client = JobClient(devnet_key(0), net, rpcs[0], f"http://127.0.0.1:{n0.blob}",
                           blob_auth=read_cookie(n0.datadir, "devnet"),
                           manifest_dir=products)  # fmt: skip
        rng = np.random.default_rng(5)
        a = rng.integers(-64, 64, (768, 2048), dtype=np.int8)
        b = rng.integers(-64, 64, (2048, 512), dtype=np.int8)
        t0 = time.monotonic()
        pid = client.submit(a, b, bounty=6_000_000, min_parts=6)
        parts = client.status(pid)["parts"]
        assert len(parts) == 6 and {p["status"] for p in parts} <= {"pending", "open"}
        # more demand than three miners holding two jobs each can take at once
        extra = [client.submit(a[:128], b[:, :128], bounty=500_000 + i) for i in range(3)]
        heard: list[str] = []
        client.wait(pid, timeout=180, progress=heard.append)
        assert heard and heard[-1].endswith("delivered (C committed): 6 of 6 done"), heard
        assert "waiting up to 180 s for 6 part(s)" in heard[0], heard
        assert all(line.startswith("[") and "part " in line for line in heard[1:]), heard
        # a line on the part waited on also counts the states of all six
        res = client.result(pid)
        assert res.verified, res.actions
        assert np.array_equal(res.c, exact_product(a, b))
        print(f"split product verified after {time.monotonic() - t0:.1f} s, {res.timings}")
        job_ids = [p["job_id"] for p in parts] + extra
        for job_id in job_ids:
            wait_for("payout", lambda j=job_id: client.status(j)["status"] == "paid",
                     timeout=90, procs=procs)  # fmt: skip
        every = [rpcs[0].call("getjob", j) for j in job_ids]
        claimants = {p["claimant"] for p in every}
        assert claimants == {_address(1), _address(2), _address(3)}, claimants
        delivered = sum(
            rpcs[0].call("getcontribution", _address(i))["delivered"] for i in (1, 2, 3)
        )
        assert delivered == sum(p["multiply_adds"] for p in every)
        path = NumpyEngine().path  # how this CPU multiplies: the nodes run on it too
        for rpc in rpcs[1:]:
            mining = rpc.call("getmininginfo")
            market = mining["market"]
            assert market["recomputed_products"] == 0, market
            assert (mining["engine"], mining["enginepath"]) == ("numpy", path), mining
        info = rpcs[0].call("getmarketinfo")
        assert info["jobs"]["paid"] == 9 and info["network_multiply_adds_per_s"] > 0

        def job_cli(*args: str) -> subprocess.CompletedProcess[str]:
            """`pouw job ...` against the buyer's node."""
            return subprocess.run(
                [sys.executable, "-m", "node.cli", "job", *args, "--network", "devnet",
                 "--datadir", str(n0.datadir), "--genesis-file", str(genesis),
                 "--rpc", f"http://127.0.0.1:{n0.rpc_port}"],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )  # fmt: skip

        # the CLI reads a job's state without a key
        cli = job_cli("status", extra[0], "--json")
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["status"] == "paid"
        # the buyer's products, newest first, from the API and from the CLI
        listed = client.products()
        assert [r["product_id"] for r in listed] == [*extra[::-1], pid]
        assert all(r["status"] == "paid" for r in listed), listed
        whole = next(r for r in listed if r["product_id"] == pid)
        assert (whole["parts"], whole["bounty"], whole["counts"]) == (6, 6_000_000, {"paid": 6})
        cli = job_cli("list", "--limit", "2", "--json")
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == listed[:2]
        # a damaged manifest, or a product the node never heard of, is listed as such
        odd = tmp_path / "odd-products"
        odd.mkdir()
        (odd / "damaged.json").write_text("{not json")
        unknown = json.loads((products / f"{extra[0]}.json").read_text())
        unknown["job_ids"] = ["ab" * 32]
        (odd / f"{'ab' * 32}.json").write_text(json.dumps(unknown))
        reader = JobClient(None, net, rpcs[0], f"http://127.0.0.1:{n0.blob}", manifest_dir=odd)
        statuses = {r["product_id"]: r["status"] for r in reader.products()}
        assert statuses["damaged"].startswith("unreadable manifest: not a product manifest")
        assert statuses["ab" * 32] == "unknown to the node (job not found)", statuses
        # the quote names its bounty in coins, as `submit --bounty` reads them
        cli = job_cli("quote", "512", "2048", "512")
        assert cli.returncode == 0, cli.stderr
        line = re.search(r"suggested_bounty: ([0-9.]+) coins \((\d+)u\): submit --bounty ([0-9.]+)",
                         cli.stdout)  # fmt: skip
        assert line is not None, cli.stdout
        units = int(line.group(2))
        assert units > 0 and parse_amount(line.group(1)) == units == parse_amount(line.group(3))
        assert line.group(1) == format_coins(units)
        # a buyer who cannot pay hears so before anything is hashed or uploaded
        broke = JobClient(devnet_key(9), net, rpcs[0], f"http://127.0.0.1:{n0.blob}",
                          blob_auth=read_cookie(n0.datadir, "devnet"))  # fmt: skip
        with pytest.raises(JobError, match=r"come to 0\.0101 coins but dpw1\w+ holds 0\.0"):
            broke.submit(a[:64], b[:, :64], bounty=1_000_000, fee=10_000)
        assert broke._pending_nonce is None  # no nonce was taken
    finally:
        for p in procs:
            p.stop()


CHEATS = {"wrong": 1, "withhold": 2, "other-root": 3, "vanish": 4}  # mode -> devnet key


def test_cheating_workers_lose_their_bonds(tmp_path: Path) -> None:
    # cheaters commit within milliseconds of their claim: a 6 s claim slack is ample,
    # and the vanished claim's deadline passes sooner
    genesis = market_genesis(tmp_path, claim_slack_s=6)
    from chain.network import load_network

    net = load_network("devnet", genesis)
    # The buyer's node mines filler only (its own blocks, no jobs): blocks keep coming.
    n0 = Proc(tmp_path / "n0", genesis, "--mine", "--nomarket")
    procs = [n0]
    try:
        for mode, i in CHEATS.items():
            procs.append(Proc(tmp_path / f"n{i}", genesis, "--market-key", str(i), "--cheat",
                              mode, "--only-bounty", str(1_000_000 + i),
                              "--connect", f"127.0.0.1:{n0.p2p}"))  # fmt: skip
        rpc0 = n0.rpc()
        for p in procs[1:]:
            p.rpc()
        wait_for("blocks", lambda: rpc0.call("getblockcount") >= 3, procs=procs)
        client = JobClient(devnet_key(0), net, rpc0, f"http://127.0.0.1:{n0.blob}",
                           blob_auth=read_cookie(n0.datadir, "devnet"))  # fmt: skip
        rng = np.random.default_rng(7)
        jobs, operands = {}, {}
        for mode, i in CHEATS.items():
            a = rng.integers(-64, 64, (64, 128), dtype=np.int8)
            b = rng.integers(-64, 64, (128, 64), dtype=np.int8)
            jobs[mode], operands[mode] = client.submit(a, b, bounty=1_000_000 + i), (a, b)
        for mode, job_id in jobs.items():
            wait_for(f"{mode} claims", lambda j=job_id: rpc0.call("getjob", j).get("claimant"),
                     timeout=120, procs=procs)  # fmt: skip
            assert rpc0.call("getjob", job_id)["claimant"] == _address(CHEATS[mode])
        # wrong C: the client's Freivalds check fails and its challenge wins
        wait_for("commit", lambda: "result_root" in rpc0.call("getjob", jobs["wrong"]), procs=procs)

        # a reader without the key, or whose wallet does not unlock, hears that the C is
        # wrong and that no challenge went out (the part's report, not an exception)
        def locked() -> PrivateKey:
            raise WalletError("wrong password for the keystore")

        for key, why in ((None, "needs the wallet's key"), (locked, "wrong password")):
            reader = JobClient(key, net, rpc0, f"http://127.0.0.1:{n0.blob}")
            res = reader.result(jobs["wrong"], *operands["wrong"])
            assert not res.verified and res.challenge_txid is None, res.actions
            assert why in res.actions[-1] and "C is wrong; nothing sent: " in res.actions[-1]
        res = client.result(jobs["wrong"])
        assert not res.verified and res.challenge_txid is not None, res.actions
        # withheld C, C under another root: the download fails, the client probes
        for mode in ("withhold", "other-root"):
            wait_for("commit", lambda m=mode: "result_root" in rpc0.call("getjob", jobs[m]),
                     procs=procs)  # fmt: skip
            res = client.result(jobs[mode], timeout=5)
            assert not res.verified and "probed" in " ".join(res.actions), res.actions
        for mode in ("wrong", "withhold", "other-root"):
            wait_for(f"{mode} refunded", lambda m=mode: rpc0.call("getjob", jobs[m])["status"] ==
                     "refunded", timeout=60, procs=procs)  # fmt: skip
        # claim and vanish: the deadline passes, the bond goes to the buyer, it reopens
        wait_for("vanished claim expires", lambda: rpc0.call("getjob", jobs["vanish"])["status"]
                 == "open", timeout=90, procs=procs)  # fmt: skip
        assert rpc0.call("getjob", jobs["vanish"])["claims"] == 1
        # the buyer's CLI says the claim lapsed, not just "open"
        shown = subprocess.run(
            [sys.executable, "-m", "node.cli", "job", "status", jobs["vanish"], "--network",
             "devnet", "--datadir", str(n0.datadir), "--genesis-file", str(genesis),
             "--rpc", f"http://127.0.0.1:{n0.rpc_port}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0 and "open (1 claim(s) lapsed" in shown.stdout, shown
        client.reclaim(jobs["vanish"])
        wait_for("reclaimed", lambda: client.status(jobs["vanish"])["status"] == "reclaimed",
                 procs=procs)  # fmt: skip
        for mode, i in CHEATS.items():
            assert rpc0.call("getcontribution", _address(i))["challenges_lost"] == 1, mode
        # refunds: every cheater's bond ended with the buyer (the challenger, the prober)
        assert rpc0.call("getmarketinfo")["jobs"]["refunded"] == 3
        # a product nobody takes: the wait's lines count the states of all its parts
        a = rng.integers(-64, 64, (256, 256), dtype=np.int8)
        b = rng.integers(-64, 64, (256, 128), dtype=np.int8)
        pid = client.submit(a, b, bounty=3_000_000, min_parts=2)
        assert len(client.status(pid)["parts"]) == 2
        heard: list[str] = []
        with pytest.raises(JobError, match="2 part\\(s\\) not delivered after 3 s"):
            client.wait(pid, timeout=3, progress=heard.append)
        assert any(re.search(r"part 1/2 \(\w+\) \w+; of the 2 parts: [12] (open|pending)", line)
                   for line in heard), heard  # fmt: skip
    finally:
        for p in procs:
            p.stop()


def test_claims_racing_across_a_reorg_leave_no_account_stuck(tmp_path: Path) -> None:
    """Two miners on two chains both claim (and commit) the same job; when the chains
    meet, the losing claim and commit are included as failed, the loser's next
    transaction confirms, nothing of it stays in a pool, and the winner is paid."""
    from chain.network import load_network
    from chain.txkind import TxKind
    from tests.chainutil import transfer
    from wallet.job_txs import submit_tx

    genesis = market_genesis(tmp_path, challenge_s=2)
    net = load_network("devnet", genesis)
    procs = [Proc(tmp_path / "n1", genesis, "--market-key", "1"),
             Proc(tmp_path / "n2", genesis, "--market-key", "2")]  # fmt: skip
    try:
        rpcs = [p.rpc() for p in procs]
        for rpc in rpcs:
            wait_for("blocks", lambda r=rpc: r.call("getblockcount") >= 3, procs=procs)
        rng = np.random.default_rng(9)
        a = rng.integers(-64, 64, (128, 256), dtype=np.int8)
        b = rng.integers(-64, 64, (256, 128), dtype=np.int8)
        url = f"http://127.0.0.1:{procs[0].blob}"
        from wallet.jobs import upload_blob

        upload_blob(url, "a", a, read_cookie(procs[0].datadir, "devnet"))
        upload_blob(url, "bt", b.T, read_cookie(procs[0].datadir, "devnet"))
        expires = int(rpcs[0].call("getblockchaininfo")["mediantime"]) + 600
        tx = submit_tx(net, devnet_key(0), 0, a, b, 3_000_000, expires, url=url)
        for rpc in rpcs:
            rpc.call("sendrawtransaction", tx.to_bytes().hex())
        job_id = tx.txid.hex()
        for i, rpc in ((1, rpcs[0]), (2, rpcs[1])):  # each claims on its own chain
            wait_for(f"claim {i}", lambda r=rpc, i=i: r.call("getjob", job_id).get("claimant")
                     == _address(i), timeout=60, procs=procs)  # fmt: skip
        rpcs[0].call("addnode", f"127.0.0.1:{procs[1].p2p}", "add")

        def one_tip() -> bool:
            return bool(rpcs[0].call("getbestblockhash") == rpcs[1].call("getbestblockhash"))

        wait_for("the chains meet", one_tip, timeout=60, procs=procs)
        winner = rpcs[0].call("getjob", job_id)["claimant"]
        loser_index = 2 if winner == _address(1) else 1
        loser_rpc = rpcs[loser_index - 1]
        wait_for("payout", lambda: rpcs[0].call("getjob", job_id)["status"] == "paid",
                 timeout=90, procs=procs)  # fmt: skip
        nonce = loser_rpc.call("getaccount", _address(loser_index))["pending_nonce"]
        send = transfer(net, loser_index, nonce, bytes(20), 5)
        txid = loser_rpc.call("sendrawtransaction", send.to_bytes().hex())
        for rpc in rpcs:  # both nodes, so that the pool check below sees each one's tip
            wait_for("the loser's next tx confirms", lambda r=rpc: r.call("gettransaction", txid)
                     ["confirmations"] >= 1, timeout=60, procs=procs)  # fmt: skip
        account = rpcs[0].call("getaccount", _address(loser_index))
        assert account["nonce"] == nonce + 1 == account["pending_nonce"]
        history = rpcs[0].call("getaddresshistory", _address(loser_index))["txs"]
        receipts = [rpcs[0].call("gettransaction", t["txid"]) for t in history]
        assert any(r["status"] == "failed" and r["failure"].startswith("job-") for r in receipts)
        # a wallet scanning blocks or its history sees the same receipts
        assert [(t["status"], t["failure"]) for t in history] == [
            (r["status"], r["failure"]) for r in receipts
        ]
        for t in history:
            [in_block] = [x for x in rpcs[0].call("getblock", t["blockhash"], 2)["tx"]
                          if x["txid"] == t["txid"]]  # fmt: skip
            assert (in_block["status"], in_block["failure"]) == (t["status"], t["failure"])
            assert in_block["type"] == TxKind(in_block["kind"]).name.lower()
        for rpc in rpcs:  # nothing of the loser waits in a pool
            pool = rpc.call("getrawmempool", True)
            assert all(e["sender"] != _address(loser_index) for e in pool.values()), pool
    finally:
        for p in procs:
            p.stop()


def test_a_product_cut_short_names_the_parts_that_went_out(tmp_path: Path) -> None:
    """When a later part is refused (here: another wallet of the same key sends a
    transfer, at a higher fee, with the nonce the second part needs, right after the
    first part went out), the error names the live jobs, and the next submit takes
    the first unused nonce (no gap that would hold it in the pool)."""
    from chain.network import load_network
    from tests.chainutil import transfer
    from wallet.job_terms import JobError

    genesis = market_genesis(tmp_path)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n1", genesis)
    try:
        rpc = node.rpc()

        class Racing:
            """The node's RPC, with the other wallet's transfer sent after one call."""

            armed = False

            def __getattr__(self, name: str) -> Any:
                return getattr(rpc, name)

            def call(self, method: str, *params: Any) -> Any:
                out = rpc.call(method, *params)
                if method == "sendrawtransaction" and self.armed:
                    self.armed = False
                    nonce = rpc.call("getaccount", _address(0))["pending_nonce"]
                    other = transfer(net, 0, nonce, bytes(20), 1, fee=100_000)
                    rpc.call("sendrawtransaction", other.to_bytes().hex())
                return out

        racing = Racing()
        client = JobClient(devnet_key(0), net, racing, f"http://127.0.0.1:{node.blob}",  # type: ignore[arg-type]
                           blob_auth=read_cookie(node.datadir, "devnet"))  # fmt: skip
        first = int(rpc.call("getaccount", _address(0))["pending_nonce"])
        rng = np.random.default_rng(5)
        a = rng.integers(-64, 64, (128, 256), dtype=np.int8)
        b = rng.integers(-64, 64, (256, 256), dtype=np.int8)
        racing.armed = True
        with pytest.raises(JobError, match=r"took nonce \d+ meanwhile(.|\n)*only 1 of the "
                           "product's 2 parts went out") as err:  # fmt: skip
            client.submit(a, b, bounty=4_000_000, min_parts=2)
        live = str(err.value).split("jobs are live: ")[1].split(".")[0]
        assert rpc.call("getjob", live)["status"] == "pending"
        assert rpc.call("getaccount", _address(0))["pending_nonce"] == first + 2
        pid = client.submit(a[:, :128], b[:128], bounty=1_000_000)
        assert rpc.call("getjob", pid)["status"] == "pending"
        assert rpc.call("getaccount", _address(0))["pending_nonce"] == first + 3
    finally:
        node.stop()
