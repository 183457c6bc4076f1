"""The chain: block index, fork choice by most work, connect/disconnect, reorgs.

Every connect or disconnect is one atomic LevelDB batch that writes the state
changes, the undo data (or consumes it), the active-chain entry and the tip together,
with sync=True, so a kill -9 at any instant leaves either the old tip and its state
or the new ones. The in-memory state tree is updated only after the batch is on
disk, and rebuilt from the stored state at start.

Fork choice: the valid chain with the most cumulative work; the first seen wins a
tie. A reorg disconnects back to the fork point and connects the other branch; if a
block on it fails, that block (and so its descendants) is marked invalid and the best
remaining chain is activated again.

Crashes between blocks (Bitcoin Core's ActivateBestChain): a reorg first writes its
target into a journal record (``META_REORG``), and every start-up activates the
most-work valid chain among the stored blocks, so a reorg or a ``--reindex`` cut short
by a crash is finished by the next start. A stored block found missing or damaged
while connecting is dropped from the index (peers supply it again), not marked invalid.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chain.bestchain import best_candidate, best_descendant
from chain.block import Block
from chain.chain_reading import ChainReading
from chain.encoding import DecodeError
from chain.genesis import genesis_block, genesis_changes
from chain.index_record import BlockStatus, IndexRecord
from chain.integrity import block_problem
from chain.job_record import PREFIX_JOB
from chain.job_tally import JobTally
from chain.network import Network
from chain.state import (
    Changes,
    JobNameError,
    StateError,
    decode_undo,
    encode_undo,
)
from chain.state_tree import StateTree
from chain.storage import ChainDB, CorruptBlockError, reindex_command
from chain.tiprecord import TIP_RECORD_NAME, TipRecord
from chain.transition import Failures, apply_block
from chain.validation import (
    VALID,
    BlockCheck,
    BlockReject,
    Verdict,
    check_block_body,
    check_header,
    check_header_context,
    defer,
    invalid,
)
from chain.waiting_blocks import WaitingBlocks
from consensus.difficulty import block_work

log = logging.getLogger("pouw.chain")

# At start-up the newest blocks of the active chain are read back and checked against
# their hashes (Bitcoin Core's -checkblocks default is the same 6): damage where the
# node works next is found before it serves or builds on it.
CHECK_BLOCKS_AT_START = 6


class ChainStateError(Exception):
    """The stored chain is inconsistent; the message says how to recover."""


@dataclass
class ProcessResult:
    """What happened to a submitted block."""

    check: BlockCheck
    duplicate: bool = False
    connected: list[Block] = field(default_factory=list)  # blocks connected, in order
    disconnected: list[Block] = field(default_factory=list)  # blocks disconnected, tip first

    @property
    def accepted(self) -> bool:
        return self.check.ok and not self.duplicate

    @property
    def reorg_depth(self) -> int:
        return len(self.disconnected)


class ChainState(ChainReading):
    """The chain on one ChainDB. Opening it finishes what a crash interrupted (a reorg,
    a --reindex) and checks the database against the tip record; ``accept_rollback``
    (--reindex) accepts a database shorter than the last reported tip, and
    ``progress`` is called with each height connected at start-up."""

    def __init__(
        self,
        db: ChainDB,
        network: Network,
        clock: Callable[[], float] = time.time,
        *,
        accept_rollback: bool = False,
        progress: Callable[[int], None] | None = None,
    ):
        self.db = db
        db.block_check = block_problem  # every block read from the database is checked
        self.network = network
        self.clock = clock
        self.index: dict[bytes, IndexRecord] = {rec.hash: rec for rec in db.iter_index()}
        self._children: dict[bytes, set[bytes]] = {}
        for rec in self.index.values():
            self._children.setdefault(rec.parent, set()).add(rec.hash)
        self._anchor_time: dict[bytes, int | None] = {}
        self.waiting = WaitingBlocks()  # orphans and blocks from the future
        self._invalid_reason: dict[bytes, BlockCheck] = {}
        self.genesis = genesis_block(network)
        stored_genesis = db.get_genesis()
        if stored_genesis is None and db.get_tip() is not None:
            # blocks but no genesis record: writing genesis now would reset the tip
            raise ChainStateError(
                f"the chain database {db.path} lost its genesis record: run "
                f"`{reindex_command(db.path, network.name)}` (it rebuilds from the stored blocks)"
            )
        if stored_genesis is None:
            self._write_genesis()
        elif stored_genesis != self.genesis.hash:
            raise ChainStateError(
                f"the chain database {db.path} holds a chain with genesis "
                f"{stored_genesis.hex()}, but the {network.name} genesis given (its shipped "
                f"file, or --genesis-file) is {self.genesis.hash.hex()}: use the matching "
                "--network and --genesis-file, or another --datadir"
            )
        self.tree = StateTree.build(db.iter_state())
        fix = reindex_command(db.path, network.name)
        tip = db.get_tip()
        if tip is None or tip not in self.index:
            raise ChainStateError(
                f"the chain database {db.path} lost its tip block from the index: run `{fix}`"
            )
        self.tip = self.index[tip]
        try:
            self.tip_header = self.get_block(tip).header
        except KeyError:
            raise ChainStateError(
                f"the tip block {tip.hex()} (height {self.tip.height}) is missing from the "
                f"chain database {db.path}: run `{fix}`"
            ) from None
        if self.tip_header.state_root != self.tree.root:
            raise ChainStateError(
                f"stored state does not match the tip {tip.hex()} (height {self.tip.height}): "
                f"run `{fix}`"
            )
        # the market's counts for getmarketinfo, followed block by block from here on
        self.job_tally = JobTally.build(db.iter_state(PREFIX_JOB), self.tip.height)
        self.tip_record = TipRecord(db.datadir.path / TIP_RECORD_NAME)
        self._hold_tip_record = True
        self._recover(accept_rollback or db.reindexing(), progress)

    def _recover(self, accept_rollback: bool, progress: Callable[[int], None] | None) -> None:
        """Finish an interrupted reorg or reindex, then compare with the tip record."""
        reported = self.tip_record.read()
        self._hold_tip_record = True  # until compared: a failed start must not lower it
        target = self.db.get_reorg_target()
        if target is not None:
            log.warning(
                "finishing a reorg cut short at height %d (towards %s)",
                self.tip.height, target.hex()[:16],
            )  # fmt: skip
        self.activate_best_chain(ProcessResult(VALID), progress)
        if target is not None or self.db.reindexing():
            with self.db.atomic(sync=True) as batch:
                batch.set_reorg_target(None)
                batch.set_reindexing(False)
        if reported is not None and reported.work > self.tip.cumulative_work:
            gap = (
                f"the node last reported tip height {reported.height} "
                f"({reported.hash.hex()[:16]}), the chain database {self.db.path} holds "
                f"height {self.tip.height}"
            )
            if not accept_rollback and self.tip.height == 0:  # nothing there at all
                raise ChainStateError(
                    f"{gap}: the chain database is empty (was {self.db.path} deleted, or "
                    "moved?). Put it back, or run "
                    f"`{reindex_command(self.db.path, self.network.name)}` to start from "
                    "genesis and download the chain again from peers"
                )
            if not accept_rollback:
                raise ChainStateError(
                    f"{gap}: LevelDB lost writes it had acknowledged (damaged or truncated "
                    f"files). Run `{reindex_command(self.db.path, self.network.name)}` to "
                    "rebuild from the blocks that are there; peers then supply the rest"
                )
            log.warning("%s: the missing blocks will be downloaded from peers", gap)
        self._hold_tip_record = False
        self._record_tip()
        for rec in itertools.islice(self.ancestors(self.tip.hash), CHECK_BLOCKS_AT_START):
            self.get_block(rec.hash)  # CorruptBlockError names the height and the fix

    def _record_tip(self) -> None:
        if self._hold_tip_record:
            return
        self.tip_record.write(self.tip.height, self.tip.hash, self.tip.cumulative_work)

    # --- genesis and reindex -------------------------------------------------------

    def _write_genesis(self) -> None:
        g = self.genesis
        rec = IndexRecord(
            hash=g.hash,
            parent=bytes(32),
            height=0,
            cumulative_work=block_work(g.header.target),
            status=BlockStatus.HEADER_VALID | BlockStatus.DATA_STORED | BlockStatus.VALID,
            timestamp=g.header.timestamp,
        )
        with self.db.atomic(sync=True) as batch:
            batch.put_block(g.hash, g.to_bytes())
            batch.put_index(rec)
            for key, value in genesis_changes(self.network).items():
                if value is not None:
                    batch.put_state(key, value)
            batch.set_active_hash(0, g.hash)
            batch.set_genesis(g.hash)
            batch.set_tip(g.hash)
        self.index[g.hash] = rec
        self._children.setdefault(rec.parent, set()).add(g.hash)

    # --- accepting blocks ----------------------------------------------------------

    def process_block(self, block: Block) -> ProcessResult:
        """Validate, store and (if it makes the best chain) connect a block."""
        result = self._accept(block)
        if result.check.ok and not result.duplicate:
            self._adopt_orphans(block.hash, result)
        return result

    def _accept(self, block: Block) -> ProcessResult:
        h = block.hash
        known = self.index.get(h)
        if known is not None:
            if known.status & BlockStatus.INVALID:
                return ProcessResult(invalid(BlockReject.PARENT_INVALID, "known invalid"))
            result = ProcessResult(VALID, duplicate=True)
            if known.cumulative_work > self.tip.cumulative_work:
                # Stored but never connected (a crash, an interrupted reindex): it is
                # best now, so connect it instead of ignoring a duplicate.
                self.activate(self._best_descendant(known), result)
            return result
        header = block.header
        parent = self.index.get(header.parent)
        if parent is None:
            check = self._context_free(block)
            if not check.ok:
                return ProcessResult(check)
            self.waiting.keep_orphan(block)
            return ProcessResult(defer(BlockReject.UNKNOWN_PARENT, header.parent.hex()))
        if parent.status & BlockStatus.INVALID:
            return ProcessResult(invalid(BlockReject.PARENT_INVALID, header.parent.hex()))
        check = check_header_context(
            header, self.network, self.parent_context(parent), int(self.clock())
        )
        if check.verdict is Verdict.DEFER:
            full = self._context_free(block)
            if not full.ok:
                return ProcessResult(full)
            self.waiting.hold_future(block)
            return ProcessResult(check)
        if check.ok:
            check = self._context_free(block)
        if not check.ok:
            return ProcessResult(check)
        rec = IndexRecord(
            hash=h,
            parent=parent.hash,
            height=header.height,
            cumulative_work=parent.cumulative_work + block_work(header.target),
            status=BlockStatus.HEADER_VALID | BlockStatus.DATA_STORED,
            timestamp=header.timestamp,
        )
        # No fsync here: a stored-but-unconnected block lost in a crash is fetched again,
        # and the connect batch below is synced, which flushes this write with it.
        with self.db.atomic(sync=False) as batch:
            batch.put_block(h, block.to_bytes())
            batch.put_index(rec)
        self.index[h] = rec
        self._children.setdefault(rec.parent, set()).add(h)
        result = ProcessResult(VALID)
        best = self._best_descendant(rec)  # stored children of a re-fetched block count too
        if best.cumulative_work > self.tip.cumulative_work:
            self.activate(best, result)
            now = self.index.get(h)
            if self.tip.hash != h and now is not None and now.status & BlockStatus.INVALID:
                result.check = self._invalid_reason.get(h, invalid(BlockReject.BAD_STATE))
        return result

    def pop_held(self) -> list[Block]:
        """Blocks held for a future timestamp, to submit again now and then."""
        return self.waiting.pop_held()

    def _context_free(self, block: Block) -> BlockCheck:
        """Header (seal, target limit) and body checks: nothing unchecked is kept."""
        check = check_header(block.header, self.network)
        return check_block_body(block, self.network) if check.ok else check

    def _adopt_orphans(self, parent_hash: bytes, result: ProcessResult) -> None:
        for child in self.waiting.take_children(parent_hash):
            sub = self.process_block(child)
            result.connected.extend(sub.connected)
            result.disconnected.extend(sub.disconnected)

    # --- fork choice ---------------------------------------------------------------

    def activate(
        self,
        candidate: IndexRecord,
        result: ProcessResult,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Make ``candidate``'s chain active if it can be; else fall back to the best valid."""
        if not self._activate_branch(candidate, result, progress):
            self.activate_best_chain(result, progress)

    def activate_best_chain(
        self, result: ProcessResult, progress: Callable[[int], None] | None = None
    ) -> None:
        """Connect the most-work valid chain among the stored blocks (Core's
        ActivateBestChain). Each failed try marks a block invalid or drops a missing
        one, so the loop ends."""
        while True:
            best = self._best_candidate()
            if best.cumulative_work <= self.tip.cumulative_work:
                return
            self._activate_branch(best, result, progress)

    def _best_candidate(self) -> IndexRecord:
        return best_candidate(self.index.values(), self.genesis.hash, self.tip)

    def _best_descendant(self, rec: IndexRecord) -> IndexRecord:
        return best_descendant(self.index, self._children, rec)

    def _activate_branch(
        self,
        candidate: IndexRecord,
        result: ProcessResult,
        progress: Callable[[int], None] | None,
    ) -> bool:
        """Move the tip to ``candidate``; False if a block on the way failed or is gone."""
        branch = self._branch_to_active(candidate)
        if branch is None:
            return False
        fork_height = branch[0].height - 1 if branch else candidate.height
        reorg = self.tip.height > fork_height
        if reorg:  # the journal: a crash from here on is finished by the next start
            with self.db.atomic(sync=True) as batch:
                batch.set_reorg_target(candidate.hash)
        while self.tip.height > fork_height:
            result.disconnected.append(self._disconnect_tip())
        done = True
        for rec in branch:
            try:
                block = self.get_block(rec.hash, report=False)
            except (KeyError, CorruptBlockError) as exc:
                self._drop_stored_block(rec, "missing" if isinstance(exc, KeyError) else str(exc))
                done = False
                break
            check = self._connect(block)
            if not check.ok:
                log.warning(
                    "block %s at height %d is invalid: %s", rec.hash.hex()[:16], rec.height, check
                )
                self._mark_invalid(rec.hash, check)
                done = False
                break
            result.connected.append(block)
            if progress is not None:
                progress(rec.height)
        if reorg:
            with self.db.atomic(sync=False) as batch:
                batch.set_reorg_target(None)
        self._record_tip()
        return done

    def _branch_to_active(self, rec: IndexRecord) -> list[IndexRecord] | None:
        """Records from just above the fork point with the active chain up to ``rec``;
        None when ``rec``'s ancestry is incomplete (a dropped block)."""
        branch = []
        for anc in self.ancestors(rec.hash):
            if self.active_hash(anc.height) == anc.hash:
                break
            branch.append(anc)
        else:
            return None
        branch.reverse()
        return branch

    def _drop_stored_block(self, rec: IndexRecord, why: str) -> None:
        """Forget a block whose stored body is missing or damaged, so that peers supply
        it again (its stored descendants stay and are connected once it is back)."""
        log.warning(
            "stored block %s at height %d is unusable (%s): dropped; it will be downloaded "
            "from peers again", rec.hash.hex(), rec.height, why,
        )  # fmt: skip
        with self.db.atomic(sync=True) as batch:
            batch.delete_index(rec.hash)
            batch.delete_block(rec.hash)
            batch.delete_undo(rec.hash)
        self.index.pop(rec.hash, None)
        self._children.get(rec.parent, set()).discard(rec.hash)
        self._anchor_time.clear()

    def _mark_invalid(self, block_hash: bytes, check: BlockCheck) -> None:
        """Mark a block and every stored descendant invalid (one batch, synced)."""
        doomed = {block_hash}
        for rec in sorted(self.index.values(), key=lambda r: r.height):
            if rec.parent in doomed and rec.height > self.index[block_hash].height:
                doomed.add(rec.hash)
        with self.db.atomic(sync=True) as batch:
            for h in doomed:
                rec = self.index[h]
                bad = IndexRecord(
                    rec.hash, rec.parent, rec.height, rec.cumulative_work,
                    (rec.status & ~BlockStatus.VALID) | BlockStatus.INVALID, rec.timestamp,
                )  # fmt: skip
                batch.put_index(bad)
                self.index[h] = bad
                self._invalid_reason[h] = check

    def _connect(self, block: Block) -> BlockCheck:
        header = block.header
        assert header.parent == self.tip.hash
        failed: Failures = {}
        try:
            changes = apply_block(
                self.state_get, header, block.txs, self.network, self.mtp_after(self.tip), failed
            )
        except JobNameError as exc:
            return invalid(BlockReject(f"bad-{exc.reason.value}"), exc.detail)
        except StateError as exc:
            return invalid(BlockReject.BAD_STATE, str(exc))
        if self.tree.root_after(changes) != header.state_root:
            return invalid(BlockReject.BAD_STATE_ROOT)
        undo = {key: self.db.get_state(key) for key in changes}
        rec = self.index[block.hash]
        done = IndexRecord(
            rec.hash, rec.parent, rec.height, rec.cumulative_work,
            rec.status | BlockStatus.VALID, rec.timestamp,
        )  # fmt: skip
        with self.db.atomic(sync=True) as batch:
            _write_changes(batch, changes)
            for pos, tx in enumerate(block.txs):
                batch.put_tx_location(
                    tx.txid, block.hash, header.height, pos, (tx.sender, tx.recipient),
                    failure=failed.get(tx.txid, ""),
                )  # fmt: skip
            batch.put_undo(block.hash, encode_undo(undo))
            batch.put_index(done)
            batch.set_active_hash(header.height, block.hash)
            batch.set_tip(block.hash)
        # the tip as stored first: what follows only mirrors the batch in memory
        self.index[block.hash] = done
        self.tip = done
        self.tip_header = header
        self.tree.apply(changes)
        self.job_tally.apply(undo, changes, header.height)
        return VALID

    def _disconnect_tip(self) -> Block:
        block = self.get_block(self.tip.hash)
        raw = self.db.get_undo(block.hash)
        if raw is None:
            raise ChainStateError(f"no undo data for {block.hash.hex()}: run with --reindex")
        try:
            undo = decode_undo(raw)
        except DecodeError as exc:
            raise ChainStateError(f"corrupt undo data ({exc}): run with --reindex") from exc
        parent = self.index[block.header.parent]
        # read before anything is written: a damaged parent stops the disconnect here
        parent_header = self.get_block(parent.hash).header
        jobs_now = {key: self.db.get_state(key) for key in undo if key.startswith(PREFIX_JOB)}
        with self.db.atomic(sync=True) as batch:
            _write_changes(batch, undo)
            for pos, tx in enumerate(block.txs):
                batch.delete_tx_location(tx.txid, block.height, pos, (tx.sender, tx.recipient))
            batch.delete_active_hash(block.height)
            batch.set_tip(parent.hash)
        self.tip = parent
        self.tip_header = parent_header
        self.tree.apply(undo)
        self.job_tally.apply(jobs_now, undo, parent.height)
        return block


def _write_changes(batch: object, changes: Changes) -> None:
    for key, value in changes.items():
        if value is None:
            batch.delete_state(key)  # type: ignore[attr-defined]
        else:
            batch.put_state(key, value)  # type: ignore[attr-defined]
