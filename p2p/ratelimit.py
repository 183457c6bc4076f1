"""Token buckets: one per peer, or one per source (IP or netgroup) shared by all its
connections, so reconnecting does not refill the allowance."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class Bucket:
    """``take`` is False once a caller exceeds ``burst`` + ``rate`` * elapsed seconds."""

    def __init__(
        self, burst: float, rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.rate = rate
        self.clock = clock
        self.tokens = burst
        self.t = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def take(self, n: float = 1.0) -> bool:
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def available(self) -> int:
        self._refill()
        return int(self.tokens)

    def give_back(self, n: float = 1.0) -> None:
        """Return ``n`` taken tokens (what was charged turned out honest), up to ``burst``."""
        self._refill()
        self.tokens = min(self.burst, self.tokens + n)


class KeyedBuckets:
    """A bucket per key (source IP, netgroup), at most ``max_keys`` remembered: the least
    recently used is forgotten first, so a flood of keys costs bounded memory."""

    def __init__(
        self, burst: float, rate: float, max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.burst = burst
        self.rate = rate
        self.max_keys = max_keys
        self.clock = clock
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()

    def get(self, key: str) -> Bucket:
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = Bucket(self.burst, self.rate, self.clock)
            while len(self.buckets) > self.max_keys:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(key)
        return b

    def take(self, key: str, n: float = 1.0) -> bool:
        return self.get(key).take(n)
