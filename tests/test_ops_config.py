"""Operator settings: the TOML file, flags over file over defaults, logs, readiness rules."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from node.cli import build_parser
from node.health import readiness
from node.logs import CategoryFilter, JsonFormatter, LogControl, category_of
from node.settings_file import ConfigError, resolve, show


def parse(*argv: str) -> SimpleNamespace:
    return build_parser().parse_args(["node", *argv])  # type: ignore[return-value]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_file_then_flags_over_defaults(tmp_path: Path) -> None:
    write(tmp_path / "devnet" / "pouw.toml",
          'rpc_port = 4000\np2p_port = 4001\ndebug = ["net", "sync"]\nlisten = false\n'
          'metrics = true\n')  # fmt: skip
    r = resolve(parse("--datadir", str(tmp_path), "--rpc-port", "5000", "--listen"))
    cfg = r.config
    assert cfg.rpc_port == 5000 and r.sources["rpc_port"] == "flag"
    assert cfg.p2p_port == 4001 and r.sources["p2p_port"] == "file"
    assert cfg.listen is True  # the flag beats the file's false
    assert cfg.debug == ("net", "sync") and cfg.metrics is True
    assert cfg.rpc_bind == "127.0.0.1" and r.sources["rpc_bind"] == "default"
    assert r.file == tmp_path / "devnet" / "pouw.toml"
    text = show(r)
    assert "rpc_port = 5000  # flag" in text and "p2p_port = 4001  # file" in text


def test_explicit_config_file_may_choose_network(tmp_path: Path) -> None:
    f = write(tmp_path / "node.toml", f'network = "testnet"\ndatadir = "{tmp_path}"\n')
    cfg = resolve(parse("--config", str(f))).config
    assert cfg.network == "testnet" and cfg.datadir == tmp_path
    assert resolve(parse("--config", str(f), "--network", "devnet")).config.network == "devnet"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("rpc_port = 1\n\nrpc_prot = 2\n", ":3: unknown key 'rpc_prot'"),
        ('# c\nrpc_port = "8332"\n', ":2: key 'rpc_port' must be an integer"),
        ("mine = 1\n", ":1: key 'mine' must be a boolean"),
        ('log_format = "xml"\n', ":1: key 'log_format' must be one of human, json"),
        ('debug = ["net", "gossip"]\n', ":1: key 'debug': unknown category 'gossip'"),
        ("mine = true\n[server]\nport = 1\n", ":2: unknown key 'server' (tables are not used"),
        ("[rpc]\nport = 1\n", ":1: key 'rpc' must be a boolean"),
        ('network = "testnet"\n', ":1: key 'network' cannot be set in pouw.toml"),
        ("repair = true\n", ":1: key 'repair' cannot be set in a config file (a repair is run "
         "once: pass --repair for one start)"),
        ("rpc_port = 1\nrpc_bind = \n", "malformed TOML: Invalid value (at line 2, column 12)"),
    ],
)
def test_bad_file_names_file_line_and_key(tmp_path: Path, text: str, expect: str) -> None:
    f = write(tmp_path / "devnet" / "pouw.toml", text)
    with pytest.raises(ConfigError) as err:
        resolve(parse("--datadir", str(tmp_path)))
    assert str(f) in str(err.value) and expect in str(err.value), str(err.value)


def test_unreadable_config_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"config file {missing}: not found"):
        resolve(parse("--config", str(missing)))
    with pytest.raises(ConfigError, match=f"config file {tmp_path}: cannot be read"):
        resolve(parse("--config", str(tmp_path)))  # a folder
    binary = write(tmp_path / "b.toml", "")
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        resolve(parse("--config", str(binary)))


def test_node_process_refuses_a_bad_file_and_config_show_prints(tmp_path: Path) -> None:
    f = write(tmp_path / "devnet" / "pouw.toml", "rpc_port = 7\nbogus = true\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-m", "node.cli", "node", "--datadir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert out.returncode == 2 and f"{f}:2: unknown key 'bogus'" in out.stderr, out.stderr
    f.write_text("rpc_port = 7\n")
    out = subprocess.run([sys.executable, "-m", "node.cli", "config", "show", "--datadir",
                          str(tmp_path), "--p2p-port", "9"],
                         capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "rpc_port = 7  # file" in out.stdout and "p2p_port = 9  # flag" in out.stdout
    # the ports beside the RPC one follow it (two nodes on one host, different RPC ports)
    assert "# metrics_port = (unset: 9)  #" in out.stdout, out.stdout
    assert "# blob_port = (unset: 10)  #" in out.stdout, out.stdout


def test_ports_beside_rpc_follow_the_rpc_port(tmp_path: Path) -> None:
    from node.listeners import listeners

    cfg = resolve(parse("--datadir", str(tmp_path), "--rpc-port", "40000", "--metrics")).config
    ports = {lis.what: lis.port for lis in listeners(cfg, 29333, 29332)}
    assert ports == {"P2P": 29333, "JSON-RPC": 40000, "blob": 40003, "metrics": 40002}
    cfg = resolve(parse("--datadir", str(tmp_path), "--metrics", "--metrics-port", "0")).config
    ports = {lis.what: lis.port for lis in listeners(cfg, 29333, 29332)}
    assert ports["metrics"] == 0 and ports["blob"] == 29335


def record(name: str, msg: str, level: int = logging.DEBUG, module: str = "x") -> logging.LogRecord:
    r = logging.LogRecord(name, level, f"{module}.py", 1, msg, (), None)
    r.module = module
    return r


def test_log_categories_and_filter() -> None:
    assert category_of(record("pouw.p2p", "peer %d connected")) == "net"
    assert category_of(record("pouw.p2p", "sync progress height=%d")) == "sync"
    assert category_of(record("pouw.p2p", "anything", module="sync")) == "sync"
    assert category_of(record("pouw.chain", "x")) == "validation"
    assert category_of(record("pouw.rpc", "x")) == "rpc"
    assert category_of(record("pouw.mining", "x")) == "mining"
    assert category_of(record("pouw.compute", "x")) == "mining"
    assert category_of(record("pouw.node", "x")) is None
    f = CategoryFilter(logging.INFO, ["net"])
    assert f.filter(record("pouw.p2p", "peer"))
    assert not f.filter(record("pouw.chain", "x"))
    assert f.filter(record("pouw.chain", "x", logging.INFO))
    control = LogControl(f, [])
    assert control.change(["validation"], ["net"])["validation"] is True
    assert f.filter(record("pouw.chain", "x")) and not f.filter(record("pouw.p2p", "peer"))
    assert all(control.change(["all"]).values())
    with pytest.raises(ValueError, match="unknown"):
        control.change(["gossip"])


def test_json_log_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(CategoryFilter(logging.INFO))
    logger = logging.getLogger("pouw.p2p.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("peer %d misbehaved", 7)
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["level"] == "warning" and line["category"] == "net"
    assert line["msg"] == "peer 7 misbehaved" and line["ts"].endswith("Z")


def fake_node(tip: int, peers: list[int] | None, target: int | None = None) -> SimpleNamespace:
    chain = SimpleNamespace(tip=SimpleNamespace(height=tip))
    services = []
    if peers is not None:
        ps = {i: SimpleNamespace(ready=True, closed=False, best_height=h, inbound=False)
              for i, h in enumerate(peers)}  # fmt: skip
        dl = SimpleNamespace(target_height=lambda: tip if target is None else target)
        services.append(SimpleNamespace(name="p2p", peers=ps, dl=dl))
    return SimpleNamespace(chain=chain, services=services)


def test_readiness_rules() -> None:
    assert readiness(fake_node(10, None)).reasons == ["P2P is off"]  # type: ignore[arg-type]
    assert readiness(fake_node(10, [])).reasons == ["no peers"]  # type: ignore[arg-type]
    r = readiness(fake_node(10, [50]))  # type: ignore[arg-type]
    assert not r.ready and r.reasons == ["syncing: height 10 of 50"]
    assert not readiness(fake_node(10, [10], target=30)).ready  # type: ignore[arg-type]
    assert readiness(fake_node(48, [50])).ready  # type: ignore[arg-type]  # within 2 blocks


def test_output_cut_short_by_its_reader_is_not_an_error(tmp_path: Path) -> None:
    """`pouw ... | head`: the reader goes away; the command neither logs an error nor
    prints a traceback (stdout is closed before it writes a byte, so it always sees EPIPE)."""
    env = {**os.environ, "POUW_DATADIR": str(tmp_path)}
    env.pop("PYTHONUNBUFFERED", None)  # block-buffered, as in a shell: written at exit
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "config", "show", "--datadir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Broken pipe" not in err and "Traceback" not in err and "error" not in err.lower(), err


def test_a_datadir_that_is_a_file_or_a_network_folder_is_refused(tmp_path: Path) -> None:
    afile = write(tmp_path / "f", "hi\n")
    with pytest.raises(ConfigError, match=r"--datadir .*/f is a file, not a folder"):
        resolve(parse("--datadir", str(afile)))
    (tmp_path / "d" / "devnet" / "chain").mkdir(parents=True)
    # a folder named chain that is no chain database (this repository's chain/ package)
    assert resolve(parse("--datadir", str(tmp_path / "d" / "devnet"))).config
    write(tmp_path / "d" / "devnet" / "chain" / "CURRENT", "MANIFEST-000001\n")
    with pytest.raises(ConfigError, match=r"holds a chain database .*pass --datadir .*/d$"):
        resolve(parse("--datadir", str(tmp_path / "d" / "devnet")))
    assert resolve(parse("--datadir", str(tmp_path / "d"))).config.datadir == tmp_path / "d"


def test_the_node_version_is_the_packages() -> None:
    import tomllib

    from node.config import VERSION

    with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
        assert tomllib.load(f)["project"]["version"] == VERSION
