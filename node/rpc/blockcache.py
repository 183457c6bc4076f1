"""getblock's JSON, encoded once per block and kept by block hash.

A block's content never changes, so its header fields, size and transactions are
encoded to JSON text once; only ``confirmations`` and ``nextblockhash`` depend on the
active chain and are added per call (its transactions' receipts depend on whether the
block is active, which is part of the key). The encoded text reaches the client as it is
(``RawJSON``), without being decoded and encoded again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from node.rpc.jsoncodec import RawJSON, dumps_strict

# Encoded text kept, in bytes: a 20-tx block is ~11 KB at verbosity 2, the largest
# possible ~15 MB; 64 MiB holds thousands of typical blocks and a few of the largest.
MAX_CACHE_BYTES = 64 * 2**20

CacheKey = tuple[bytes, int, bool]


class BlockJsonCache:
    """(block hash, verbosity, receipts known) -> (fixed fields text, tx array text),
    least recently used evicted first, bounded by MAX_CACHE_BYTES of text."""

    def __init__(self, max_bytes: int = MAX_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[CacheKey, tuple[str, str]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey, build: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return item
        self.misses += 1
        item = build()
        size = len(item[0]) + len(item[1])
        if size <= self.max_bytes:
            self._items[key] = item
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (a, b) = self._items.popitem(last=False)
                self._bytes -= len(a) + len(b)
        return item


def block_reply(fixed: str, txs: str, live: dict[str, object]) -> RawJSON:
    """The getblock object: the cached fields, the per-call ones, then ``tx``."""
    extra = dumps_strict(live)[1:-1]
    return RawJSON("{" + fixed + ("," + extra if extra else "") + ',"tx":' + txs + "}")
