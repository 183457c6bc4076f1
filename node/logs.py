"""Logging of the node: human or JSON lines, debug categories, a size-capped debug.log.

Like bitcoind, everything at ``--log-level`` (info by default) and above is logged; a
debug message is logged only when its *category* is enabled (``--debug net``,
``--debug all``, or the ``logging`` RPC method at run time). A record's category comes
from its logger name (``pouw.p2p`` -> net, ``pouw.chain`` -> validation, ...); P2P
messages about headers and block download (p2p/sync.py, "sync progress", "new tip",
stalls) are counted as sync.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

CATEGORIES = ("net", "sync", "validation", "mempool", "rpc", "mining", "market")

# Logger name prefixes per category, longest prefix wins (see category_of).
LOGGER_CATEGORIES: dict[str, str] = {
    "pouw.p2p": "net",
    "pouw.sync": "sync",
    "pouw.p2p.sync": "sync",
    "pouw.chain": "validation",
    "pouw.validation": "validation",
    "pouw.mempool": "mempool",
    "pouw.chain.mempool": "mempool",
    "pouw.rpc": "rpc",
    "pouw.mining": "mining",
    "pouw.miner": "mining",
    "pouw.compute": "mining",
    "pouw.market": "market",
    "pouw.jobs": "market",
    "pouw.blobs": "market",
}
_SYNC_MESSAGES = ("sync ", "new tip", "block %s stalled", "headers")

DEBUG_LOG = "debug.log"
DEFAULT_LOG_MAX_MB = 50
LOG_BACKUPS = 5
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def category_of(record: logging.LogRecord) -> str | None:
    """The debug category of a record, or None (pouw.node and others: always shown)."""
    name = record.name
    best: tuple[int, str] | None = None
    for prefix, cat in LOGGER_CATEGORIES.items():
        if name == prefix or name.startswith(prefix + "."):
            if best is None or len(prefix) > best[0]:
                best = (len(prefix), cat)
    if best is None:
        return None
    cat = best[1]
    if cat == "net":
        msg = record.msg if isinstance(record.msg, str) else ""
        if record.module == "sync" or msg.startswith(_SYNC_MESSAGES):
            return "sync"
    return cat


class CategoryFilter(logging.Filter):
    """Passes records at ``level`` and above, and debug records of enabled categories."""

    def __init__(self, level: int, categories: Iterable[str] = ()) -> None:
        super().__init__()
        self.level = level
        self.enabled: set[str] = set()
        self.set_categories(categories)

    def set_categories(self, categories: Iterable[str]) -> None:
        cats = set(categories)
        if "all" in cats or "1" in cats:
            cats = set(CATEGORIES)
        unknown = cats - set(CATEGORIES)
        if unknown:
            raise ValueError(
                f"unknown log category {sorted(unknown)[0]!r}; "
                f"choose from {', '.join(CATEGORIES)} or all"
            )
        self.enabled = cats

    def filter(self, record: logging.LogRecord) -> bool:
        category = category_of(record) or "node"
        record.category = category  # read by JsonFormatter
        if record.levelno >= self.level:
            return True
        if self.level <= logging.DEBUG and not self.enabled:
            return True  # --log-level debug without categories: everything
        return category in self.enabled


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (ISO 8601 UTC), level, logger, category, msg[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "category": getattr(record, "category", None) or category_of(record) or "node",
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class StatusAwareHandler(logging.StreamHandler):
    """A stream handler that clears the terminal status line (progress bars) before a
    log line and draws it again after, so bars and logs do not overwrite each other."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.status: Any = None  # node.progress.TerminalStatus when a bar is shown

    def emit(self, record: logging.LogRecord) -> None:
        status = self.status
        if status is None:
            super().emit(record)
            return
        with status.lock:
            status.erase()
            super().emit(record)
            status.redraw()


class LogControl:
    """What ``setup_logging`` installed: lets the ``logging`` RPC change categories."""

    def __init__(self, filt: CategoryFilter, handlers: list[logging.Handler]) -> None:
        self.filter = filt
        self.handlers = handlers

    @property
    def stderr_handler(self) -> StatusAwareHandler | None:
        for h in self.handlers:
            if isinstance(h, StatusAwareHandler):
                return h
        return None

    def categories(self) -> dict[str, bool]:
        return {c: c in self.filter.enabled for c in CATEGORIES}

    def change(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, bool]:
        cats = set(self.filter.enabled)
        inc, exc = set(include), set(exclude)
        for group in (inc, exc):
            if "all" in group or "1" in group:
                group.discard("all")
                group.discard("1")
                group.update(CATEGORIES)
            unknown = group - set(CATEGORIES)
            if unknown:
                raise ValueError(f"unknown logging category {sorted(unknown)[0]!r}")
        cats = (cats | inc) - exc
        self.filter.set_categories(cats)
        return self.categories()


_control: LogControl | None = None


def current() -> LogControl | None:
    """The LogControl of this process (None before setup_logging, e.g. in unit tests)."""
    return _control


def setup_logging(
    level: str = "info",
    fmt: str = "human",
    categories: Iterable[str] = (),
    log_file: Path | None = None,
    max_mb: int = DEFAULT_LOG_MAX_MB,
    stream: TextIO | None = None,
) -> LogControl:
    """Install handlers on the root logger (replacing earlier ones of ours)."""
    global _control
    lvl = getattr(logging, level.upper())
    filt = CategoryFilter(lvl, categories)
    formatter: logging.Formatter = (
        JsonFormatter() if fmt == "json" else logging.Formatter(HUMAN_FORMAT)
    )
    handlers: list[logging.Handler] = []
    err = StatusAwareHandler(stream or sys.stderr)
    handlers.append(err)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        rot = logging.handlers.RotatingFileHandler(
            log_file,
            maxBytes=max(1, max_mb) * 1024 * 1024,
            backupCount=LOG_BACKUPS,
            encoding="utf-8",
        )
        handlers.append(rot)
    root = logging.getLogger()
    if _control is not None:
        for h in _control.handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        h.setFormatter(formatter)
        h.addFilter(filt)
        root.addHandler(h)
    # Records below the level are made only where a category may want them.
    root.setLevel(logging.DEBUG if (filt.enabled or lvl <= logging.DEBUG) else lvl)
    logging.getLogger("pouw").setLevel(logging.DEBUG)
    logging.getLogger("aiohttp").setLevel(max(lvl, logging.INFO))
    logging.getLogger("asyncio").setLevel(max(lvl, logging.INFO))
    logging.getLogger("numba").setLevel(logging.WARNING)
    _control = LogControl(filt, handlers)
    return _control
