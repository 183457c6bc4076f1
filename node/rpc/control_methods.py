"""RPC methods of control: uptime, stop, help, and WebSocket subscriptions."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from node.rpc.base import MethodsBase
from node.rpc.errors import INVALID_REQUEST, METHOD_NOT_FOUND, MISC_ERROR, RpcError
from node.rpc.params import HelpParams, SubscribeParams, UnsubscribeParams
from node.rpc.protocol import CallContext, NoParams


def json_type(schema: dict[str, Any]) -> str:
    """A param's JSON type for ``help``: "integer 0..9007199254740991", "string",
    '"add" | "remove"', "array of string | null"."""
    if "anyOf" in schema:
        return " | ".join(json_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = str(schema.get("type", "any"))
    if kind == "array" and "items" in schema:
        return f"array of {json_type(schema['items'])}"
    if "minimum" in schema or "maximum" in schema:
        return f"{kind} {schema.get('minimum', '')}..{schema.get('maximum', '')}"
    return kind


class ControlMethods(MethodsBase):
    def uptime(self, ctx: CallContext, p: NoParams) -> int:
        """Seconds since the node started."""
        return int(time.time() - self.node.started)

    def stop(self, ctx: CallContext, p: NoParams) -> str:
        """Shut the node down cleanly (admin)."""
        asyncio.get_running_loop().call_soon(self.node.request_stop)
        return "pouw node stopping"

    def help(self, ctx: CallContext, p: HelpParams) -> Any:
        """Without a command: every method by category. With one: its params and doc."""
        methods = self.service.registry.methods
        if p.command is None:
            out: dict[str, list[str]] = {}
            for each in methods.values():
                out.setdefault(each.category, []).append(each.name)
            return out
        m = methods.get(p.command)
        if m is None:
            raise RpcError(METHOD_NOT_FOUND, f"help: unknown command: {p.command}")
        params = []
        schema = m.params.model_json_schema()["properties"]
        for name, f in m.params.model_fields.items():
            params.append({
                "name": name,
                "type": json_type(schema[name]),
                "required": f.is_required(),
                "default": None if f.is_required() else f.default,
            })  # fmt: skip
        return {"method": m.name, "category": m.category, "admin": m.admin,
                "params": params, "doc": m.doc}  # fmt: skip

    # subscriptions (WebSocket only) ---------------------------------------------------

    def subscribe(self, ctx: CallContext, p: SubscribeParams) -> str:
        """Subscribe to newHeads, newTransactions or jobs (WebSocket /ws only). Sent as a
        notification (no id), nothing is subscribed: its id would never reach the client."""
        if ctx.session is None:
            raise RpcError(MISC_ERROR, "subscriptions need the WebSocket endpoint /ws")
        if ctx.notification:  # (the error is not sent either: a notification gets no answer)
            raise RpcError(INVALID_REQUEST, "subscribe needs an id: it answers the subscription id")
        return ctx.session.subscribe(p.topic)

    def unsubscribe(self, ctx: CallContext, p: UnsubscribeParams) -> bool:
        """Cancel a subscription by id (WebSocket /ws only)."""
        if ctx.session is None:
            raise RpcError(MISC_ERROR, "subscriptions need the WebSocket endpoint /ws")
        return ctx.session.unsubscribe(p.subscription)
