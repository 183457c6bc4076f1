"""JSON-RPC error codes: the standard ones plus Bitcoin Core's application codes."""

from __future__ import annotations

from typing import Any

# JSON-RPC 2.0
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# Bitcoin Core (src/rpc/protocol.h), same numbers and meanings.
MISC_ERROR = -1
TYPE_ERROR = -3
INVALID_ADDRESS_OR_KEY = -5  # also "not found" for blocks, transactions, jobs
INVALID_PARAMETER = -8
DATABASE_ERROR = -20
DESERIALIZATION_ERROR = -22
VERIFY_ERROR = -25
VERIFY_REJECTED = -26
VERIFY_ALREADY_IN_CHAIN = -27
IN_WARMUP = -28
CLIENT_NODE_ALREADY_ADDED = -23
CLIENT_NODE_NOT_ADDED = -24
CLIENT_NODE_NOT_CONNECTED = -29
CLIENT_INVALID_IP_OR_SUBNET = -30
CLIENT_P2P_DISABLED = -31


class RpcError(Exception):
    """Raised by a method to answer with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out
