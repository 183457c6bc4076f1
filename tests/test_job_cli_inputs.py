"""`pouw job` as a buyer types it, against a real node process: every bad input gets one
clear line that says what to do, no traceback, and nothing is sent that would cost a
fee for nothing (a challenge of a right C, a submit the chain would fail). A submit the
node lost with its pool (a restart before a block took it) is sent again by the client.

The commands run in this process (node.cli.main, the `pouw` entry point), not as
subprocesses: a Python start per command would cost a second each."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chain.keys import devnet_key
from chain.network import load_network
from node.cli import main as pouw
from tests.chainutil import transfer
from tests.test_market_e2e import Proc, _address, market_genesis, wait_for
from tests.test_remote_market import _edit_genesis
from wallet.job_terms import DEFAULT_JOB_FEE
from wallet.jobs import JobClient, JobError
from wallet.rpc import RpcClient, read_cookie


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = pouw(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """argparse refuses the value: exit 2 with its message."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        pouw(list(argv))
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_the_buyer_cli_refuses_bad_input_and_never_challenges_a_right_c(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    genesis = market_genesis(tmp_path, challenge_s=60)
    _edit_genesis(genesis, lambda d: d["difficulty"].update(genesis_target=hex(2**256 // 2**22)))
    node = Proc(tmp_path / "n0", genesis, "--market-key", "1")  # mines, takes jobs
    try:
        rpc = node.rpc()
        wait_for("blocks", lambda: rpc.call("getblockcount") >= 3, procs=[node])
        pw = tmp_path / "pw"
        pw.write_text("correct horse\n")
        where = ["--network", "devnet", "--datadir", str(node.datadir), "--genesis-file",
                 str(genesis), "--rpc", f"http://127.0.0.1:{node.rpc_port}",
                 "--blob-url", f"http://127.0.0.1:{node.blob}"]  # fmt: skip
        key = [*where, "--password-file", str(pw)]
        code, _, err = _run(capsys, "wallet", "import", "--devnet-key", "0", "--scrypt-n",
                            "1024", *where[:6], "--password-file", str(pw))  # fmt: skip
        assert code == 0, err
        rng = np.random.default_rng(3)
        files = {}
        for name, shape in (("A", (64, 256)), ("B", (256, 64)), ("A2", (64, 256))):
            files[name] = tmp_path / f"{name}.npy"
            np.save(files[name], rng.integers(-64, 64, shape, dtype=np.int8))
        a, b = np.load(files["A"]), np.load(files["B"])
        text = tmp_path / "A.txt"
        text.write_text("1 2 3\n")

        # bad submits: nothing sent
        nonce = rpc.call("getaccount", _address(0))["pending_nonce"]
        submit = ["job", "submit", str(files["A"]), str(files["B"]), *key]
        assert "is not an amount" in _usage_error(capsys, *submit, "--bounty", "-1")
        for expiry in ("0", "-5", "59", "99999999"):  # one check, one message, for all
            code, _, err = _run(capsys, *submit, "--bounty", "0.1", "--expiry", expiry)
            assert code == 1 and f"an expiry of {expiry} s is outside 60-" in err, err
            assert "--expiry within it" in err, err
        code, _, err = _run(capsys, *submit, "--bounty", "0.1", "--fee", "1")
        assert code == 1 and "above --max-fee" in err and "1000u" in err, err
        code, _, err = _run(capsys, "job", "submit", str(text), str(files["B"]), "--bounty",
                            "0.1", *key)  # fmt: skip
        assert code == 1 and "is not a .npy file" in err and "pickle" not in err, err
        code, _, err = _run(capsys, *submit, "--bounty", "0u")
        assert code == 1 and "`pouw job quote` suggests one" in err, err
        assert rpc.call("getaccount", _address(0))["pending_nonce"] == nonce
        # bad node addresses: a line naming the flag, not a traceback
        code, _, err = _run(capsys, "job", "status", "0" * 64, "--network", "devnet",
                            "--datadir", str(node.datadir), "--rpc", "http://127.0.0.1:abc")
        assert code == 2 and "--rpc 'http://127.0.0.1:abc' is not a node URL" in err, err
        code, _, err = _run(capsys, *submit, "--bounty", "0.1", "--blob-url", "ftp://x:1")
        assert code == 2 and "--blob-url 'ftp://x:1' is not a node URL" in err, err
        # a shape far over the caps is answered at once
        started = time.monotonic()
        code, _, err = _run(capsys, "job", "quote", "100000000", "100000000", "100000000",
                            *where)  # fmt: skip
        assert code == 1 and "submit it in pieces" in err and time.monotonic() - started < 5

        code, out, err = _run(capsys, *submit, "--bounty", "0.1", "--parts", "1000")
        assert code == 0, err
        pid = out.strip()
        assert "--parts 1000: this shape splits into" in err, err  # said, not silent
        assert f"--password-file {pw}" in err  # the printed `result` command works as is
        # ids: checked before they reach the node or a file name
        for bad in ("xyz", "../../../evil"):
            code, _, err = _run(capsys, "job", "status", bad, *where)
            assert code == 1 and "is not a product or job id" in err, err
        # the start of one, as logs show it, names the product of this datadir
        code, short_out, err = _run(capsys, "job", "status", pid[:16], *where)
        assert code == 0 and pid in short_out, (short_out, err)
        code, _, err = _run(capsys, "job", "status", "ab" * 32, *where)
        assert code == 1 and "the node knows no job" in err, err
        code, out, err = _run(capsys, "job", "status", pid, *where)  # 8 parts: each listed
        assert code == 0 and out.count("\n  ") == 8, out
        part = json.loads((node.datadir / "devnet" / "products" / f"{pid}.json").read_text())
        code, out, err = _run(capsys, "job", "status", part["job_ids"][0], *where)
        assert code == 0 and "bounty: 0." in out and " coins (" in out and " UTC" in out, out
        # every number says what it is: the clock a date, the rate its unit
        assert "mtp: 20" in out and " base units" in out.split("bounty_per_multiply_add")[1], out

        result = ["job", "result", pid, "-o", str(tmp_path / "C"), *key]
        started = time.monotonic()  # wrong files: said at once, not after the wait
        code, _, err = _run(capsys, *result, "--a", str(files["B"]), "--b", str(files["A"]),
                            "--wait", "120")  # fmt: skip
        assert code == 1 and "pass the A and B it was submitted with" in err, err
        assert time.monotonic() - started < 10
        # the right shapes, the wrong values: C checks out wrong against them, but the
        # client finds they are not the job's operands before any challenge
        nonce = rpc.call("getaccount", _address(0))["pending_nonce"]
        code, _, err = _run(capsys, *result, "--a", str(files["A2"]), "--b", str(files["B"]),
                            "--wait", "120")  # fmt: skip
        assert code == 1 and "nothing was challenged" in err, err
        assert rpc.call("getaccount", _address(0))["pending_nonce"] == nonce
        # no password: a C that checks out needs no signature
        code, out, err = _run(capsys, "job", "result", pid, "-o", str(tmp_path / "C"), *where,
                              "--a", str(files["A"]), "--b", str(files["B"]))  # fmt: skip
        assert code == 0 and "verified: True" in out and f"output: {tmp_path / 'C.npy'}" in out
        got = np.load(tmp_path / "C.npy")
        assert np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64))
        code, out, err = _run(capsys, "job", "result", pid, "-o", str(tmp_path / "no" / "C"),
                              *where, "--a", str(files["A"]), "--b", str(files["B"]))  # fmt: skip
        assert code == 1 and "C is verified but cannot be written to" in err, (out, err)
        # the node stopped (its cookie gone): the datadir's products are still listed
        node.stop()
        code, out, err = _run(capsys, "job", "list", *where[:8])
        assert code == 0 and pid in out and "node not reachable" in out, (out, err)
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", out), out  # as status says
    finally:
        node.stop()


def test_a_submit_the_node_lost_is_sent_again(tmp_path: Path) -> None:
    """A node with no miner: the submit waits in its pool; the node is killed and
    restarted, its pool gone; the client sends the submit again from its manifest
    (same job id), and a job id nobody knows gets an error saying what to do."""
    genesis = market_genesis(tmp_path)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)
    try:
        rpc = node.rpc()

        def client(rpc: Any) -> JobClient:
            return JobClient(devnet_key(0), net, rpc, f"http://127.0.0.1:{node.blob}",
                             blob_auth=read_cookie(node.datadir, "devnet"),
                             manifest_dir=tmp_path / "products")  # fmt: skip

        # no job in the window (no going rate): a quote still covers what miners pay to
        # take each part, a claim and a commit fee (theirs, or the node's estimate if
        # higher); a bounty below that is refused (no miner would take it)
        fee = max(rpc.call("estimatefee", 6)["fee"], DEFAULT_JOB_FEE)
        for m, k, n in ((64, 64, 64), (512, 4096, 4096)):
            q = client(rpc).quote(m, k, n)
            assert q.going_bounty_per_multiply_add == 0.0
            assert q.suggested_bounty == q.parts * 2 * fee > 0, q
        rng = np.random.default_rng(4)
        with pytest.raises(JobError, match="no miner takes it. Pass --bounty 0.00004"):
            client(rpc).submit(rng.integers(-64, 64, (64, 256), dtype=np.int8),
                               rng.integers(-64, 64, (256, 64), dtype=np.int8), 3999,
                               min_parts=2)  # fmt: skip
        rng = np.random.default_rng(4)
        pid = client(rpc).submit(rng.integers(-64, 64, (64, 256), dtype=np.int8),
                                 rng.integers(-64, 64, (256, 64), dtype=np.int8), 100_000)
        assert rpc.call("getjob", pid)["status"] == "pending"
        cookie_client = RpcClient.from_options(rpc.url, "devnet", node.datadir)
        node.proc.kill()
        node.proc.wait(10)
        node = Proc(tmp_path / "n0", genesis)  # the same datadir, an empty pool
        rpc = node.rpc()
        # a client of the node's cookie reads the new one when refused (a `pouw miner`
        # under a node that restarts); here its URL moves with the restarted node's port
        cookie_client.url = rpc.url
        assert cookie_client.call("getblockcount") == 0
        with pytest.raises(Exception, match="job not found"):
            rpc.call("getjob", pid)
        fresh = client(rpc)  # another process would read the manifest the same way
        assert fresh.status(pid)["status"] == "pending"
        assert rpc.call("getjob", pid)["status"] == "pending"
        with pytest.raises(JobError, match="the node knows no job"):
            fresh.status("cd" * 32)
        # lost again, with a second product; then the first one's nonce goes to a
        # transfer: that submit is not sent again (it would replace the transfer), the
        # second still is (its nonce is the next free one)
        second = fresh.submit(rng.integers(-64, 64, (64, 256), dtype=np.int8),
                              rng.integers(-64, 64, (256, 64), dtype=np.int8), 100_000)
        node.proc.kill()
        node.proc.wait(10)
        node = Proc(tmp_path / "n0", genesis)
        rpc = node.rpc()
        paid = transfer(net, 0, 0, bytes(20), 1)
        rpc.call("sendrawtransaction", paid.to_bytes().hex())
        after = client(rpc)
        with pytest.raises(JobError, match="its nonce has been used since"):
            after.status(pid)
        assert after.status(second)["status"] == "pending"
        statuses = {row["product_id"]: row["status"] for row in after.products()}
        assert statuses[pid] == "unknown to the node (job not found)", statuses
        assert statuses[second] == "pending", statuses
        # a wait rides out a node restart (a new cookie, read again), then times out
        # as a wait does, not as a node that is gone
        waiter = JobClient(devnet_key(0), net, RpcClient.from_options(rpc.url, "devnet",
                           node.datadir), f"http://127.0.0.1:{node.blob}",
                           manifest_dir=tmp_path / "products")  # fmt: skip
        heard: list[str] = []
        ended: list[BaseException] = []

        def wait() -> None:
            try:
                waiter.wait(second, timeout=7, progress=heard.append)
            except BaseException as exc:  # noqa: BLE001 - looked at below
                ended.append(exc)

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.5)  # it waits on a node that answers
        node.stop()
        time.sleep(1)
        node.restart()
        thread.join(30)
        assert not thread.is_alive() and len(ended) == 1, heard
        assert isinstance(ended[0], JobError) and "not delivered" in str(ended[0]), ended
        assert any("the node does not answer" in line for line in heard), heard
        assert any(line.endswith("the node answers again") for line in heard), heard
    finally:
        node.stop()



def test_a_job_expires_seconds_from_now_within_what_the_chain_allows() -> None:
    """``expires`` counts from the clock (or a median time past ahead of it), capped at
    the MTP + max_open_s; a chain whose MTP is so far behind that every expiry it
    allows has passed (no block for long: no miner) is refused with the next step."""
    net = load_network("devnet")
    max_open = net.market.max_open_s

    class Chain:  # what getblockchaininfo says of the tip (unit: no node needed)
        mediantime = 0
        syncing = False

        def call(self, method: str, *params: Any) -> dict[str, Any]:
            assert method == "getblockchaininfo"
            return {"mediantime": self.mediantime, "blocks": 5,
                    "headers": 900 if self.syncing else 5}  # fmt: skip

    chain = Chain()
    client = JobClient(None, net, chain, "http://127.0.0.1:9")  # type: ignore[arg-type]
    now = int(time.time())
    chain.mediantime = now - 300  # blocks come; MTP lags the clock
    assert abs(client._expiry(600, max_open) - (now + 600)) <= 2
    assert client._expiry(max_open, max_open) == now - 300 + max_open  # the chain's cap
    chain.mediantime = now + 50  # a fast devnet's MTP runs ahead
    assert client._expiry(600, max_open) == now + 50 + 600
    chain.mediantime = now - max_open - 10  # no block for longer than a job may stay open
    with pytest.raises(JobError, match=r"behind this machine's clock .*is any miner running"):
        client._expiry(600, max_open)
    chain.syncing = True  # the node catches up: its chain time is behind for that
    with pytest.raises(JobError, match=r"the node is still syncing \(height 5 of 900\)"):
        client._expiry(600, max_open)


def test_a_wait_on_a_node_that_never_answered_fails_at_once(tmp_path: Path) -> None:
    """wait() asks again through a node's restart, not when the node never answered
    (a wrong URL or port): that is said at once, not after the whole wait."""
    from tests.p2putil import free_port
    from wallet.rpc import RpcConnectionError

    net = load_network("devnet")
    rpc = RpcClient(f"http://127.0.0.1:{free_port()}", "u", "p")
    client = JobClient(None, net, rpc, "http://127.0.0.1:9", manifest_dir=tmp_path)
    started = time.monotonic()
    with pytest.raises(RpcConnectionError, match="cannot reach the node"):
        client.wait("ab" * 32, timeout=60)
    assert time.monotonic() - started < 10


def test_a_reclaim_the_account_cannot_pay_says_the_bounty_comes_back_by_itself() -> None:
    """A buyer who spent the whole balance on bounties cannot pay a reclaim's fee: said
    before anything is signed, with when the bounties come back without one (unit:
    what the node answers of the part and the account)."""
    net = load_network("devnet")

    class Node:
        spendable = 500
        sent: list[str] = []

        def call(self, method: str, *params: Any) -> Any:
            if method == "getjob":
                return {"job_id": params[0], "status": "open", "expires": 1_900,
                        "mtp": 1_000}  # fmt: skip
            if method == "getaccount":
                return {"address": params[0], "balance": self.spendable, "immature": 0,
                        "nonce": 4, "pending_nonce": 4}  # fmt: skip
            self.sent.append(method)
            return "ab" * 32

    node = Node()
    client = JobClient(devnet_key(0), net, node, "http://127.0.0.1:9")  # type: ignore[arg-type]
    with pytest.raises(JobError, match=r"costs 0\.00001 coins in fees but .* can spend "
                       r"0\.000005.*come back by themselves.*in about 900 s"):  # fmt: skip
        client.reclaim("cd" * 32, fee=1_000)
    assert node.sent == []
    node.spendable = 1_000
    assert client.reclaim("cd" * 32, fee=1_000) == ["ab" * 32]
    assert node.sent == ["sendrawtransaction"]


def test_a_submit_that_fails_before_it_is_sent_leaves_no_nonce_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit stopped before anything went out (Ctrl-C while A is hashed) frees the
    nonces it had reserved: before, the next submit of the same client was signed past
    a gap and waited in the pool for ever, while miners computed it for nothing (their
    claims and commits failed, job-unknown). Arguments of the wrong type are a
    JobError, said before anything is reserved."""
    import wallet.jobs

    genesis = market_genesis(tmp_path)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)
    try:
        rpc = node.rpc()
        client = JobClient(devnet_key(0), net, rpc, f"http://127.0.0.1:{node.blob}",
                           blob_auth=read_cookie(node.datadir, "devnet"))  # fmt: skip
        rng = np.random.default_rng(5)
        a = rng.integers(-64, 64, (64, 256), dtype=np.int8)
        b = rng.integers(-64, 64, (256, 64), dtype=np.int8)
        for call, why in (
            (lambda: client.quote("64", 256, 64), "m must be a whole number"),  # type: ignore[arg-type]
            (lambda: client.quote(64.0, 256, 64), "m must be a whole number"),  # type: ignore[arg-type]
            (lambda: client.submit(a.tolist(), b, 100_000), "A must be a NumPy matrix"),  # type: ignore[arg-type]
            (lambda: client.submit(a, b, 1.5), "base units"),  # type: ignore[arg-type]
            (lambda: client.submit(a, b, 100_000, fee=-1), "fee must be"),
        ):
            with pytest.raises(JobError, match=why):
                call()
        real_root = wallet.jobs.blob_root

        def interrupted(*args: object) -> bytes:
            monkeypatch.setattr(wallet.jobs, "blob_root", real_root)
            raise KeyboardInterrupt

        monkeypatch.setattr(wallet.jobs, "blob_root", interrupted)
        with pytest.raises(KeyboardInterrupt):
            client.submit(a, b, 100_000)
        pid = client.submit(a, b, 100_000)
        assert rpc.call("getjob", pid)["status"] == "pending"
        pool = rpc.call("getmempoolinfo")
        assert pool["queued"] == 0 and pool["pending"] == 1, pool
    finally:
        node.stop()


def test_a_submit_behind_a_nonce_gap_is_not_offered_to_miners(tmp_path: Path) -> None:
    """A submit signed past its buyer's next nonce waits queued: it cannot reach a
    block until the gap is filled, so a claim of its job would fail. listjobs pending
    and getmarketinfo leave it out (before, miners claimed, computed and committed it,
    each action failing with job-unknown, a fee lost each time, the buyer's C free);
    getjob says it is queued. Once a transfer fills the gap, it is offered."""
    from wallet.job_txs import submit_tx

    genesis = market_genesis(tmp_path)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)
    try:
        rpc = node.rpc()
        rng = np.random.default_rng(6)
        a = rng.integers(-64, 64, (64, 256), dtype=np.int8)
        b = rng.integers(-64, 64, (256, 64), dtype=np.int8)
        buyer = devnet_key(1)
        nonce = rpc.call("getaccount", _address(1))["pending_nonce"]
        expires = rpc.call("getblockchaininfo")["mediantime"] + 600
        tx = submit_tx(net, buyer, nonce + 1, a, b, 100_000, expires)
        rpc.call("sendrawtransaction", tx.to_bytes().hex())
        job_id = tx.txid.hex()
        assert rpc.call("listjobs", "pending") == []
        job = rpc.call("getjob", job_id)
        assert job["status"] == "pending" and job["queued"] is True, job
        assert rpc.call("getmempoolinfo")["queued"] == 1
        rpc.call("sendrawtransaction", transfer(net, 1, nonce, bytes(20), 1).to_bytes().hex())
        assert [j["job_id"] for j in rpc.call("listjobs", "pending")] == [job_id]
        assert "queued" not in rpc.call("getjob", job_id)
    finally:
        node.stop()


def test_the_product_list_says_once_that_the_node_is_down(tmp_path: Path) -> None:
    """With the node down, `job list` still lists the local products, the connection
    error said in full for the first and "as above" for the rest (it was repeated on
    every row, each asking the dead node again)."""
    from wallet.products import Manifest, plan_parts

    net = load_network("devnet")
    for i in range(3):
        parts = plan_parts(64, 256, 64, net.pouw, 10**9, 1)
        Manifest(64, 256, 64, parts, [f"{i:02x}" * 32], [10**6], net.name).save(tmp_path)
    dead = RpcClient("http://127.0.0.1:9", "u", "p")
    client = JobClient(None, net, dead, "http://127.0.0.1:9", manifest_dir=tmp_path)
    rows = client.products()
    assert len(rows) == 3
    said = [row["status"] for row in rows]
    assert said[0].startswith("node not reachable (") and "as above" not in said[0], said
    assert said[1:] == ["node not reachable (as above)"] * 2, said


def test_the_least_bounty_suggested_pays_every_unequal_part_enough() -> None:
    """Parts share a bounty by their work: with unequal parts the smallest gets less
    than the average, so the least total suggested (by submit's refusal and by quote's
    floor) must give it the miners' two fees. Before, parts x 2000 was suggested, and
    submit refused its own suggestion."""
    from wallet.job_terms import LEAST_PART_BOUNTY
    from wallet.products import (
        DEFAULT_PART_MULTIPLY_ADDS,
        least_total_bounty,
        plan_parts,
        split_bounty,
    )

    net = load_network("devnet")
    for shape, min_parts in (((64, 256, 64), 3), ((4000, 4096, 4000), 1)):
        parts = plan_parts(*shape, net.pouw, DEFAULT_PART_MULTIPLY_ADDS, min_parts)
        assert len({p.multiply_adds for p in parts}) > 1, shape  # unequal parts
        least = least_total_bounty(parts, LEAST_PART_BOUNTY)
        assert min(split_bounty(least, parts)) >= LEAST_PART_BOUNTY, shape
        assert min(split_bounty(LEAST_PART_BOUNTY * len(parts), parts)) < LEAST_PART_BOUNTY


def test_an_id_may_be_given_by_its_start_as_the_logs_show_it(tmp_path: Path) -> None:
    """The 16 hex digits that progress lines and logs show name a product (or a part of
    one) of the datadir's manifests; a start shared by two, or by none, says to give the
    whole id. Before, only the 64 digits were taken."""
    from wallet.products import Manifest, plan_parts

    net = load_network("devnet")
    parts = plan_parts(64, 256, 64, net.pouw, 10**9, 1)
    one = Manifest(64, 256, 64, parts, ["ab" * 32], [10**6], net.name)
    two = Manifest(64, 256, 64, parts, ["ab" * 4 + "ac" * 28], [10**6], net.name)
    split = plan_parts(64, 256, 64, net.pouw, 10**9, 2)
    product = Manifest(64, 256, 64, split, ["cd" * 32, "ef" * 32], [10**6] * 2, net.name)
    for plan in (one, two, product):
        plan.save(tmp_path)
    # files that are no product's: a stray copy, a deeply nested document
    (tmp_path / f"{'ab' * 8}-backup.json").write_text(one.to_json())
    (tmp_path / f"{'99' * 32}.json").write_text("[" * 100_000 + "]" * 100_000)
    client = JobClient(None, net, RpcClient("http://127.0.0.1:9", "u", "p"),
                       "http://127.0.0.1:9", manifest_dir=tmp_path)  # fmt: skip
    assert client.full_id("ab" * 8) == "ab" * 32
    assert client.full_id("ab" * 4 + "ac" * 4) == "ab" * 4 + "ac" * 28
    assert client.full_id(product.product_id[:16].upper()) == product.product_id
    assert client.full_id("ef" * 8) == "ef" * 32  # a part of a product
    with pytest.raises(JobError, match="more than one id here"):
        client.full_id("ab" * 4)
    with pytest.raises(JobError, match="no product or part this datadir holds"):
        client.full_id("12345678")
    with pytest.raises(JobError, match="not a product or job id"):
        client.full_id("abc")


def test_a_quote_for_the_parts_a_submit_will_cut_is_a_bounty_it_takes(tmp_path: Path) -> None:
    """`quote --parts N` plans the product as `submit --parts N` cuts it: its floor then
    pays every part the miners' fees, and the submit with that bounty is not refused
    (a quote for one part suggested less than three unequal parts need)."""
    genesis = market_genesis(tmp_path)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)
    try:
        client = JobClient(devnet_key(0), net, node.rpc(), f"http://127.0.0.1:{node.blob}",
                           blob_auth=read_cookie(node.datadir, "devnet"))  # fmt: skip
        one, three = client.quote(64, 256, 64), client.quote(64, 256, 64, min_parts=3)
        assert (one.parts, three.parts) == (1, 3)
        rng = np.random.default_rng(7)
        a = rng.integers(-64, 64, (64, 256), dtype=np.int8)
        b = rng.integers(-64, 64, (256, 64), dtype=np.int8)
        with pytest.raises(JobError, match="no miner takes it"):
            client.submit(a, b, one.suggested_bounty, min_parts=3)
        pid = client.submit(a, b, three.suggested_bounty, min_parts=3)
        assert len(client.manifest(pid).job_ids) == 3  # type: ignore[union-attr]
    finally:
        node.stop()
