"""What ChainState answers without changing anything: stored blocks checked against
their hashes, the active chain by height, state reads, ancestry and the timestamps
that header and market rules read (median time past, the anchor time), and the state
a block being built on the tip would leave (templates)."""

from __future__ import annotations

from collections.abc import Iterator

from chain.block import Block
from chain.header import Header
from chain.index_record import IndexRecord
from chain.integrity import decode_checked
from chain.jobs import BlockClock
from chain.network import Network
from chain.state import Changes
from chain.state_tree import StateTree
from chain.storage import ChainDB
from chain.transition import apply_block
from chain.tx import Transaction
from chain.validation import ParentContext
from consensus.difficulty import MEDIAN_TIME_SPAN, median_time_past


class ChainReading:
    """Read-only queries of a ChainState (a mixin: the attributes are ChainState's)."""

    db: ChainDB
    network: Network
    index: dict[bytes, IndexRecord]
    tree: StateTree
    tip: IndexRecord
    _anchor_time: dict[bytes, int | None]

    def get_block(self, block_hash: bytes, *, report: bool = True) -> Block:
        """The stored block, checked against its hash (KeyError if absent;
        CorruptBlockError naming the height and the fix if damaged)."""
        raw = self.db.get_block(block_hash, report=report, check=False)
        if raw is None:
            raise KeyError(block_hash.hex())
        block, problem = decode_checked(raw, block_hash)
        if block is None:
            raise self.db.damaged_block(block_hash, problem, report=report)
        return block

    def get_header(self, block_hash: bytes) -> Header:
        """The block's header: from its own key where one is stored (no body read),
        else from the checked body. KeyError if the block is absent."""
        header = self.db.get_header(block_hash)
        return header if header is not None else self.get_block(block_hash).header

    def active_hash(self, height: int) -> bytes | None:
        return self.db.active_hash_at(height)

    def state_get(self, key: bytes) -> bytes | None:
        return self.db.get_state(key)

    def ancestors(self, block_hash: bytes) -> Iterator[IndexRecord]:
        """The record of ``block_hash`` and then each of its ancestors, down to genesis."""
        rec = self.index.get(block_hash)
        while rec is not None:
            yield rec
            rec = self.index.get(rec.parent) if rec.height > 0 else None

    def parent_context(self, parent: IndexRecord) -> ParentContext:
        times = []
        for rec in self.ancestors(parent.hash):
            times.append(rec.timestamp)
            if len(times) == MEDIAN_TIME_SPAN:
                break
        return ParentContext(
            height=parent.height,
            timestamp=parent.timestamp,
            recent_timestamps=tuple(reversed(times)),
            anchor_time=self.anchor_time(parent.hash),
        )

    def anchor_time(self, block_hash: bytes) -> int | None:
        """Timestamp of block 1 on the chain ending at ``block_hash`` (None at genesis)."""
        if block_hash in self._anchor_time:
            return self._anchor_time[block_hash]
        rec = self.index[block_hash]
        if rec.height == 0:
            result = None
        elif rec.height == 1:
            result = rec.timestamp
        else:
            result = self.anchor_time(rec.parent) if rec.parent in self._anchor_time else None
            if result is None:
                for anc in self.ancestors(block_hash):
                    if anc.height == 1:
                        result = anc.timestamp
                        break
        self._anchor_time[block_hash] = result
        return result

    def mtp_after(self, parent: IndexRecord) -> int:
        """Median time past of a child of ``parent``: the market's clock for that block."""
        return median_time_past(self.parent_context(parent).recent_timestamps)

    def clock_after(self, parent: IndexRecord) -> BlockClock:
        """The market's clock of a child of ``parent`` (no claims in it): what a
        transaction sent now meets in the next block on ``parent``."""
        spacing = self.network.difficulty.target_spacing_s
        return BlockClock(parent.height + 1, self.mtp_after(parent), spacing)

    # --- templates -----------------------------------------------------------------

    def state_root_after(self, changes: Changes) -> bytes:
        return self.tree.root_after(changes)

    def block_changes(self, header_like: object, txs: list[Transaction]) -> Changes:
        """State changes of a block being built on the tip (for templates)."""
        header = header_like  # a Header, or a template's stand-in with the same fields
        return apply_block(self.state_get, header, txs, self.network, self.mtp_after(self.tip))  # type: ignore[arg-type]
