"""Strict JSON for the RPC server (RFC 8259, UTF-8) both ways, and reply encoding.

NaN, Infinity and numbers that overflow a double are refused on the way in and never
sent; nesting is capped at MAX_JSON_DEPTH. A reply to one call is written straight
from its parts (``{"jsonrpc":"2.0","result":...,"id":...}``), with an integer or an
already encoded result (``RawJSON``) placed as text without the generic encoder.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import Any

from node.rpc.errors import INTERNAL_ERROR, RpcError

log = logging.getLogger("pouw.rpc")

# Deepest nesting a request may have. Our deepest params (a batch of calls whose params
# hold a list of lists) are 4 levels; 32 leaves room for clients that wrap things, and
# stays far below the recursion that Python's json and pydantic would hit (~1000).
MAX_JSON_DEPTH = 32


# The most of a client's own text (a method name, a peer, a command) an error message
# repeats: a longer one is cut, so that an answer never echoes megabytes.
MAX_ECHO = 300


def echo(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` as an error message repeats it: whole up to ``limit`` characters, else
    its first ``limit`` followed by how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


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
    """Strict JSON (RFC 8259, UTF-8): NaN, Infinity, numbers that overflow a double and
    integers past Python's digit limit (4300) are refused with ValueError; too deep a
    nesting with RecursionError."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        # int() past Python's digit limit: its own words advise sys.set_int_max_str_digits()
        if type(exc) is ValueError and "int_max_str_digits" in str(exc):
            limit = sys.get_int_max_str_digits()
            raise ValueError(
                f"an integer of more than {limit} digits (no param takes one that long)"
            ) from None
        raise


def dumps_strict(value: Any) -> str:
    """The reply's JSON text; ValueError for NaN/Infinity, which JSON cannot carry."""
    return _ENCODER.encode(value)


def surely_shallow(body: bytes | str) -> bool:
    """True when ``body`` cannot nest deeper than MAX_JSON_DEPTH: it opens no more
    arrays and objects than that in all (brackets inside strings only count extra).
    Then the parsed value needs no depth walk (``too_deep``)."""
    if isinstance(body, bytes):
        return body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH
    return body.count("[") + body.count("{") <= MAX_JSON_DEPTH


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


class RawJSON(str):
    """A result that is already JSON text (a cached encoding); sent as it is."""


def error_object(req_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": RpcError(code, message, data).to_json(), "id": req_id}


def _value_text(value: Any) -> str:
    kind = type(value)
    if kind is RawJSON:
        return value  # type: ignore[no-any-return]
    if kind is int:  # not bool (its own type): the common integer results and ids
        return int.__repr__(value)
    return _ENCODER.encode(value)


def _encode_one(reply: dict[str, Any]) -> str:
    try:
        if "result" in reply:
            return (
                '{"jsonrpc":"2.0","result":' + _value_text(reply["result"])
                + ',"id":' + _value_text(reply["id"]) + "}"
            )  # fmt: skip
        return dumps_strict(reply)
    except (ValueError, TypeError, RecursionError):
        log.exception("RPC reply is not JSON")
        return dumps_strict(error_object(reply.get("id"), INTERNAL_ERROR, "internal error"))


def encode_reply(reply: Any) -> str:
    """The reply (one answer or a batch's list) as JSON text; a result JSON cannot carry
    becomes -32603 (a bug, logged)."""
    if isinstance(reply, list):
        return "[" + ",".join(_encode_one(r) for r in reply) + "]"
    return _encode_one(reply)
