"""A node URL that carries its RPC credentials (``http://user:password@host:port``, as
curl takes one): sent as Basic auth, never as part of the URL, behind explicit
--rpc-user/--rpc-password and ahead of the datadir's cookie; a password in a URL is
never printed. Against the node's real RPC server."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

import pytest

from node.cli import main as pouw
from tests.test_rpc_util import Harness, run_node
from wallet.rpc import RpcClient, RpcConnectionError, check_node_url, shown_url, url_credentials


def test_url_credentials_are_split_off_and_hidden_in_messages() -> None:
    assert url_credentials("http://127.0.0.1:9") == ("http://127.0.0.1:9", None)
    assert url_credentials("http://u%40x:p%3Aw@127.0.0.1:9/") == (
        "http://127.0.0.1:9/", ("u@x", "p:w"),
    )  # fmt: skip
    assert url_credentials("u:p@host:9") == ("http://host:9", ("u", "p"))  # no scheme
    assert shown_url("http://u:secret@h:9") == "http://u:***@h:9"
    with pytest.raises(RpcConnectionError) as exc:
        check_node_url("http://u:secret@127.0.0.1:abc")
    assert "secret" not in str(exc.value) and "u:***@127.0.0.1:abc" in str(exc.value)


def test_a_url_with_credentials_reaches_the_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    async def body(h: Harness) -> None:
        cookie = h.node.config.network_dir.joinpath(".cookie").read_text().strip()
        user, _, secret = cookie.partition(":")
        host = urllib.parse.urlsplit(h.url).netloc
        quoted = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(secret, safe='')}"
        with_creds = f"http://{quoted}@{host}"

        def calls() -> None:
            client = RpcClient(with_creds)
            assert client.url == f"http://{host}" and client.credentials() == (user, secret)
            assert client.call("getblockcount") == 0
            # explicit credentials come first: wrong ones are refused, the URL's unused
            with pytest.raises(RpcConnectionError, match="refused the credentials"):
                RpcClient(with_creds, "someone", "else").call("getblockcount")
            # ahead of a cookie: a datadir with no cookie is not read
            client = RpcClient.from_options(with_creds, "devnet", tmp_path / "no-node")
            assert client.call("getblockcount") == 0
            capsys.readouterr()
            got = pouw(["rpc", "--datadir", str(tmp_path / "no-node"), "--rpc", with_creds,
                        "getblockcount"])  # fmt: skip
            assert got == 0 and capsys.readouterr().out.strip() == "0"
            wrong = f"http://{user}:not-it@{host}"
            caplog.clear()
            assert pouw(["rpc", "--rpc", wrong, "getblockcount"]) == 1
            said = caplog.text + capsys.readouterr().err
            assert "refused the credentials" in said and "not-it" not in said, said

        await asyncio.to_thread(calls)

    run_node(tmp_path, body)
