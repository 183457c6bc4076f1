"""Header requests sized and timed by bytes, per peer (issue 15, point 4).

A header carries a seal of several KB, so a count says little about how long a reply
takes. Each request asks for the bytes the peer's measured throughput moves in
``reply_s`` seconds (``getheaders`` max_bytes, protocol 3; older peers reply up to
4 MiB), starting from ``MIN_LINK_RATE`` before anything was measured, and is timed
for those bytes at half the measured rate (never below ``MIN_LINK_RATE``) plus the
base timeout for latency and the responder's reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.header import PREFIX_SIZE, Header
from p2p.protocol import HEADERS_SOFT_BYTES

# Slowest link a headers reply is timed for: 16 KiB/s still moves a 4 MiB reply (the
# responder's cap) in ~4 minutes; a dead peer is caught sooner by the ping timeout.
MIN_LINK_RATE = 16 * 1024
MIN_REQUEST_BYTES = 64 * 1024  # never ask for less (about 12 headers of 5 KB)
HEADER_WIRE_BYTES = PREFIX_SIZE + 4  # a header's bytes besides its seal


def reply_bytes(headers: tuple[Header, ...]) -> int:
    """The size of a headers message carrying ``headers`` (its payload)."""
    return 2 + sum(HEADER_WIRE_BYTES + len(h.seal) for h in headers)


@dataclass
class HeaderPace:
    reply_s: float  # a request asks for what the peer moves in this many seconds
    max_bytes: int = HEADERS_SOFT_BYTES  # and never for more than this
    rate: float | None = None  # bytes per second measured on this peer's replies
    asked: int = HEADERS_SOFT_BYTES  # bytes the outstanding request may bring

    def request(self, sized: bool) -> int:
        """The max_bytes of the next request (0 when the peer cannot be told: it then
        replies up to HEADERS_SOFT_BYTES and the request is timed for that)."""
        if not sized:
            self.asked = HEADERS_SOFT_BYTES
            return 0
        want = int((self.rate or MIN_LINK_RATE) * self.reply_s)
        self.asked = max(1, min(self.max_bytes, HEADERS_SOFT_BYTES, max(MIN_REQUEST_BYTES, want)))
        return self.asked

    def timeout(self, base: float) -> float:
        """Seconds the outstanding request may take."""
        rate = max(MIN_LINK_RATE, (self.rate or MIN_LINK_RATE) / 2)
        return base + self.asked / rate

    def replied(self, nbytes: int, elapsed: float) -> None:
        """A reply of ``nbytes`` came ``elapsed`` seconds after the request. A reply
        much shorter than asked (the end of the chain) is mostly latency: it may raise
        the estimate but not lower it."""
        sample = nbytes / max(elapsed, 1e-3)
        if self.rate is None:
            self.rate = sample
        elif 2 * nbytes >= self.asked or sample > self.rate:
            self.rate = (self.rate + sample) / 2
