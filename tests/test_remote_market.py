"""The standalone `pouw miner` takes paid jobs (real processes): it claims with its own
keystore, computes each product once on a worker with the lottery riding on it,
uploads C to its node, commits, and is paid; the buyer gets the exact product."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

from chain.address import address_from_pubkey, encode_address
from chain.keys import devnet_key
from chain.network import Network, load_network
from tests.marketutil import exact_product
from tests.test_market_e2e import ROOT, Proc, market_genesis, wait_for
from wallet.jobs import JobClient
from wallet.rpc import read_cookie
from wallet.wallet import Wallet


def _start_miner(tmp_path: Path, node: Proc, genesis: Path, key_no: int,
                 log: IO[bytes], *extra: str,
                 name_address: bool = True) -> tuple[str, subprocess.Popen[bytes]]:  # fmt: skip
    """`pouw miner` (one NumPy worker unless ``extra`` says otherwise) with the market,
    its keystore holding devnet key ``key_no``; returns its address and process.
    Without ``name_address`` it is not given --address: the keystore's is used."""
    net = load_network("devnet", genesis)
    address = encode_address(net.hrp, address_from_pubkey(devnet_key(key_no).public_key))
    keystore = tmp_path / "miner.json"
    if not keystore.exists():  # a restarted miner keeps its keystore
        Wallet.create(keystore, "pw", net, seed=devnet_key(key_no).seed, scrypt_n=2**10)
    (tmp_path / "pw").write_text("pw\n")
    return address, subprocess.Popen(
        [sys.executable, "-m", "node.miner_cli", "miner", "--rpc",
         f"http://127.0.0.1:{node.rpc_port}",
         *(("--address", address) if name_address else ()),
         "--datadir", str(node.datadir), "--genesis-file", str(genesis),
         "--backend", "numpy", "--threads", "1", "--market-wallet", str(keystore),
         "--password-file", str(tmp_path / "pw"),
         "--blob-url", f"http://127.0.0.1:{node.blob}", *extra],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # a process group of its own, as a terminal gives it (Ctrl-C reaches the group),
        # with SIGINT as a terminal has it (a background test run inherits it ignored)
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _buyer(node: Proc, net: Network) -> JobClient:
    return JobClient(devnet_key(0), net, node.rpc(), f"http://127.0.0.1:{node.blob}",
                     blob_auth=read_cookie(node.datadir, "devnet"))  # fmt: skip


def _buy_two_parts(client: JobClient, rng: np.random.Generator) -> str:
    """A 256x512x256 product in two jobs, waited for and checked exact; its id."""
    a = rng.integers(-64, 64, (256, 512), dtype=np.int8)
    b = rng.integers(-64, 64, (512, 256), dtype=np.int8)
    pid = client.submit(a, b, bounty=4_000_000, min_parts=2)
    client.wait(pid, timeout=120)
    res = client.result(pid)
    assert res.verified, res.actions
    assert np.array_equal(res.c, exact_product(a, b))
    return pid


def _stop(miner: subprocess.Popen[bytes] | None) -> None:
    if miner is not None:
        miner.terminate()
        try:
            miner.wait(20)
        except subprocess.TimeoutExpired:
            miner.kill()


def _edit_genesis(genesis: Path, edit: Any) -> None:
    data = json.loads(genesis.read_text())
    edit(data)
    genesis.write_text(json.dumps(data))


def test_pouw_miner_takes_paid_jobs(tmp_path: Path) -> None:
    genesis = market_genesis(tmp_path, challenge_s=2)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis, "--mine", "--nomarket")  # blocks, no jobs of its own
    miner_log = open(tmp_path / "miner.log", "ab")  # noqa: SIM115
    miner = None
    try:
        rpc = node.rpc()
        wait_for("blocks", lambda: rpc.call("getblockcount") >= 2, procs=[node])
        # no --address: the market wallet's is the miner's
        address, miner = _start_miner(tmp_path, node, genesis, 2, miner_log, name_address=False)
        client = _buyer(node, net)
        pid = _buy_two_parts(client, np.random.default_rng(21))
        parts = client.status(pid)["parts"]  # C may come before the claims confirm
        for job in parts:
            wait_for("payout", lambda j=job["job_id"]: rpc.call("getjob", j)["status"] == "paid",
                     timeout=60, procs=[node])  # fmt: skip
        assert {rpc.call("getjob", p["job_id"])["claimant"] for p in parts} == {address}
        assert rpc.call("getcontribution", address)["delivered"] == 256 * 512 * 256
        log = (tmp_path / "miner.log").read_text()
        assert log.count("sent the commit of job") == 2, log[-3000:]
    finally:
        _stop(miner)
        miner_log.close()
        node.stop()


def test_pouw_miner_delivers_before_anything_confirms(tmp_path: Path) -> None:
    """Blocks of 2^60 multiply-adds: nothing confirms during the test. The standalone
    miner claims the job while its submit is still pooled, computes it at once (its
    claim alone in the pool), uploads C and commits; the buyer fetches and checks C
    with the submit, the claim and the commit all still in the node's pool."""
    genesis = market_genesis(tmp_path)
    _edit_genesis(genesis, lambda d: d["difficulty"].update(genesis_target=hex(2**256 // 2**60)))
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)  # no miner of its own
    miner_log = open(tmp_path / "miner.log", "ab")  # noqa: SIM115
    miner = None
    try:
        rpc = node.rpc()
        address, miner = _start_miner(tmp_path, node, genesis, 3, miner_log)
        client = _buyer(node, net)
        rng = np.random.default_rng(22)
        a = rng.integers(-64, 64, (128, 512), dtype=np.int8)
        b = rng.integers(-64, 64, (512, 128), dtype=np.int8)
        pid = client.submit(a, b, bounty=1_000_000)
        client.wait(pid, timeout=60)
        res = client.result(pid)
        assert res.verified, res.actions
        assert np.array_equal(res.c, exact_product(a, b))
        assert rpc.call("getblockcount") == 0
        job = rpc.call("getjob", pid)
        assert job["status"] == "pending" and job["pending_claimants"] == [address]
        assert job["pending_commit"]["claimant"] == address
        # (the miner logs the commit once the node took it: the buyer may see it first)
        wait_for("the commit's log line", lambda: "sent the commit of job" in (
            tmp_path / "miner.log").read_text(), timeout=20)
        log = (tmp_path / "miner.log").read_text()
        assert "its submit still pooled" in log and "its claim still pooled" in log, log[-3000:]
        assert log.count("sent the commit of job") == 1, log[-3000:]
        os.killpg(miner.pid, signal.SIGINT)  # Ctrl-C, to the miner and its workers
        assert miner.wait(20) == 0
        log = (tmp_path / "miner.log").read_text()
        assert "pouw miner stopped (Ctrl-C)" in log and "Traceback" not in log, log[-3000:]
        assert "miner stopped: " in log, log[-3000:]  # its totals, as at any stop
        # Restarted, the miner does not claim again the job its pooled claim goes for
        # (one of the two claims would fail in a block, its fee lost).
        miner_log.close()
        miner_log = open(tmp_path / "miner2.log", "ab")  # noqa: SIM115
        _, miner = _start_miner(tmp_path, node, genesis, 3, miner_log)
        wait_for("the restarted miner's worker", lambda: "worker 0 ready" in (
            tmp_path / "miner2.log").read_text() or miner.poll() is not None, timeout=60)
        time.sleep(2)  # several claim rounds
        log = (tmp_path / "miner2.log").read_text()
        assert "claimed job" not in log, log[-3000:]
        assert rpc.call("getjob", pid)["pending_claims"] == 1
    finally:
        _stop(miner)
        miner_log.close()
        node.stop()


def test_pouw_miners_take_turns_with_a_products_parts(tmp_path: Path) -> None:
    """Two standalone miners on one node. Once each has seen the other claim, the two
    parts of a product are dealt one to each (node/claim_order), instead of both going
    to whichever polled first; every product still comes back exact."""
    genesis = market_genesis(tmp_path, challenge_s=2)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)  # the two miners find its blocks
    logs: list[IO[bytes]] = []
    miners: list[subprocess.Popen[bytes]] = []
    addresses = []
    try:
        rpc = node.rpc()
        for key_no in (2, 3):
            home = tmp_path / f"m{key_no}"
            home.mkdir()
            logs.append(open(home / "miner.log", "ab"))  # noqa: SIM115
            address, proc = _start_miner(home, node, genesis, key_no, logs[-1])
            addresses.append(address)
            miners.append(proc)
        wait_for("blocks", lambda: rpc.call("getblockcount") >= 2, procs=[node])
        client = _buyer(node, net)
        rng = np.random.default_rng(23)

        def claimants_of_a_product() -> set[str]:
            pid = _buy_two_parts(client, rng)
            ids = [p["job_id"] for p in client.status(pid)["parts"]]
            return {
                wait_for("the claim on chain", lambda j=j: rpc.call("getjob", j).get("claimant"),
                         procs=[node])  # fmt: skip
                for j in ids
            }

        def both_know_each_other() -> bool:
            return all(
                "claims jobs too" in (tmp_path / f"m{i}" / "miner.log").read_text() for i in (2, 3)
            )

        for _ in range(8):  # until each has seen the other claim (a lone miner takes
            if both_know_each_other():  # one fresh part, and the other miner the next)
                break
            claimants_of_a_product()
        assert both_know_each_other(), (tmp_path / "m2" / "miner.log").read_text()[-3000:]
        for _ in range(2):
            claimants = claimants_of_a_product()
            assert claimants == set(addresses), "\n".join(
                (tmp_path / f"m{i}" / "miner.log").read_text()[-3000:] for i in (2, 3)
            )
    finally:
        for miner in miners:
            _stop(miner)
        for log in logs:
            log.close()
        node.stop()


def test_a_worker_that_dies_hands_its_paid_job_to_another(tmp_path: Path) -> None:
    """Two NumPy workers; the one computing the buyer's job is killed (SIGKILL, as the
    kernel's OOM killer or a crashed driver would end it). The miner notices, hands the
    job, whose operands it still holds, to the other worker, and the buyer gets the
    exact product; the miner goes on mining with the worker it has left."""
    genesis = market_genesis(tmp_path)
    _edit_genesis(genesis, lambda d: d["difficulty"].update(genesis_target=hex(2**256 // 2**60)))
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)  # no miner of its own: nothing confirms
    log_path = tmp_path / "miner.log"
    miner_log = open(log_path, "ab")  # noqa: SIM115
    miner = None
    try:
        node.rpc()
        _, miner = _start_miner(tmp_path, node, genesis, 3, miner_log,
                                "--workers", "2", "--threads", "1")  # fmt: skip
        ready = re.compile(r"worker (\d) ready: numpy engine, [\w.-]+ \(pid (\d+)\)")
        pids = wait_for("two workers", lambda: len(found := dict(ready.findall(
            log_path.read_text()))) == 2 and found, procs=[node])  # fmt: skip
        rng = np.random.default_rng(23)
        m, k, n = 1024, 4096, 4096  # one job of the network's largest size: ~0.2 s a core
        a = rng.integers(-64, 64, (m, k), dtype=np.int8)
        b = rng.integers(-64, 64, (k, n), dtype=np.int8)
        client = _buyer(node, net)
        pid = client.submit(a, b, bounty=m * k * n // 100, max_part_multiply_adds=m * k * n)
        dispatched = re.compile(r"worker (\d): job " + pid[:16])
        deadline = time.monotonic() + 60
        while not (on := dispatched.findall(log_path.read_text())):  # kill it mid-product:
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.01)  # polled faster than wait_for does
        first = on[0]
        os.kill(int(pids[first]), signal.SIGKILL)
        client.wait(pid, timeout=120)
        res = client.result(pid)
        assert res.verified, res.actions
        assert np.array_equal(res.c, exact_product(a, b))
        log = log_path.read_text()
        assert f"worker {first} killed by signal 9; 1 worker(s) left" in log, log[-3000:]
        assert f"job {pid[:16]} goes to another worker" in log, log[-3000:]
        assert dispatched.findall(log) == [first, str(1 - int(first))], log[-3000:]
        assert log.count("sent the commit of job") == 1, log[-3000:]
        time.sleep(0.5)
        assert miner.poll() is None  # still mining, on the worker it has left
    finally:
        _stop(miner)
        miner_log.close()
        node.stop()


def _rival_claim(
    net: Network, key_no: int, rpc: Any, job_id: str, bond: int,
    lower_than: bytes | None = None, higher_than: bytes | None = None,
) -> Any:  # fmt: skip
    """A claim of ``job_id`` by devnet key ``key_no`` whose txid is below ``lower_than``
    or above ``higher_than`` (the fee is raised until it is)."""
    from wallet.job_txs import claim_tx

    key = devnet_key(key_no)
    address = encode_address(net.hrp, address_from_pubkey(key.public_key))
    nonce = int(rpc.call("getaccount", address)["pending_nonce"])
    for fee in range(1000, 1_000_000):
        tx = claim_tx(net, key, nonce, bytes.fromhex(job_id), bond, fee=fee)
        if (lower_than is None or tx.txid < lower_than) and (
            higher_than is None or tx.txid > higher_than
        ):
            return tx
    raise AssertionError("no fee gave a txid on the wanted side")


def test_the_standalone_miner_computes_a_pooled_claim_only_as_the_lowest_standing_one(
    tmp_path: Path,
) -> None:
    """The standalone miner's market in this process, over a real node's RPC (blocks of
    2^60 multiply-adds: nothing confirms), judges pooled claims as consensus does
    (chain/jobs.lowest_claims): a rival claim too small to stand takes no job from it;
    a standing rival with a lower txid that arrives after its claim keeps it from
    computing the job and is sampled as a crossing (the rival wait grows to cover
    it); one with a higher txid does not stop it."""
    from node.claim_order import RIVAL_WAIT_S
    from node.remote_market import RemoteMarket

    genesis = market_genesis(tmp_path)
    _edit_genesis(genesis, lambda d: d["difficulty"].update(genesis_target=hex(2**256 // 2**60)))
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)  # no miner of its own
    try:
        rpc = node.rpc()
        client = _buyer(node, net)
        market = RemoteMarket(rpc, net, devnet_key(3), f"http://127.0.0.1:{node.blob}",
                              read_cookie(node.datadir, "devnet"), workers=3)  # fmt: skip
        rng = np.random.default_rng(23)
        bounty = 1_000_000
        bond = net.market.bond_for(bounty)

        def new_job() -> str:
            a = rng.integers(-64, 64, (64, 256), dtype=np.int8)
            b = rng.integers(-64, 64, (256, 64), dtype=np.int8)
            return client.submit(a, b, bounty=bounty)  # one part: its id is the job's

        def claimed(job_id: str) -> bool:
            deadline = time.monotonic() + 10
            while job_id not in market.held and time.monotonic() < deadline:
                market.poll()
                time.sleep(0.05)
            return job_id in market.held

        def handed_out(within: float) -> str | None:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                market.poll()
                work = market.next_job()
                if work is not None:
                    assert work[2] is False  # nothing on chain: a template names no job
                    return work[0]
                time.sleep(0.05)
            return None

        # A rival claim escrowing less than the bond fails on its own: not a rival.
        small = new_job()
        rpc.call("sendrawtransaction",
                 _rival_claim(net, 1, rpc, small, bond - 1).to_bytes().hex())  # fmt: skip
        assert claimed(small)
        assert handed_out(5.0) == small
        assert market._crossings.rival_wait(time.monotonic()) == RIVAL_WAIT_S  # noqa: SLF001

        # A standing rival with a lower txid, 0.3 s after ours: it takes the job.
        beaten = new_job()
        assert claimed(beaten)
        ours = market.held[beaten].claim_txid
        time.sleep(0.3)
        rival = _rival_claim(net, 2, rpc, beaten, bond, lower_than=ours)
        rpc.call("sendrawtransaction", rival.to_bytes().hex())
        assert handed_out(1.5) is None
        assert market._crossings.rival_wait(time.monotonic()) >= 0.3  # noqa: SLF001
        job = rpc.call("getjob", beaten)
        pooled = [c["txid"] for c in job["pending_claim_txs"]]
        assert pooled == sorted([ours.hex(), rival.txid.hex()])

        # A standing rival with a higher txid: ours is still the one a block takes.
        ahead = new_job()
        assert claimed(ahead)
        ours = market.held[ahead].claim_txid
        rival = _rival_claim(net, 4, rpc, ahead, bond, higher_than=ours)
        rpc.call("sendrawtransaction", rival.to_bytes().hex())
        assert handed_out(5.0) == ahead
    finally:
        node.stop()


@pytest.mark.slow  # two node starts and an outage of a few seconds: ~20 s
def test_pouw_miner_rides_out_a_node_restart(tmp_path: Path) -> None:
    """The node under a market `pouw miner` stops and comes back (a new cookie): the
    market rounds back off and say so once, blocks found meanwhile count as
    undelivered (not rejected), and once the node answers the miner reads the new
    cookie, says the node answers again, and its blocks are accepted again."""
    genesis = market_genesis(tmp_path, challenge_s=2)
    node = Proc(tmp_path / "n0", genesis, "--nomarket")  # no miner of its own
    miner_log = open(tmp_path / "miner.log", "ab")  # noqa: SIM115
    log_path = tmp_path / "miner.log"
    miner = None
    try:
        rpc = node.rpc()
        _, miner = _start_miner(tmp_path, node, genesis, 2, miner_log, "--status-every", "1")
        wait_for("blocks", lambda: rpc.call("getblockcount") >= 3, procs=[node])
        outage = len(log_path.read_bytes())
        node.stop()  # (its cookie goes with it)
        wait_for("an undelivered block", lambda: re.search(
            r"rejected 0 undelivered [1-9]", log_path.read_text()[outage:]), timeout=30)
        time.sleep(3)  # rounds meanwhile: MARKET_DOWN_MAX_S apart at most, said once
        node.restart()
        rpc = node.rpc()
        height = rpc.call("getblockcount")
        wait_for("blocks again", lambda: rpc.call("getblockcount") >= height + 3, procs=[node])
        wait_for("the market back", lambda: "market: the node answers again" in
                 log_path.read_text()[outage:], timeout=20)  # fmt: skip
        text = log_path.read_text()[outage:]
        assert text.count("trying again, less often while it lasts") == 1, text[-3000:]
        assert text.count("not delivered") == 1, text[-3000:]  # said once an outage
        assert text.count("market:") <= 3, text[-3000:]  # no warning per round
        assert "Traceback" not in text and miner.poll() is None, text[-3000:]
    finally:
        _stop(miner)
        miner_log.close()
        node.stop()
