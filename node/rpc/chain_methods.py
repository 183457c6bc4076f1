"""RPC methods that read the chain: tip, blocks, headers, chain tips, waitfornewblock."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from chain.block import Block
from chain.index_record import BlockStatus, IndexRecord
from chain.tx import Transaction
from node.rpc.base import MethodsBase
from node.rpc.blockcache import BlockJsonCache, block_reply
from node.rpc.encode import difficulty, header_json, hex256, tx_json
from node.rpc.errors import INVALID_ADDRESS_OR_KEY, INVALID_PARAMETER, RpcError
from node.rpc.jsoncodec import RawJSON, dumps_strict
from node.rpc.params import BlockParams, HeaderParams, HeightParams, WaitParams
from node.rpc.protocol import CallContext, NoParams
from node.rpc.tipcache import TipMemo

if TYPE_CHECKING:
    from node.rpc.service import RpcService
    from node.service import Node

IBD_TIP_AGE_S = 24 * 60 * 60
# getblock answers kept whole for the current tip: explorers and wallets ask for the
# last few blocks over and over.
BLOCKS_AT_TIP = 256
BLOCKS_AT_TIP_BYTES = 32 * 2**20


class ChainMethods(MethodsBase):
    def __init__(self, node: Node, service: RpcService) -> None:
        super().__init__(node, service)
        self.block_cache = BlockJsonCache()
        self._blocks_at_tip: TipMemo[RawJSON] = TipMemo(BLOCKS_AT_TIP, BLOCKS_AT_TIP_BYTES)

    def record(self, block_hash: str) -> IndexRecord:
        rec = self.node.chain.index.get(bytes.fromhex(block_hash))
        if rec is None or not rec.status & BlockStatus.DATA_STORED:
            raise RpcError(INVALID_ADDRESS_OR_KEY, "Block not found")
        return rec

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
        # The whole answer is kept for the current tip (confirmations and nextblockhash
        # change only with it), the block's own fields by block hash for good.
        chain = self.node.chain
        active = chain.active_hash(rec.height) == rec.hash
        # (verbosity 2's receipts are known for an active block only: kept apart)
        key = (rec.hash, p.verbosity, active and p.verbosity == 2)
        tip = chain.tip.hash
        reply = self._blocks_at_tip.get(tip, key)
        if reply is not None:
            return reply
        fixed, txs = self.block_cache.get(key, lambda: self._block_parts(rec, p.verbosity, active))
        live: dict[str, Any] = {"confirmations": -1}
        if active:
            live["confirmations"] = chain.tip.height - rec.height + 1
            nxt = chain.active_hash(rec.height + 1)
            if nxt is not None:
                live["nextblockhash"] = nxt.hex()
        reply = block_reply(fixed, txs, live)
        self._blocks_at_tip.put(tip, key, reply, len(reply))
        return reply

    def _block_parts(self, rec: IndexRecord, verbosity: int, active: bool) -> tuple[str, str]:
        """getblock's fields that never change for this block while it stays ``active``
        or not, as JSON text."""
        block = self.node.chain.get_block(rec.hash)
        out = self.header_info(rec, block)
        out.pop("confirmations")
        out.pop("nextblockhash", None)
        out["size"] = len(block.to_bytes())
        if verbosity == 1:
            txs: list[Any] = [tx.txid.hex() for tx in block.txs]
        else:
            txs = [self._tx_with_receipt(tx, rec.hash if active else None) for tx in block.txs]
        return dumps_strict(out)[1:-1], dumps_strict(txs)

    def _tx_with_receipt(self, tx: Transaction, block_hash: bytes | None) -> dict[str, Any]:
        """A block's transaction with its receipt as ``gettransaction`` gives it (``status``
        "ok" or "failed", ``failure``), both null for a block off the active chain (its
        outcome there is not kept)."""
        out = tx_json(tx, self.net)
        receipt = self.node.db.get_tx_receipt(tx.txid) if block_hash is not None else None
        if receipt is None or receipt[0] != block_hash:
            out.update(status=None, failure=None)
        else:
            out.update(status="failed" if receipt[1] else "ok", failure=receipt[1] or None)
        return out

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
        """Wait for a new tip (timeout in ms, 0 = the longest wait, MAX_WAIT_MS = 300000;
        more is refused); returns {hash, height}: the same tip when none came meanwhile."""
        start = self.node.chain.tip.hash
        timeout = p.timeout / 1000 if p.timeout else None
        await self.service.wait_change(lambda: self.node.chain.tip.hash != start, timeout, ctx)
        tip = self.node.chain.tip
        return {"hash": tip.hash.hex(), "height": tip.height}
