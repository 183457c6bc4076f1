"""Rebuild the chain state from the stored blocks (``pouw node --reindex``).

Keeps block bodies and the block index, throws away state, undo data, the active
chain and every validity verdict, then reconnects from genesis along the stored
chain with the most work, re-running the full state transition of every block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from chain.block import Block
from chain.chainstate import ChainState, ProcessResult
from chain.genesis import genesis_block, genesis_changes
from chain.network import Network
from chain.storage import BlockStatus, ChainDB, IndexRecord
from chain.validation import VALID

log = logging.getLogger("pouw.chain")

_STORED = BlockStatus.HEADER_VALID | BlockStatus.DATA_STORED


def reindex(db: ChainDB, network: Network) -> ChainState:
    records = list(db.iter_index())
    genesis = genesis_block(network)
    old_active = [
        db.active_hash_at(h) for h in range(max((r.height for r in records), default=0) + 1)
    ]
    if db.get_genesis() not in (None, genesis.hash):
        raise ValueError("the datadir holds another network's chain; --reindex cannot fix that")
    with db.atomic(sync=True) as batch:
        for key, _ in db.iter_state():
            batch.delete_state(key)
        for block_hash in filter(None, old_active):
            raw = db.get_block(block_hash)
            if raw is None:
                continue
            block = Block.from_bytes(raw)
            for pos, tx in enumerate(block.txs):
                batch.delete_tx_location(tx.txid, block.height, pos, (tx.sender, tx.recipient))
        for rec in records:
            batch.delete_undo(rec.hash)
            batch.delete_active_hash(rec.height)
            status = _STORED | (BlockStatus.VALID if rec.hash == genesis.hash else 0)
            batch.put_index(
                IndexRecord(
                    rec.hash,
                    rec.parent,
                    rec.height,
                    rec.cumulative_work,
                    BlockStatus(status),
                    rec.timestamp,
                )  # fmt: skip
            )
        for key, value in genesis_changes(network).items():
            if value is not None:
                batch.put_state(key, value)
        batch.set_active_hash(0, genesis.hash)
        batch.set_tip(genesis.hash)
        batch.set_genesis(genesis.hash)
    chain = ChainState(db, network)
    best = max(records, key=lambda r: r.cumulative_work, default=None)
    total = best.height if best else 0
    log.info("reindex: %d stored blocks, best chain height %d", len(records), total)
    started = last_log = time.monotonic()
    result = ProcessResult(VALID)
    for rec in sorted(records, key=lambda r: -r.cumulative_work):
        if chain.tip.cumulative_work >= rec.cumulative_work:
            break
        chain.activate(rec, result, progress=_progress(total, started, last_log))
    log.info("reindex done: height %d in %.1fs", chain.tip.height, time.monotonic() - started)
    return chain


def _progress(total: int, started: float, last_log: float) -> Callable[[int], None]:
    state = {"last": last_log}

    def report(height: int) -> None:
        now = time.monotonic()
        if now - state["last"] < 5 and height != total:
            return
        state["last"] = now
        rate = height / max(now - started, 1e-9)
        eta = (total - height) / rate if rate > 0 else float("inf")
        log.info(
            "reindex progress=%.1f%% height=%d/%d rate=%.0f blocks/s eta=%.0fs",
            100.0 * height / max(total, 1), height, total, rate, eta,
        )  # fmt: skip

    return report
