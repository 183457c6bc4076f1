"""Rebuild the chain state from the stored blocks (``pouw node --reindex``).

Keeps the block bodies and rebuilds everything else from them: the block index (from
the stored bodies that pass their hash check, so index records lost to damage come
back and damaged bodies go), state, undo data, the active chain and the transaction
index, all in one synced batch that also sets the reindex marker; then it reconnects
from genesis along the stored chain with the most work, re-running the full state
transition of every block.

Resumable: the marker stays until the rebuild is done, so a start after a crash
finishes it (:func:`resume`). A stored block that is missing or damaged ends its
branch (ChainState drops it); the rebuild keeps what is intact and peers supply
the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from chain.block import Block
from chain.chainstate import ChainState, ChainStateError
from chain.genesis import genesis_block, genesis_changes
from chain.header import Header
from chain.index_record import BlockStatus, IndexRecord
from chain.integrity import decode_checked
from chain.network import Network
from chain.storage import ChainDB, CorruptionError
from chain.storage_keys import DERIVED_PREFIXES, PREFIX_INDEX
from consensus.difficulty import block_work

log = logging.getLogger("pouw.chain")

_STORED = BlockStatus.HEADER_VALID | BlockStatus.DATA_STORED
# Progress lines at most this often (seconds), and always at the last height.
PROGRESS_EVERY_S = 5.0


def reindex(db: ChainDB, network: Network, clock: Callable[[], float] = time.time) -> ChainState:
    genesis = genesis_block(network)
    try:
        stored_genesis = db.get_genesis()
    except CorruptionError as exc:  # written anew below, as everything but the bodies
        log.warning("reindex: %s: written anew", exc)
        stored_genesis = None
    if stored_genesis not in (None, genesis.hash):
        raise ChainStateError(
            f"the chain database {db.path} holds another network's chain; --reindex cannot "
            "fix that: pass the matching --network/--genesis-file or another --datadir"
        )
    headers, damaged = _stored_headers(db, genesis)
    records = _index_from(headers, genesis)
    with db.atomic(sync=True) as batch:
        batch.set_reindexing(True)
        for prefix in DERIVED_PREFIXES:
            for key in db.iter_keys(prefix):
                batch.delete_raw(key)
        for key in db.iter_keys(PREFIX_INDEX):  # undecoded: a damaged record goes too
            if key[1:] not in records:
                batch.delete_index_key(key)
        cut_off = [h for h in headers if h not in records]
        if cut_off:  # (their parent is damaged or missing: peers supply them again)
            log.warning(
                "reindex: %d stored blocks have no stored chain back to genesis (above a "
                "damaged or missing block): dropped, to be downloaded again", len(cut_off),
            )  # fmt: skip
        for block_hash in damaged + cut_off:
            batch.delete_block(block_hash)
        for rec in records.values():
            batch.put_index(rec)
            batch.put_header(rec.hash, headers[rec.hash].to_bytes())  # (older stores lack them)
        batch.put_block(genesis.hash, genesis.to_bytes())
        for key, value in genesis_changes(network).items():
            if value is not None:
                batch.put_state(key, value)
        batch.set_active_hash(0, genesis.hash)
        batch.set_tip(genesis.hash)
        batch.set_genesis(genesis.hash)
        batch.set_reorg_target(None)
    return resume(db, network, clock)


def _stored_headers(db: ChainDB, genesis: Block) -> tuple[dict[bytes, Header], list[bytes]]:
    """Headers of the stored bodies that pass their hash check, and the damaged ones."""
    headers: dict[bytes, Header] = {genesis.hash: genesis.header}
    damaged: list[bytes] = []
    for block_hash, raw in db.iter_blocks():
        block, problem = decode_checked(raw, block_hash)
        if block is None:
            log.warning(
                "reindex: stored block %s is damaged (%s): dropped", block_hash.hex(), problem
            )
            damaged.append(block_hash)
        elif block_hash != genesis.hash:
            headers[block_hash] = block.header
    return headers, damaged


def _index_from(headers: dict[bytes, Header], genesis: Block) -> dict[bytes, IndexRecord]:
    """Index records of every stored block whose chain of stored parents reaches genesis."""
    records: dict[bytes, IndexRecord] = {}
    for block_hash, header in sorted(headers.items(), key=lambda item: item[1].height):
        if block_hash == genesis.hash:
            work, status = block_work(header.target), _STORED | BlockStatus.VALID
        else:
            parent = records.get(header.parent)
            if parent is None or parent.height + 1 != header.height:
                continue
            work, status = parent.cumulative_work + block_work(header.target), _STORED
        records[block_hash] = IndexRecord(
            block_hash, header.parent if header.height else bytes(32), header.height, work,
            BlockStatus(status), header.timestamp,
        )  # fmt: skip
    return records


def resume(db: ChainDB, network: Network, clock: Callable[[], float] = time.time) -> ChainState:
    """Finish a reindex whose marker is stored (the wipe is done; connect the rest)."""
    total = max((r.height for r in db.iter_index()), default=0)
    log.info("reindex: rebuilding the chain state, best stored height %d", total)
    started = time.monotonic()
    chain = ChainState(db, network, clock, accept_rollback=True, progress=_progress(total))
    log.info("reindex done: height %d in %.1fs", chain.tip.height, time.monotonic() - started)
    return chain


def _progress(total: int) -> Callable[[int], None]:
    started = time.monotonic()
    state = {"last": started, "first": -1}

    def report(height: int) -> None:
        now = time.monotonic()
        if state["first"] < 0:
            state["first"] = height
        if now - state["last"] < PROGRESS_EVERY_S and height != total:
            return
        state["last"] = now
        rate = (height - state["first"] + 1) / max(now - started, 1e-9)
        eta = (total - height) / rate if rate > 0 else float("inf")
        log.info(
            "reindex progress=%.1f%% height=%d/%d rate=%.0f blocks/s eta=%.0fs",
            100.0 * height / max(total, 1), height, total, rate, eta,
        )  # fmt: skip

    return report
