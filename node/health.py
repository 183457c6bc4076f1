"""Liveness and readiness of a node, for /health and /ready (node/metrics.py serves them).

* ``/health``: the process is up and its event loop answers (always 200 while it runs).
* ``/ready``: the node can serve current chain data. All of these must hold:

  1. P2P runs and at least one peer has completed the handshake;
  2. the best height known (our best header, the download target, and every ready peer's
     announced height) is at most ``READY_LAG`` blocks above our tip.

  503 with the reasons otherwise. A node with P2P off is never ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.service import Node

READY_LAG = 2  # blocks behind the best known height still counted as synced


@dataclass
class Readiness:
    ready: bool
    height: int
    best_height: int
    peers: int
    reasons: list[str] = field(default_factory=list)

    @property
    def progress(self) -> float:
        return min(1.0, self.height / self.best_height) if self.best_height > 0 else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "height": self.height,
            "best_height": self.best_height,
            "peers": self.peers,
            "progress": round(self.progress, 6),
            "reasons": self.reasons,
        }


def p2p_of(node: Node) -> Any:
    for service in node.services:
        if getattr(service, "name", None) == "p2p":
            return service
    return None


def ready_peers(p2p: Any) -> list[Any]:
    return [p for p in p2p.peers.values() if p.ready and not p.closed]


def best_known_height(node: Node) -> int:
    """The highest block height this node knows of: own tip, headers, peers' claims."""
    best = node.chain.tip.height
    p2p = p2p_of(node)
    if p2p is not None:
        best = max(best, p2p.dl.target_height())
        best = max([best, *(p.best_height for p in ready_peers(p2p))])
    return best


def readiness(node: Node) -> Readiness:
    height = node.chain.tip.height
    best = best_known_height(node)
    p2p = p2p_of(node)
    peers = len(ready_peers(p2p)) if p2p is not None else 0
    reasons = []
    if p2p is None:
        reasons.append("P2P is off")
    elif peers == 0:
        reasons.append("no peers")
    if best - height > READY_LAG:
        reasons.append(f"syncing: height {height} of {best}")
    return Readiness(not reasons, height, best, peers, reasons)
