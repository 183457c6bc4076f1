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
    assert shown_url("http://u:p@ss@h:9") == "http://u:***@h:9"  # a raw @ in it
    with pytest.raises(RpcConnectionError) as exc:
        check_node_url("http://u:secret@127.0.0.1:abc")
    assert "secret" not in str(exc.value) and "u:***@127.0.0.1:abc" in str(exc.value)
    assert url_credentials("http://@h:9") == ("http://h:9", None)  # nothing given
    for broken in ("http://[::1:8332", "http://u:secret@[::1:8332"):  # said, not raised
        assert url_credentials(broken)[1] is None
        with pytest.raises(RpcConnectionError, match="is not a node URL") as exc:
            check_node_url(broken)
        assert "secret" not in str(exc.value)
    assert shown_url("u:secret@host:9") == "u:***@host:9" and shown_url("http://h:9/a") == (
        "http://h:9/a"
    )
    for spelled in ("Sec/9ret", "Sec#9ret", "Sec?9ret"):  # unencoded: no URL, still hidden
        with pytest.raises(RpcConnectionError) as exc:
            check_node_url(f"http://alice:{spelled}@127.0.0.1:31002")
        assert "9ret" not in str(exc.value) and "Sec" not in str(exc.value), exc.value
    assert url_credentials("http://alice@h:9") == ("http://h:9", None)  # no password
    assert url_credentials("http://:@h:9") == ("http://h:9", None)
    # digits before a raw / parse as a port: refused all the same, nothing shown
    with pytest.raises(RpcConnectionError, match="is not a node URL") as exc:
        RpcClient("http://alice:2024/ab@127.0.0.1:9")
    assert "2024" not in str(exc.value) and "/ab" not in str(exc.value), exc.value
    for userinfo in ("alice@", "alice:pw@", ":@"):  # a blob URL takes none at all
        with pytest.raises(RpcConnectionError, match="holds credentials"):
            check_node_url(f"http://{userinfo}h:9", "--blob-url", credentials=False)
    with pytest.raises(RpcConnectionError, match="holds credentials"):
        check_node_url("http://u:p@h:9", "--blob-url", credentials=False)


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


def test_blob_uploads_take_what_the_rpc_takes(tmp_path: Path) -> None:
    """A node given --rpc-user/--rpc-password takes uploads with those credentials as
    with its cookie (a remote buyer or miner holds the former only); others are
    refused with 401."""
    import time

    import numpy as np

    from node.rpc.auth import AUTH_FAIL_DELAY_S
    from wallet.jobs import JobError, upload_blob

    async def body(h: Harness) -> None:
        blobs = next(s for s in h.node.services if s.name == "blobs")
        await blobs.start()
        try:
            url = blobs.url
            cookie = h.node.config.network_dir.joinpath(".cookie").read_text().strip()
            user, _, secret = cookie.partition(":")
            m = np.arange(64, dtype=np.int8).reshape(8, 8)

            def uploads() -> None:
                root = upload_blob(url, "a", m, ("alice", "wonderland"))
                assert upload_blob(url, "a", m, (user, secret)) == root
                started = time.monotonic()
                with pytest.raises(JobError, match="401"):
                    upload_blob(url, "a", m, ("alice", "not-it"))
                assert time.monotonic() - started >= AUTH_FAIL_DELAY_S  # a guess waits

            await asyncio.to_thread(uploads)
        finally:
            await blobs.stop()

    run_node(tmp_path, body, rpc_user="alice", rpc_password="wonderland", blob_port=0)
