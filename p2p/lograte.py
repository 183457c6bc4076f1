"""Rate-limited logging: a flood (connection errors, "Too many open files" from the
accept loop, misbehaving peers) writes at most a few lines per second per message,
then one line saying how many were suppressed."""

from __future__ import annotations

import logging
import time

# Records of one message template allowed per window, and the window in seconds: a
# burst of distinct peers is still visible, a flood costs ~50 lines per minute.
BURST = 50
WINDOW_S = 60.0
MAX_KEYS = 1000  # distinct message templates tracked at once
# Loggers a network flood can make write: ours, the asyncio accept loop, aiohttp's.
FLOODABLE = ("pouw.p2p", "asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.websocket",
             "aiohttp.client", "aiohttp.internal")  # fmt: skip


UNLIMITED = {"unlimited": True}  # ``extra=`` for lines that are never suppressed


class RateLimitFilter(logging.Filter):
    def __init__(self, burst: int = BURST, window_s: float = WINDOW_S) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.seen: dict[tuple[str, str], list[float]] = {}  # key -> [window start, count]

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "unlimited", False):
            return True  # progress lines the node's tools read (new tip, sync progress)
        key = (record.name, str(record.msg))
        now = time.monotonic()
        slot = self.seen.get(key)
        if slot is None or now - slot[0] > self.window_s:
            suppressed = int(slot[1]) - self.burst if slot is not None else 0
            if len(self.seen) >= MAX_KEYS and slot is None:
                self.seen.clear()
            self.seen[key] = [now, 1.0]
            if suppressed > 0:
                record.msg = f"{record.msg} [{suppressed} similar messages suppressed]"
            return True
        slot[1] += 1
        if slot[1] > self.burst:
            record.exc_info = None
            return False
        return True


def install() -> RateLimitFilter:
    f = RateLimitFilter()
    for name in FLOODABLE:
        logging.getLogger(name).addFilter(f)
    return f


def uninstall(f: RateLimitFilter) -> None:
    for name in FLOODABLE:
        logging.getLogger(name).removeFilter(f)
