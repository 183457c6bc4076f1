"""Answers that are pure functions of the active tip, kept until the tip changes.

The chain's state and its active blocks change only when the tip does (a connect, a
disconnect or a reorg moves it; RPC calls run on the event loop between them, never
during one), so a state read or an encoded answer made at one tip serves every call
at that tip. Each call names the tip it is at; a different tip empties the memo. The
memo is bounded by entries and by the text it holds (past either it is emptied and
refilled).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TipMemo(Generic[V]):
    def __init__(self, max_items: int, max_bytes: int = 1 << 62) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._tip = b""
        self._items: dict[Hashable, V] = {}
        self._bytes = 0
        self.hits = 0

    def get(self, tip: bytes, key: Hashable) -> V | None:
        if tip != self._tip:
            self._reset(tip)
            return None
        value = self._items.get(key)
        if value is not None:
            self.hits += 1
        return value

    def put(self, tip: bytes, key: Hashable, value: V, size: int = 0) -> None:
        """Remember ``value`` (``size``: its share of max_bytes) at ``tip``."""
        if tip != self._tip:
            self._reset(tip)
        if size > self.max_bytes:
            return
        if len(self._items) >= self.max_items or self._bytes + size > self.max_bytes:
            self._reset(tip)
        self._items[key] = value
        self._bytes += size

    def _reset(self, tip: bytes) -> None:
        self._tip = tip
        self._items.clear()
        self._bytes = 0
