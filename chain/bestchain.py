"""Which stored block should be the tip: the fork choice over the block index.

The most-work block whose whole chain back to genesis is stored and not invalid wins
(Bitcoin Core's setBlockIndexCandidates); on a tie the current tip stays.
"""

from __future__ import annotations

from collections.abc import Iterable

from chain.index_record import BlockStatus, IndexRecord


def best_candidate(
    records: Iterable[IndexRecord], genesis_hash: bytes, tip: IndexRecord
) -> IndexRecord:
    """The most-work usable block, or ``tip`` when none has more work."""
    usable: set[bytes] = set()
    best = tip
    for rec in sorted(records, key=lambda r: r.height):
        if rec.height == 0:
            ok = rec.hash == genesis_hash
        else:
            ok = (
                rec.parent in usable
                and bool(rec.status & BlockStatus.DATA_STORED)
                and not rec.status & BlockStatus.INVALID
            )
        if ok:
            usable.add(rec.hash)
            if rec.cumulative_work > best.cumulative_work:
                best = rec
    return best


def best_descendant(
    index: dict[bytes, IndexRecord], children: dict[bytes, set[bytes]], rec: IndexRecord
) -> IndexRecord:
    """``rec`` or its stored, not invalid descendant with the most work."""
    best, stack = rec, [rec.hash]
    while stack:
        for child in children.get(stack.pop(), ()):
            crec = index.get(child)
            if crec is None or crec.status & BlockStatus.INVALID:
                continue
            if crec.cumulative_work > best.cumulative_work:
                best = crec
            stack.append(child)
    return best
