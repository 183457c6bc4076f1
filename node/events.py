"""What happened in the node, for whoever listens (P2P relay, RPC subscriptions, metrics).

Listeners run synchronously on the event loop thread, in registration order; they
must be quick (queue work, don't do it). A listener that raises is logged and skipped
so one broken subscriber cannot stall block processing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from chain.block import Block
from chain.tx import Transaction

log = logging.getLogger("pouw.node")

T = TypeVar("T")


class Signal(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Callable[[T], None]] = []

    def connect(self, listener: Callable[[T], None]) -> None:
        self._listeners.append(listener)

    def disconnect(self, listener: Callable[[T], None]) -> None:
        self._listeners.remove(listener)

    def emit(self, value: T) -> None:
        for listener in list(self._listeners):
            try:
                listener(value)
            except Exception:  # noqa: BLE001 - see module docstring
                log.exception("listener of %s failed", self.name)


@dataclass(frozen=True)
class TipChange:
    """The active chain moved: ``disconnected`` (old tip first), then ``connected`` in order."""

    disconnected: tuple[Block, ...]
    connected: tuple[Block, ...]


@dataclass
class NodeEvents:
    tip_changed: Signal[TipChange] = field(default_factory=lambda: Signal("tip_changed"))
    block_stored: Signal[Block] = field(default_factory=lambda: Signal("block_stored"))
    tx_accepted: Signal[Transaction] = field(default_factory=lambda: Signal("tx_accepted"))
    # A wallet sent again a tx the pool already holds (sendrawtransaction): announce it
    # to the peers that do not know it (one that joined since, or a reorg brought back).
    tx_resent: Signal[Transaction] = field(default_factory=lambda: Signal("tx_resent"))
