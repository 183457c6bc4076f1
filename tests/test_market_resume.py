"""A miner that restarts keeps its bonds (real processes): at start both the in-node
miner and the standalone `pouw miner` take back the jobs the chain says their key holds.
A job claimed before the start is computed and committed before its deadline; a
committed job's probe is answered after a restart from the C the node stores (the
standalone miner keeps no C of its own). Without that, each would cost its bond.

The restarts of whole miner processes, and a second claim window of the lapse test,
are marked slow (``pytest -m slow tests/test_market_resume.py``, about 50 s); the
default run restarts the standalone miner's market in this process, over a real node."""

from __future__ import annotations

import re
import signal
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from chain.keys import devnet_key
from chain.network import Network, load_network
from tests.marketutil import exact_product
from tests.p2putil import free_port
from tests.test_market_e2e import Proc, _address, market_genesis, wait_for
from tests.test_remote_market import _buyer, _edit_genesis, _start_miner, _stop
from wallet.job_txs import claim_tx, probe_tx
from wallet.jobs import JobClient
from wallet.rpc import RpcClient, read_cookie

if TYPE_CHECKING:
    from node.remote_market import RemoteMarket

# Windows long enough for a restart between the claim and its deadline, and between
# the commit and the probe, on a loaded machine (a start with a warm Numba cache takes
# a few seconds); the test waits for none of them to close.
WINDOWS = {"claim_slack_s": 60, "challenge_s": 60, "reveal_s": 30}


def _genesis(tmp_path: Path, **windows: int) -> Path:
    """Blocks of 2^22 multiply-adds, a few a second: the claim, the commit and the
    probe confirm quickly, and the windows (WINDOWS, or ``windows`` where given) run in
    seconds whatever the blocks."""
    genesis = market_genesis(tmp_path, **{**WINDOWS, **windows})
    _edit_genesis(genesis, lambda d: d["difficulty"].update(genesis_target=hex(2**256 // 2**22)))
    return genesis


def _submit_and_claim(client: JobClient, rpc: RpcClient, net: Network, key_no: int,
                      seed: int) -> str:  # fmt: skip
    """A job claimed by devnet key ``key_no`` from outside its miner (a process of the
    same key before a restart); returns its id once the claim is on chain."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-64, 64, (64, 256), dtype=np.int8)
    b = rng.integers(-64, 64, (256, 64), dtype=np.int8)
    job_id = client.submit(a, b, bounty=2_000_000)
    wait_for("the submit on chain", lambda: rpc.call("getjob", job_id)["status"] == "open")
    key = devnet_key(key_no)
    nonce = rpc.call("getaccount", _address(key_no))["pending_nonce"]
    bond = net.market.bond_for(2_000_000)
    tx = claim_tx(net, key, nonce, bytes.fromhex(job_id), bond)
    rpc.call("sendrawtransaction", tx.to_bytes().hex())
    wait_for("the claim on chain", lambda: rpc.call("getjob", job_id)["status"] == "claimed")
    assert rpc.call("getjob", job_id)["claimant"] == _address(key_no)
    return job_id


def _remote_market(node: Proc, rpc: RpcClient, net: Network) -> RemoteMarket:
    """The standalone miner's market of devnet key 3, in this process, over ``node``."""
    from node.remote_market import RemoteMarket

    return RemoteMarket(rpc, net, devnet_key(3), f"http://127.0.0.1:{node.blob}",
                        read_cookie(node.datadir, "devnet"))  # fmt: skip


def _gone(pid: int) -> bool:
    """The process exited (a zombie waiting for whoever adopted it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _probe(rpc: RpcClient, net: Network, job_id: str, row: int = 5) -> None:
    nonce = rpc.call("getaccount", _address(0))["pending_nonce"]
    tx = probe_tx(net, devnet_key(0), nonce, bytes.fromhex(job_id), row, 0,
                  net.market.probe_deposit)  # fmt: skip
    rpc.call("sendrawtransaction", tx.to_bytes().hex())
    # confirmed and applied (the reveal may follow within a block, closing the probe)
    wait_for("the probe on chain", lambda: rpc.call("gettransaction", tx.txid.hex())
             .get("status") == "ok")  # fmt: skip


def _delete_c(node: Proc, rpc: RpcClient, job_id: str) -> None:
    """C's files gone from the node's blob store (a crash before they were written, a
    deleted blob directory)."""
    root = rpc.call("getjob", job_id)["result_root"]
    files = list((node.datadir / "devnet" / "blobs").glob(f"{root}.*"))
    assert files
    for path in files:
        path.unlink()


def _answered(rpc: RpcClient, job_id: str, key_no: int, procs: list[Proc]) -> None:
    """The probe answered on chain: the job stays committed to its one claim (the
    payout follows when the window closes), no challenge lost. Unanswered, the job
    would be refunded at the probe's deadline and the bond lost."""
    wait_for("the reveal", lambda: "probe" not in rpc.call("getjob", job_id),
             timeout=WINDOWS["reveal_s"] + 20, procs=procs)  # fmt: skip
    job = rpc.call("getjob", job_id)
    assert job["status"] in ("committed", "paid") and job["claims"] == 1, job
    assert rpc.call("getcontribution", _address(key_no))["challenges_lost"] == 0


@pytest.mark.slow  # three node starts: ~15 s (the default run covers the standalone side)
def test_the_node_miner_takes_back_its_jobs_after_a_restart(tmp_path: Path) -> None:
    genesis = _genesis(tmp_path)
    net = load_network("devnet", genesis)
    n0 = Proc(tmp_path / "n0", genesis)  # the buyer's: n1 mines the blocks (one mining process)
    miner_args = ("--market-key", "1", "--connect", f"127.0.0.1:{n0.p2p}")
    # first it claims and stops there: a node that dies between its claim and the product
    n1 = Proc(tmp_path / "n1", genesis, *miner_args, "--cheat", "vanish")
    procs = [n0, n1]
    try:
        rpc0 = n0.rpc()
        n1.rpc()
        wait_for("blocks", lambda: rpc0.call("getblockcount") >= 3, procs=procs)
        client = _buyer(n0, net)
        rng = np.random.default_rng(31)
        job_id = client.submit(rng.integers(-64, 64, (64, 256), dtype=np.int8),
                               rng.integers(-64, 64, (256, 64), dtype=np.int8), bounty=2_000_000)
        wait_for("the claim", lambda: rpc0.call("getjob", job_id)["status"] == "claimed",
                 procs=procs)  # fmt: skip
        assert rpc0.call("getjob", job_id)["claimant"] == _address(1)
        n1.stop()
        # restarted: it computes and commits the job its claim holds
        n1 = procs[1] = Proc(tmp_path / "n1", genesis, *miner_args)
        wait_for("the commit", lambda: rpc0.call("getjob", job_id)["status"] == "committed",
                 timeout=60, procs=procs)  # fmt: skip
        res = client.result(job_id)
        assert res.verified, res.actions
        n1.stop()  # stopped with the commit's challenge window open
        n1 = procs[1] = Proc(tmp_path / "n1", genesis, *miner_args)
        n1.rpc()
        _probe(rpc0, net, job_id)
        _answered(rpc0, job_id, 1, procs)
        # stopped again, and C gone from its blob store: computed again at the start
        # (its commit stands), served, and the next probe answered
        n1.stop()
        _delete_c(n1, rpc0, job_id)
        n1 = procs[1] = Proc(tmp_path / "n1", genesis, *miner_args)
        n1.rpc()
        _probe(rpc0, net, job_id, row=9)
        _answered(rpc0, job_id, 1, procs)
        logs = n1.log_path.read_text()
        assert "1 claimed (computed next), 0 committed" in logs, logs[-3000:]
        assert logs.count("0 claimed (computed next), 1 committed") == 2, logs[-3000:]
        assert logs.count("claimed job") == 1 and logs.count("revealed chunk") == 2, logs[-3000:]
        assert "computing C again" in logs and "C computed again and stored" in logs
        assert logs.count("sent the commit of job") == 1, logs[-3000:]
    finally:
        for p in procs:
            p.stop()


@pytest.mark.slow  # the same as the in-process test below, through `pouw miner` processes
def test_the_standalone_miner_takes_back_its_jobs_after_a_restart(tmp_path: Path) -> None:
    genesis = _genesis(tmp_path)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis, "--mine", "--nomarket")  # blocks, no jobs of its own
    miner_log = open(tmp_path / "miner.log", "ab")  # noqa: SIM115
    miner = None
    try:
        rpc = node.rpc()
        wait_for("blocks", lambda: rpc.call("getblockcount") >= 3, procs=[node])
        client = _buyer(node, net)
        job_id = _submit_and_claim(client, rpc, net, 2, seed=32)
        _, miner = _start_miner(tmp_path, node, genesis, 2, miner_log)
        wait_for("the commit", lambda: rpc.call("getjob", job_id)["status"] == "committed",
                 timeout=60, procs=[node])  # fmt: skip
        assert client.result(job_id).verified
        workers = [int(pid) for pid in re.findall(r"worker \d+ ready: .*\(pid (\d+)\)",
                                                 (tmp_path / "miner.log").read_text())]  # fmt: skip
        assert workers
        miner.send_signal(signal.SIGKILL)  # a crash: the miner's process gone at once
        miner.wait(10)
        # and its workers with it, instead of mining filler for nobody
        wait_for("its workers gone", lambda: all(_gone(pid) for pid in workers), timeout=10)
        before = len((tmp_path / "miner.log").read_bytes())
        _, miner = _start_miner(tmp_path, node, genesis, 2, miner_log)
        wait_for("the miner resumed", lambda: "0 claimed (computed next), 1 committed" in (
            tmp_path / "miner.log").read_bytes()[before:].decode(), timeout=60,
            procs=[node])  # fmt: skip
        _probe(rpc, net, job_id)
        _answered(rpc, job_id, 2, [node])
        logs = (tmp_path / "miner.log").read_text()
        assert "1 claimed (computed next), 0 committed" in logs, logs[-3000:]
        assert logs.count("sent the commit of job") == 1 and "revealed chunk" in logs, logs[-3000:]
    finally:
        _stop(miner)
        miner_log.close()
        node.stop()


def test_the_standalone_miner_delivers_c_once_its_node_answers_again(tmp_path: Path) -> None:
    """A product that ends while the node cannot take C (down, restarting: here its
    blob endpoint does not answer) is kept and delivered in a later market round,
    and committed once (blocks of 2^60 multiply-adds: nothing confirms)."""
    from node.remote_market import RemoteMarket

    genesis = market_genesis(tmp_path)
    _edit_genesis(genesis, lambda d: d["difficulty"].update(genesis_target=hex(2**256 // 2**60)))
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)  # no miner of its own
    try:
        rpc = node.rpc()
        client = _buyer(node, net)
        blob_url = f"http://127.0.0.1:{node.blob}"
        market = RemoteMarket(rpc, net, devnet_key(3), f"http://127.0.0.1:{free_port()}",
                              read_cookie(node.datadir, "devnet"))  # fmt: skip
        rng = np.random.default_rng(33)
        a = rng.integers(-64, 64, (64, 256), dtype=np.int8)
        b = rng.integers(-64, 64, (256, 64), dtype=np.int8)
        job_id = client.submit(a, b, bounty=1_000_000)
        market.blob_url = blob_url  # the operands come from the node
        work = wait_for("the job handed out", lambda: (market.poll(), market.next_job())[1])
        assert work[0] == job_id
        market.blob_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        market.deliver(job_id, exact_product(a, b))
        held = market.held[job_id]
        assert not held.commit_sent and held.unsent is not None
        assert "pending_commit" not in rpc.call("getjob", job_id)
        # C reaches the node, then its RPC stops answering: the commit waits (before,
        # the connection error escaped and stopped the miner)
        market.blob_url = blob_url
        market.rpc = RpcClient(f"http://127.0.0.1:{free_port()}", *read_cookie(node.datadir,
                               "devnet"))  # fmt: skip
        assert not market._send_result(job_id, held)  # noqa: SLF001
        # C reached the node, but a node that stops answering may have died with it
        # unwritten: it goes again with the next try
        assert not held.commit_sent and not held.c_on_node and held.result_root is not None
        market.rpc = rpc  # the node answers again
        market.poll()
        assert held.commit_sent and market.commits == 1
        assert rpc.call("getjob", job_id)["pending_commit"]["claimant"] == _address(3)
        res = client.result(job_id)
        assert res.verified and np.array_equal(res.c, exact_product(a, b))
        held.commit_sent = False  # as if the node's answer to the commit had been lost
        market.poll()
        assert held.commit_sent and market.commits == 1  # the pooled commit was seen
    finally:
        node.stop()


def test_the_standalone_market_takes_back_a_claim_and_its_commit(tmp_path: Path) -> None:
    """The standalone miner's market in this process over a real node that mines: a
    market started after its key's claim confirmed hands the job out as claimed on
    chain (named); one started after the commit was sent does not compute it again and
    answers a probe from one row of the node's copy of C."""

    genesis = _genesis(tmp_path)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis, "--mine", "--nomarket")
    try:
        rpc = node.rpc()
        wait_for("blocks", lambda: rpc.call("getblockcount") >= 3, procs=[node])
        client = _buyer(node, net)
        job_id = _submit_and_claim(client, rpc, net, 3, seed=34)

        def market() -> RemoteMarket:
            return _remote_market(node, rpc, net)

        first = market()
        work = wait_for("the claimed job handed out", lambda: (first.poll(), first.next_job())[1])
        assert work[0] == job_id and work[2] is True  # claimed on chain: a template names it
        held = first.held[job_id]
        assert held.a is not None and held.bt is not None
        first.deliver(job_id, held.a.astype(np.int64) @ held.bt.T.astype(np.int64))
        assert first.commits == 1
        second = market()  # a restart: nothing in memory
        second.poll()
        again = second.held[job_id]
        assert again.computed and again.commit_sent and second.next_job() is None
        wait_for("the commit on chain", lambda: rpc.call("getjob", job_id)["status"] == "committed")
        assert client.result(job_id).verified
        _probe(rpc, net, job_id)
        wait_for("the reveal", lambda: (second.poll(), "probe" not in rpc.call(
            "getjob", job_id))[1], timeout=WINDOWS["reveal_s"])  # fmt: skip
        job = rpc.call("getjob", job_id)
        assert job["status"] == "committed" and second.commits == 0, job
        # the node loses C: a probe finds it gone, and the job is handed out again, not
        # named (its commit stands), computed, uploaded, and the probe answered
        _delete_c(node, rpc, job_id)
        _probe(rpc, net, job_id, row=9)
        work = wait_for("the job handed out again", lambda: (second.poll(), second.next_job())[1],
                        timeout=WINDOWS["reveal_s"])  # fmt: skip
        assert work[0] == job_id and work[2] is False and again.restore
        assert again.a is not None and again.bt is not None
        c = again.a.astype(np.int64) @ again.bt.T.astype(np.int64)
        second.deliver(job_id, c)
        assert not again.restore and again.computed and second.commits == 0
        wait_for("the reveal", lambda: (second.poll(), "probe" not in rpc.call(
            "getjob", job_id))[1], timeout=WINDOWS["reveal_s"])  # fmt: skip
        job = rpc.call("getjob", job_id)
        assert job["status"] == "committed" and job["claims"] == 1, job
        assert rpc.call("getcontribution", _address(3))["challenges_lost"] == 0
        # a C computed again that is not the committed one: not served, not tried again
        wrong = replace(again, restore=True, unsent=(c + 1).astype(np.int32))
        second._upload_restored(job_id, wrong)  # noqa: SLF001
        assert wrong.unservable and not wrong.restore
        second._restore(job_id, wrong, "a test")  # noqa: SLF001
        assert not wrong.restore
        # a commit the node lost (a restart): sent again while the node holds C, else C
        # is computed again (the node answers for the root over its blob endpoint)
        kept = replace(again, commit_sent=True)
        second._lost_commit(job_id, kept)  # noqa: SLF001
        assert kept.computed and not kept.commit_sent and kept.result_root is not None
        gone = replace(again, commit_sent=True, result_root=bytes(32))
        second._lost_commit(job_id, gone)  # noqa: SLF001
        assert not gone.computed and not gone.dispatched and gone.result_root is None
    finally:
        node.stop()


@pytest.mark.parametrize("unseen", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_the_standalone_market_sends_no_commit_once_its_claim_lapsed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, unseen: bool
) -> None:  # fmt: skip
    """A product that ends after our claim lapsed (the job reopened on chain) is not
    committed: that commit would fail and cost its fee on top of the bond. The lost
    bond is said once and counted (the status line shows it), not called a claim lost.
    That C is kept on the node, and the market claims the reopened job again with it
    and commits it (not computed again). ``unseen`` (slow: a second claim window): with
    no C kept, the market claims the job again to compute it, and that claim confirms
    and lapses while the market looks at nothing (suspended, cut off): that bond is
    said lost too when it looks again."""
    import logging

    genesis = _genesis(tmp_path, claim_slack_s=10)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis, "--mine", "--nomarket")
    try:
        rpc = node.rpc()
        wait_for("blocks", lambda: rpc.call("getblockcount") >= 3, procs=[node])
        client = _buyer(node, net)
        job_id = _submit_and_claim(client, rpc, net, 3, seed=35)
        market = _remote_market(node, rpc, net)
        work = wait_for("the claimed job handed out", lambda: (market.poll(), market.next_job())[1])
        assert work[0] == job_id and work[2] is True
        held = market.held[job_id]
        assert held.a is not None and held.bt is not None
        c = held.a.astype(np.int64) @ held.bt.T.astype(np.int64)
        wait_for("the claim lapsed", lambda: rpc.call("getjob", job_id)["status"] == "open",
                 timeout=30, procs=[node])  # fmt: skip
        with caplog.at_level(logging.INFO, logger="pouw.market"):
            market.deliver(job_id, c)
            assert market.commits == 0 and market.bonds_lost == 1 and market.held[job_id].ended
            assert "pending_commit" not in rpc.call("getjob", job_id)
            if unseen:
                market._late_c.clear()  # noqa: SLF001 - as if C was not kept
            # forgotten, and the open job claimed again (at the next tip): a new claim
            wait_for("the job claimed again", lambda: (market.poll(), job_id in market.held
                     and not market.held[job_id].ended)[1], timeout=30, procs=[node])  # fmt: skip
            assert market.bonds_lost == 1 and "1 bonds lost" in market.line()
            if not unseen:  # claimed again with the C in hand, and committed
                again = market.held[job_id]
                assert again.computed and again.commit_sent and market.commits == 1
                assert f"claimed job {job_id[:16]} again: its C is done" in caplog.text
                market.prefetch()  # no worker gets it, nothing is downloaded for it
                assert market.next_job() is None and again.a is None
                wait_for("the commit", lambda: rpc.call("getjob", job_id)["status"]
                         == "committed", timeout=30, procs=[node])  # fmt: skip
                job = rpc.call("getjob", job_id)
                assert job["claimant"] == _address(3) and job["claims"] == 2, job
                assert market.recomputed == 0 and market.products == 1
            if unseen:
                wait_for("the second claim lapsed", lambda: (job := rpc.call(
                    "getjob", job_id))["status"] == "open" and job["claims"] == 2,
                    timeout=40, procs=[node])  # fmt: skip
                market.poll()
        lost = 2 if unseen else 1
        assert market.bonds_lost == lost, caplog.text
        assert caplog.text.count("lapsed with no commit of ours") == lost, caplog.text
        assert f"{job_id[:16]}: lost" not in caplog.text  # not a claim lost to a rival
    finally:
        node.stop()
