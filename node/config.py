"""Node settings after flags and defaults are merged (a TOML file comes with issue 7)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_datadir() -> Path:
    return Path(os.environ.get("POUW_DATADIR", Path.home() / ".pouw"))


def network_dir(datadir: Path, network: str) -> Path:
    """Each network keeps its own folder, so one datadir can hold all three."""
    return Path(datadir) / network


@dataclass(frozen=True)
class NodeConfig:
    network: str = "devnet"
    datadir: Path = Path(".")
    mine: bool = False
    miner_address: str | None = None
    engine: str | None = None  # "numpy", "cupy" or None for automatic
    reindex: bool = False
    max_blocks: int | None = None  # stop after mining this many blocks (tests, demos)
    genesis_file: Path | None = None  # a private network's genesis file instead of a shipped one
    # P2P (p2p/): listen on p2p_bind:p2p_port (None: the network's default port).
    listen: bool = True
    p2p_bind: str = "0.0.0.0"
    p2p_port: int | None = None
    connect: tuple[str, ...] = ()  # HOST:PORT; when given, only these peers
    addnode: tuple[str, ...] = ()  # HOST:PORT; also these peers
    # JSON-RPC (node/rpc/): on rpc_bind:rpc_port (None: the network's default port).
    rpc: bool = True
    rpc_bind: str = "127.0.0.1"
    rpc_port: int | None = None
    rpc_user: str | None = None
    rpc_password: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def network_dir(self) -> Path:
        return network_dir(self.datadir, self.network)
