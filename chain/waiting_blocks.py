"""Blocks that cannot be connected yet, kept (bounded) until they can: orphans, whose
parent we lack, until the parent arrives; blocks stamped ahead of our clock until
their time comes. Only blocks whose header and body passed their context-free checks
are kept (ChainState checks first), so a peer cannot fill the pools with junk, and
both pools together stay under MAX_WAITING_BYTES: peers cannot make us buffer
gigabytes."""

from __future__ import annotations

from chain.block import Block

MAX_ORPHANS = 256
MAX_HELD_FUTURE = 64
# Both waiting pools together hold at most this many bytes of blocks (a full block is
# about 5 MiB of transactions and seal).
MAX_WAITING_BYTES = 64 * 1024 * 1024


def _size(block: Block) -> int:
    return block.tx_bytes + len(block.header.seal)


class WaitingBlocks:
    """The orphan pool and the future-block pool; the oldest block is evicted first."""

    def __init__(self) -> None:
        self.orphans: dict[bytes, Block] = {}
        self.held: dict[bytes, Block] = {}

    def keep_orphan(self, block: Block) -> None:
        self._keep(self.orphans, block, MAX_ORPHANS)

    def hold_future(self, block: Block) -> None:
        self._keep(self.held, block, MAX_HELD_FUTURE)

    def take_children(self, parent_hash: bytes) -> list[Block]:
        """The orphans whose parent is ``parent_hash``, out of the pool."""
        children = [b for b in self.orphans.values() if b.header.parent == parent_hash]
        for child in children:
            del self.orphans[child.hash]
        return children

    def pop_held(self) -> list[Block]:
        """Every block held for a future timestamp, out of the pool."""
        held, self.held = self.held, {}
        return list(held.values())

    def waiting_bytes(self) -> int:
        return sum(_size(b) for b in (*self.orphans.values(), *self.held.values()))

    def _keep(self, pool: dict[bytes, Block], block: Block, max_count: int) -> None:
        """Into ``pool``, evicting its oldest until it holds fewer than ``max_count``
        and both pools fit MAX_WAITING_BYTES with this block (the other pool's oldest
        go too once this one is empty)."""
        size = _size(block)
        other = self.held if pool is self.orphans else self.orphans
        while pool and len(pool) >= max_count:
            pool.pop(next(iter(pool)))
        while self.waiting_bytes() + size > MAX_WAITING_BYTES and (pool or other):
            emptied = pool if pool else other
            emptied.pop(next(iter(emptied)))
        pool[block.hash] = block
