"""``pouw wallet`` end to end: real node processes, a ``pouw miner`` to confirm, the CLI.

Single node (RPC only) always; the two-node variant (send on one node, see it on the
other) needs p2p/ and is skipped until p2p.service exists.
"""

from __future__ import annotations

import json
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from chain.keys import devnet_key
from tests.test_remote_miner import (
    NodeProc,
    easy_genesis,
    mine_blocks,
    needs_rpc,
    run_cli,
    running_node,
)
from wallet import Wallet
from wallet.amount import format_coins
from wallet.keystore import MIN_SCRYPT_N

HAVE_P2P = find_spec("p2p.service") is not None
PASSWORD = "test password 1"
# Both nodes accept these besides their own cookies, so one wallet datadir serves both.
RPC_AUTH = ("--rpc-user", "tester", "--rpc-password", "rpc secret")
FAST = ("--scrypt-n", str(MIN_SCRYPT_N))


def wallet_cli(datadir: Path, genesis: Path, *args: str, password: str | None = PASSWORD) -> Any:
    env = {"POUW_WALLET_PASSWORD": password or ""}
    auth = RPC_AUTH if "--rpc" in args else ()
    return run_cli(
        "wallet", args[0], "--datadir", str(datadir), "--genesis-file", str(genesis), *args[1:],
        *auth, env=env,
    )  # fmt: skip


def _json(res: Any) -> Any:
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _setup_wallets(datadir: Path, genesis: Path) -> tuple[str, str]:
    """alice: the funded devnet key 0, imported by number; bob: a fresh key."""
    alice = _json(wallet_cli(datadir, genesis, "import", "--wallet", "alice", "--json",
                             "--devnet-key", "0", *FAST))  # fmt: skip
    assert Wallet.load(datadir / "devnet" / "wallets" / "alice.json", PASSWORD).signing_key == (
        devnet_key(0)
    )
    bob = _json(wallet_cli(datadir, genesis, "create", "--wallet", "bob", "--json", *FAST))
    assert (datadir / "devnet" / "wallets" / "bob.json").exists()
    addr = _json(wallet_cli(datadir, genesis, "address", "--wallet", "bob", "--json", "--check"))
    assert addr["address"] == bob["address"]
    return alice["address"], bob["address"]


def _balance(node: NodeProc, datadir: Path, genesis: Path, name: str) -> dict[str, Any]:
    return dict(
        _json(
            wallet_cli(
                datadir,
                genesis,
                "balance",
                "--wallet",
                name,
                "--json",
                "--rpc",
                node.url,
                password=None,
            )
        )  # fmt: skip
    )


def _send_and_confirm(
    sender: NodeProc, observer: NodeProc, datadir: Path, genesis: Path, bob: str
) -> None:
    rpc_args = ("--rpc", sender.url)
    before = _balance(sender, datadir, genesis, "alice")
    assert _balance(sender, datadir, genesis, "bob")["balance"] == 0
    estimate = sender.rpc.call("estimatefee", 2)["fee"]
    # Without --fee the wallet pays the node's estimatefee for --blocks.
    sent = _json(wallet_cli(datadir, genesis, "send", "--wallet", "alice", "--to", bob,
                            "--amount", "1.5", "--blocks", "2", "--json", *rpc_args))  # fmt: skip
    txid = sent["txid"]
    fee1 = sender.rpc.call("gettransaction", txid)["fee"]
    assert fee1 == estimate > 0
    pending = _balance(sender, datadir, genesis, "alice")
    assert pending["pending_nonce"] == before["nonce"] + 1
    # a second send right away uses the pending nonce
    sent2 = _json(wallet_cli(datadir, genesis, "send", "--wallet", "alice", "--to", bob,
                             "--amount", "100u", "--fee", "2500u", "--json",
                             *rpc_args))  # fmt: skip
    res = mine_blocks(sender, 2)
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 60
    while observer.height() < sender.height():
        assert time.monotonic() < deadline, "the observer never caught up"
        time.sleep(0.2)
    for node in (sender, observer):
        tx = node.rpc.call("gettransaction", txid)
        assert tx["confirmations"] >= 1 and tx["amount"] == 150_000_000
    bob_now = _balance(observer, datadir, genesis, "bob")
    assert bob_now["balance"] == 150_000_000 + 100
    alice_now = _balance(observer, datadir, genesis, "alice")
    assert alice_now["balance"] == before["balance"] - 150_000_000 - 100 - fee1 - 2500
    assert alice_now["nonce"] == before["nonce"] + 2
    hist = _json(wallet_cli(datadir, genesis, "history",
                            "--wallet", "bob", "--json", "--rpc", observer.url))  # fmt: skip
    assert [e["txid"] for e in hist] == [txid, sent2["txid"]]
    assert hist[0]["direction"] == "in" and hist[0]["amount"] == 150_000_000
    text = wallet_cli(datadir, genesis, "history", "--wallet", "alice", "--rpc", observer.url)
    assert text.returncode == 0 and txid in text.stdout and " out 1.5 " in text.stdout
    # the balance also says what the address did for the network (contribution ledger)
    work = observer.rpc.call("getcontribution", bob)
    assert alice_now["contribution"]["address"] == alice_now["address"]
    text = wallet_cli(datadir, genesis, "balance", "--wallet", "bob", "--rpc", observer.url,
                      password=None)  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert f"mined:    {work['blocks']} block(s); paid jobs: 0.0 in bounties" in text.stdout


@needs_rpc
@pytest.mark.slow  # the two-node round trip below covers it, across nodes (~17 s)
def test_wallet_round_trip_one_node(tmp_path: Path) -> None:
    genesis = easy_genesis(tmp_path / "genesis.json")
    datadir = tmp_path / "node"
    with running_node(datadir, genesis, "--nop2p", *RPC_AUTH) as node:
        _, bob = _setup_wallets(datadir, genesis)
        _send_and_confirm(node, node, datadir, genesis, bob)


@needs_rpc
@pytest.mark.skipif(not HAVE_P2P, reason="p2p/ (P2PService) has not landed yet")
def test_wallet_round_trip_two_nodes(tmp_path: Path) -> None:
    genesis = easy_genesis(tmp_path / "genesis.json")
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    with running_node(a_dir, genesis, *RPC_AUTH) as a:
        with running_node(b_dir, genesis, "--connect", f"127.0.0.1:{a.p2p_port}", *RPC_AUTH) as b:
            _, bob = _setup_wallets(a_dir, genesis)
            deadline = time.monotonic() + 60
            while b.rpc.call("getconnectioncount") < 1:
                assert time.monotonic() < deadline, "the nodes never connected"
                time.sleep(0.2)
            # sent and mined on a, checked on b (which follows through P2P)
            _send_and_confirm(a, b, a_dir, genesis, bob)


@needs_rpc
def test_wrong_password_and_tampered_keystore_fail_cleanly(tmp_path: Path) -> None:
    genesis = easy_genesis(tmp_path / "genesis.json")
    datadir = tmp_path / "node"
    with running_node(datadir, genesis, "--nop2p", *RPC_AUTH) as node:
        _, bob = _setup_wallets(datadir, genesis)
        path = datadir / "devnet" / "wallets" / "alice.json"
        before = path.read_bytes()
        send = ("send", "--wallet", "alice", "--to", bob, "--amount", "1", "--rpc", node.url)
        res = wallet_cli(datadir, genesis, *send, password="not the password")
        assert res.returncode == 1
        assert "wrong password, or the file was modified" in res.stderr
        assert "Traceback" not in res.stderr and res.stdout == ""
        data = json.loads(before)
        data["ciphertext"] = ("0" if data["ciphertext"][0] != "0" else "1") + data["ciphertext"][1:]
        path.write_text(json.dumps(data))
        tampered = path.read_bytes()
        res = wallet_cli(datadir, genesis, *send)
        assert res.returncode == 1 and "authentication tag check failed" in res.stderr
        assert "Traceback" not in res.stderr
        data["version"] = 9
        path.write_text(json.dumps(data))
        res = wallet_cli(datadir, genesis, *send)
        assert res.returncode == 1 and "unsupported keystore version" in res.stderr
        path.write_bytes(tampered)
        assert path.read_bytes() == tampered  # nothing rewrote the file
        # nothing reached the node
        assert node.rpc.call("getrawmempool") == []
        # a wrong password never touches the file or the node either
        path.write_bytes(before)
        assert Wallet.load(path, PASSWORD).address.startswith("dpw1")
        res = wallet_cli(datadir, genesis, "create", "--wallet", "alice", *FAST)
        assert res.returncode == 1 and "already exists" in res.stderr
        assert path.read_bytes() == before
        # what a pending tx spends is not spendable again (said before signing)
        alice = Wallet.load(path, PASSWORD).address
        units = node.rpc.call("getaccount", alice)["balance"] * 6 // 10
        pay = ("send", "--wallet", "alice", "--to", bob, "--amount", f"{units}u", "--fee",
               "1000u", "--rpc", node.url)  # fmt: skip
        assert wallet_cli(datadir, genesis, *pay).returncode == 0
        res = wallet_cli(datadir, genesis, *pay)
        assert res.returncode == 1 and "spent by txs not yet in a block" in res.stderr, res.stderr
        assert len(node.rpc.call("getrawmempool")) == 1
        res = wallet_cli(datadir, genesis, "balance", "--wallet", "alice", "--rpc", node.url)
        assert f"pending:  -{format_coins(units + 1000)} (1 tx(s)" in res.stdout, res.stdout


def test_devnet_keys_import_only_on_the_devnet(tmp_path: Path) -> None:
    env = {"POUW_WALLET_PASSWORD": PASSWORD}
    for argv, why in (
        (("--network", "testnet"), "--devnet-key is for the devnet only, not testnet"),
        (("--network", "devnet", "--devnet-key", "-1"), "--devnet-key must be 0 to"),
    ):
        args = ("wallet", "import", "--datadir", str(tmp_path), *FAST, *argv)
        if "--devnet-key" not in argv:
            args += ("--devnet-key", "1")
        res = run_cli(*args, env=env)
        assert res.returncode == 1 and why in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    assert not list(tmp_path.rglob("*.json"))  # no keystore was written
    res = run_cli("wallet", "import", "--datadir", str(tmp_path), "--network", "devnet",
                  "--devnet-key", "1", "--json", *FAST, env=env)  # fmt: skip
    address = _json(res)["address"]
    assert Wallet.load(tmp_path / "devnet" / "wallets" / "default.json", PASSWORD).signing_key == (
        devnet_key(1)
    )
    assert address.startswith("dpw1")


def test_history_names_market_transactions_and_failed_ones() -> None:
    from wallet.cli import _history_line

    base = {"height": 7, "fee": 1000, "txid": "ab" * 32, "sender": "dpw1s", "direction": "out"}
    transfer = _history_line({**base, "kind": 1, "amount": 150_000_000, "recipient": "dpw1r"})
    assert transfer == f"height=7 out 1.5 fee=0.00001 from=dpw1s to=dpw1r txid={'ab' * 32}"
    submit = _history_line({**base, "kind": 2, "amount": 75_000_000, "status": "ok"})
    assert submit == f"height=7 job_submit bounty 0.75 fee=0.00001 txid={'ab' * 32}"
    claim = _history_line({**base, "kind": 6, "amount": 5_000_000, "status": "failed",
                           "failure": "job-bad-status: status claimed, needs open"})  # fmt: skip
    assert claim.startswith("height=7 job_claim bond 0.05 fee=0.00001 txid=")
    assert claim.endswith("FAILED (job-bad-status: status claimed, needs open): only the fee "
                          "was spent")  # fmt: skip
    commit = _history_line({**base, "kind": 3, "amount": 0})
    assert commit == f"height=7 job_commit fee=0.00001 txid={'ab' * 32}"
