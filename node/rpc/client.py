"""A small synchronous JSON-RPC client (stdlib only) for tests, the wallet and miner CLIs.

client = RpcClient.from_datadir("~/.pouw", network="devnet")
client.call("getblockcount")
client.call("getblock", blockhash, 2)           # positional params
client.call("getaccount", address="dpw1...")    # named params
"""

from __future__ import annotations

import base64
import itertools
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from node.rpc.auth import read_cookie


class RpcClientError(Exception):
    """The server answered with a JSON-RPC error (``code``, ``message``, ``data``)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class RpcTransportError(Exception):
    """No JSON-RPC answer: connection refused, HTTP 401, a body that is not JSON."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RpcClient:
    def __init__(
        self, url: str, user: str | None = None, password: str | None = None, timeout: float = 30
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._auth = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._auth = f"Basic {token}"
        self._ids = itertools.count(1)

    @classmethod
    def from_datadir(
        cls,
        datadir: str | Path,
        network: str = "devnet",
        port: int | None = None,
        host: str = "127.0.0.1",
        timeout: float = 30,
    ) -> RpcClient:
        """Authenticate with the cookie the node wrote to ``datadir/<network>/.cookie``."""
        if port is None:
            from chain.network import load_network

            port = load_network(network).rpc_port
        user, password = read_cookie(Path(datadir).expanduser() / network)
        return cls(f"http://{host}:{port}/", user, password, timeout)

    def _post(self, payload: Any, timeout: float | None = None) -> Any:
        data = json.dumps(payload).encode()
        req = urllib.request.Request(self.url, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        if self._auth:
            req.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            if exc.code == 401:
                raise RpcTransportError("unauthorized: check the cookie or rpc user", 401) from None
            if not body:
                raise RpcTransportError(f"HTTP {exc.code}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise RpcTransportError(f"cannot reach {self.url}: {exc}") from None
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise RpcTransportError(f"the answer is not JSON: {body[:200]!r}") from None

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        if args and kwargs:
            raise ValueError("pass params by position or by name, not both")
        params: Any = dict(kwargs) if kwargs else list(args)
        reply = self._post(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}, timeout
        )
        if not isinstance(reply, dict):
            raise RpcTransportError(f"unexpected answer: {reply!r}")
        if "error" in reply and reply["error"] is not None:
            err = reply["error"]
            raise RpcClientError(err.get("code", 0), err.get("message", ""), err.get("data"))
        return reply.get("result")

    def batch(self, calls: list[tuple[str, Any]]) -> list[Any]:
        """Several calls in one request; each answer is its result or an RpcClientError."""
        ids = [next(self._ids) for _ in calls]
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p}
            for i, (m, p) in zip(ids, calls, strict=True)
        ]
        replies = self._post(payload) or []
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        out: list[Any] = []
        for i in ids:
            r = by_id.get(i, {"error": {"code": -32603, "message": "no answer"}})
            if r.get("error") is not None:
                e = r["error"]
                out.append(RpcClientError(e.get("code", 0), e.get("message", ""), e.get("data")))
            else:
                out.append(r.get("result"))
        return out
