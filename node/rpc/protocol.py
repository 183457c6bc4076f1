"""JSON-RPC 2.0 dispatch: requests, batches, notifications, params validated by pydantic.

Strict JSON parsing and reply encoding are node/rpc/jsoncodec.py's.

Independent of HTTP: ``Dispatcher.handle_body`` takes the raw body and returns the
JSON value to send back (None: nothing to send, all calls were notifications).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from chain.storage import StorageError
from node.rpc.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
)
from node.rpc.jsoncodec import (
    MAX_JSON_DEPTH,
    echo,
    error_object,
    loads_strict,
    surely_shallow,
    too_deep,
)

log = logging.getLogger("pouw.rpc")

DEFAULT_MAX_BATCH = 1000
# A batch's body at most: parsed before its calls are counted, so a body of the full
# request cap (~42 MB, for one submitblock) holding a batch of 14M empty calls took 1.6 s
# of the event loop and ~0.9 GB to refuse. 8 MiB holds 1000 ordinary calls many times
# over, or a dozen of the largest market transactions in hex.
MAX_BATCH_BODY = 8 * 1024 * 1024


class Params(BaseModel):
    """Base of every method's params: strict JSON types, unknown names refused.

    Field order is the positional order.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoParams(Params):
    pass


NO_PARAMS = NoParams()


# The longest a call that waits for a change (waitforjob, waitfornewblock, a
# getblocktemplate long-poll) waits before it answers with what holds then: a client
# that wants longer asks again (one request is never held past what HTTP clients and
# proxies commonly allow, nor a connection slot held forever).
MAX_WAIT_MS = 300_000


@dataclass(frozen=True)
class CallContext:
    """Who is calling: ``authed`` is False for an anonymous caller (when allowed).
    ``gone`` says whether the caller's connection closed: a call that waits (long-polls)
    stops then, instead of holding a connection slot for a client that left.
    ``notification``: the call has no id, so its result is never sent (a method whose
    result the caller needs, such as ``subscribe``'s id, does nothing then)."""

    authed: bool = True
    session: Any = None  # the WebSocket session for calls made over /ws
    gone: Callable[[], bool] | None = None
    notification: bool = False


Handler = Callable[[CallContext, Any], Any]


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    params: type[Params]
    category: str  # chain, accounts, mining, market, network, control
    admin: bool  # needs auth even where anonymous calls are allowed
    doc: str
    # validated params by raw params (parse_params); shared by copies (replace()) and
    # safe to share: a method's params model is fixed
    parsed: dict[Any, Params] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class Registry:
    methods: dict[str, Method] = field(default_factory=dict)

    def add(
        self,
        name: str,
        handler: Handler,
        params: type[Params] = NoParams,
        *,
        category: str,
        admin: bool = False,
    ) -> None:
        doc = inspect.cleandoc(handler.__doc__ or "")
        self.methods[name] = Method(name, handler, params, category, admin, doc)


_error = error_object


def error_response(code: int, message: str) -> dict[str, Any]:
    return _error(None, code, message)


def _valid_id(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int | float) and not isinstance(value, bool))
    )


def describe_validation(exc: ValidationError) -> tuple[str, list[dict[str, str]]]:
    """A message naming the first bad param, and every error as {param, message}."""
    errors = []
    # An unknown name first: it is usually a typo of the missing one.
    for err in sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden"):
        loc = err.get("loc") or ()
        name = str(loc[0]) if loc else "params"
        rest = ".".join(str(p) for p in loc[1:])
        if err["type"] == "missing":
            msg = f"missing required parameter '{name}'"
        elif err["type"] == "extra_forbidden":
            msg = f"unknown parameter '{name}'"
        else:
            where = f"{name}.{rest}" if rest else name
            msg = f"invalid parameter '{where}': {err['msg']}"
        errors.append({"param": name, "message": msg})
    return errors[0]["message"], errors


# Validated params remembered per method, keyed by the raw params when they are a few
# short scalars (an address, a block hash, a height): wallets and explorers repeat the
# same calls, and pydantic's validation costs more than a cheap method. Past the cap the
# memory is cleared and refilled.
PARAMS_CACHE = 256
MAX_CACHED_TEXT = 128  # longest string param remembered (a hash is 64, an address ~60)


def _scalar_key(values: Any) -> bool:
    """Whether every value is None, an int (not a bool) or a short string: values that
    compare equal only when they are the same JSON (1 == 1.0 == True are told apart)."""
    for v in values:
        kind = type(v)
        if kind is str:
            if len(v) > MAX_CACHED_TEXT:
                return False
        elif kind is not int and v is not None:
            return False
    return True


def _cache_key(raw: Any) -> Any:
    if type(raw) is list:
        return tuple(raw) if _scalar_key(raw) else None
    if type(raw) is dict and _scalar_key(raw.values()):
        return ("named", tuple(raw.items()))  # no positional key holds a tuple
    return None


def parse_params(method: Method, raw: Any) -> Params:
    """Validate params given by position or by name (remembered for repeats of the same
    short scalar params; models are frozen, so one instance serves every repeat)."""
    key = _cache_key(raw)
    if key is not None:
        parsed = method.parsed.get(key)
        if parsed is not None:
            return parsed
    parsed = _validate(method, raw)
    if key is not None:
        if len(method.parsed) >= PARAMS_CACHE:
            method.parsed.clear()
        method.parsed[key] = parsed
    return parsed


def _validate(method: Method, raw: Any) -> Params:
    """A null param means "not given" (its default), as in bitcoind: clients such as
    python's bitcoinrpc send trailing nulls for the optional params they leave out."""
    model = method.params
    names = model.model_fields
    if isinstance(raw, list):
        end = len(raw)
        while end and raw[end - 1] is None:
            end -= 1
        if end > len(names):
            raise RpcError(
                INVALID_PARAMS,
                f"{method.name} takes at most {len(names)} parameters, got {end}",
            )
        raw = {name: v for name, v in zip(names, raw[:end], strict=False) if v is not None}
    elif any(v is None for v in raw.values()):
        raw = {k: v for k, v in raw.items() if v is not None or k not in names}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        message, errors = describe_validation(exc)
        raise RpcError(INVALID_PARAMS, message, errors) from None


def _malformed(req: dict[str, Any], shallow: bool) -> str | None:
    """Why a request object is not a valid request, or None. ``shallow``: the body is
    known not to nest too deep (``surely_shallow``), so the params need no depth walk."""
    if req.get("jsonrpc", "2.0") != "2.0":  # absent: a JSON-RPC 1.0 client, as bitcoind allows
        return (
            'this node speaks JSON-RPC 2.0: send "jsonrpc": "2.0" (or leave "jsonrpc" out, '
            "as a JSON-RPC 1.0 client does)"
        )
    if type(req.get("method")) is not str:
        return "method must be a string"
    params = req.get("params")
    if params is None:
        return None
    if not isinstance(params, list | dict):
        return "params must be an array or object"
    if not shallow and too_deep(params, MAX_JSON_DEPTH - 1):
        return f"nested deeper than {MAX_JSON_DEPTH}"
    return None


_BLANKS = re.compile(r"[ \t\r\n]*")  # what JSON allows before a value
_BLANK_BYTES = re.compile(rb"[ \t\r\n]*")


def _opens_a_batch(body: bytes | str) -> bool:
    """The first character after JSON's blanks (however many) is ``[``."""
    if isinstance(body, str):
        start = _BLANKS.match(body).end()  # type: ignore[union-attr]  # (matches "" at least)
        return body[start : start + 1] == "["
    start = _BLANK_BYTES.match(body).end()  # type: ignore[union-attr]
    return body[start : start + 1] == b"["


class Dispatcher:
    def __init__(
        self,
        registry: Registry,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        allow_anonymous: bool = False,
        warmup: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.max_batch = max_batch
        self.allow_anonymous = allow_anonymous
        self.warmup = warmup
        self.calls = 0

    async def handle_body(self, body: bytes | str, ctx: CallContext) -> Any:
        if len(body) > MAX_BATCH_BODY and _opens_a_batch(body):
            return _error(
                None, INVALID_REQUEST,
                f"invalid request: a batch of {len(body)} bytes, at most {MAX_BATCH_BODY}: "
                "send fewer calls per batch",
            )  # fmt: skip
        try:
            data = loads_strict(body)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            return _error(None, PARSE_ERROR, f"parse error: {exc}")
        except RecursionError:
            return _error(
                None, PARSE_ERROR,
                "parse error: nested too deep for the parser (about 1000 levels); a request "
                f"may nest at most {MAX_JSON_DEPTH} arrays and objects",
            )  # fmt: skip
        if type(data) is dict:  # one call, the common case: straight to it
            return await self.handle_one(data, ctx, surely_shallow(body))
        return await self.handle_value(data, ctx, surely_shallow(body))

    async def handle_value(self, data: Any, ctx: CallContext, shallow: bool = False) -> Any:
        if type(data) is dict:  # one call, the common case
            return await self.handle_one(data, ctx, shallow)
        if isinstance(data, list):
            if not data:
                return _error(None, INVALID_REQUEST, "invalid request: empty batch")
            if len(data) > self.max_batch:
                return _error(
                    None,
                    INVALID_REQUEST,
                    f"invalid request: batch of {len(data)} calls, at most {self.max_batch}",
                )
            out = []
            for item in data:
                reply = await self.handle_one(item, ctx, shallow)
                if reply is not None:
                    out.append(reply)
            return out or None
        return await self.handle_one(data, ctx)

    async def handle_one(
        self, req: Any, ctx: CallContext, shallow: bool = False
    ) -> dict[str, Any] | None:
        """One call's answer; None for a notification. A malformed request is answered
        even without an id (it is not a notification: JSON-RPC 2.0, section 4.1)."""
        if not isinstance(req, dict):
            return _error(None, INVALID_REQUEST, "invalid request: not a JSON object")
        notification = "id" not in req
        req_id = req.get("id")
        if not _valid_id(req_id):
            return _error(None, INVALID_REQUEST, "invalid request: id must be a string or number")
        problem = _malformed(req, shallow)
        if problem is not None:
            return _error(req_id, INVALID_REQUEST, f"invalid request: {problem}")
        if notification:  # (rare: a copy only for them)
            ctx = replace(ctx, notification=True)
        try:
            method, parsed = self._prepare(req, ctx)
            self.calls += 1
            result = method.handler(ctx, parsed)
            if hasattr(result, "__await__"):
                result = await result
        except RpcError as exc:
            return None if notification else _error(req_id, exc.code, exc.message, exc.data)
        except StorageError as exc:  # the node stops on it (Node.storage_fault) and says why
            log.debug("RPC method %r: storage failed: %s", req.get("method"), exc)
            return None if notification else _error(req_id, INTERNAL_ERROR, str(exc))
        except Exception:  # noqa: BLE001 - a bug in one method must not kill the server
            log.exception("RPC method %r failed", req.get("method"))
            return None if notification else _error(req_id, INTERNAL_ERROR, "internal error")
        return None if notification else {"jsonrpc": "2.0", "result": result, "id": req_id}

    def _prepare(self, req: dict[str, Any], ctx: CallContext) -> tuple[Method, Params]:
        """The method a request names and its validated params (RpcError if refused)."""
        name = req["method"]
        method = self.registry.methods.get(name)
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {echo(name)}")
        if not ctx.authed and (method.admin or not self.allow_anonymous):
            raise RpcError(INVALID_REQUEST, f"{name} needs authentication")
        warming = self.warmup()
        if warming is not None and name not in ("help", "uptime", "stop"):
            raise RpcError(-28, warming)
        params = req.get("params")
        if not params:  # absent, null, [] or {}
            if method.params is NoParams:
                return method, NO_PARAMS  # nothing to validate
            params = [] if params is None else params
        return method, parse_params(method, params)
