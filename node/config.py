"""Node settings after defaults, the TOML file and flags are merged (node/settings_file.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chain.datadir import default_datadir as default_datadir  # (node's modules import it here)

# The node's version (getnetworkinfo, the metrics, `pouw --version`): pyproject.toml's,
# which tests/test_ops_config.py checks it against.
VERSION = "0.1.0"
# TCP ports are 16-bit numbers: 65535 is the highest there is.
MAX_PORT = 65535
# Port 0 asks the OS for any free port; the RPC, blob and metrics servers log the port
# they got. P2P has no use for it (peers are told our listen port, and 0 there means the
# network's default), so its lowest port is 1.
ANY_FREE_PORT = 0
LOWEST_P2P_PORT = 1


def port_after_rpc(rpc_port: int | None, network_rpc_port: int, offset: int) -> int:
    """The default port of a server beside the RPC one (blobs +3, metrics +2): it
    follows --rpc-port, so that two nodes on one host given different RPC ports get
    different defaults (the network's RPC port when --rpc-port is unset or 0)."""
    return (rpc_port or network_rpc_port) + offset


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
    repair: bool = False  # LevelDB's repairer on the chain database, then a reindex
    max_blocks: int | None = None  # stop after mining this many blocks (tests, demos)
    genesis_file: Path | None = None  # a private network's genesis file instead of a shipped one
    # P2P (p2p/): off with p2p=False; listen on p2p_bind:p2p_port (None: the network's
    # default port) unless listen=False (then outbound only: the address book's peers,
    # connect, addnode).
    p2p: bool = True
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
    # Logs (node/logs.py): stderr plus <network_dir>/debug.log, rotated at log_max_mb.
    log_level: str = "info"
    log_format: str = "human"  # "human" or "json"
    debug: tuple[str, ...] = ()  # debug categories: net, sync, validation, ... or all
    log_file: bool = True
    log_max_mb: int = 50
    progress: str = "auto"  # terminal progress bars: auto (when stderr is a tty), always, never
    # Prometheus /metrics, /health, /ready (node/metrics.py) on their own port.
    metrics: bool = False
    metrics_bind: str = "127.0.0.1"
    metrics_port: int | None = None  # None: the RPC port + 2 (port_after_rpc)
    # The web dashboard (node/dashboard/) on the RPC port at /dashboard/.
    dashboard: bool = False
    config_file: Path | None = None  # the TOML file that was read, if any
    # Compute market (docs/MARKET.md): the matrix blob endpoint and the miner's side.
    blobs: bool = True  # serve matrix blobs (needs rpc: uploads take the RPC's credentials)
    blob_bind: str | None = None  # None: rpc_bind
    blob_port: int | None = None  # None: the RPC port + 3 (port_after_rpc)
    blob_quota_mb: int = 8192
    # blobs no job in flight needs are kept this long after they were stored (0: until
    # the quota needs room); node/blob_retention.py
    blob_keep_hours: float = 24.0
    market: bool = True  # with --mine, mine paid jobs when one is open
    miner_wallet: str | None = None  # keystore whose key signs result commits
    min_bounty_per_mac: float = 0.0  # base units per multiply-add a job must pay
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def network_dir(self) -> Path:
        return network_dir(self.datadir, self.network)
