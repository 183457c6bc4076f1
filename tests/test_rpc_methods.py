"""The RPC methods on an in-process node: chain, accounts, proofs, txs, mining, WebSocket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from chain.address import encode_address
from chain.block import Block
from chain.network import Network
from chain.state import account_key
from chain.state_proof import StateProof, verify_state_proof
from compute.numpy_engine import NumpyEngine
from consensus.ints import u64
from consensus.pouw import filler_matrices
from node.rpc.encode import template_from_json
from node.template import BlockTemplate
from tests.chainutil import address_of, transfer
from tests.test_rpc_util import Harness, easy_genesis_file, run_node

ENGINE = NumpyEngine()


def seal(network: Network, template: BlockTemplate, salt: bytes = b"") -> Block:
    h = template.header
    for attempt in range(10_000):
        a, b = filler_matrices(h.parent + salt + u64(attempt), h.m, h.k, h.n)
        out = ENGINE.mine(network.pouw, a, b, template)
        if out.seals:
            return template.block_with_seal(out.work, out.seals[0])
    raise AssertionError("no block")


def addr(h: Harness, index: int) -> str:
    return encode_address(h.node.network.hrp, address_of(index))


async def mine(h: Harness, miner: int = 4, salt: bytes = b"") -> Block:
    """getblocktemplate, mine it with the NumPy engine; the block is not submitted."""
    data = await h.result("getblocktemplate", addr(h, miner))
    template = template_from_json(data, h.node.network.hrp)
    return await asyncio.to_thread(seal, h.node.network, template, salt)


async def mine_and_submit(h: Harness, n: int = 1) -> None:
    for _ in range(n):
        block = await mine(h)
        assert await h.result("submitblock", block.to_bytes().hex()) is None


def test_template_mine_submit_and_stale(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        t = await h.result("getblocktemplate", addr(h, 4))
        net = h.node.network
        assert t["height"] == 1 and t["shape"] == [net.filler.m, net.filler.k, net.filler.n]
        assert t["parent"] == await h.result("getbestblockhash")
        assert "h_a" not in t and "seal" not in t and len(t["target"]) == 64
        template = template_from_json(t, net.hrp)
        b1 = await asyncio.to_thread(seal, net, template, b"one")
        b2 = await asyncio.to_thread(seal, net, template, b"two")
        assert b1.hash != b2.hash
        assert await h.result("submitblock", b1.to_bytes().hex()) is None
        assert await h.result("getblockcount") == 1
        assert await h.result("getbestblockhash") == b1.hash.hex()
        assert await h.result("submitblock", b1.to_bytes().hex()) == "duplicate"
        # Built on the old tip: valid, stored on a side chain, not the tip.
        assert await h.result("submitblock", b2.to_bytes().hex()) == "inconclusive"
        assert await h.result("getbestblockhash") == b1.hash.hex()
        tips = await h.result("getchaintips")
        assert {t["status"] for t in tips} == {"active", "valid-headers"}  # never connected
        # A doctored block is rejected with its BIP22 reason.
        t2 = template_from_json(await h.result("getblocktemplate", addr(h, 4)), net.hrp)
        b3 = await asyncio.to_thread(seal, net, t2)
        from dataclasses import replace

        bad = Block(replace(b3.header, timestamp=b3.header.timestamp + 1), b3.txs)
        assert await h.result("submitblock", bad.to_bytes().hex()) == "bad-seal"
        err = await h.error("submitblock", "00ff")
        assert err["code"] == -22
        # A shape the network refuses is -8 naming the param; a good one is used.
        err = await h.error("getblocktemplate", addr(h, 4), [3, 5, 7])
        assert err["code"] == -8 and "shape" in err["message"]
        # The message names the rules broken, with the network's numbers.
        p = net.pouw
        err = await h.error("getblocktemplate", addr(h, 4), [1, 1, 1])
        assert err["message"] == (
            "invalid parameter 'shape': [1, 1, 1] is refused by the network (bad-k): give "
            f"k a multiple of {p.noise_rank} from {p.k_min} to {p.k_max}; "
            f"m a multiple of {p.tile_rows} up to {p.m_max}; "
            f"n a multiple of {p.tile_cols} up to {p.n_max}"
        ), err
        m, n = p.m_max, p.n_max
        err = await h.error("getblocktemplate", addr(h, 4), [m, p.k_max, n])
        assert err["message"] == (
            f"invalid parameter 'shape': [{m}, {p.k_max}, {n}] is refused by the network "
            f"(too-much-work): give m*k*n at most {p.max_multiply_adds} multiply-adds "
            f"(it is {m * p.k_max * n})"
        ), err
        err = await h.error("getblocktemplate", addr(h, 4), [p.tile_rows, p.k_min, 3])
        assert err["message"].endswith(
            f"(bad-shape): give n a multiple of {p.tile_cols} up to {p.n_max}"
        ), err
        t3 = await h.result("getblocktemplate", addr(h, 4), [64, 128, 128])
        assert t3["shape"] == [64, 128, 128]
        err = await h.error("getblocktemplate", "dpw1notanaddress")
        assert err["code"] == -5
        info = await h.result("getmininginfo")
        assert info["blocks"] == 1 and info["mining"] is False
        assert info["engine"] is None and info["enginepath"] is None

    run_node(tmp_path, body)


def test_chain_queries(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await mine_and_submit(h, 2)
        info = await h.result("getblockchaininfo")
        assert info["chain"] == "devnet" and info["blocks"] == 2 and info["headers"] == 2
        assert info["bestblockhash"] == await h.result("getblockhash", 2)
        assert len(info["chainwork"]) == 64 and info["verificationprogress"] == 1.0
        best = info["bestblockhash"]
        blk = await h.result("getblock", best)
        assert blk["height"] == 2 and blk["confirmations"] == 1 and blk["tx"] == []
        b1 = await h.result("getblock", blk["previousblockhash"])
        assert b1["nextblockhash"] == best and b1["confirmations"] == 2
        raw = await h.result("getblock", best, 0)
        assert Block.from_bytes(bytes.fromhex(raw)).hash.hex() == best
        hdr = await h.result("getblockheader", best)
        assert hdr["hash"] == best and hdr["state_root"] == blk["state_root"]
        assert "nextblockhash" not in blk and "nextblockhash" not in hdr  # the tip (RPC.md)
        assert len(await h.result("getblockheader", best, False)) > 0
        genesis = await h.result("getblock", await h.result("getblockhash", 0))
        assert genesis["previousblockhash"] is None
        assert (await h.error("getblock", "00" * 32))["code"] == -5
        assert (await h.error("getblockhash", 3))["code"] == -8
        assert await h.result("getdifficulty") > 0
        tips = await h.result("getchaintips")
        assert tips == [{"height": 2, "hash": best, "branchlen": 0, "status": "active"}]
        assert isinstance(await h.result("uptime"), int)
        helped = await h.result("help")
        assert "getblock" in helped["chain"] and "stop" in helped["control"]
        one = await h.result("help", "getblock")
        assert [p["name"] for p in one["params"]] == ["blockhash", "verbosity"]
        # P2P absent: empty answers or -31.
        assert await h.result("getpeerinfo") == [] and await h.result("getconnectioncount") == 0
        assert (await h.error("addnode", "1.2.3.4:1", "add"))["code"] == -31
        info = await h.result("getnetworkinfo")
        assert info["networkactive"] is False and info["orphan_txs"] == 0
        assert await h.result("listjobs") == []
        assert (await h.error("getjob", "00" * 32))["code"] == -5
        contrib = await h.result("getcontribution", addr(h, 4))
        assert contrib["blocks"] == 2 and contrib["work"] > 0

    run_node(tmp_path, body)


def test_accounts_transactions_and_proofs(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        net = h.node.network
        sender, recipient = addr(h, 0), addr(h, 7)
        before = await h.result("getaccount", sender)
        assert before["balance"] > 0 and before["nonce"] == 0 and before["pending_nonce"] == 0
        assert (await h.error("getaccount", "bogus"))["code"] == -5
        tx = transfer(net, 0, 0, address_of(7), 12_345, fee=20)
        txhex = tx.to_bytes().hex()
        accept = await h.result("testmempoolaccept", [txhex])
        assert accept == [{"txid": tx.txid.hex(), "allowed": True, "fee": 20,
                           "size": len(tx.to_bytes())}]  # fmt: skip
        assert await h.result("getrawmempool") == []  # nothing was added
        # The same tx twice in one call: the second is a duplicate within the request (it
        # used to read "already in the pool", though nothing was added).
        twice = await h.result("testmempoolaccept", [txhex, txhex])
        assert twice[0]["allowed"] is True and twice[1] == {
            "txid": tx.txid.hex(), "allowed": False, "reject_reason": "txn-duplicate-in-request",
            "detail": "the same transaction appears earlier in this request: send it once",
        }, twice  # fmt: skip
        assert await h.result("getrawmempool") == []
        too_much = transfer(net, 0, 0, address_of(7), before["balance"], fee=20)
        res = await h.result("testmempoolaccept", [too_much.to_bytes().hex()])
        assert res[0]["allowed"] is False
        assert res[0]["reject_reason"] == "mempool-insufficient-balance"
        resent: list[bytes] = []
        h.node.events.tx_resent.connect(lambda t: resent.append(t.txid))
        assert await h.result("sendrawtransaction", txhex) == tx.txid.hex()
        assert resent == []
        assert await h.result("sendrawtransaction", txhex) == tx.txid.hex()  # already known
        assert resent == [tx.txid]  # sent again: announced again (to who lacks it)
        assert await h.result("getrawmempool") == [tx.txid.hex()]
        verbose = await h.result("getrawmempool", True)
        assert verbose[tx.txid.hex()]["pending"] is True and verbose[tx.txid.hex()]["fee"] == 20
        assert (await h.result("getmempoolinfo"))["size"] == 1
        assert (await h.result("getaccount", sender))["pending_nonce"] == 1
        assert (await h.result("getaccount", sender))["pending_spend"] == 12_345 + 20
        assert (await h.result("getaccount", recipient))["pending_spend"] == 0
        assert await h.result("getrawtransaction", tx.txid.hex()) == txhex
        info = await h.result("gettransaction", tx.txid.hex())
        assert info["confirmations"] == 0 and info["in_mempool"] and info["amount"] == 12_345
        replace_low = await h.error("sendrawtransaction", too_much.to_bytes().hex())
        assert replace_low["code"] == -26 and "replacement" in replace_low["message"]
        too_much = transfer(net, 0, 1, address_of(7), before["balance"], fee=20)
        err = await h.error("sendrawtransaction", too_much.to_bytes().hex())
        assert err["code"] == -25 and "insufficient" in err["message"]
        bad_sig = bytearray(too_much.to_bytes())
        bad_sig[-1] ^= 1
        assert (await h.error("sendrawtransaction", bad_sig.hex()))["code"] == -26
        assert (await h.error("sendrawtransaction", "abcd"))["code"] == -22
        assert (await h.error("getrawtransaction", "11" * 32))["code"] == -5

        await mine_and_submit(h)
        assert await h.result("getrawmempool") == []
        info = await h.result("gettransaction", tx.txid.hex())
        assert info["confirmations"] == 1 and info["height"] == 1
        assert info["blockhash"] == await h.result("getbestblockhash")
        verbose = await h.result("getrawtransaction", tx.txid.hex(), True)
        assert verbose["blockhash"] == info["blockhash"]
        assert (await h.error("sendrawtransaction", txhex))["code"] == -27
        after = await h.result("getaccount", recipient)
        assert after["balance"] >= 12_345
        hist = await h.result("getaddresshistory", recipient)
        assert [t["txid"] for t in hist["txs"]] == [tx.txid.hex()] and hist["next_skip"] is None
        page = await h.result("getaddresshistory", sender, 0, 1)
        assert len(page["txs"]) == 1
        fee = await h.result("estimatefee")
        assert fee["fee"] >= fee["min_fee"] and fee["sample_txs"] == 1
        miner = await h.result("getaccount", addr(h, 4))
        assert miner["immature"] > 0  # maturity 3: the reward is not spendable yet

        # getproof verifies against the header's state root; a doctored one fails.
        proof = await h.result("getproof", sender)
        header = await h.result("getblockheader", proof["blockhash"])
        assert proof["state_root"] == header["state_root"] and proof["height"] == 1
        root = bytes.fromhex(header["state_root"])
        key = account_key(address_of(0))
        assert proof["key"] == key.hex()
        sp = StateProof.from_bytes(bytes.fromhex(proof["proof"]))
        value = bytes.fromhex(proof["value"])
        assert verify_state_proof(root, key, value, sp)
        doctored = bytearray(value)
        doctored[7] ^= 1  # a larger balance
        assert not verify_state_proof(root, key, bytes(doctored), sp)
        raw = bytearray(bytes.fromhex(proof["proof"]))
        raw[-1] ^= 1
        assert not verify_state_proof(root, key, value, StateProof.from_bytes(bytes(raw)))
        absent = await h.result("getproof", encode_address(net.hrp, b"\x42" * 20))
        assert absent["value"] is None
        assert verify_state_proof(
            root, account_key(b"\x42" * 20), None,
            StateProof.from_bytes(bytes.fromhex(absent["proof"])),
        )  # fmt: skip

    run_node(tmp_path, body)


def test_longpoll_and_waitfornewblock(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        t = await h.result("getblocktemplate", addr(h, 4))
        # Returns at once with another longpollid.
        t0 = await h.result("getblocktemplate", miner=addr(h, 4), longpollid="stale")
        assert t0["longpollid"] == t["longpollid"]
        poll = asyncio.create_task(
            h.result("getblocktemplate", miner=addr(h, 4), longpollid=t["longpollid"])
        )
        wait = asyncio.create_task(h.result("waitfornewblock"))
        await asyncio.sleep(0.2)
        assert not poll.done() and not wait.done()
        tx = transfer(h.node.network, 0, 0, address_of(7), 1000)
        await h.result("sendrawtransaction", tx.to_bytes().hex())
        t2 = await asyncio.wait_for(poll, 10)  # a mempool change ends the long-poll
        assert t2["longpollid"] != t["longpollid"] and len(t2["transactions"]) == 1
        assert not wait.done()
        await mine_and_submit(h)
        got = await asyncio.wait_for(wait, 10)
        assert got["height"] == 1
        timed = await h.result("waitfornewblock", 100)
        assert timed["height"] == 1
        # Past the longest wait: refused as waitforjob's is (not cut to 300 s unsaid).
        err = await asyncio.wait_for(h.error("waitfornewblock", 300_001), 10)
        assert err["code"] == -32602 and "'timeout'" in err["message"], err
        assert "300000" in err["message"], err
        helped = await h.result("help", "waitfornewblock")
        assert helped["params"][0]["type"] == "integer 0..300000", helped

    run_node(tmp_path, body)


def test_websocket_subscriptions_and_reorg(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        net = h.node.network
        async with h.session.ws_connect(h.url + "ws", headers={"Authorization": h.auth}) as ws:

            async def call(method: str, *params: object) -> dict:
                await ws.send_str(
                    json.dumps(
                        {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
                    )
                )
                return json.loads((await ws.receive(timeout=10)).data)

            heads = (await call("subscribe", "newHeads"))["result"]
            txs = (await call("subscribe", "newTransactions"))["result"]
            jobs = await call("subscribe", "jobs")
            assert "result" in jobs
            assert (await call("subscribe", "nope"))["error"]["code"] == -32602
            assert (await call("getblockcount"))["result"] == 0

            async def note() -> dict:
                return json.loads((await ws.receive(timeout=10)).data)["params"]

            tx = transfer(net, 0, 0, address_of(7), 1000)
            assert h.node.submit_transaction(tx).ok
            n = await note()
            assert n["subscription"] == txs and n["result"]["txid"] == tx.txid.hex()

            t = template_from_json(await h.result("getblocktemplate", addr(h, 4)), net.hrp)
            a1 = await asyncio.to_thread(seal, net, t, b"a")
            assert h.node.submit_block(a1).accepted
            n = await note()
            assert n["subscription"] == heads and n["result"]["hash"] == a1.hash.hex()
            assert n["result"]["reorg"] is False
            # A heavier branch from genesis: b1 (same template, other seal), then b2 on it.
            b1 = await asyncio.to_thread(seal, net, t, b"b")
            assert h.node.submit_block(b1).accepted  # side chain, no event
            from tests.chainutil import build_template

            tb2 = build_template(h.node.chain, address_of(4), [], (64, 128, 64), 0)
            assert tb2.header.parent == a1.hash  # the active tip; build on b1 instead:
            saved_tip, h.node.chain.tip = h.node.chain.tip, h.node.chain.index[b1.hash]
            try:
                tb2 = build_template(h.node.chain, address_of(4), [], (64, 128, 64),
                                     b1.header.timestamp + 1)  # fmt: skip
            finally:
                h.node.chain.tip = saved_tip
            b2 = await asyncio.to_thread(seal, net, tb2)
            assert b2.header.parent == b1.hash
            r = h.node.submit_block(b2)
            assert r.accepted and r.reorg_depth == 1
            first, second = await note(), await note()
            assert [first["result"]["hash"], second["result"]["hash"]] == [
                b1.hash.hex(),
                b2.hash.hex(),
            ]
            assert first["result"]["reorg"] is True
            # receipts: the transfer's block on the active chain has it; the one left
            # off it has none (the outcome of a block off the chain is not kept)
            on = await h.result("getblock", b1.hash.hex(), 2)
            off = await h.result("getblock", a1.hash.hex(), 2)
            [got] = [x for x in on["tx"] if x["txid"] == tx.txid.hex()]
            assert (got["status"], got["failure"], got["type"]) == ("ok", None, "transfer")
            [gone] = [x for x in off["tx"] if x["txid"] == tx.txid.hex()]
            assert (gone["status"], gone["failure"]) == (None, None)
            assert (await call("unsubscribe", heads))["result"] is True
        # Subscribing over HTTP is refused.
        assert (await h.error("subscribe", "newHeads"))["code"] == -1
        async with h.session.get(h.url + "ws") as resp:
            assert resp.status == 401

    run_node(tmp_path, body)


class FakeP2P:
    """The P2P service's RPC-facing interface (p2p/service.py), recorded."""

    name = "p2p"

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.added: set[str] = set()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def connection_count(self) -> int:
        return 2

    def orphan_count(self) -> int:
        return 3

    def peer_info(self) -> list[dict]:
        return [{"id": 1, "addr": "10.0.0.1:1"}]

    def add_node(self, host_port: str, command: str = "add") -> None:
        self.calls.append(("add_node", host_port, command))
        if command == "remove" and host_port not in self.added:
            raise KeyError(host_port)
        self.added.add(host_port)

    def disconnect_node(self, address: str | None = None) -> bool:
        return address == "10.0.0.1:1"

    def set_ban(self, ip: str, command: str = "add", seconds: int | None = None) -> bool:
        self.calls.append(("set_ban", ip, command, seconds))
        return command == "add"

    def list_banned(self) -> list[dict]:
        return [{"address": "10.0.0.9"}]

    def clear_banned(self) -> None:
        self.calls.append(("clear_banned",))


def test_network_methods_call_the_p2p_service(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        p2p = FakeP2P()
        h.node.services.insert(0, p2p)  # type: ignore[arg-type]
        assert await h.result("getconnectioncount") == 2
        info = await h.result("getnetworkinfo")
        assert info["connections"] == 2 and info["orphan_txs"] == 3
        assert await h.result("getpeerinfo") == [{"id": 1, "addr": "10.0.0.1:1"}]
        assert await h.result("addnode", "10.0.0.2:9", "add") is None
        assert (await h.error("addnode", "10.0.0.3:9", "remove"))["code"] == -24
        assert (await h.error("addnode", "10.0.0.3:9", "bogus"))["code"] == -32602
        assert await h.result("disconnectnode", "10.0.0.1:1") is None
        assert (await h.error("disconnectnode", "10.0.0.7:1"))["code"] == -29
        assert await h.result("setban", "10.0.0.9", "add", 60) is None
        assert (await h.error("setban", "10.0.0.8", "remove"))["code"] == -30
        assert await h.result("listbanned") == [{"address": "10.0.0.9"}]
        assert await h.result("clearbanned") is None
        assert ("set_ban", "10.0.0.9", "add", 60) in p2p.calls and ("clear_banned",) in p2p.calls

    run_node(tmp_path, body)


def test_addnode_refuses_what_is_not_host_port(tmp_path: Path) -> None:
    """addnode on the node's P2P service: HOST an IP literal or a DNS name, PORT digits
    1-65535; anything else is -8 saying what to give (never int()'s own words)."""

    async def body(h: Harness) -> None:
        for bad in ("127.0.0.1:abc", "http://x:1", "a b c", "127.0.0.1:1_0", "127.0.0.1: 80",
                    "127.0.0.1:0", "127.0.0.1:65536", "[host]:1"):  # fmt: skip
            err = await h.error("addnode", bad, "add")
            assert err["code"] == -8, (bad, err)
            assert err["message"] == (
                f"invalid parameter 'node': {bad!r} is not a peer address: give HOST:PORT, "
                "[IPv6]:PORT or HOST (the network's port), port 1-65535"
            ), err
        for good in ("127.0.0.2:65535", "[::1]:9", "peer.example.org:1", "10.0.0.5"):
            assert await h.result("addnode", good, "add") is None, good
        assert await h.result("addnode", "127.0.0.2:65535", "remove") is None

    run_node(tmp_path, body, p2p=True, listen=False)  # a P2P service, never started


def test_waitforjob_answers_when_the_commit_reaches_the_pool(tmp_path: Path) -> None:
    """waitforjob: -5 at once for an unknown job; a job without a commit waits out its
    timeout; a waiter is woken by the claimant's commit entering the mempool (claim
    and commit both still pooled) and answers with pending_commit."""
    import time

    import numpy as np

    from chain.keys import devnet_key
    from wallet.job_txs import claim_tx, commit_tx, submit_tx

    async def body(h: Harness) -> None:
        net = h.node.network
        buyer, miner = devnet_key(0), devnet_key(1)
        a = np.ones((64, 128), np.int8)
        b = np.ones((128, 64), np.int8)
        mtp = (await h.result("getblockchaininfo"))["mediantime"]
        submit = submit_tx(net, buyer, 0, a, b, 10**6, mtp + 3600, url="http://b")
        job = submit.txid.hex()
        await h.result("sendrawtransaction", submit.to_bytes().hex())
        assert (await h.error("waitforjob", "00" * 32, 5000))["code"] == -5
        t = time.monotonic()
        got = await h.result("waitforjob", job, 200)
        assert got["status"] == "pending" and "pending_commit" not in got
        assert time.monotonic() - t >= 0.18
        waiter = asyncio.create_task(h.result("waitforjob", job, 20_000))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        bond = net.market.bond_for(10**6)
        claim = claim_tx(net, miner, 0, submit.txid, bond)
        await h.result("sendrawtransaction", claim.to_bytes().hex())
        await asyncio.sleep(0.1)
        assert not waiter.done()  # a claim alone does not settle it
        t = time.monotonic()
        commit = commit_tx(net, miner, 1, submit.txid, bytes(32), url="http://m")
        await h.result("sendrawtransaction", commit.to_bytes().hex())
        got = await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - t < 2
        assert got["pending_commit"]["txid"] == commit.txid.hex()
        assert got["pending_commit"]["claimant"] == addr(h, 1)
        assert got["pending_claims"] == 1 and got["pending_claimants"] == [addr(h, 1)]
        pending = await h.result("listjobs", "pending")
        assert [j["job_id"] for j in pending] == [job]
        assert pending[0]["status"] == "pending" and pending[0]["pending_claimants"] == [addr(h, 1)]
        assert await h.result("listjobs", "open") == []
        # once it confirms: the counts and the recent commits of getmarketinfo and listjobs
        for _ in range(3):
            if (await h.result("getjob", job))["status"] == "committed":
                break
            await mine_and_submit(h, 1)
        info = await h.result("getmarketinfo")
        assert info["jobs"]["committed"] == 1 and info["jobs"]["pending"] == 0
        assert info["delivered_multiply_adds"] == 64 * 128 * 64
        for status in ("recent", "unsettled", "committed"):
            assert [j["job_id"] for j in await h.result("listjobs", status)] == [job], status
        assert await h.result("listjobs", "paid") == []
        # a miner's own jobs (it takes them back after a restart)
        mine = await h.result("listjobs", "unsettled", 10, addr(h, 1))
        assert [j["job_id"] for j in mine] == [job]
        assert await h.result("listjobs", "unsettled", 10, addr(h, 0)) == []
        assert await h.result("listjobs", "pending", 10, addr(h, 1)) == []
        assert (await h.error("listjobs", "unsettled", 10, "dpw1nope"))["code"] == -5

    run_node(tmp_path, body)


def test_pooled_claims_are_listed_lowest_txid_first_and_capped(tmp_path: Path) -> None:
    """getjob and listjobs list a job's pooled claims that escrow its bond by txid, with
    sender and bond (``pending_claim_txs``: what a miner needs to know which claim a
    block gives the job to), the lowest MAX_LISTED_CLAIMS of them; a claim with a
    smaller bond fails on its own and is not listed; ``pending_claims`` counts all."""
    import numpy as np

    from chain.keys import devnet_key
    from node.rpc.market import MAX_LISTED_CLAIMS
    from wallet.job_txs import claim_tx, submit_tx

    async def body(h: Harness) -> None:
        net = h.node.network
        a = np.ones((64, 128), np.int8)
        b = np.ones((128, 64), np.int8)
        mtp = (await h.result("getblockchaininfo"))["mediantime"]
        submit = submit_tx(net, devnet_key(0), 0, a, b, 10**6, mtp + 3600)
        job = submit.txid.hex()
        await h.result("sendrawtransaction", submit.to_bytes().hex())
        bond = net.market.bond_for(10**6)
        claims = [  # devnet key 4's claims escrow one unit too little
            claim_tx(net, devnet_key(1 + i % 4), i // 4, submit.txid, bond - (i % 4 == 3))
            for i in range(4 * (MAX_LISTED_CLAIMS // 3 + 1))
        ]
        standing = [tx for tx in claims if tx.amount == bond]
        assert len(standing) > MAX_LISTED_CLAIMS
        for claim in claims:
            await h.result("sendrawtransaction", claim.to_bytes().hex())
        got = await h.result("getjob", job)
        assert got["pending_claims"] == len(claims)
        assert got["pending_claimants"] == sorted({addr(h, i) for i in (1, 2, 3, 4)})
        by_txid = sorted(standing, key=lambda tx: tx.txid)[:MAX_LISTED_CLAIMS]
        assert got["pending_claim_txs"] == [
            {"txid": tx.txid.hex(), "claimant": addr(h, 1 + claims.index(tx) % 4),
             "bond": tx.amount}
            for tx in by_txid
        ]  # fmt: skip
        listed = await h.result("listjobs", "pending")
        assert listed[0]["pending_claim_txs"] == got["pending_claim_txs"]

    run_node(tmp_path, body)


def test_a_job_its_buyer_is_reclaiming_is_not_claimable(tmp_path: Path) -> None:
    """A buyer's reclaim waiting in the pool marks the job ``pending_reclaim`` in getjob
    and listjobs, and getmarketinfo no longer counts it claimable (miners skip it: a
    claim would race the reclaim and most likely compute for nothing). Someone else's
    reclaim of it changes nothing."""
    import numpy as np

    from chain.keys import devnet_key
    from wallet.job_txs import reclaim_tx, submit_tx

    async def body(h: Harness) -> None:
        net = h.node.network
        buyer, other = devnet_key(0), devnet_key(2)
        a = np.ones((64, 128), np.int8)
        b = np.ones((128, 64), np.int8)
        await mine_and_submit(h, 1)  # a block of today: the median time past is today's
        mtp = (await h.result("getblockchaininfo"))["mediantime"]
        submit = submit_tx(net, buyer, 0, a, b, 10**6, mtp + 3600, url="http://b")
        job = submit.txid.hex()
        await h.result("sendrawtransaction", submit.to_bytes().hex())
        for _ in range(3):  # the job open on chain
            if (await h.result("getjob", job))["status"] == "open":
                break
            await mine_and_submit(h, 1)
        assert (await h.result("getmarketinfo"))["claimable"] == 1
        rogue = reclaim_tx(net, other, 0, submit.txid, 1000)
        await h.result("sendrawtransaction", rogue.to_bytes().hex())
        assert "pending_reclaim" not in await h.result("getjob", job)
        assert (await h.result("getmarketinfo"))["claimable"] == 1
        cancel = reclaim_tx(net, buyer, 1, submit.txid, 1000)
        await h.result("sendrawtransaction", cancel.to_bytes().hex())
        assert (await h.result("getjob", job))["pending_reclaim"] is True
        [listed] = await h.result("listjobs", "open")
        assert listed["job_id"] == job and listed["pending_reclaim"] is True
        assert (await h.result("getmarketinfo"))["claimable"] == 0

    run_node(tmp_path, body)


def test_market_wait_is_unknown_once_no_block_comes(tmp_path: Path, monkeypatch) -> None:
    """The expected wait comes from the last blocks' rate only while blocks still come:
    with a tip older than 20 target spacings (at least 60 s) no miner runs now, and a
    wait from the rate before the gap would be a promise nobody keeps."""
    import node.rpc.market as market_rpc

    async def body(h: Harness) -> None:
        await mine_and_submit(h, 4)
        info = await h.result("getmarketinfo")
        assert info["network_multiply_adds_per_s"] > 0
        assert info["expected_wait_s"] is not None and info["tip_age_s"] < 60
        real = market_rpc.time.time
        later = type("Later", (), {"time": staticmethod(lambda: real() + 3600)})
        monkeypatch.setattr(market_rpc, "time", later)
        info = await h.result("getmarketinfo")
        # (a devnet's block timestamps may run a little ahead of the clock)
        assert info["expected_wait_s"] is None and info["tip_age_s"] > 3000
        assert info["network_multiply_adds_per_s"] > 0  # the rate itself is history

    run_node(tmp_path, body)


def test_market_work_in_progress_is_the_claimed_jobs_only(tmp_path: Path) -> None:
    """getmarketinfo's ``in_progress_multiply_adds`` (and the expected wait built on it)
    counts a claimed job's work until its commit: a committed job's C is done, however
    long its challenge window. getjob and listjobs say whether a claim lapsed."""
    import numpy as np

    from chain.keys import devnet_key
    from wallet.job_txs import claim_tx, commit_tx, submit_tx

    async def body(h: Harness) -> None:
        net = h.node.network
        buyer, miner = devnet_key(0), devnet_key(2)
        a, b = np.ones((64, 128), np.int8), np.ones((128, 64), np.int8)
        work = 64 * 128 * 64
        await mine_and_submit(h, 1)
        mtp = (await h.result("getblockchaininfo"))["mediantime"]
        submit = submit_tx(net, buyer, 0, a, b, 10**6, mtp + 3600, url="http://b")
        job = submit.txid.hex()

        async def confirmed(tx: object, status: str) -> dict:
            await h.result("sendrawtransaction", tx.to_bytes().hex())  # type: ignore[attr-defined]
            for _ in range(3):
                if (got := await h.result("getjob", job))["status"] == status:
                    return got
                await mine_and_submit(h, 1)
            raise AssertionError(f"never {status}")

        await confirmed(submit, "open")
        info = await h.result("getmarketinfo")
        assert info["open_demand_multiply_adds"] == work and info["in_progress_multiply_adds"] == 0
        bond = net.market.bond_for(10**6)
        got = await confirmed(claim_tx(net, miner, 0, submit.txid, bond), "claimed")
        assert got["claim_lapsed"] is False
        [listed] = await h.result("listjobs", "claimed")
        assert listed["claim_lapsed"] is False
        info = await h.result("getmarketinfo")
        assert info["open_demand_multiply_adds"] == 0 and info["in_progress_multiply_adds"] == work
        await confirmed(commit_tx(net, miner, 1, submit.txid, b"\x07" * 32, "http://m"),
                        "committed")  # fmt: skip
        info = await h.result("getmarketinfo")
        assert info["in_progress_multiply_adds"] == 0 and info["jobs"]["committed"] == 1

    run_node(tmp_path, body)


def test_getjob_says_a_claim_lapsed_before_the_timer_reopens_the_job(tmp_path: Path) -> None:
    """A claim whose deadline the next block's clock has passed shows ``claim_lapsed:
    true`` in getjob and listjobs while the job is still claimed (a commit would fail
    now); a later block's timer reopens it, the bond going to the buyer."""
    import numpy as np

    from chain.keys import devnet_key
    from wallet.job_txs import claim_tx, submit_tx

    genesis = easy_genesis_file(tmp_path)
    data = json.loads(genesis.read_text())
    data["market"].update(claim_slack_s=1, min_window_blocks=1)
    genesis.write_text(json.dumps(data))

    async def body(h: Harness) -> None:
        net = h.node.network
        buyer, miner = devnet_key(0), devnet_key(2)
        a, b = np.ones((64, 128), np.int8), np.ones((128, 64), np.int8)
        await mine_and_submit(h, 1)
        # the WebSocket topic "jobs" hears each change, the timer's reopening included
        ws = await h.session.ws_connect(h.url + "ws", headers={"Authorization": h.auth})
        await ws.send_str('{"jsonrpc":"2.0","id":1,"method":"subscribe","params":["jobs"]}')
        sub = json.loads((await ws.receive(timeout=10)).data)["result"]
        mtp = (await h.result("getblockchaininfo"))["mediantime"]
        submit = submit_tx(net, buyer, 0, a, b, 10**6, mtp + 3600, url="http://b")
        job = submit.txid.hex()
        await h.result("sendrawtransaction", submit.to_bytes().hex())
        await mine_and_submit(h, 1)
        bond = net.market.bond_for(10**6)
        claim = claim_tx(net, miner, 0, submit.txid, bond)
        await h.result("sendrawtransaction", claim.to_bytes().hex())
        await mine_and_submit(h, 1)
        got = await h.result("getjob", job)
        assert got["status"] == "claimed" and got["claim_lapsed"] is False, got
        seen_lapsed = False
        buyer_address = encode_address(net.hrp, address_of(0))
        for _ in range(40):  # blocks a quarter second apart: the median time moves on
            await asyncio.sleep(0.25)
            before = (await h.result("getaccount", buyer_address))["balance"]
            await mine_and_submit(h, 1)
            got = await h.result("getjob", job)
            if got["status"] != "claimed":
                break
            if got["claim_lapsed"]:
                seen_lapsed = True
                [listed] = await h.result("listjobs", "claimed")
                assert listed["job_id"] == job and listed["claim_lapsed"] is True
        assert seen_lapsed, "the claim never showed as lapsed while claimed"
        assert got["status"] == "open" and "claim_lapsed" not in got, got
        after = (await h.result("getaccount", buyer_address))["balance"]
        assert after - before == bond  # the lapsed claim's bond, the buyer's
        heard: list[tuple[str, int, int]] = []
        while not ws.closed:
            try:
                msg = json.loads((await ws.receive(timeout=1)).data)
            except TimeoutError:
                break
            note = msg["params"]
            assert (
                note["subscription"] == sub
                and note["topic"] == "jobs"
                and not note["result"]["more"]
            )
            for j in note["result"]["jobs"]:
                assert j["job_id"] == job, j
                heard.append((j["status"], j["claims"], note["result"]["height"]))
        await ws.close()
        assert [(s, c) for s, c, _ in heard] == [("open", 0), ("claimed", 1), ("open", 1)], heard
        heights = [height for _, _, height in heard]  # each at the block that made it
        assert heights[0] == (await h.result("getjob", job))["submitted"] < heights[1] < heights[2]

    run_node(tmp_path, body, genesis_file=genesis)
