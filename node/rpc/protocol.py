"""JSON-RPC 2.0 dispatch: requests, batches, notifications, params validated by pydantic.

Independent of HTTP: ``Dispatcher.handle_body`` takes the raw body and returns the
JSON value to send back (None: nothing to send, all calls were notifications).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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

log = logging.getLogger("pouw.rpc")

DEFAULT_MAX_BATCH = 1000
# Deepest nesting a request may have. Our deepest params (a batch of calls whose params
# hold a list of lists) are 4 levels; 32 leaves room for clients that wrap things, and
# stays far below the recursion that Python's json and pydantic would hit (~1000).
MAX_JSON_DEPTH = 32


class Params(BaseModel):
    """Base of every method's params: strict JSON types, unknown names refused.

    Field order is the positional order.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoParams(Params):
    pass


NO_PARAMS = NoParams()


@dataclass
class CallContext:
    """Who is calling: ``authed`` is False for an anonymous caller (when allowed)."""

    authed: bool = True
    session: Any = None  # the WebSocket session for calls made over /ws


Handler = Callable[[CallContext, Any], Any]


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    params: type[Params]
    category: str  # chain, accounts, mining, market, network, control
    admin: bool  # needs auth even where anonymous calls are allowed
    doc: str


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


def _error(req_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": RpcError(code, message, data).to_json(), "id": req_id}


def error_response(code: int, message: str) -> dict[str, Any]:
    return _error(None, code, message)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:32]}")
    return value


# Built once: json.loads/dumps with options build a new decoder/encoder per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def loads_strict(body: bytes | str) -> Any:
    """Strict JSON (RFC 8259, UTF-8): NaN, Infinity and numbers that overflow a double
    are refused with ValueError; too deep a nesting with RecursionError."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return _DECODER.decode(text)


def dumps_strict(value: Any) -> str:
    """The reply's JSON text; ValueError for NaN/Infinity, which JSON cannot carry."""
    return _ENCODER.encode(value)


class RawJSON(str):
    """A result that is already JSON text (a cached encoding); sent as it is."""


def _encode_one(reply: dict[str, Any]) -> str:
    result = reply.get("result")
    try:
        if isinstance(result, RawJSON):
            return f'{{"jsonrpc":"2.0","result":{result},"id":{dumps_strict(reply["id"])}}}'
        return dumps_strict(reply)
    except (ValueError, TypeError, RecursionError):
        log.exception("RPC reply is not JSON")
        return dumps_strict(_error(reply.get("id"), INTERNAL_ERROR, "internal error"))


def encode_reply(reply: Any) -> str:
    """The reply (one answer or a batch's list) as JSON text; a result JSON cannot carry
    becomes -32603 (a bug, logged)."""
    if isinstance(reply, list):
        return "[" + ",".join(_encode_one(r) for r in reply) + "]"
    return _encode_one(reply)


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` (iterative: no recursion)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


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


def parse_params(method: Method, raw: Any) -> Params:
    """Validate params given by position or by name. A null param means "not given"
    (its default), as in bitcoind: clients such as python's bitcoinrpc send trailing
    nulls for the optional params they leave out."""
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


def _malformed(req: dict[str, Any]) -> str | None:
    """Why a request object is not a valid request, or None."""
    if req.get("jsonrpc", "2.0") != "2.0":  # absent: a JSON-RPC 1.0 client, as bitcoind allows
        return 'jsonrpc must be "2.0"'
    if not isinstance(req.get("method"), str):
        return "method must be a string"
    params = req.get("params")
    if params is not None and not isinstance(params, list | dict):
        return "params must be an array or object"
    if params is not None and too_deep(params, MAX_JSON_DEPTH - 1):
        return f"nested deeper than {MAX_JSON_DEPTH}"
    return None


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
        try:
            data = loads_strict(body)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            return _error(None, PARSE_ERROR, f"parse error: {exc}")
        except RecursionError:
            return _error(None, PARSE_ERROR, f"parse error: nested deeper than {MAX_JSON_DEPTH}")
        return await self.handle_value(data, ctx)

    async def handle_value(self, data: Any, ctx: CallContext) -> Any:
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
                reply = await self.handle_one(item, ctx)
                if reply is not None:
                    out.append(reply)
            return out or None
        return await self.handle_one(data, ctx)

    async def handle_one(self, req: Any, ctx: CallContext) -> dict[str, Any] | None:
        """One call's answer; None for a notification. A malformed request is answered
        even without an id (it is not a notification: JSON-RPC 2.0, section 4.1)."""
        if not isinstance(req, dict):
            return _error(None, INVALID_REQUEST, "invalid request: not a JSON object")
        notification = "id" not in req
        req_id = req.get("id")
        if not _valid_id(req_id):
            return _error(None, INVALID_REQUEST, "invalid request: id must be a string or number")
        problem = _malformed(req)
        if problem is not None:
            return _error(req_id, INVALID_REQUEST, f"invalid request: {problem}")
        try:
            result = await self._call(req, ctx)
        except RpcError as exc:
            return None if notification else _error(req_id, exc.code, exc.message, exc.data)
        except StorageError as exc:  # the node stops on it (Node.storage_fault) and says why
            log.debug("RPC method %r: storage failed: %s", req.get("method"), exc)
            return None if notification else _error(req_id, INTERNAL_ERROR, str(exc))
        except Exception:  # noqa: BLE001 - a bug in one method must not kill the server
            log.exception("RPC method %r failed", req.get("method"))
            return None if notification else _error(req_id, INTERNAL_ERROR, "internal error")
        return None if notification else {"jsonrpc": "2.0", "result": result, "id": req_id}

    async def _call(self, req: dict[str, Any], ctx: CallContext) -> Any:
        name = req["method"]
        params = req.get("params")
        if params is None:
            params = []
        method = self.registry.methods.get(name)
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {name}")
        if not ctx.authed and (method.admin or not self.allow_anonymous):
            raise RpcError(INVALID_REQUEST, f"{name} needs authentication")
        warming = self.warmup()
        if warming is not None and name not in ("help", "uptime", "stop"):
            raise RpcError(-28, warming)
        if method.params is NoParams and not params:
            parsed: Params = NO_PARAMS  # nothing to validate
        else:
            parsed = parse_params(method, params)
        self.calls += 1
        result = method.handler(ctx, parsed)
        if isinstance(result, Awaitable):
            result = await result
        return result
