"""`pouw wallet send --wait` (``Wallet.wait_confirmed``) sends again a transfer the
node lost (killed, its pool not saved), and never one whose nonce another transaction
of the account holds now. Against a real node process (no miner: the transfer stays
pending), restarted on the same ports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chain.address import encode_address
from chain.keys import devnet_key
from chain.network import load_network
from node.cli import main as pouw
from tests.chainutil import address_of, transfer
from tests.test_market_e2e import Proc, market_genesis
from wallet.keystore import WalletError
from wallet.rpc import RpcClient, RpcError
from wallet.wallet import Wallet


def _crash(node: Proc) -> None:
    """kill -9 (no mempool.dat written), then the same node on the same ports."""
    node.proc.kill()
    node.proc.wait(10)
    node.restart()
    node.rpc()  # up again


def test_a_transfer_the_node_lost_is_sent_again_and_a_taken_nonce_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    genesis = market_genesis(tmp_path)
    net = load_network("devnet", genesis)
    node = Proc(tmp_path / "n0", genesis)
    try:
        node.rpc()
        rpc = RpcClient.from_options(f"http://127.0.0.1:{node.rpc_port}", "devnet", node.datadir)
        wallet = Wallet(devnet_key(0), net)
        to = encode_address(net.hrp, address_of(3))
        txid = wallet.send(rpc, to, 1000, fee=2000)
        assert rpc.call("gettransaction", txid)["in_mempool"] is True
        _crash(node)
        with pytest.raises(RpcError, match="No such mempool or blockchain transaction"):
            rpc.call("gettransaction", txid)  # lost with the pool
        with pytest.raises(WalletError, match="not confirmed after 2 s"):
            wallet.wait_confirmed(rpc, txid, 2, poll_s=0.2)  # no miner: it stays pending
        assert rpc.call("gettransaction", txid)["in_mempool"] is True  # sent again

        _crash(node)  # lost again; meanwhile another transfer takes its nonce
        other = transfer(net, 0, 0, address_of(4), 5, fee=3000)
        rpc.call("sendrawtransaction", other.to_bytes().hex())
        with pytest.raises(WalletError, match="with its nonce 0 is in the node's pool"):
            wallet.wait_confirmed(rpc, txid, 5, poll_s=0.2)
        assert rpc.call("gettransaction", other.txid.hex())["in_mempool"] is True  # kept

        # the command line: the txid at once, then the wait's end
        pw = tmp_path / "pw"
        pw.write_text("pw\n")
        where = ["--network", "devnet", "--datadir", str(node.datadir), "--genesis-file",
                 str(genesis), "--password-file", str(pw)]  # fmt: skip
        assert pouw(["wallet", "import", "--devnet-key", "1", "--scrypt-n", "1024", *where]) == 0
        capsys.readouterr()
        code = pouw(["wallet", "send", "--to", to, "--amount", "100u", "--fee", "2000u",
                     "--wait", "1", "--rpc", rpc.url, *where])  # fmt: skip
        out, err = capsys.readouterr()
        assert code == 1 and "not confirmed after 1 s" in err, err
        assert rpc.call("gettransaction", out.strip())["in_mempool"] is True
        # --json: the sent txid comes with the failure (a script must not send twice)
        code = pouw(["wallet", "send", "--to", to, "--amount", "100u", "--fee", "2000u",
                     "--wait", "1", "--json", "--rpc", rpc.url, *where])  # fmt: skip
        out, err = capsys.readouterr()
        error = json.loads(err.strip().splitlines()[-1])["error"]
        assert code == 1 and out == "" and error["type"] == "wallet_error", err
        assert rpc.call("gettransaction", error["txid"])["in_mempool"] is True
        # a node that now refuses the credentials: said as such, not as a pending tx
        wrong = f"http://someone:else@127.0.0.1:{node.rpc_port}"
        with pytest.raises(WalletError, match="now refuses our credentials"):
            wallet.wait_confirmed(RpcClient(wrong), error["txid"], 5)
    finally:
        node.stop()
