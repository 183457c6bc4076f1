"""`--json` failures: a script that asked for machine-readable output gets its error as
one JSON line on stderr too (stdout stays empty), with the exit code of the text form.

The commands run in this process (node.cli.main, the `pouw` entry point); nothing here
needs a node: the failures are a node that does not answer and inputs refused before
any call."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from node.cli import main as pouw
from tests.p2putil import free_port
from wallet.cli import error_type, say_failure
from wallet.rpc import RpcConnectionError, RpcError


def _json_error(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = pouw(list(argv))
    out, err = capsys.readouterr()
    assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, nothing else (no log line beside it)
    return code, json.loads(lines[0])["error"]


def test_json_failures_are_one_json_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    where = ["--network", "devnet", "--datadir", str(tmp_path)]
    node = [*where, "--rpc", down, "--rpc-user", "u", "--rpc-password", "p"]
    code, error = _json_error(capsys, "job", "status", "ab" * 32, "--json", *node)
    assert code == 1 and error["type"] == "rpc_connection_error", error
    assert "cannot reach the node" in str(error["message"]), error
    code, error = _json_error(capsys, "job", "status", "xyz", "--json", *node)
    assert code == 1 and error["type"] == "job_error", error
    assert "is not a product or job id" in str(error["message"]), error
    # a node URL that is not one: a usage error (exit 2), as for `pouw rpc`
    code, error = _json_error(capsys, "job", "status", "ab" * 32, "--json", *where, "--rpc",
                              "http://u:secret@127.0.0.1:abc")  # fmt: skip
    assert code == 2 and error["type"] == "node_url_error", error
    assert "secret" not in str(error["message"]), error
    # no wallet there: the wallet's own error, typed
    code, error = _json_error(capsys, "wallet", "address", "--json", *where)
    assert code == 1 and error["type"] == "keystore_error", error
    assert "pouw wallet create" in str(error["message"]), error
    # the same failure without --json: one readable line
    capsys.readouterr()
    assert pouw(["job", "status", "xyz", *node]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "is not a product or job id" in err


def test_a_refusal_carries_the_nodes_error_code(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(json=True)
    say_failure(args, "the node refused: no such job", RpcError(-5, "no such job", "getjob"))
    got = json.loads(capsys.readouterr().err)
    assert got == {"error": {"type": "rpc_error", "message": "the node refused: no such job",
                             "code": -5}}  # fmt: skip
    assert error_type(RpcConnectionError("x")) == "rpc_connection_error"
    assert error_type(FileNotFoundError(2, "gone")) == "os_error"
    assert error_type(KeyboardInterrupt()) == "interrupted"
