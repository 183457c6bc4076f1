"""The RPC methods. Each takes (CallContext, params model) and returns a JSON value.

Everything runs on the event loop thread, as the node requires for the chain.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ipaddress
import itertools
import json
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, StringConstraints

from chain.address import AddressError, decode_address, encode_address
from chain.block import Block
from chain.encoding import DecodeError
from chain.mempool import Mempool, MempoolReject
from chain.state import Contribution, StateError, account_key, contribution_key, reward_key
from chain.storage import BlockStatus, IndexRecord
from chain.tx import Transaction
from chain.validation import Verdict
from consensus.difficulty import block_work, median_time_past
from consensus.seal import check_shape
from node.rpc.blockcache import BlockJsonCache, block_reply
from node.rpc.encode import difficulty, header_json, hex256, template_json, tx_json
from node.rpc.errors import (
    CLIENT_INVALID_IP_OR_SUBNET,
    CLIENT_NODE_NOT_ADDED,
    CLIENT_NODE_NOT_CONNECTED,
    CLIENT_P2P_DISABLED,
    DESERIALIZATION_ERROR,
    INVALID_ADDRESS_OR_KEY,
    INVALID_PARAMETER,
    METHOD_NOT_FOUND,
    MISC_ERROR,
    VERIFY_ALREADY_IN_CHAIN,
    VERIFY_ERROR,
    VERIFY_REJECTED,
    RpcError,
)
from node.rpc.market import MarketMethods
from node.rpc.protocol import CallContext, NoParams, Params, Registry, dumps_strict
from node.template import build_template

if TYPE_CHECKING:
    from node.rpc.service import RpcService
    from node.service import Node

HashHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
HexStr = Annotated[str, StringConstraints(pattern=r"^([0-9a-fA-F]{2})*$")]
# Every integer a client sends is capped before use: 2^53 - 1 is the largest integer
# every JSON client reads exactly, and keeps arithmetic on it (skip + count, ms / 1000,
# now + bantime) within C and float ranges.
MAX_SAFE_INT = 2**53 - 1
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Height = Count
Shape = Annotated[
    list[Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]], Field(min_length=3, max_length=3)
]
VERSION = "0.1.0"
MAX_TESTMEMPOOLACCEPT = 25
MAX_HISTORY_PAGE = 1000
FEE_SAMPLE_BLOCKS = 10
IBD_TIP_AGE_S = 24 * 60 * 60
# Mempool rejections that come from the chain state (bitcoind's -25) vs policy (-26).
STATE_REJECTS = {MempoolReject.NONCE_TOO_LOW, MempoolReject.INSUFFICIENT_BALANCE}


# --- params ---------------------------------------------------------------------------


class HeightParams(Params):
    height: Height


class BlockParams(Params):
    blockhash: HashHex
    verbosity: Annotated[int, Field(ge=0, le=2)] = 1


class HeaderParams(Params):
    blockhash: HashHex
    verbose: bool = True


class WaitParams(Params):
    timeout: Count = 0  # milliseconds, 0 = no timeout


class AddressParams(Params):
    address: str


class ProofParams(Params):
    address: str
    kind: Literal["account", "contribution"] = "account"


class RawTxParams(Params):
    hexstring: HexStr


class TestAcceptParams(Params):
    rawtxs: Annotated[list[HexStr], Field(min_length=1, max_length=MAX_TESTMEMPOOLACCEPT)]


class TxidParams(Params):
    txid: HashHex
    verbose: bool = False


class TxParams(Params):
    txid: HashHex


class MempoolParams(Params):
    verbose: bool = False


class FeeParams(Params):
    blocks: Annotated[int, Field(ge=1, le=1008)] = 6


class HistoryParams(Params):
    address: str
    skip: Count = 0
    count: Annotated[int, Field(ge=1, le=MAX_HISTORY_PAGE)] = 100


class TemplateParams(Params):
    miner: str
    shape: Shape | None = None
    longpollid: str | None = None
    job: HashHex | None = None  # a job ``miner`` holds the claim of: the header names it


class SubmitParams(Params):
    hexdata: HexStr


class AddNodeParams(Params):
    node: str
    command: Literal["add", "remove", "onetry"]


class DisconnectParams(Params):
    address: str


class SetBanParams(Params):
    subnet: str
    command: Literal["add", "remove"]
    bantime: Count = 0
    absolute: bool = False


class HelpParams(Params):
    command: str | None = None


class SubscribeParams(Params):
    topic: Literal["newHeads", "newTransactions", "jobs"]


class UnsubscribeParams(Params):
    subscription: str


# bech32m in pure Python costs tens of microseconds an address, more than the rest of
# a getaccount call; wallets ask about the same few addresses over and over.
ADDRESS_CACHE = 4096
_decode_address = functools.lru_cache(ADDRESS_CACHE)(decode_address)
_encode_address = functools.lru_cache(ADDRESS_CACHE)(encode_address)


def json_type(schema: dict[str, Any]) -> str:
    """A param's JSON type for ``help``: "integer 0..9007199254740991", "string",
    '"add" | "remove"', "array of string | null"."""
    if "anyOf" in schema:
        return " | ".join(json_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = str(schema.get("type", "any"))
    if kind == "array" and "items" in schema:
        return f"array of {json_type(schema['items'])}"
    if "minimum" in schema or "maximum" in schema:
        return f"{kind} {schema.get('minimum', '')}..{schema.get('maximum', '')}"
    return kind


# --- the methods ----------------------------------------------------------------------


class Methods(MarketMethods):
    def __init__(self, node: Node, service: RpcService) -> None:
        self.node = node
        self.service = service
        self.net = node.network
        self.block_cache = BlockJsonCache()
        self._immature: tuple[bytes, dict[bytes, int]] = (b"", {})

    # helpers ------------------------------------------------------------------------

    def address(self, text: str, param: str = "address") -> bytes:
        try:
            return _decode_address(text, self.net.hrp)
        except AddressError as exc:
            raise RpcError(INVALID_ADDRESS_OR_KEY, f"invalid {param}: {exc}") from None

    def record(self, block_hash: str) -> IndexRecord:
        rec = self.node.chain.index.get(bytes.fromhex(block_hash))
        if rec is None or not rec.status & BlockStatus.DATA_STORED:
            raise RpcError(INVALID_ADDRESS_OR_KEY, "Block not found")
        return rec

    def is_active(self, rec: IndexRecord) -> bool:
        return self.node.chain.active_hash(rec.height) == rec.hash

    def confirmations(self, rec: IndexRecord) -> int:
        return self.node.chain.tip.height - rec.height + 1 if self.is_active(rec) else -1

    def mediantime(self, rec: IndexRecord) -> int:
        times = [r.timestamp for r in itertools.islice(self.node.chain.ancestors(rec.hash), 11)]
        return median_time_past(list(reversed(times)))

    def header_info(self, rec: IndexRecord, block: Block) -> dict[str, Any]:
        out = header_json(block.header, self.net)
        out["confirmations"] = self.confirmations(rec)
        out["chainwork"] = hex256(rec.cumulative_work)
        out["mediantime"] = self.mediantime(rec)
        out["ntx"] = len(block.txs)
        if rec.height == 0:
            out["previousblockhash"] = None
        if self.is_active(rec):
            nxt = self.node.chain.active_hash(rec.height + 1)
            if nxt is not None:
                out["nextblockhash"] = nxt.hex()
        return out

    def p2p(self) -> Any:
        for service in self.node.services:
            if getattr(service, "name", None) == "p2p":
                return service
        return None

    async def p2p_call(self, name: str, *args: Any) -> Any:
        p2p = self.p2p()
        if p2p is None:
            raise RpcError(CLIENT_P2P_DISABLED, "P2P networking is disabled on this node")
        result = getattr(p2p, name)(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def tx_location(self, txid: bytes) -> tuple[bytes, int, int] | None:
        return self.node.db.get_tx_location(txid)

    # chain --------------------------------------------------------------------------

    def getblockchaininfo(self, ctx: CallContext, p: NoParams) -> dict[str, Any]:
        """Summary of the active chain.

        Result: chain, blocks, headers, bestblockhash, difficulty, target, chainwork,
        mediantime, time, initialblockdownload, verificationprogress."""
        chain = self.node.chain
        tip = chain.tip
        headers = max(rec.height for rec in chain.index.values())
        return {
            "chain": self.net.name,
            "blocks": tip.height,
            "headers": headers,
            "bestblockhash": tip.hash.hex(),
            "difficulty": difficulty(self.net, chain.tip_header.target),
            "target": hex256(chain.tip_header.target),
            "chainwork": hex256(tip.cumulative_work),
            "mediantime": self.mediantime(tip),
            "time": tip.timestamp,
            "initialblockdownload": tip.timestamp < time.time() - IBD_TIP_AGE_S,
            "verificationprogress": tip.height / headers if headers else 1.0,
        }

    def getblockcount(self, ctx: CallContext, p: NoParams) -> int:
        """Height of the active tip."""
        return self.node.chain.tip.height

    def getbestblockhash(self, ctx: CallContext, p: NoParams) -> str:
        """Hash of the active tip."""
        return self.node.chain.tip.hash.hex()

    def getblockhash(self, ctx: CallContext, p: HeightParams) -> str:
        """Hash of the active block at ``height``; -8 when out of range."""
        tip = self.node.chain.tip.height
        h = self.node.chain.active_hash(p.height) if p.height <= tip else None
        if h is None:
            raise RpcError(INVALID_PARAMETER, "Block height out of range")
        return h.hex()

    def getblock(self, ctx: CallContext, p: BlockParams) -> Any:
        """A block: verbosity 0 hex, 1 header fields and txids, 2 with transactions."""
        rec = self.record(p.blockhash)
        if p.verbosity == 0:
            return self.node.chain.get_block(rec.hash).to_bytes().hex()
        fixed, txs = self.block_cache.get(
            (rec.hash, p.verbosity), lambda: self._block_parts(rec, p.verbosity)
        )
        chain = self.node.chain
        live: dict[str, Any] = {"confirmations": -1}
        if chain.active_hash(rec.height) == rec.hash:
            live["confirmations"] = chain.tip.height - rec.height + 1
            nxt = chain.active_hash(rec.height + 1)
            if nxt is not None:
                live["nextblockhash"] = nxt.hex()
        return block_reply(fixed, txs, live)

    def _block_parts(self, rec: IndexRecord, verbosity: int) -> tuple[str, str]:
        """getblock's fields that never change for this block, as JSON text."""
        block = self.node.chain.get_block(rec.hash)
        out = self.header_info(rec, block)
        out.pop("confirmations")
        out.pop("nextblockhash", None)
        out["size"] = len(block.to_bytes())
        if verbosity == 1:
            txs: list[Any] = [tx.txid.hex() for tx in block.txs]
        else:
            txs = [tx_json(tx, self.net) for tx in block.txs]
        return dumps_strict(out)[1:-1], dumps_strict(txs)

    def getblockheader(self, ctx: CallContext, p: HeaderParams) -> Any:
        """A header: verbose=false gives the encoded header as hex."""
        rec = self.record(p.blockhash)
        block = self.node.chain.get_block(rec.hash)
        if not p.verbose:
            return block.header.to_bytes().hex()
        return self.header_info(rec, block)

    def getchaintips(self, ctx: CallContext, p: NoParams) -> list[dict[str, Any]]:
        """Every block without children: height, hash, branchlen, status."""
        chain = self.node.chain
        parents = {rec.parent for rec in chain.index.values() if rec.height > 0}
        parents.discard(chain.tip.hash)  # the active tip is a tip even with (invalid) children
        tips: list[dict[str, Any]] = []
        for rec in chain.index.values():
            if rec.hash in parents:
                continue
            branchlen = 0
            for anc in chain.ancestors(rec.hash):
                if chain.active_hash(anc.height) == anc.hash:
                    break
                branchlen += 1
            if branchlen == 0:
                status = "active"
            elif rec.status & BlockStatus.INVALID:
                status = "invalid"
            elif rec.status & BlockStatus.VALID:
                status = "valid-fork"
            elif rec.status & BlockStatus.DATA_STORED:
                status = "valid-headers"
            else:
                status = "headers-only"
            tips.append(
                {"height": rec.height, "hash": rec.hash.hex(), "branchlen": branchlen,
                 "status": status}
            )  # fmt: skip
        tips.sort(key=lambda t: (t["status"] != "active", -t["height"]))
        return tips

    def getdifficulty(self, ctx: CallContext, p: NoParams) -> float:
        """Difficulty of the tip: max_target / target."""
        return difficulty(self.net, self.node.chain.tip_header.target)

    async def waitfornewblock(self, ctx: CallContext, p: WaitParams) -> dict[str, Any]:
        """Wait for a new tip (timeout in ms, 0 = none); returns {hash, height}."""
        start = self.node.chain.tip.hash
        timeout = p.timeout / 1000 if p.timeout else None
        await self.service.wait_change(lambda: self.node.chain.tip.hash != start, timeout)
        tip = self.node.chain.tip
        return {"hash": tip.hash.hex(), "height": tip.height}

    # accounts and transactions ------------------------------------------------------

    def getaccount(self, ctx: CallContext, p: AddressParams) -> dict[str, Any]:
        """Balance, immature mined rewards, confirmed nonce and the next pending nonce."""
        addr = self.address(p.address)
        acct = self.node.account(addr)
        tip = self.node.chain.tip.height
        immature = self.immature_rewards().get(addr, 0)
        return {
            "address": _encode_address(self.net.hrp, addr),
            "balance": acct.balance,
            "immature": immature,
            "nonce": acct.nonce,
            "pending_nonce": self.node.mempool.pending_nonce(addr),
            "height": tip,
        }

    def immature_rewards(self) -> dict[bytes, int]:
        """Miner -> rewards not yet mature at the tip: read once per tip (the last
        coinbase_maturity "R" entries), not once per getaccount."""
        tip = self.node.chain.tip
        if self._immature[0] != tip.hash:
            out: dict[bytes, int] = {}
            low = max(1, tip.height - self.net.subsidy.coinbase_maturity + 1)
            for height in range(low, tip.height + 1):
                raw = self.node.chain.state_get(reward_key(height))
                if raw is not None:
                    out[raw[:20]] = out.get(raw[:20], 0) + int.from_bytes(raw[20:28], "big")
            self._immature = (tip.hash, out)
        return self._immature[1]

    def getproof(self, ctx: CallContext, p: ProofParams) -> dict[str, Any]:
        """State proof of an account (or contribution) against the tip's state root."""
        addr = self.address(p.address)
        key = account_key(addr) if p.kind == "account" else contribution_key(addr)
        chain = self.node.chain
        value = chain.state_get(key)
        proof = chain.tree.prove(key)
        return {
            "key": key.hex(),
            "value": None if value is None else value.hex(),
            "proof": proof.to_bytes().hex(),
            "state_root": chain.tip_header.state_root.hex(),
            "height": chain.tip.height,
            "blockhash": chain.tip.hash.hex(),
        }

    def decode_tx(self, hexstring: str) -> Transaction:
        try:
            return Transaction.from_bytes(bytes.fromhex(hexstring))
        except (DecodeError, ValueError) as exc:
            raise RpcError(DESERIALIZATION_ERROR, f"TX decode failed: {exc}") from None

    def sendrawtransaction(self, ctx: CallContext, p: RawTxParams) -> str:
        """Submit a signed transaction (hex); returns its txid."""
        tx = self.decode_tx(p.hexstring)
        if self.tx_location(tx.txid) is not None:
            raise RpcError(VERIFY_ALREADY_IN_CHAIN, "transaction already in block chain")
        result = self.node.submit_transaction(tx)
        if result.reject is None or result.reject is MempoolReject.ALREADY_KNOWN:
            return tx.txid.hex()
        code = VERIFY_ERROR if result.reject in STATE_REJECTS else VERIFY_REJECTED
        message = result.reject.value + (f" ({result.detail})" if result.detail else "")
        raise RpcError(code, message)

    def testmempoolaccept(self, ctx: CallContext, p: TestAcceptParams) -> list[dict[str, Any]]:
        """Would these txs (applied in order) enter the pool? Nothing is added.

        Checked against a scratch pool holding the pooled txs of the same senders;
        eviction for room in a full pool is not simulated."""
        pool = self.node.mempool
        txs = [self.decode_tx(h) for h in p.rawtxs]
        senders = {tx.sender for tx in txs}
        scratch = Mempool(
            pool.chain_id, self.node._account, max_bytes=pool.max_bytes, min_fee=pool.min_fee
        )
        now = int(time.time())
        for txid in pool.txids():
            old = pool.get(txid)
            if old is not None and old.sender in senders:
                scratch.add(old, now)
        out = []
        for tx in txs:
            entry: dict[str, Any] = {"txid": tx.txid.hex()}
            if self.tx_location(tx.txid) is not None:
                entry.update(allowed=False, reject_reason="txn-already-in-chain")
            elif tx.txid in pool:
                entry.update(allowed=False, reject_reason=MempoolReject.ALREADY_KNOWN.value)
            else:
                r = scratch.add(tx, now)
                if r.ok:
                    entry.update(allowed=True, fee=tx.fee, size=len(tx.to_bytes()))
                else:
                    assert r.reject is not None
                    entry.update(allowed=False, reject_reason=r.reject.value, detail=r.detail)
            out.append(entry)
        return out

    def _find_tx(self, txid: bytes) -> tuple[Transaction, IndexRecord | None]:
        tx = self.node.mempool.get(txid)
        if tx is not None:
            return tx, None
        loc = self.tx_location(txid)
        if loc is None:
            raise RpcError(INVALID_ADDRESS_OR_KEY, "No such mempool or blockchain transaction")
        block_hash, _, pos = loc
        block = self.node.chain.get_block(block_hash)
        return block.txs[pos], self.node.chain.index[block_hash]

    def _tx_info(self, tx: Transaction, rec: IndexRecord | None) -> dict[str, Any]:
        out = tx_json(tx, self.net)
        out["hex"] = tx.to_bytes().hex()
        if rec is None:
            out.update(
                confirmations=0, blockhash=None, height=None, blocktime=None, in_mempool=True
            )
        else:
            out.update(
                confirmations=self.confirmations(rec), blockhash=rec.hash.hex(),
                height=rec.height, blocktime=rec.timestamp, in_mempool=False,
            )  # fmt: skip
            # The receipt: a job tx whose market rule failed is included as failed.
            failure = self.node.db.get_tx_failure(tx.txid)
            out.update(status="failed" if failure else "ok", failure=failure or None)
        return out

    def getrawtransaction(self, ctx: CallContext, p: TxidParams) -> Any:
        """A transaction from the mempool or the tx index: hex, or JSON when verbose."""
        tx, rec = self._find_tx(bytes.fromhex(p.txid))
        return self._tx_info(tx, rec) if p.verbose else tx.to_bytes().hex()

    def gettransaction(self, ctx: CallContext, p: TxParams) -> dict[str, Any]:
        """A transaction with confirmations, block hash and height (0 / null in the mempool)."""
        tx, rec = self._find_tx(bytes.fromhex(p.txid))
        return self._tx_info(tx, rec)

    def getrawmempool(self, ctx: CallContext, p: MempoolParams) -> Any:
        """Txids in the pool; verbose: txid -> {fee, size, sender, nonce, pending}."""
        pool = self.node.mempool
        if not p.verbose:
            return [t.hex() for t in pool.txids()]
        out = {}
        for txid in pool.txids():
            tx = pool.get(txid)
            if tx is None:
                continue
            out[txid.hex()] = {
                "fee": tx.fee,
                "size": len(tx.to_bytes()),
                "sender": encode_address(self.net.hrp, tx.sender),
                "nonce": tx.nonce,
                "pending": pool.is_pending(txid),
            }
        return out

    def getmempoolinfo(self, ctx: CallContext, p: NoParams) -> dict[str, Any]:
        """Pool size, bytes, usage, caps, min_fee (to enter now), pending and queued counts."""
        return {"loaded": True, **self.node.mempool.info()}

    def estimatefee(self, ctx: CallContext, p: FeeParams) -> dict[str, Any]:
        """A fee (base units, absolute per tx) likely to confirm within ``blocks``.

        The larger of the pool's current minimum fee and a percentile of the fees in
        the last 10 blocks (median for 6+ blocks, higher for fewer)."""
        chain = self.node.chain
        fees: list[int] = []
        for rec in itertools.islice(chain.ancestors(chain.tip.hash), FEE_SAMPLE_BLOCKS):
            if rec.height == 0:
                break
            fees.extend(tx.fee for tx in chain.get_block(rec.hash).txs)
        floor = self.node.mempool.current_min_fee()
        fee = floor
        if fees:
            fees.sort()
            pct = 0.5 if p.blocks >= 6 else 0.9 - 0.08 * (p.blocks - 1)
            fee = max(floor, fees[min(len(fees) - 1, int(pct * len(fees)))])
        return {"fee": fee, "min_fee": floor, "blocks": p.blocks, "sample_txs": len(fees)}

    def getaddresshistory(self, ctx: CallContext, p: HistoryParams) -> dict[str, Any]:
        """Active-chain txs sending from or to an address, oldest first, paged."""
        addr = self.address(p.address)
        rows = list(
            itertools.islice(self.node.db.iter_address_txs(addr), p.skip, p.skip + p.count + 1)
        )
        more = len(rows) > p.count
        txs = []
        for height, pos, txid in rows[: p.count]:
            txs.append({
                "txid": txid.hex(),
                "height": height,
                "position": pos,
                "blockhash": (self.node.chain.active_hash(height) or b"").hex(),
            })  # fmt: skip
        return {
            "address": encode_address(self.net.hrp, addr),
            "txs": txs,
            "next_skip": p.skip + p.count if more else None,
        }

    # mining -------------------------------------------------------------------------

    async def getblocktemplate(self, ctx: CallContext, p: TemplateParams) -> dict[str, Any]:
        """A block template for ``miner`` (long-poll with ``longpollid``)."""
        miner = self.address(p.miner, "miner")
        if p.shape is None:
            shape = (self.net.filler.m, self.net.filler.k, self.net.filler.n)
        else:
            m, k, n = p.shape
            check = check_shape(self.net.pouw, m, k, n)
            if not check.ok:
                assert check.reason is not None
                raise RpcError(
                    INVALID_PARAMETER, f"invalid parameter 'shape': {check.reason.value}"
                )
            shape = (m, k, n)
        if p.longpollid is not None:
            wanted = p.longpollid
            await self.service.wait_change(lambda: self.service.longpollid() != wanted, None)
        chain = self.node.chain
        ref = None
        if p.job is not None:
            ref, shape = self.claimed_job(bytes.fromhex(p.job), miner)
        try:
            template = build_template(
                chain, miner, self.node.mempool.select(), shape, int(time.time()), job=ref
            )
        except StateError as exc:
            raise RpcError(INVALID_PARAMETER, f"invalid parameter 'job': {exc}") from None
        out = template_json(template, self.net)
        out["longpollid"] = self.service.longpollid()
        out["mintime"] = self.mediantime(chain.tip) + 1
        out["curtime"] = template.header.timestamp
        out["fees"] = sum(tx.fee for tx in template.txs)
        return out

    def submitblock(self, ctx: CallContext, p: SubmitParams) -> str | None:
        """Submit a mined block (hex). BIP22: null, "duplicate", "inconclusive" or a reason."""
        try:
            block = Block.from_bytes(bytes.fromhex(p.hexdata))
        except (DecodeError, ValueError) as exc:
            raise RpcError(DESERIALIZATION_ERROR, f"Block decode failed: {exc}") from None
        result = self.node.submit_block(block)
        if result.duplicate:
            return "duplicate"
        if result.check.verdict is Verdict.DEFER:
            return "inconclusive"
        if not result.check.ok:
            reason = result.check.reason
            return reason.value if reason is not None else "rejected"
        if any(b.hash == block.hash for b in result.connected):
            return None
        return "inconclusive"  # valid, stored on a side chain

    def getmininginfo(self, ctx: CallContext, p: NoParams) -> dict[str, Any]:
        """Height, difficulty, target, network rate estimate, pool size, own miner stats."""
        chain = self.node.chain
        rate = self.network_rate()
        miner = self.node.miner
        return {
            "chain": self.net.name,
            "blocks": chain.tip.height,
            "difficulty": difficulty(self.net, chain.tip_header.target),
            "target": hex256(chain.tip_header.target),
            "networkmultiplyaddsps": rate,
            "pooledtx": len(self.node.mempool),
            "mining": miner is not None,
            "localmultiplyaddsps": miner.counters.multiply_adds_per_s() if miner else 0.0,
            "localproducts": miner.counters.products if miner else 0,
            "localmultiplyadds": miner.counters.multiply_adds if miner else 0,
            "localjobmultiplyadds": miner.counters.job_multiply_adds if miner else 0,
            "market": self.local_market() if miner else None,
            "blocksfound": miner.counters.blocks_accepted if miner else 0,
            "filler": [self.net.filler.m, self.net.filler.k, self.net.filler.n],
            "blockwork": hex256(block_work(chain.tip_header.target)),
        }

    # compute market (jobs: node/rpc/market.py) -------------------------------------

    def getcontribution(self, ctx: CallContext, p: AddressParams) -> dict[str, Any]:
        """The contribution ledger entry of an address (blocks, work, multiply-adds...)."""
        addr = self.address(p.address)
        c = Contribution.from_bytes(self.node.chain.state_get(contribution_key(addr)))
        return {
            "address": encode_address(self.net.hrp, addr),
            "blocks": c.blocks,
            "work": c.work,
            "multiply_adds": c.multiply_adds,
            "delivered": c.delivered,
            "bounties": c.bounties,
            "challenges_lost": c.challenges_lost,
        }

    # network and control -------------------------------------------------------------

    async def getnetworkinfo(self, ctx: CallContext, p: NoParams) -> dict[str, Any]:
        """Version, network, whether P2P runs and the connection count."""
        p2p = self.p2p()
        conns = await self.p2p_call("connection_count") if p2p is not None else 0
        return {
            "version": VERSION,
            "subversion": f"/pouw:{VERSION}/",
            "network": self.net.name,
            "chain_id": self.net.chain_id,
            "networkactive": p2p is not None,
            "connections": conns,
            "relayfee": self.node.mempool.min_fee,
            "warnings": "",
        }

    async def getpeerinfo(self, ctx: CallContext, p: NoParams) -> Any:
        """Connected peers (empty without P2P)."""
        return await self.p2p_call("peer_info") if self.p2p() is not None else []

    async def getconnectioncount(self, ctx: CallContext, p: NoParams) -> int:
        """Number of connected peers (0 without P2P)."""
        return await self.p2p_call("connection_count") if self.p2p() is not None else 0

    async def addnode(self, ctx: CallContext, p: AddNodeParams) -> None:
        """Add, remove or try once a peer HOST:PORT (admin)."""
        try:
            await self.p2p_call("add_node", p.node, p.command)
        except KeyError:
            raise RpcError(CLIENT_NODE_NOT_ADDED, "Node has not been added") from None
        except ValueError as exc:
            raise RpcError(INVALID_PARAMETER, f"invalid parameter 'node': {exc}") from None

    async def disconnectnode(self, ctx: CallContext, p: DisconnectParams) -> None:
        """Disconnect the peer at HOST:PORT (admin)."""
        if not await self.p2p_call("disconnect_node", p.address):
            raise RpcError(CLIENT_NODE_NOT_CONNECTED, "Node not found in connected nodes")

    async def setban(self, ctx: CallContext, p: SetBanParams) -> None:
        """Ban (add) or unban (remove) an IP address (not a subnet); bantime seconds, or a
        unix time if absolute, 0 = the node's default (admin)."""
        try:  # the P2P service bans single addresses, so a subnet is refused too
            ip = str(ipaddress.ip_address(p.subnet))
        except ValueError:
            raise RpcError(
                CLIENT_INVALID_IP_OR_SUBNET, f"Error: Invalid IP address: {p.subnet!r}"
            ) from None
        seconds = p.bantime - int(time.time()) if p.absolute else p.bantime
        if p.absolute and seconds <= 0:
            raise RpcError(INVALID_PARAMETER, "invalid parameter 'bantime': in the past")
        try:
            ok = await self.p2p_call("set_ban", ip, p.command, seconds or None)
        except ValueError as exc:
            raise RpcError(CLIENT_INVALID_IP_OR_SUBNET, f"invalid IP/subnet: {exc}") from None
        if ok is False and p.command == "remove":
            raise RpcError(CLIENT_INVALID_IP_OR_SUBNET, "Unban failed: not banned")

    async def listbanned(self, ctx: CallContext, p: NoParams) -> Any:
        """Banned addresses and subnets (empty without P2P)."""
        return await self.p2p_call("list_banned") if self.p2p() is not None else []

    async def clearbanned(self, ctx: CallContext, p: NoParams) -> None:
        """Remove every ban (admin)."""
        await self.p2p_call("clear_banned")

    def uptime(self, ctx: CallContext, p: NoParams) -> int:
        """Seconds since the node started."""
        return int(time.time() - self.node.started)

    def stop(self, ctx: CallContext, p: NoParams) -> str:
        """Shut the node down cleanly (admin)."""
        asyncio.get_running_loop().call_soon(self.node.request_stop)
        return "pouw node stopping"

    def help(self, ctx: CallContext, p: HelpParams) -> Any:
        """Without a command: every method by category. With one: its params and doc."""
        methods = self.service.registry.methods
        if p.command is None:
            out: dict[str, list[str]] = {}
            for each in methods.values():
                out.setdefault(each.category, []).append(each.name)
            return out
        m = methods.get(p.command)
        if m is None:
            raise RpcError(METHOD_NOT_FOUND, f"help: unknown command: {p.command}")
        params = []
        schema = m.params.model_json_schema()["properties"]
        for name, f in m.params.model_fields.items():
            params.append({
                "name": name,
                "type": json_type(schema[name]),
                "required": f.is_required(),
                "default": None if f.is_required() else f.default,
            })  # fmt: skip
        return {"method": m.name, "category": m.category, "admin": m.admin,
                "params": params, "doc": m.doc}  # fmt: skip

    # subscriptions (WebSocket only) ---------------------------------------------------

    def subscribe(self, ctx: CallContext, p: SubscribeParams) -> str:
        """Subscribe to newHeads, newTransactions or jobs (WebSocket /ws only)."""
        if ctx.session is None:
            raise RpcError(MISC_ERROR, "subscriptions need the WebSocket endpoint /ws")
        return ctx.session.subscribe(p.topic)

    def unsubscribe(self, ctx: CallContext, p: UnsubscribeParams) -> bool:
        """Cancel a subscription by id (WebSocket /ws only)."""
        if ctx.session is None:
            raise RpcError(MISC_ERROR, "subscriptions need the WebSocket endpoint /ws")
        return ctx.session.unsubscribe(p.subscription)


# The chain category's calls that read and answer at once (the dashboard serves them).
CHAIN_READS = (
    "getblockchaininfo",
    "getblockcount",
    "getbestblockhash",
    "getblockhash",
    "getblock",
    "getblockheader",
    "getchaintips",
    "getdifficulty",
)


def register_all(registry: Registry, m: Methods) -> None:
    chain = [*CHAIN_READS, "waitfornewblock"]
    accounts = [
        "getaccount",
        "getproof",
        "sendrawtransaction",
        "testmempoolaccept",
        "getrawtransaction",
        "gettransaction",
        "getrawmempool",
        "getmempoolinfo",
        "estimatefee",
        "getaddresshistory",
    ]
    mining = ["getblocktemplate", "submitblock", "getmininginfo"]
    market = ["getjob", "listjobs", "getmarketinfo", "getcontribution"]
    network = [
        "getnetworkinfo",
        "getpeerinfo",
        "getconnectioncount",
        "addnode",
        "disconnectnode",
        "setban",
        "listbanned",
        "clearbanned",
    ]
    control = ["uptime", "stop", "help", "subscribe", "unsubscribe"]
    admin = {"addnode", "disconnectnode", "setban", "clearbanned", "listbanned", "getpeerinfo",
             "stop", "getblocktemplate", "submitblock"}  # fmt: skip
    for category, names in (
        ("chain", chain),
        ("accounts", accounts),
        ("mining", mining),
        ("market", market),
        ("network", network),
        ("control", control),
    ):
        for name in names:
            fn = getattr(m, name)
            hints = inspect.get_annotations(fn, eval_str=True)
            registry.add(name, fn, hints["p"], category=category, admin=name in admin)
