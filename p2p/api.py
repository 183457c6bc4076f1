"""What the P2P layer needs from the node that runs it (node/service.Node implements
it); p2p/ never imports node/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from chain.block import Block
from chain.chainstate import ChainState, ProcessResult
from chain.mempool import Mempool
from chain.mempool_result import MempoolResult
from chain.network import Network
from chain.tx import Transaction


class P2PConfig(Protocol):
    listen: bool
    p2p_bind: str
    p2p_port: int | None
    connect: tuple[str, ...]
    addnode: tuple[str, ...]

    @property
    def network_dir(self) -> Path: ...


class TipChangeLike(Protocol):
    @property
    def disconnected(self) -> tuple[Block, ...]: ...

    @property
    def connected(self) -> tuple[Block, ...]: ...


class SignalLike(Protocol):
    def connect(self, listener: Callable[[Any], None]) -> None: ...

    def disconnect(self, listener: Callable[[Any], None]) -> None: ...


class NodeEventsLike(Protocol):
    tip_changed: Any  # SignalLike of TipChangeLike
    tx_accepted: Any  # SignalLike of Transaction


class NodeAPI(Protocol):
    """The chain, the mempool and the two doors every block and transaction enter by."""

    config: Any  # P2PConfig
    network: Network
    chain: ChainState
    mempool: Mempool
    events: NodeEventsLike

    def submit_block(self, block: Block) -> ProcessResult: ...

    def submit_transaction(self, tx: Transaction) -> MempoolResult: ...
