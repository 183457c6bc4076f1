"""The project's one JSON-RPC client (``RpcClient``: ``pouw rpc``, tests, benches).

The transport is JSON-RPC 2.0 over HTTP POST to ``/`` with Basic auth (``--rpc-user``
/ ``--rpc-password``, or the cookie file ``<datadir>/<network>/.cookie`` holding
``user:password`` as bitcoind writes it; node/rpc/auth.py writes it, ``read_cookie``
here is the one reader). Standard library only, so the wallet keeps
to its layer (wallet imports chain, nothing above it).

The typed calls (getaccount, sendrawtransaction, ...) are in wallet/rpc_calls.py.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

COOKIE_NAME = ".cookie"
# HTTP answers a node's JSON-RPC never gives to a POST of its root: the URL is another
# server (the node's blob or P2P port, a web server), said as such
NOT_RPC_STATUSES = frozenset({404, 405})
NOT_RPC_HINT = "is it the node's RPC port (not its P2P or blob port)?"
DEFAULT_TIMEOUT = 30.0
LONGPOLL_TIMEOUT = 120.0


class RpcError(Exception):
    """The node answered with a JSON-RPC error object (``code``, ``message``, ``data``)."""

    def __init__(self, code: int, message: str, method: str = "", data: Any = None) -> None:
        self.code = code
        self.message = message
        self.method = method
        self.data = data
        super().__init__(f"{method}: {message} (code {code})" if method else message)

    @classmethod
    def from_reply(cls, error: Any, method: str = "") -> RpcError:
        """From the ``error`` member of a JSON-RPC answer."""
        if not isinstance(error, dict):
            return cls(-1, str(error), method)
        return cls(
            int(error.get("code", -1)), str(error.get("message", error)), method, error.get("data")
        )


class RpcConnectionError(Exception):
    """No answer: the node is down, the URL is wrong, or the credentials are refused
    (``status``: the HTTP status when there was one, e.g. 401)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NodeUrlError(RpcConnectionError):
    """A node URL given on the command line is not one (a usage error: exit code 2)."""


# JSON-RPC error codes a client acts on (the node's: node/rpc/errors.py)
METHOD_NOT_FOUND = -32601  # the node does not serve the method (an older node)
NOT_FOUND = -5  # no such block, transaction or job


class RpcTimeoutError(RpcConnectionError):
    """The node did not answer within the timeout (a long-poll may simply be waiting)."""


# what the connection errors add: the two things to check when no node answers
UNREACHABLE_HINT = (
    "is the node running, and is this its RPC address? (A node given --rpc-port on its "
    "command line needs that port here too: --rpc http://127.0.0.1:PORT, or --rpc-port "
    "PORT for `pouw rpc`; an rpc_port in its pouw.toml is read from --datadir)"
)
CREDENTIALS_HINT = (
    "pass --datadir of the node (its cookie) or the RPC user and password it has "
    "(--rpc-user/--rpc-password, or in the URL: http://USER:PASSWORD@HOST:PORT)"
)
# The node's settings file in <datadir>/<network>/ (node/settings_file.py reads it too).
# A settings file is a few dozen lines; anything near this size is not one, and reading
# it whole into tomllib would only cost memory.
SETTINGS_NAME = "pouw.toml"
MAX_SETTINGS_BYTES = 1024 * 1024
# node/blobs.py: the blob endpoint is on the RPC port + 3 unless blob_port says
BLOB_PORT_OFFSET = 3


def local_port(
    datadir: Path | None, network: str, default_rpc_port: int, which: str = "rpc"
) -> int:
    """The RPC (``which="rpc"``) or blob (``"blob"``) port of the node that keeps
    ``datadir``: its settings file's ``rpc_port`` / ``blob_port`` when set there (as
    bitcoin-cli reads bitcoin.conf), else the network's RPC port (the blob port: the
    RPC port + 3). A port given to the node as a flag is not known here: the client
    needs it given too. A file that does not read, or a value that is no port, is
    passed over (the node itself says what is wrong); port 0 there (the OS picks one
    at each start) is RpcConnectionError: the client must be given the URL."""
    import tomllib

    settings: dict[str, Any] = {}
    path = Path(datadir or ".").expanduser() / network / SETTINGS_NAME
    if datadir is not None:
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_SETTINGS_BYTES + 1)
            if len(raw) <= MAX_SETTINGS_BYTES:
                settings = tomllib.loads(raw.decode())
        except (OSError, ValueError, RecursionError):  # (TOML and UTF-8 errors are both)
            settings = {}

    def given(key: str) -> int | None:
        value = settings.get(key)
        if type(value) is not int or not 0 <= value <= 65535:
            return None
        if value == 0:
            raise RpcConnectionError(
                f"{path} sets {key} = 0 (the OS picks a port at each start): pass the "
                "node's URL (--rpc http://127.0.0.1:PORT, or --blob-url), with the port "
                "its log names"
            )
        return value

    if which == "rpc":
        return given("rpc_port") or default_rpc_port
    blob = given("blob_port")
    if blob is not None:
        return blob
    rpc = settings.get("rpc_port")  # the node's blob default follows it (0: the network's)
    rpc = rpc if type(rpc) is int and 0 < rpc <= 65535 else default_rpc_port
    return int(rpc) + BLOB_PORT_OFFSET


def url_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without a ``user:password@`` before its host, and that (user, password),
    percent-decoded (None when there is none): a node URL may carry its RPC
    credentials, as curl takes them; they are sent as Basic auth, never in the URL."""
    full = url if "://" in url else "http://" + url
    try:
        scheme, netloc, path, query, fragment = urllib.parse.urlsplit(full)
    except ValueError:  # not a URL at all: check_node_url says so
        return url, None
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        return url, None
    bare = urllib.parse.urlunsplit((scheme, hostport, path, query, fragment))
    user, colon, password = userinfo.partition(":")
    if not colon or not (user or password):  # "http://alice@host", "http://:@host": none
        return bare, None
    return bare, (urllib.parse.unquote(user), urllib.parse.unquote(password))


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def shown_url(url: str) -> str:
    """``url`` for a message or a log: what stands between ``user:`` and the last
    ``@`` (a password, however it is spelled, the URL parsing or not) is ``***``."""
    scheme = _SCHEME.match(url)
    head = scheme.group(0) if scheme else ""
    rest = url[len(head) :]
    userinfo, at, after = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{head}{userinfo.partition(':')[0]}:***@{after}"


def check_node_url(url: str, flag: str = "--rpc", credentials: bool = True) -> str:
    """``url`` as a node URL (``http://`` added when it has no scheme), checked before
    any request: an http(s) scheme, a host and a port in 1-65535, and no
    ``user:password@`` unless ``credentials``. Raises NodeUrlError naming
    ``flag`` and the URL (its password hidden)."""
    full = url if "://" in url else "http://" + url
    url = shown_url(url)
    encode = "give http://HOST:PORT (a password in it percent-encoded: / # ? @ as %2F %23 %3F %40)"
    try:
        parts = urllib.parse.urlsplit(full)
        port = parts.port
    except ValueError as exc:
        # (urllib's reason may quote a piece of a password: not said then)
        why = "" if "@" in full else f" ({exc})"
        raise NodeUrlError(f"{flag} {url!r} is not a node URL{why}: {encode}") from None
    if "@" in full and "@" not in parts.netloc:  # a password cut short by a / ? or #
        raise NodeUrlError(f"{flag} {url!r} is not a node URL: {encode}")
    if not credentials and "@" in parts.netloc:
        raise NodeUrlError(
            f"{flag} {url!r} holds credentials: give it without them (the RPC's "
            "credentials are used)"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeUrlError(
            f"{flag} {url!r} is not a node URL (an http:// or https:// address with a host): "
            "give http://HOST:PORT"
        )
    if port == 0:
        raise NodeUrlError(f"{flag} {url!r}: port 0 is not a port: give http://HOST:PORT")
    return full


def read_cookie(datadir: Path, network: str) -> tuple[str, str]:
    """(user, password) from ``<datadir>/<network>/.cookie`` (node/rpc/auth.py writes it)."""
    path = Path(datadir) / network / COOKIE_NAME
    try:
        text = path.read_text().strip()
    except UnicodeDecodeError:
        raise RpcConnectionError(
            f"the RPC cookie {path} is damaged (not text): restart the node to write a new "
            "one, or pass --rpc-user/--rpc-password"
        ) from None
    except OSError as exc:
        raise RpcConnectionError(
            f"cannot read the RPC cookie {path} ({exc.strerror or exc}); is the node "
            "running with this --datadir? (Or pass the RPC user and password it has: "
            "--rpc-user/--rpc-password)"
        ) from None
    user, sep, password = text.partition(":")
    if not sep:
        raise RpcConnectionError(
            f"the RPC cookie {path} is not 'user:password': restart the node to write a new one"
        )
    return user, password


class RpcClient:
    """A blocking JSON-RPC client: ``call(method, *params)`` returns the result,
    ``batch([(method, params), ...])`` several results in one request.

        client = RpcClient.from_datadir("~/.pouw", network="devnet")
        client.call("getblockcount")
        client.call("getblock", blockhash, 2)           # positional params
        client.call("getaccount", address="dpw1...")    # named params
    """

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        url, in_url = url_credentials(url)  # http://user:password@host:port
        self.url = check_node_url(url)
        self.timeout = timeout
        self._auth: str | None = None
        self._credentials: tuple[str, str] | None = None
        # (datadir, network) of the cookie the credentials came from: read again when
        # the node refuses them (it writes a new cookie each time it starts)
        self._cookie: tuple[Path, str] | None = None
        if user is None and in_url is not None:  # explicit credentials come first
            user, password = in_url
        if user is not None:
            self._set_credentials(user, password or "")
        self._ids = itertools.count(1)
        self._local = threading.local()  # each thread's kept-open connection
        self._reload_lock = threading.Lock()  # one thread reads a new cookie at a time

    @classmethod
    def from_options(
        cls,
        url: str,
        network: str,
        datadir: Path | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RpcClient:
        """Explicit credentials if given, else those in ``url`` (``user:password@``),
        else the cookie of ``datadir`` (if given)."""
        if user is None and datadir is not None and url_credentials(url)[1] is None:
            user, password = read_cookie(datadir, network)
            client = cls(url, user, password, timeout)
            client._cookie = (datadir, network)
            return client
        return cls(url, user, password, timeout)

    def _set_credentials(self, user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._credentials, self._auth = (user, password), f"Basic {token}"  # (one store)

    def credentials(self) -> tuple[str, str] | None:
        """(user, password) as last used: a cookie's, read again after a node restart."""
        return self._credentials

    def clone(self) -> RpcClient:
        """Another client of the same node and credentials (its own connections)."""
        other = RpcClient(self.url, timeout=self.timeout)
        with self._reload_lock:
            other._auth, other._credentials, other._cookie = (
                self._auth, self._credentials, self._cookie,
            )  # fmt: skip
        return other

    def _reload_cookie(self) -> bool:
        """The node refused our cookie's credentials: it restarted and wrote a new one.
        True if the cookie now holds other credentials (then they are ours)."""
        if self._cookie is None:
            return False
        try:
            user, password = read_cookie(*self._cookie)
        except RpcConnectionError:  # not written yet: the node is still starting
            return False
        if (user, password) == self._credentials:
            return False
        self._set_credentials(user, password)
        return True

    @classmethod
    def from_datadir(
        cls,
        datadir: str | Path,
        network: str = "devnet",
        port: int | None = None,
        host: str = "127.0.0.1",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RpcClient:
        """A local node (``port`` defaults to the network's), authenticated with the
        cookie it wrote to ``<datadir>/<network>/.cookie``."""
        if port is None:
            from chain.network import load_network

            port = local_port(datadir, network, load_network(network).rpc_port)
        url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
        return cls.from_options(url, network, Path(datadir).expanduser(), timeout=timeout)

    def _post(self, payload: Any, what: str, timeout: float | None = None) -> Any:
        """POST one JSON-RPC request (or batch) and return the decoded answer."""
        body = json.dumps(payload).encode()
        post = self._post_kept if urllib.parse.urlsplit(self.url).scheme == "http" else (
            self._post_urllib
        )  # fmt: skip
        sent_with = self._auth
        try:
            raw = post(body, what, timeout or self.timeout)
        except RpcConnectionError as exc:
            if exc.status != 401:
                raise
            # refused before the node read the call (nothing ran): send it again with a
            # new cookie, read by this thread or by another refused meanwhile
            with self._reload_lock:
                if self._auth == sent_with and not self._reload_cookie():
                    raise
            raw = post(body, what, timeout or self.timeout)
        try:
            return json.loads(raw)
        except ValueError:  # (not JSON, or an integer of over 4300 digits)
            raise RpcConnectionError(
                f"{self.url} did not answer JSON-RPC: {NOT_RPC_HINT}"
            ) from None

    def _post_kept(self, body: bytes, what: str, timeout: float) -> bytes:
        """Over a connection kept open between calls (one per thread): a new TCP
        connection per call cost more than a small call itself. A kept connection the
        node closed meanwhile (its idle timeout) is replaced once, before anything of
        the request was answered."""
        parts = urllib.parse.urlsplit(self.url)
        headers = {"Content-Type": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(
                    parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
                )
            try:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.request("POST", parts.path or "/", body, headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._close_kept()
                if reused and attempt == 0:
                    continue  # the node closed our idle connection: once more, afresh
                raise RpcConnectionError(f"{self.url} closed the connection") from None
            except TimeoutError:
                self._close_kept()
                raise RpcTimeoutError(f"{self.url}: no answer to {what} in time") from None
            except (OSError, http.client.HTTPException) as exc:
                self._close_kept()
                raise RpcConnectionError(
                    f"cannot reach the node at {self.url} ({exc}): {UNREACHABLE_HINT}"
                ) from None
            if resp.will_close:
                self._close_kept()
            if resp.status in (401, 403):
                raise RpcConnectionError(
                    f"{self.url} refused the credentials (HTTP {resp.status}): "
                    f"{CREDENTIALS_HINT}", resp.status,
                )  # fmt: skip
            if resp.status in NOT_RPC_STATUSES or (resp.status != 200 and not raw):
                raise RpcConnectionError(
                    f"{self.url}: HTTP {resp.status}" + (
                        f": {NOT_RPC_HINT}" if resp.status in NOT_RPC_STATUSES else ""
                    ), resp.status,
                )  # fmt: skip
            return raw  # bitcoind sends errors with HTTP 500 and a JSON body
        raise AssertionError("unreachable")

    def _close_kept(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _post_urllib(self, body: bytes, what: str, timeout: float) -> bytes:
        req = urllib.request.Request(self.url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        if self._auth:
            req.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw: bytes = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise RpcConnectionError(
                    f"{self.url} refused the credentials (HTTP {exc.code}): {CREDENTIALS_HINT}",
                    exc.code,
                ) from None
            raw = exc.read()  # bitcoind sends errors with HTTP 500 and a JSON body
            if exc.code in NOT_RPC_STATUSES or not raw:
                raise RpcConnectionError(
                    f"{self.url}: HTTP {exc.code}" + (
                        f": {NOT_RPC_HINT}" if exc.code in NOT_RPC_STATUSES else ""
                    ), exc.code,
                ) from None  # fmt: skip
        except TimeoutError:
            raise RpcTimeoutError(f"{self.url}: no answer to {what} in time") from None
        except (urllib.error.URLError, OSError) as exc:
            if isinstance(getattr(exc, "reason", None), TimeoutError):
                raise RpcTimeoutError(f"{self.url}: no answer to {what} in time") from None
            reason = getattr(exc, "reason", exc)
            raise RpcConnectionError(
                f"cannot reach the node at {self.url} ({reason}): {UNREACHABLE_HINT}"
            ) from None
        return raw

    def call(self, method: str, *params: Any, timeout: float | None = None, **named: Any) -> Any:
        """Positional params, or named ones (a JSON object); not both."""
        if params and named:
            raise ValueError("pass params by position or by name, not both")
        args: Any = named if named else list(params)
        reply = self._post(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": args},
            method,
            timeout,
        )
        error = reply.get("error") if isinstance(reply, dict) else None
        if error:
            raise RpcError.from_reply(error, method)
        if not isinstance(reply, dict) or "result" not in reply:
            raise RpcConnectionError(f"{self.url} sent a reply without a result")
        return reply["result"]

    def batch(self, calls: list[tuple[str, Any]], timeout: float | None = None) -> list[Any]:
        """Several ``(method, params)`` calls in one request; each answer, in order, is
        its result or an :class:`RpcError` (not raised)."""
        ids = [next(self._ids) for _ in calls]
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p}
            for i, (m, p) in zip(ids, calls, strict=True)
        ]
        replies = self._post(payload, "a batch", timeout)
        if not isinstance(replies, list):
            if isinstance(replies, dict) and replies.get("error"):  # the batch as a whole
                raise RpcError.from_reply(replies["error"])
            raise RpcConnectionError(f"{self.url} did not answer the batch with a list")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        out: list[Any] = []
        for i, (method, _) in zip(ids, calls, strict=True):
            r = by_id.get(i, {"error": {"code": -32603, "message": "no answer"}})
            error = r.get("error")
            out.append(RpcError.from_reply(error, method) if error else r.get("result"))
        return out
