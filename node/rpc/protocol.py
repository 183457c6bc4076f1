"""JSON-RPC 2.0 dispatch: requests, batches, notifications, params validated by pydantic.

Independent of HTTP: ``Dispatcher.handle_body`` takes the raw body and returns the
JSON value to send back (None: nothing to send, all calls were notifications).
"""

from __future__ import annotations

import inspect
import json
import logging
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


class Params(BaseModel):
    """Base of every method's params: strict JSON types, unknown names refused.

    Field order is the positional order.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoParams(Params):
    pass


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
    model = method.params
    names = list(model.model_fields)
    if isinstance(raw, list):
        if len(raw) > len(names):
            raise RpcError(
                INVALID_PARAMS,
                f"{method.name} takes at most {len(names)} parameters, got {len(raw)}",
            )
        raw = dict(zip(names, raw, strict=False))
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        message, errors = describe_validation(exc)
        raise RpcError(INVALID_PARAMS, message, errors) from None


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
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(None, PARSE_ERROR, f"parse error: {exc}")
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
        if not isinstance(req, dict):
            return _error(None, INVALID_REQUEST, "invalid request: not a JSON object")
        notification = "id" not in req
        req_id = req.get("id")
        if not _valid_id(req_id):
            return _error(None, INVALID_REQUEST, "invalid request: id must be a string or number")
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
        version = req.get("jsonrpc", "2.0")  # absent: a JSON-RPC 1.0 client, as bitcoind allows
        if version != "2.0":
            raise RpcError(INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"')
        name = req.get("method")
        if not isinstance(name, str):
            raise RpcError(INVALID_REQUEST, "invalid request: method must be a string")
        params = req.get("params", [])
        if params is None:
            params = []
        if not isinstance(params, list | dict):
            raise RpcError(INVALID_REQUEST, "invalid request: params must be an array or object")
        method = self.registry.methods.get(name)
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {name}")
        if not ctx.authed and (method.admin or not self.allow_anonymous):
            raise RpcError(INVALID_REQUEST, f"{name} needs authentication")
        warming = self.warmup()
        if warming is not None and name not in ("help", "uptime", "stop"):
            raise RpcError(-28, warming)
        parsed = parse_params(method, params)
        self.calls += 1
        result = method.handler(ctx, parsed)
        if isinstance(result, Awaitable):
            result = await result
        return result
