"""RPC methods of accounts and transactions: balances, proofs, the mempool, fees, history."""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

from chain.address import encode_address
from chain.encoding import DecodeError
from chain.index_record import IndexRecord
from chain.mempool import Mempool
from chain.mempool_result import MempoolReject
from chain.state import Contribution, account_key, contribution_key, reward_key
from chain.tx import Transaction
from node.rpc.base import MethodsBase, cached_encode_address
from node.rpc.encode import tx_json
from node.rpc.errors import (
    DESERIALIZATION_ERROR,
    INVALID_ADDRESS_OR_KEY,
    VERIFY_ALREADY_IN_CHAIN,
    VERIFY_ERROR,
    VERIFY_REJECTED,
    RpcError,
)
from node.rpc.jsoncodec import RawJSON, dumps_strict
from node.rpc.params import (
    AddressParams,
    FeeParams,
    HistoryParams,
    MempoolParams,
    ProofParams,
    RawTxParams,
    TestAcceptParams,
    TxidParams,
    TxParams,
)
from node.rpc.protocol import CallContext, NoParams
from node.rpc.tipcache import TipMemo

if TYPE_CHECKING:
    from node.rpc.service import RpcService
    from node.service import Node

FEE_SAMPLE_BLOCKS = 10
ACCOUNTS_AT_TIP = 4096  # getaccount answers kept per tip (~200 bytes each)
# Mempool rejections that come from the chain state (bitcoind's -25) vs policy (-26).
STATE_REJECTS = {MempoolReject.NONCE_TOO_LOW, MempoolReject.INSUFFICIENT_BALANCE}


# testmempoolaccept's reason for a transaction given twice in one call
DUPLICATE_IN_REQUEST = "txn-duplicate-in-request"


class AccountMethods(MethodsBase):
    def __init__(self, node: Node, service: RpcService) -> None:
        super().__init__(node, service)
        self._immature: tuple[bytes, dict[bytes, int]] = (b"", {})
        # address -> (encoded fields up to pending_nonce, confirmed nonce, the rest)
        self._accounts_at_tip: TipMemo[tuple[str, int, str]] = TipMemo(ACCOUNTS_AT_TIP)

    def tx_location(self, txid: bytes) -> tuple[bytes, int, int] | None:
        return self.node.db.get_tx_location(txid)

    def getaccount(self, ctx: CallContext, p: AddressParams) -> RawJSON:
        """Balance, immature mined rewards, confirmed nonce, the next pending nonce and
        what the pending txs spend."""
        # Result: {address, balance, immature, nonce, pending_nonce, pending_spend,
        # height}. All but the mempool's two are read and encoded once per tip and address.
        addr = self.address(p.address)
        tip = self.node.chain.tip
        known = self._accounts_at_tip.get(tip.hash, addr)
        if known is None:
            acct = self.node.account(addr)
            fixed = {
                "address": cached_encode_address(self.net.hrp, addr),
                "balance": acct.balance,
                "immature": self.immature_rewards().get(addr, 0),
                "nonce": acct.nonce,
            }
            head = dumps_strict(fixed)[:-1] + ',"pending_nonce":'
            known = (head, acct.nonce, f',"height":{tip.height}}}')
            self._accounts_at_tip.put(tip.hash, addr, known)
        head, nonce, tail = known
        pool = self.node.mempool
        pending = pool.pending_nonce(addr, confirmed=nonce)
        spend = pool.pending_spend(addr) if pending > nonce else 0
        return RawJSON(head + f'{pending},"pending_spend":{spend}' + tail)

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
        result = self.node.submit_transaction(tx, local=True)
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
        seen: set[bytes] = set()
        for tx in txs:
            entry: dict[str, Any] = {"txid": tx.txid.hex()}
            if tx.txid in seen:  # checked once, where it first appears (nothing was added)
                entry.update(
                    allowed=False, reject_reason=DUPLICATE_IN_REQUEST,
                    detail="the same transaction appears earlier in this request: send it once",
                )  # fmt: skip
                out.append(entry)
                continue
            seen.add(tx.txid)
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
            failure = self.node.db.get_tx_failure(txid)
            txs.append({
                "txid": txid.hex(),
                "height": height,
                "position": pos,
                "blockhash": (self.node.chain.active_hash(height) or b"").hex(),
                "status": None if failure is None else "failed" if failure else "ok",
                "failure": failure or None,
            })  # fmt: skip
        return {
            "address": encode_address(self.net.hrp, addr),
            "txs": txs,
            "next_skip": p.skip + p.count if more else None,
        }

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
