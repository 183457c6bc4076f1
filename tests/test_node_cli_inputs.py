"""Bad input to `pouw node` (flags and pouw.toml) ends in one clear line that names the
setting and its value, never a traceback; Ctrl-C in a waiting command says so."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compute.select import EngineUnavailableError, gpu_usable, select_engine
from node.cli import main
from tests.p2putil import free_port

# A node that fails a setting check stops within a second or two; a minute covers a
# slow, loaded CI machine without letting a hung node hold the run.
NODE_TIMEOUT_S = 60


def pouw(*args: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", *args]


def sigint_default() -> None:
    """In the child: SIGINT as a terminal gives it. A test run started in the background
    inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("node")
    assert main(["init", "--network", "devnet", "--datadir", str(path)]) == 0
    return path


def own_ports() -> list[str]:
    """P2P, RPC and blob ports of the node's own, so nothing else listening interferes."""
    return ["--p2p-port", str(free_port()), "--rpc-port", str(free_port()),
            "--blob-port", str(free_port())]  # fmt: skip


def run_node(datadir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pouw("node", "--network", "devnet", "--datadir", str(datadir), "--progress", "never",
             *own_ports(), *extra),
        capture_output=True, text=True, timeout=NODE_TIMEOUT_S,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def one_clean_error(got: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert got.returncode == code, got.stderr
    assert "Traceback" not in got.stderr, got.stderr
    assert "node up" not in got.stderr, got.stderr  # refused before the node said it runs
    errors = [line for line in got.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, got.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def config_show(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *argv: str
) -> tuple[int, str, str]:
    """`pouw config show ...` in this process: the node's option parser and file checks.
    Returns the exit code, stdout, and stderr with the logged lines (pytest holds those)."""
    try:
        code = main(["config", "show", *argv])
    except SystemExit as exc:  # argparse refuses a flag
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err + caplog.text


# --- 1 and 5: ranges of number flags and keys ----------------------------------------

RANGE_CASES = [
    ("rpc_port", "70000", "use 0 to 65535"),
    ("rpc_port", "-1", "use 0 to 65535"),
    ("p2p_port", "70000", "use 1 to 65535"),
    ("p2p_port", "0", "use 1 to 65535"),
    ("blob_port", "70000", "use 0 to 65535"),
    ("metrics_port", "70000", "use 0 to 65535"),
    ("blob_quota_mb", "-1", "use 1 or more"),
    ("blob_keep_hours", "-5", "use 0 or more"),
    ("blob_keep_hours", "nan", "not a finite number"),
    ("log_max_mb", "0", "use 1 or more"),
    ("min_bounty_per_mac", "-3", "use 0 or more"),
    ("max_blocks", "0", "use 1 or more"),
    ("max_blocks", "-1", "use 1 or more"),
]


@pytest.mark.parametrize(("key", "value", "rule"), RANGE_CASES)
def test_a_flag_out_of_range_is_refused_with_its_range(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    key: str,
    value: str,
    rule: str,
) -> None:
    flag = "--" + key.replace("_", "-")
    code, out, err = config_show(capsys, caplog, "--datadir", str(tmp_path), f"{flag}={value}")
    assert code == 2 and out == "", out
    assert f"argument {flag}: {value}" in err and rule in err, err


@pytest.mark.parametrize(("key", "value", "rule"), RANGE_CASES)
def test_a_key_out_of_range_is_refused_naming_file_line_and_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    key: str,
    value: str,
    rule: str,
) -> None:
    file = tmp_path / "devnet" / "pouw.toml"
    file.parent.mkdir(parents=True)
    file.write_text(f"mine = false\n{key} = {value}\n")
    code, out, err = config_show(capsys, caplog, "--datadir", str(tmp_path))
    assert code == 2 and out == "", out
    assert f"{file}:2: key '{key}': " in err and rule in err, err


def test_the_meaningful_ends_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """0 keeps its documented meaning where it has one (docs/OPERATIONS.md)."""
    file = tmp_path / "devnet" / "pouw.toml"
    file.parent.mkdir(parents=True)
    file.write_text("blob_keep_hours = 0\nmin_bounty_per_mac = 0\nrpc_port = 0\n")
    code, out, err = config_show(
        capsys, caplog, "--datadir", str(tmp_path), "--blob-port", "0", "--metrics-port", "65535"
    )
    assert code == 0, err
    assert "blob_keep_hours = 0.0  # file" in out  # a number, not the string "0.0"
    assert "rpc_port = 0  # file" in out and "blob_port = 0  # flag" in out


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (("--rpc-port", "70000"), "argument --rpc-port: 70000 is out of range"),
        pytest.param(("--mine", "--max-blocks", "0"), "argument --max-blocks: 0 is out of range",
                     marks=pytest.mark.slow),  # (the in-process cases above cover its range)
    ],
)
def test_the_node_refuses_a_bad_number_before_it_starts(
    datadir: Path, extra: tuple[str, ...], said: str
) -> None:
    got = run_node(datadir, *extra)
    assert got.returncode == 2 and said in got.stderr, got.stderr
    assert "Traceback" not in got.stderr and "node up" not in got.stderr, got.stderr


def test_rpc_command_refuses_a_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["rpc", "--rpc-port", "70000", "getblockcount"])
    assert done.value.code == 2
    assert "argument --rpc-port: 70000 is out of range: use 1 to 65535" in capsys.readouterr().err


# --- 3 and 7: listen addresses and ports, checked before `node up` ----------------------


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--rpc-bind", "999.1.1.1"), ("--rpc-bind 999.1.1.1", "cannot resolve", "0.0.0.0")),
        pytest.param(("--blob-bind", "nosuchhost.invalid"),
                     ("--blob-bind nosuchhost.invalid", "resolve"),
                     marks=pytest.mark.slow),  # a node start each: the rpc case stays default
    ],
)
def test_an_unresolvable_bind_address_names_the_flag(
    datadir: Path, extra: tuple[str, ...], words: tuple[str, ...]
) -> None:
    line = one_clean_error(run_node(datadir, *extra), 2, *words)
    assert "file" not in line, line


def test_an_unresolvable_bind_address_in_the_file_names_the_key(
    datadir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('rpc_bind = "999.1.1.1"\n')
    got = run_node(datadir, "--config", str(config))
    one_clean_error(got, 2, "rpc_bind = '999.1.1.1'", str(config), "cannot resolve")


def test_a_port_in_use_names_the_flag_before_node_up(datadir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        got = run_node(datadir, "--rpc-port", str(port), "--blob-port", str(free_port()))
    one_clean_error(got, 1, f"--rpc-port {port}", "in use", "pick another --rpc-port")


# --- 2 and 4: the miner's settings ------------------------------------------------------


@pytest.mark.skipif(gpu_usable()[0], reason="CuPy runs here: --engine cupy is valid")
def test_engine_cupy_without_cupy_is_one_line_with_the_next_step(datadir: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="install CuPy"):
        select_engine("cupy")
    got = run_node(datadir, "--mine", "--engine", "cupy")
    one_clean_error(got, 2, "--engine cupy", "not usable here", "install CuPy", "--engine numpy")


def test_a_bad_miner_address_names_the_flag_and_the_form(datadir: Path) -> None:
    got = run_node(datadir, "--mine", "--miner-address", "bogus")
    one_clean_error(got, 2, "--miner-address bogus", "dpw1...", "pouw wallet address")


def test_mining_outside_the_devnet_without_an_address_is_refused_before_it_starts(
    tmp_path: Path,
) -> None:
    got = subprocess.run(
        pouw("node", "--network", "testnet", "--datadir", str(tmp_path), "--progress", "never",
             "--mine", *own_ports()),
        capture_output=True, text=True, timeout=NODE_TIMEOUT_S,
    )  # fmt: skip
    one_clean_error(got, 2, "--mine needs --miner-address ADDRESS outside the devnet")
    assert "node stopped" not in got.stderr and "listening" not in got.stderr, got.stderr


def test_a_miner_wallet_that_cannot_sign_stops_the_node_before_it_starts(datadir: Path) -> None:
    """A --miner-wallet that is missing, or holds another key than --miner-address, is
    said before any service starts (before peers connect and sync begins)."""
    from chain.address import address_from_pubkey, encode_address
    from chain.keys import devnet_key
    from chain.network import load_network
    from wallet.wallet import Wallet

    net = load_network("devnet")
    Wallet.create(datadir / "devnet" / "wallets" / "one.json", "pw", net,
                  seed=devnet_key(1).seed, scrypt_n=2**10)  # fmt: skip
    other = encode_address(net.hrp, address_from_pubkey(devnet_key(2).public_key))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "POUW_WALLET_PASSWORD": "pw"}
    for extra, words in (
        (("--miner-wallet", "none"), ("--miner-wallet none",)),
        (("--miner-wallet", "one", "--miner-address", other),
         ("--miner-wallet one holds", f"not --miner-address {other}")),
    ):
        got = subprocess.run(
            pouw("node", "--network", "devnet", "--datadir", str(datadir), "--progress",
                 "never", *own_ports(), "--mine", "--engine", "numpy", *extra),
            capture_output=True, text=True, timeout=NODE_TIMEOUT_S, env=env,
        )  # fmt: skip
        one_clean_error(got, 2, *words)
        assert "listening" not in got.stderr, got.stderr


# --- 6 and 8: miner settings without --mine; Ctrl-C -------------------------------------


def test_miner_settings_without_mine_are_named_and_the_node_stops_cleanly_on_ctrl_c(
    datadir: Path,
) -> None:
    proc = subprocess.Popen(
        pouw("node", "--network", "devnet", "--datadir", str(datadir), "--progress", "never",
             *own_ports(), "--market", "--engine", "numpy", "--miner-wallet", "w",
             "--miner-address", "bogus", "--nop2p", "--connect", "127.0.0.1:1"),
        stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "node up" in line:
                break
        proc.send_signal(signal.SIGINT)  # the node's own clean stop, unchanged
        rest = proc.communicate(timeout=NODE_TIMEOUT_S)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = "".join(seen) + rest
    warning = next((line for line in seen if " WARNING " in line and "--mine" in line), "")
    for flag in ("--market", "--engine", "--miner-wallet", "--miner-address"):
        assert flag in warning, text
    ignored = next((line for line in seen if "with P2P on (no --nop2p): ignored" in line), "")
    assert "--connect" in ignored and "--p2p-port" in ignored, text
    assert proc.returncode == 0 and "node stopped at height" in rest, text
    assert "interrupted" not in text and "Traceback" not in text, text


def test_ctrl_c_in_a_waiting_command_says_interrupted_and_exits_130(tmp_path: Path) -> None:
    """`pouw rpc` waiting for a node that never answers, stopped with Ctrl-C."""
    (tmp_path / "devnet").mkdir()
    (tmp_path / "devnet" / ".cookie").write_text("__cookie__:secret")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        proc = subprocess.Popen(
            pouw("rpc", "--datadir", str(tmp_path), "--rpc-port", str(port), "getblockcount"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=sigint_default,
        )  # fmt: skip
        try:
            silent.settimeout(NODE_TIMEOUT_S)
            conn, _ = silent.accept()  # it has sent its call and waits for the answer
            with conn:
                time.sleep(0.5)
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=NODE_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err


# --- `pouw miner` and `pouw rpc` inputs (second acceptance run) --------------------------


def _miner_says(caplog: pytest.LogCaptureFixture, *argv: str) -> tuple[int, str]:
    """`pouw miner ...` in this process, refused before it reaches any node."""
    caplog.clear()
    try:
        code = main(["miner", "--rpc-user", "u", "--rpc-password", "p", *argv])
    except SystemExit as exc:  # argparse refuses a flag
        code = int(exc.code or 0)
    return code, caplog.text


def test_the_standalone_miner_names_each_bad_input(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from chain.keys import devnet_key
    from chain.network import load_network
    from wallet.wallet import Wallet

    monkeypatch.delenv("POUW_WALLET_PASSWORD", raising=False)
    code, said = _miner_says(caplog, "--address", "dpw1bogus")
    assert code == 2 and "--address 'dpw1bogus' is not an address" in said, said
    code, _ = _miner_says(caplog, "--address", "dpw1bogus", "--max-blocks", "0")
    assert code == 2 and "--max-blocks: 0 is out of range" in capsys.readouterr().err
    keystore = tmp_path / "m.json"
    Wallet.create(keystore, "pw", load_network("devnet"), seed=devnet_key(2).seed,
                  scrypt_n=2**10)  # fmt: skip
    common = ("--market-wallet", str(keystore), "--backend", "numpy")
    code, said = _miner_says(caplog, *common)
    assert code == 2 and "no password for the keystore: pass --password-file" in said, said
    binary = tmp_path / "binpw"
    binary.write_bytes(b"\xff\xfe\x00")
    code, said = _miner_says(caplog, *common, "--password-file", str(binary))
    assert code == 2 and f"--password-file {binary}: cannot read it" in said, said
    code, said = _miner_says(caplog, *common, "--password-file", str(tmp_path / "none"))
    assert code == 2 and "--password-file" in said and "No such file" in said, said
    assert "Traceback" not in said
    # a wallet name, as `pouw wallet --wallet NAME` keeps it in the datadir
    datadir = tmp_path / "data"
    Wallet.create(datadir / "devnet" / "wallets" / "earn.json", "pw", load_network("devnet"),
                  seed=devnet_key(3).seed, scrypt_n=2**10)  # fmt: skip
    named = ("--datadir", str(datadir), "--backend", "numpy", "--market-wallet")
    code, said = _miner_says(caplog, *named, "earn")
    assert code == 2 and "no password for the keystore" in said, said  # found, then asked
    code, said = _miner_says(caplog, *named, "spend")
    assert code == 2 and "--market-wallet spend: no keystore file spend and no wallet" in said
    assert str(datadir / "NETWORK" / "wallets" / "spend.json") in said, said  # none named
    code, said = _miner_says(caplog, *named, "earn", "--network", "testnet")
    assert code == 2 and "testnet/wallets/earn.json" in said, said


@pytest.mark.parametrize(
    ("param", "said"),
    [('["mempool"', "is not valid JSON"), ("1e999", "a number that is not finite"),
     ("[1, NaN]", "a number that is not finite")],
)
def test_rpc_refuses_a_parameter_it_cannot_send_as_json(
    caplog: pytest.LogCaptureFixture, param: str, said: str
) -> None:
    caplog.clear()
    assert main(["rpc", "--rpc-port", "9", "logging", param]) == 2
    assert said in caplog.text, caplog.text


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [("--nonce", "-1", "a nonce is 0 to 18446744073709551615"),
     ("--nonce", str(2**64), "a nonce is 0 to 18446744073709551615"),
     ("--wait", "-1", "give a finite number of seconds"),
     ("--wait", "nan", "give a finite number of seconds"),
     ("--wait", "inf", "give a finite number of seconds"),
     ("--blocks", "0", "must be at least 1"),
     ("--amount", "1.123456789", "has more than 8 decimals"),
     ("--fee", "abc", "is not an amount")],
)
def test_wallet_send_refuses_a_bad_nonce_or_wait_before_signing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, said: str
) -> None:
    """Refused by the parser, before any keystore is opened or anything is sent: a
    negative --wait used to send and then report 'not confirmed' (a retry paid twice)."""
    with pytest.raises(SystemExit) as exit_:
        main(["wallet", "send", "--network", "devnet", "--datadir", str(tmp_path), "--to",
              "dpw1x", "--amount", "1", flag, value])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: " in err and said in err, err


@pytest.mark.parametrize("peer", [
    "127.0.0.1:99999", "127.0.0.1:0", "host:abc", "[::1]:x", "", "127.0.0.1:1_0",
    "127.0.0.1: 80", "http://x:1", "a b c", "[example.org]:1",
])  # fmt: skip
def test_a_bad_peer_address_is_refused_before_the_node_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    peer: str,
) -> None:  # fmt: skip
    """--addnode/--connect and their keys are checked with the settings (the P2P
    service used to stop the started node on them, with a traceback)."""
    code, _, err = config_show(capsys, caplog, "--datadir", str(tmp_path), "--addnode", peer)
    assert code == 2 and f"--addnode: {peer!r} is not a peer address" in err, err
    (tmp_path / "devnet").mkdir(exist_ok=True)
    (tmp_path / "devnet" / "pouw.toml").write_text(f'connect = ["{peer}"]\n')
    caplog.clear()
    code, _, err = config_show(capsys, caplog, "--datadir", str(tmp_path))
    assert code == 2 and "key 'connect'" in err and "is not a peer address" in err, err


def test_clients_find_the_rpc_port_of_the_datadirs_settings_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pouw rpc` and `pouw wallet` read rpc_port (and blob_port) from the pouw.toml of
    --datadir, as the node does; a node that does not answer is exit code 1 for both;
    --rpc-host takes a host, not a URL (--rpc takes one); --rpc-user replaces the cookie."""
    from wallet.rpc import RpcConnectionError, local_port

    def ports(where: Path) -> tuple[int, int]:
        return local_port(where, "devnet", 29332), local_port(where, "devnet", 29332, "blob")

    rpc_port, blob_port = free_port(), free_port()
    settings = tmp_path / "devnet" / "pouw.toml"
    settings.parent.mkdir()
    settings.write_text(f"rpc_port = {rpc_port}\n")
    assert ports(tmp_path) == (rpc_port, rpc_port + 3)
    settings.write_text(f"rpc_port = {rpc_port}\nblob_port = {blob_port}\n")
    assert ports(tmp_path) == (rpc_port, blob_port)
    assert ports(tmp_path / "none") == (29332, 29335)
    for junk in (b"\xff\xfe rpc_port = 1", b"a = " + b"[" * 5000, b"#" * (2**20 + 1)):
        settings.write_bytes(junk)  # the node says what is wrong with it; clients go on
        assert ports(tmp_path) == (29332, 29335)
    settings.write_text("rpc_port = 0\n")  # a port the OS picks: no client can guess it
    with pytest.raises(RpcConnectionError, match=r"sets rpc_port = 0 .*pass the node's URL"):
        local_port(tmp_path, "devnet", 29332)
    assert local_port(tmp_path, "devnet", 29332, "blob") == 29335  # (as the node's default)
    assert main(["job", "list", "--datadir", str(tmp_path)]) == 0  # the datadir's own list
    capsys.readouterr()
    settings.write_text(f"rpc_port = {rpc_port}\nblob_port = {blob_port}\n")
    (tmp_path / "devnet" / ".cookie").write_text("__cookie__:x\n")  # a node gone meanwhile
    from chain.keys import devnet_key
    from chain.network import load_network
    from wallet.wallet import Wallet

    Wallet.create(tmp_path / "devnet" / "wallets" / "default.json", "pw", load_network("devnet"),
                  seed=devnet_key(1).seed, scrypt_n=2**10)  # fmt: skip
    for argv in (["rpc", "--datadir", str(tmp_path), "getblockcount"],
                 ["rpc", "--datadir", str(tmp_path), "--rpc-user", "u", "--rpc-password", "p",
                  "getblockcount"],
                 ["wallet", "balance", "--datadir", str(tmp_path)]):  # fmt: skip
        caplog.clear()
        code = main(argv)
        said = caplog.text + capsys.readouterr().err
        assert code == 1 and f"127.0.0.1:{rpc_port}" in said, (argv, said)
    caplog.clear()
    assert main(["rpc", "--rpc-host", "http://127.0.0.1:9", "getblockcount"]) == 2
    assert "--rpc-host 'http://127.0.0.1:9' is not a host" in caplog.text, caplog.text
    # --rpc URL, as the other clients take it: the datadir's cookie, sent to that URL
    other = free_port()
    for argv, code, said in (
        (["--rpc", f"http://127.0.0.1:{other}"], 1, f"127.0.0.1:{other}"),
        (["--rpc", f"127.0.0.1:{other}", "--rpc-user", "u", "--rpc-password", "p"], 1,
         f"127.0.0.1:{other}"),
        (["--rpc", "http://127.0.0.1:abc"], 2, "is not a node URL"),
        (["--rpc", f"http://127.0.0.1:{other}", "--rpc-port", "5"], 2, "--rpc is the whole URL"),
    ):  # fmt: skip
        caplog.clear()
        got = main(["rpc", "--datadir", str(tmp_path), *argv, "getblockcount"])
        text = caplog.text + capsys.readouterr().err
        assert got == code and said in text, (argv, text)


def test_two_servers_given_one_port_are_refused_naming_both(datadir: Path) -> None:
    port = str(free_port())
    got = run_node(datadir, "--rpc-port", port, "--blob-port", port)
    one_clean_error(got, 2, f"--blob-port {port}: the blob server would share it with the "
                    f"JSON-RPC server (--rpc-port {port})")  # fmt: skip


def test_pouw_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("pouw 0.")


def test_an_option_a_command_does_not_take_is_said_with_that_commands_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["wallet", "balance", "--password-file", "x"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage: pouw wallet balance" in err, err
    assert "pouw wallet balance: error: unrecognized arguments: --password-file x" in err


def test_a_keystore_of_another_network_is_refused_by_address_and_balance(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from chain.keys import devnet_key
    from chain.network import load_network
    from wallet.wallet import Wallet

    keystore = tmp_path / "dev.json"
    Wallet.create(keystore, "pw", load_network("devnet"), seed=devnet_key(1).seed,
                  scrypt_n=2**10)  # fmt: skip
    assert main(["wallet", "address", "--wallet-file", str(keystore)]) == 0
    assert capsys.readouterr().out.startswith("dpw1")
    for command in ("address", "balance"):
        caplog.clear()
        code = main(["wallet", command, "--wallet-file", str(keystore), "--network", "mainnet"])
        said = caplog.text + capsys.readouterr().err
        assert code == 1 and "holds a devnet address" in said and "--network devnet" in said


def test_which_binds_share_a_port() -> None:
    from node.listeners import share_port

    assert share_port("127.0.0.1", "127.0.0.1") and share_port("0.0.0.0", "127.0.0.1")
    assert share_port("::", "127.0.0.1") and share_port("", "::1")
    assert not share_port("0.0.0.0", "::1") and not share_port("127.0.0.1", "10.0.0.1")


def test_a_datadir_of_another_genesis_names_the_database_and_the_flags(
    datadir: Path, tmp_path: Path
) -> None:
    other = json.loads((Path(__file__).parent.parent / "genesis" / "devnet.json").read_text())
    other["genesis"]["timestamp"] += 1
    genesis = tmp_path / "other-genesis.json"
    genesis.write_text(json.dumps(other))
    got = run_node(datadir, "--genesis-file", str(genesis))
    error = one_clean_error(got, 1, "holds a chain with genesis", "--genesis-file", "--datadir")
    assert str(datadir) in error, error


def test_init_on_a_file_says_it_is_not_a_folder(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    got = subprocess.run(pouw("init", "--network", "devnet", "--datadir", str(afile)),
                         capture_output=True, text=True, timeout=NODE_TIMEOUT_S)  # fmt: skip
    assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr
    assert f"--datadir {afile} is a file, not a folder" in got.stderr, got.stderr
    assert "Errno" not in got.stderr
