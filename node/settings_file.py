"""Node options: one table drives the command-line flags, the TOML file and ``config show``.

Precedence: flags over the file over defaults. The file is ``--config FILE``, else
``<datadir>/<network>/pouw.toml`` when it exists. Keys are the option names below
(``rpc_port = 29332``, ``debug = ["net", "sync"]``); an unknown key, a wrong type or a
malformed file stops the node with a message naming the file, the line and the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.network import NETWORKS
from node.config import (
    ANY_FREE_PORT,
    LOWEST_P2P_PORT,
    MAX_PORT,
    NodeConfig,
    default_datadir,
    network_dir,
)
from node.logs import CATEGORIES
from p2p.addrbook import PEER_ADDRESS_FORMS, split_host_port
from wallet.rpc import MAX_SETTINGS_BYTES, SETTINGS_NAME

# (the clients read the same file for the node's ports: wallet/rpc.local_ports)
CONFIG_NAME = SETTINGS_NAME
MAX_CONFIG_BYTES = MAX_SETTINGS_BYTES


class ConfigError(Exception):
    """The configuration file cannot be used; the message names file, line and key."""


@dataclass(frozen=True)
class Bounds:
    """The values a number option accepts: ``low`` to ``high`` (None: no upper end), finite;
    ``hint`` says what an end means or what to use instead, for the error message."""

    low: float
    high: float | None = None
    hint: str = ""

    def problem(self, value: float) -> str | None:
        """None when ``value`` is accepted, else why not and what to give instead."""
        span = f"{self.low:g} or more" if self.high is None else f"{self.low:g} to {self.high:g}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value} is not a finite number: use {span}"
        if self.low <= value and (self.high is None or value <= self.high):
            return None
        return f"{value} is out of range: use {span}" + (f" ({self.hint})" if self.hint else "")


# Listeners that report the port they got accept 0 ("any free port"); P2P does not.
PORT = Bounds(ANY_FREE_PORT, MAX_PORT, "0: the OS picks a free port")
P2P_PORT = Bounds(LOWEST_P2P_PORT, MAX_PORT, "leave it out for the network's default")


@dataclass(frozen=True)
class Option:
    key: str  # TOML key and NodeConfig field
    kind: type  # bool, int, str, Path, or list (of str)
    help: str
    choices: tuple[str, ...] | None = None
    flag: str | None = None  # default: --key-with-dashes
    neg_flag: str | None = None  # a bool that defaults to True is turned off by this flag
    metavar: str | None = None
    file: bool = True  # may be set in the file
    bounds: Bounds | None = None  # an int or float option's accepted values

    @property
    def flags(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("network", str, "devnet, testnet or mainnet", choices=NETWORKS, file=False),
    Option("datadir", Path, "data folder (default ~/.pouw or $POUW_DATADIR)", file=False),
    Option("genesis_file", Path, "genesis file of a private network"),
    Option("mine", bool, "mine filler products on this node"),
    Option("miner_address", str, "address that receives mined rewards"),
    Option(
        "engine",
        str,
        "mining engine (default: cupy if usable, else numpy)",
        choices=("numpy", "cupy"),
    ),
    Option("reindex", bool, "rebuild state from stored blocks"),
    Option(
        "repair",
        bool,
        "repair a damaged chain database (LevelDB repair), then rebuild state as --reindex",
        file=False,
    ),
    Option(
        "max_blocks",
        int,
        "stop after mining this many blocks",
        bounds=Bounds(1, hint="leave it out to mine without end"),
    ),
    Option(
        "p2p", bool, "peer-to-peer networking (--nop2p: none, neither inbound nor outbound)",
        neg_flag="--nop2p",
    ),
    Option(
        "listen", bool, "accept inbound peers (--nolisten: outbound only)", neg_flag="--nolisten"
    ),
    Option("p2p_bind", str, "P2P listen address"),
    Option("p2p_port", int, "P2P port (default: the network's)", bounds=P2P_PORT),
    Option("connect", list, "connect only to this peer (repeatable)", metavar="HOST:PORT"),
    Option("addnode", list, "also connect to this peer (repeatable)", metavar="HOST:PORT"),
    Option("rpc", bool, "serve JSON-RPC", neg_flag="--norpc"),
    Option("rpc_bind", str, "JSON-RPC listen address"),
    Option("rpc_port", int, "JSON-RPC port (default: the network's)", bounds=PORT),
    Option("rpc_user", str, "JSON-RPC user (besides the cookie file)"),
    Option("rpc_password", str, "JSON-RPC password for --rpc-user"),
    Option(
        "log_level", str, "least severe level logged", choices=("debug", "info", "warning", "error")
    ),
    Option("log_format", str, "log line format", choices=("human", "json")),
    Option(
        "debug",
        list,
        "log debug messages of a category (repeatable): " + ", ".join(CATEGORIES) + " or all",
        metavar="CATEGORY",
    ),
    Option("log_file", bool, "write <datadir>/<network>/debug.log", neg_flag="--nodebuglogfile"),
    Option(
        "log_max_mb",
        int,
        "rotate debug.log at this size, MiB (5 old files kept)",
        bounds=Bounds(1, hint="--nodebuglogfile or log_file = false: no debug.log"),
    ),
    Option("progress", str, "terminal progress bars", choices=("auto", "always", "never")),
    Option("metrics", bool, "serve Prometheus /metrics, /health and /ready"),
    Option("metrics_bind", str, "address of the metrics server"),
    Option(
        "metrics_port",
        int,
        "port of the metrics server (default: the RPC port + 2)",
        bounds=PORT,
    ),
    Option("dashboard", bool, "serve the web dashboard at /dashboard/ on the RPC port"),
    Option("blobs", bool, "serve matrix blobs of the compute market", neg_flag="--noblobs"),
    Option("blob_bind", str, "address of the blob server (default: --rpc-bind)"),
    Option(
        "blob_port",
        int,
        "port of the blob server (default: the RPC port + 3)",
        bounds=PORT,
    ),
    Option(
        "blob_quota_mb",
        int,
        "disk quota of the blob store, MiB",
        bounds=Bounds(1, hint="--noblobs or blobs = false: no blob server"),
    ),
    Option(
        "blob_keep_hours",
        float,
        "keep blobs no job in flight needs this long (0: until the quota needs room)",
        bounds=Bounds(0, hint="0: keep them until the quota needs room"),
    ),
    Option("market", bool, "mine paid jobs when one is open (with --mine)", neg_flag="--nomarket"),
    Option(
        "miner_wallet",
        str,
        "wallet name whose key signs job results (password: $POUW_WALLET_PASSWORD)",
        metavar="NAME",
    ),
    Option(
        "min_bounty_per_mac",
        float,
        "least bounty per multiply-add worth mining, base units",
        bounds=Bounds(0, hint="0: any paid job"),
    ),
)
BY_KEY = {o.key: o for o in OPTIONS}
TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    str: "a string",
    Path: "a path string",
    list: "a list of strings",
    float: "a number",
}


def bounded(kind: type, bounds: Bounds) -> Callable[[str], Any]:
    """An argparse ``type=`` for a number flag: argparse's own message for text that is
    no number, ours (the value, the range, what to use) for one out of ``bounds``."""

    def convert(text: str) -> Any:
        value = kind(text)  # ValueError: argparse says "invalid int value: 'x'"
        problem = bounds.problem(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its own message
    return convert


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """Every option as a flag; an absent flag leaves no attribute (file/defaults apply)."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"TOML settings (default: <datadir>/<network>/{CONFIG_NAME})",
    )
    S = argparse.SUPPRESS
    for o in OPTIONS:
        if o.kind is bool:
            parser.add_argument(o.flags, dest=o.key, action="store_true", default=S, help=o.help)
            if o.neg_flag:
                parser.add_argument(
                    o.neg_flag,
                    dest=o.key,
                    action="store_false",
                    default=S,
                    help=f"do not {o.help[0].lower()}{o.help[1:]}",
                )
        elif o.kind is list:
            parser.add_argument(
                o.flags,
                dest=o.key,
                action="append",
                default=S,
                metavar=o.metavar,
                help=o.help,
                choices=CATEGORIES + ("all",) if o.key == "debug" else None,
            )
        else:
            parser.add_argument(
                o.flags,
                dest=o.key,
                type=o.kind if o.bounds is None else bounded(o.kind, o.bounds),
                default=S,
                choices=o.choices,
                metavar=o.metavar,
                help=o.help,
            )


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(NodeConfig):
        if f.name in BY_KEY:
            out[f.name] = f.default
    out["datadir"] = default_datadir()
    return out


def key_line(text: str, key: str) -> int | None:
    """Line (1-based) where ``key`` is assigned in TOML text, or None."""
    k = re.escape(key)
    rx = re.compile(rf"""^\s*(?:(?:{k}|"{k}"|'{k}')\s*=|\[\s*(?:{k}|"{k}"|'{k}')\s*[.\]])""")
    for no, line in enumerate(text.splitlines(), 1):
        if rx.match(line):
            return no
    return None


def _where(path: Path, text: str, key: str) -> str:
    line = key_line(text, key)
    return f"{path}:{line}" if line is not None else str(path)


def _check_value(o: Option, value: Any) -> Any:
    """The value converted to the option's type, or raise TypeError(expected)."""
    if o.kind is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if o.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if o.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError
        return float(value)
    if o.kind is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError
        return value
    if not isinstance(value, str):
        raise TypeError
    return expand_path(value) if o.kind is Path else value


def expand_path(text: str) -> Path:
    """``text`` as a Path with ``~`` expanded; ValueError (not RuntimeError) when the
    user of ``~user`` does not exist or the text holds a NUL byte."""
    if "\0" in text:
        raise ValueError(f"path {text!r} contains a NUL byte")
    try:
        return Path(text).expanduser()
    except RuntimeError as exc:  # Path.expanduser: "Could not determine home directory"
        raise ValueError(f"path {text!r}: {exc}") from None


def load_file(path: Path, explicit: bool) -> dict[str, Any]:
    """Options from a TOML file ({} when the default file does not exist)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if not explicit:
            return {}
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB, not a settings "
            "file; pass the right file with --config FILE"
        )
    return parse_config(raw, path, explicit)


def parse_config(raw: bytes, path: Path, explicit: bool) -> dict[str, Any]:
    """Options from the bytes of a TOML settings file; only ConfigError on bad input."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text ({exc})") from None
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # (TOMLDecodeError, or an integer of over 4300 digits)
        raise ConfigError(f"config file {path}: malformed TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"config file {path}: malformed TOML: arrays or tables nested too deeply"
        ) from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        o = BY_KEY.get(key)
        if o is None:
            hint = ""
            if isinstance(value, dict):
                hint = " (tables are not used: write every key at the top level)"
            raise ConfigError(f"{_where(path, text, key)}: unknown key {key!r}{hint}")
        if key == "repair":  # a one-off action, never a standing setting
            raise ConfigError(
                f"{_where(path, text, key)}: key 'repair' cannot be set in a config file "
                "(a repair is run once: pass --repair for one start)"
            )
        if not o.file and not explicit:
            raise ConfigError(
                f"{_where(path, text, key)}: key {key!r} cannot be set in {path.name} inside "
                f"the datadir (it decides where that file is); use --{key} or --config FILE"
            )
        try:
            out[key] = _check_value(o, value)
        except ValueError as exc:
            raise ConfigError(f"{_where(path, text, key)}: key {key!r}: {exc}") from None
        except TypeError:
            raise ConfigError(
                f"{_where(path, text, key)}: key {key!r} must be {TYPE_NAMES[o.kind]}"
                + (f" ({', '.join(o.choices)})" if o.choices else "")
                + f", not {type(value).__name__} {value!r}"
            ) from None
        if o.bounds is not None and (problem := o.bounds.problem(out[key])) is not None:
            raise ConfigError(f"{_where(path, text, key)}: key {key!r}: {problem}")
        if o.choices and out[key] not in o.choices:
            raise ConfigError(
                f"{_where(path, text, key)}: key {key!r} must be one of "
                f"{', '.join(o.choices)}, not {value!r}"
            )
        if key == "debug":
            bad = [c for c in out[key] if c not in (*CATEGORIES, "all")]
            if bad:
                raise ConfigError(
                    f"{_where(path, text, key)}: key 'debug': unknown category {bad[0]!r} "
                    f"(choose from {', '.join(CATEGORIES)} or all)"
                )
    return out


# A port for split_host_port's check of a bare HOST (the network's port is used there)
DEFAULT_PORT_STANDIN = 1


@dataclass
class Resolved:
    config: NodeConfig
    sources: dict[str, str]  # key -> "flag", "file" or "default"
    file: Path | None  # the file that was read (None: none found)


def check_datadir(datadir: Path, network: str) -> None:
    """ConfigError for a --datadir that is a file, or that is a network's folder itself
    (it holds chain/; the node would start an empty chain in <it>/<network>/)."""
    if datadir.exists() and not datadir.is_dir():
        raise ConfigError(
            f"--datadir {datadir} is a file, not a folder: give a folder (created if missing)"
        )
    # a chain database (LevelDB's CURRENT) right in it, none where the node looks
    if (datadir / "chain" / "CURRENT").is_file() and not (
        network_dir(datadir, network) / "chain"
    ).exists():
        raise ConfigError(
            f"--datadir {datadir} holds a chain database (chain/) itself: it is a network's "
            f"folder, not a datadir (which holds devnet/, testnet/, mainnet/): pass "
            f"--datadir {datadir.resolve().parent}"
        )


def resolve(args: argparse.Namespace, make: Callable[..., NodeConfig] = NodeConfig) -> Resolved:
    """Defaults, then the file, then flags, into a NodeConfig."""
    flags = {o.key: getattr(args, o.key) for o in OPTIONS if hasattr(args, o.key)}
    values = _defaults()
    sources = dict.fromkeys(values, "default")
    explicit = getattr(args, "config", None)
    if explicit is not None:
        try:
            path: Path = expand_path(str(explicit))
        except ValueError as exc:
            raise ConfigError(f"--config: {exc}") from None
    else:
        net = flags.get("network", values["network"])
        check_datadir(Path(flags.get("datadir", values["datadir"])), net)
        path = network_dir(flags.get("datadir", values["datadir"]), net) / CONFIG_NAME
    from_file = load_file(path, explicit is not None)
    read = path if (from_file or path.exists()) else None
    for layer, name in ((from_file, "file"), (flags, "flag")):
        for key, value in layer.items():
            values[key] = value
            sources[key] = name
    for key in ("connect", "addnode", "debug"):
        values[key] = tuple(values[key] or ())
    for key in ("connect", "addnode"):  # checked here: the P2P service would stop on it
        for peer in values[key]:
            try:
                split_host_port(str(peer), DEFAULT_PORT_STANDIN)
            except ValueError:
                where = f"--{key}" if sources[key] == "flag" else f"{path}: key {key!r}"
                raise ConfigError(
                    f"{where}: {peer!r} is not a peer address: {PEER_ADDRESS_FORMS}"
                ) from None
    config = make(**values, config_file=read)
    return Resolved(config, sources, read)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):  # a float quoted would read back as a string
        return str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def show(resolved: Resolved, implied: dict[str, Any] | None = None) -> str:
    """The effective configuration as TOML, each key with where it came from; an unset
    key in ``implied`` (the ports the node derives from others) shows what it means."""
    cfg = resolved.config
    lines = [
        f"# effective configuration of network {cfg.network}",
        f"# config file: {resolved.file or 'none'}",
        "# precedence: flags over the file over defaults",
    ]
    for o in OPTIONS:
        value = getattr(cfg, o.key)
        src = resolved.sources.get(o.key, "default")
        if value is None:
            meant = (implied or {}).get(o.key)
            unset = "(unset)" if meant is None else f"(unset: {_toml_value(meant)})"
            lines.append(f"# {o.key} = {unset}  # {src}: {o.help}")
            continue
        if o.key == "rpc_password":
            lines.append(f'{o.key} = "********"  # {src}')
            continue
        lines.append(f"{o.key} = {_toml_value(value)}  # {src}")
    return "\n".join(lines)
