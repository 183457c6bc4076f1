"""Terminal progress bars (sync, mining, blob transfers) when stderr is a terminal.

On a terminal (``--progress auto``, the default, and stderr ``isatty()``) one status line
stays at the bottom: ``sync [#####-----] 48.0% 480/1000 120 blk/s eta 4s | mining ...``.
Log lines are printed above it (node/logs.py's handler erases and redraws it). Not on
a terminal, nothing extra is drawn: the plain log lines (``sync progress ...``,
``mined block ...``) say the same, and transfers log a line every few seconds.

Blob transfers report through ``transfer(name, total)``::

    t = progress.transfer(f"blob {blob_id[:12]}", total=size)
    t.update(received)   # as bytes arrive
    t.close()
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TextIO

from node import logs
from node.health import best_known_height

if TYPE_CHECKING:
    from node.service import Node

log = logging.getLogger("pouw.node")

REFRESH_S = 0.5
PLAIN_TRANSFER_LOG_S = 5.0


def bar(fraction: float, width: int = 20) -> str:
    fraction = min(1.0, max(0.0, fraction))
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def human(n: float) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}P"


class TerminalStatus:
    """One status line at the bottom of a terminal, made of named parts."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.RLock()
        self.parts: dict[str, str] = {}
        self.shown = False

    def set(self, key: str, text: str | None) -> None:
        with self.lock:
            if text is None:
                self.parts.pop(key, None)
            else:
                self.parts[key] = text
            self.redraw()

    def erase(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False

    def redraw(self) -> None:
        with self.lock:
            self.erase()
            if not self.parts:
                return
            cols = shutil.get_terminal_size((100, 20)).columns
            line = " | ".join(self.parts.values())[: max(10, cols - 1)]
            self.stream.write(line)
            self.stream.flush()
            self.shown = True


_status: TerminalStatus | None = None


class Transfer:
    """Progress of one transfer: a bar on a terminal, else a log line every few seconds."""

    def __init__(self, name: str, total: int | None) -> None:
        self.name = name
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._logged = self.started

    def _text(self) -> str:
        rate = self.done / max(1e-9, time.monotonic() - self.started)
        if self.total:
            frac = self.done / self.total
            return (
                f"{self.name} {bar(frac, 12)} {100 * frac:.0f}% "
                f"{human(self.done)}B/{human(self.total)}B {human(rate)}B/s"
            )
        return f"{self.name} {human(self.done)}B {human(rate)}B/s"

    def update(self, done: int) -> None:
        self.done = done
        if _status is not None:
            _status.set(f"transfer:{id(self)}", self._text())
        elif time.monotonic() - self._logged >= PLAIN_TRANSFER_LOG_S:
            self._logged = time.monotonic()
            log.info("%s", self._text())

    def close(self) -> None:
        if _status is not None:
            _status.set(f"transfer:{id(self)}", None)


def transfer(name: str, total: int | None = None) -> Transfer:
    return Transfer(name, total)


class ProgressService:
    """Redraws the sync and mining parts of the status line (a Node service)."""

    name = "progress"

    def __init__(self, node: Node, status: TerminalStatus) -> None:
        self.node = node
        self.status = status
        self._task: asyncio.Task[None] | None = None
        self._last = (time.monotonic(), node.chain.tip.height)
        self._rate = 0.0

    async def start(self) -> None:
        global _status
        _status = self.status
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                self.update()
            except Exception:  # noqa: BLE001 - a progress bar must never stop the node
                log.debug("progress update failed", exc_info=True)

    def update(self) -> None:
        node = self.node
        now = time.monotonic()
        height = node.chain.tip.height
        best = best_known_height(node)
        t0, h0 = self._last
        if now - t0 >= 2.0:
            self._rate = (height - h0) / (now - t0)
            self._last = (now, height)
        if best > height:
            eta = f"{(best - height) / self._rate:.0f}s" if self._rate > 0 else "?"
            self.status.set(
                "sync",
                f"sync {bar(height / best)} {100 * height / best:5.1f}% "
                f"{height}/{best} {self._rate:.1f} blk/s eta {eta}",
            )
        else:
            self.status.set("sync", None)
        miner = node.miner
        if miner is not None and miner.counters.started:
            c = miner.counters
            self.status.set(
                "mining",
                f"mining[{miner.engine.name}] height {height} "
                f"{human(c.multiply_adds_per_s())} MAC/s found {c.blocks_accepted}",
            )

    async def stop(self) -> None:
        global _status
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        with self.status.lock:
            self.status.parts.clear()
            self.status.erase()
        _status = None


def progress_service(node: Node, stream: Any = None) -> ProgressService | None:
    """A ProgressService when bars are wanted and the logs go to a terminal, else None."""
    mode = node.config.progress
    control = logs.current()
    handler = control.stderr_handler if control is not None else None
    if mode == "never" or handler is None:
        return None
    stream = stream or handler.stream or sys.stderr
    if mode == "auto" and not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    status = TerminalStatus(stream)
    handler.status = status
    return ProgressService(node, status)
