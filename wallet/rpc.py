"""Everything the wallet and the standalone miner ask of a node's JSON-RPC, in one place.

The transport is JSON-RPC 2.0 over HTTP POST to ``/`` with Basic auth (``--rpc-user``
/ ``--rpc-password``, or the cookie file ``<datadir>/<network>/.cookie`` holding
``user:password`` as bitcoind writes it). Standard library only, so the wallet keeps
to its layer (wallet imports chain, nothing above it).

Methods and fields relied on (the contract; see the report and docs/RPC.md):

* ``getaccount(address)`` -> ``{balance, immature, nonce, pending_nonce}``
* ``sendrawtransaction(hex)`` -> txid hex
* ``getaddresshistory(address)`` -> list of entries (or ``{"txs"|"history": [...]}``)
* ``gettransaction(txid)`` -> object
* ``getblocktemplate(miner=, shape=?, longpollid=?)`` (named) -> header fields but
  h_a/h_b/seal, ``transactions`` ([{"data": hex}]) or ``txs`` (hex), ``longpollid``
* ``submitblock(hex)`` -> null | "duplicate" | "inconclusive" | reject reason
* ``getmininginfo()`` -> object (only shown, never required)

Integers may arrive as JSON numbers or decimal strings (u64s above 2^53).
"""

from __future__ import annotations

import base64
import itertools
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COOKIE_NAME = ".cookie"
DEFAULT_TIMEOUT = 30.0
LONGPOLL_TIMEOUT = 120.0


class RpcError(Exception):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        super().__init__(f"{method}: {message} (code {code})" if method else message)


class RpcConnectionError(Exception):
    """No answer: the node is down, the URL is wrong, or the credentials are refused."""


class RpcTimeoutError(RpcConnectionError):
    """The node did not answer within the timeout (a long-poll may simply be waiting)."""


def read_cookie(datadir: Path, network: str) -> tuple[str, str]:
    path = Path(datadir) / network / COOKIE_NAME
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise RpcConnectionError(
            f"cannot read the RPC cookie {path} ({exc.strerror or exc}); is the node "
            "running with this --datadir? Or pass --rpc-user/--rpc-password"
        ) from None
    user, sep, password = text.partition(":")
    if not sep:
        raise RpcConnectionError(f"the RPC cookie {path} is not 'user:password'")
    return user, password


class RpcClient:
    """A blocking JSON-RPC client; ``call(method, *params)`` returns the result."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if "://" not in url:
            url = "http://" + url
        self.url = url
        self.timeout = timeout
        self._auth = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._auth = f"Basic {token}"
        self._ids = itertools.count(1)

    @classmethod
    def from_options(
        cls,
        url: str,
        network: str,
        datadir: Path | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> RpcClient:
        """Explicit credentials if given, else the cookie of ``datadir`` (if given)."""
        if user is None and datadir is not None:
            user, password = read_cookie(datadir, network)
        return cls(url, user, password)

    def call(self, method: str, *params: Any, timeout: float | None = None, **named: Any) -> Any:
        """Positional params, or named ones (a JSON object); not both."""
        if params and named:
            raise ValueError("pass params by position or by name, not both")
        args: Any = named if named else list(params)
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": args}
        ).encode()
        req = urllib.request.Request(self.url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        if self._auth:
            req.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise RpcConnectionError(
                    f"{self.url} refused the credentials (HTTP {exc.code})"
                ) from None
            raw = exc.read()  # bitcoind sends errors with HTTP 500 and a JSON body
            if not raw:
                raise RpcConnectionError(f"{self.url}: HTTP {exc.code}") from None
        except TimeoutError:
            raise RpcTimeoutError(f"{self.url}: no answer to {method} in time") from None
        except (urllib.error.URLError, OSError) as exc:
            if isinstance(getattr(exc, "reason", None), TimeoutError):
                raise RpcTimeoutError(f"{self.url}: no answer to {method} in time") from None
            reason = getattr(exc, "reason", exc)
            raise RpcConnectionError(f"cannot reach the node at {self.url}: {reason}") from None
        try:
            reply = json.loads(raw)
        except json.JSONDecodeError:
            raise RpcConnectionError(f"{self.url} did not answer JSON-RPC") from None
        error = reply.get("error") if isinstance(reply, dict) else None
        if error:
            raise RpcError(int(error.get("code", -1)), str(error.get("message", error)), method)
        if not isinstance(reply, dict) or "result" not in reply:
            raise RpcConnectionError(f"{self.url} sent a reply without a result")
        return reply["result"]


def as_int(value: Any, name: str) -> int:
    """A JSON integer or decimal / 0x-hex string (u64 and u256 fields)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value[:2].lower() == "0x" else int(value, 10)
        except ValueError:
            pass
    raise ValueError(f"{name}: expected an integer, got {value!r}")


# --- accounts and transactions ------------------------------------------------------


@dataclass(frozen=True)
class AccountInfo:
    balance: int  # spendable, confirmed
    immature: int  # mined rewards not yet mature
    nonce: int  # next nonce on chain
    pending_nonce: int  # next nonce after this account's pending mempool txs


def get_account(rpc: RpcClient, address: str) -> AccountInfo:
    res = rpc.call("getaccount", address)
    if not isinstance(res, dict):
        raise RpcError(-1, f"getaccount answered {res!r}, not an object", "getaccount")
    nonce = as_int(res.get("nonce", 0), "nonce")
    return AccountInfo(
        balance=as_int(res.get("balance", 0), "balance"),
        immature=as_int(res.get("immature", 0), "immature"),
        nonce=nonce,
        pending_nonce=as_int(res.get("pending_nonce", nonce), "pending_nonce"),
    )


def send_raw_transaction(rpc: RpcClient, raw: bytes) -> str:
    return str(rpc.call("sendrawtransaction", raw.hex()))


def get_transaction(rpc: RpcClient, txid: str) -> dict[str, Any]:
    res = rpc.call("gettransaction", txid)
    return res if isinstance(res, dict) else {"result": res}


def get_address_history(rpc: RpcClient, address: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Active-chain transactions of ``address``, oldest first (follows ``next_skip`` pages)."""
    out: list[dict[str, Any]] = []
    skip: int | None = 0
    while skip is not None and len(out) < limit:
        res = (
            rpc.call("getaddresshistory", address, skip)
            if skip
            else rpc.call("getaddresshistory", address)
        )
        page: Any = res
        skip = None
        if isinstance(res, dict):
            page = res.get("txs", res.get("history"))
            nxt = res.get("next_skip")
            skip = nxt if isinstance(nxt, int) and nxt > 0 else None
        if not isinstance(page, list):
            raise RpcError(-1, "getaddresshistory did not answer a list", "getaddresshistory")
        out.extend(e if isinstance(e, dict) else {"txid": e} for e in page)
        if not page:
            break
    return out[:limit]


# --- mining -------------------------------------------------------------------------


def get_block_template(
    rpc: RpcClient,
    miner: str,
    shape: tuple[int, int, int] | None = None,
    longpollid: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    request: dict[str, Any] = {"miner": miner}
    if shape is not None:
        request["shape"] = list(shape)
    if longpollid is not None:
        request["longpollid"] = longpollid
    res = rpc.call("getblocktemplate", timeout=timeout, **request)  # named params
    if not isinstance(res, dict):
        raise RpcError(-1, "getblocktemplate did not answer an object", "getblocktemplate")
    return res


def submit_block(rpc: RpcClient, raw: bytes) -> str | None:
    """None when the block became the tip, else the BIP22 answer string."""
    res = rpc.call("submitblock", raw.hex())
    return None if res is None else str(res)


def get_mining_info(rpc: RpcClient) -> dict[str, Any]:
    res = rpc.call("getmininginfo")
    return res if isinstance(res, dict) else {}
