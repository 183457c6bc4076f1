"""Block templates for the standalone miner: getblocktemplate's JSON, parsed and checked.

The template JSON carries every header field but h_a, h_b and the seal, plus ``txs``
(hex) and ``longpollid``. The header is rebuilt with chain.header.Header and its
tx_root is checked against the transactions, and its miner against ours, before any
work is spent on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chain.address import decode_address, encode_address
from chain.header import NO_JOB, Header
from chain.network import Network
from chain.tx import Transaction, transactions_root
from node.template import BlockTemplate
from wallet.rpc_calls import as_int


class TemplateError(ValueError):
    """A template the miner refuses to work on (malformed, or not what it claims)."""


# --- templates ------------------------------------------------------------------------


def _hex_bytes(data: dict[str, Any], name: str, size: int, *aliases: str) -> bytes:
    for key in (name, *aliases):
        if key in data:
            value = data[key]
            break
    else:
        raise TemplateError(f"template has no {name!r}")
    if not isinstance(value, str):
        raise TemplateError(f"template {name!r} is not a hex string")
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise TemplateError(f"template {name!r} is not hex") from None
    if len(raw) != size:
        raise TemplateError(f"template {name!r} is {len(raw)} bytes, expected {size}")
    return raw


def _int_field(data: dict[str, Any], name: str, *aliases: str) -> int:
    for key in (name, *aliases):
        if key in data:
            try:
                return as_int(data[key], name)
            except ValueError as exc:
                raise TemplateError(str(exc)) from None
    raise TemplateError(f"template has no {name!r}")


def _target(value: Any) -> int:
    """A u256 target: JSON integer, "0x..." hex, 64 hex digits, or a decimal string."""
    if isinstance(value, str) and len(value) == 64:  # the node's hex256 form
        try:
            return int(value, 16)
        except ValueError:
            raise TemplateError(f"template 'target' {value!r} is not hex") from None
    try:
        return as_int(value, "target")
    except ValueError as exc:
        raise TemplateError(str(exc)) from None


def _tx_bytes(item: Any) -> bytes:
    if isinstance(item, dict):  # bitcoind-style {"data": hex, ...}
        item = item.get("data", item.get("hex"))
    if not isinstance(item, str):
        raise TemplateError("template txs must be hex strings")
    try:
        return bytes.fromhex(item)
    except ValueError:
        raise TemplateError("template tx is not hex") from None


def _miner_field(value: Any, hrp: str) -> bytes:
    if not isinstance(value, str):
        raise TemplateError("template 'miner' is not a string")
    if len(value) == 40 and all(c in "0123456789abcdefABCDEF" for c in value):
        return bytes.fromhex(value)
    try:
        return decode_address(value, hrp)
    except ValueError as exc:
        raise TemplateError(f"template 'miner': {exc}") from None


@dataclass(frozen=True)
class RemoteTemplate:
    template: BlockTemplate
    longpollid: str | None

    @property
    def header(self) -> Header:
        return self.template.header


def template_from_json(
    data: dict[str, Any], network: Network, expected_miner: bytes | None = None
) -> RemoteTemplate:
    """Rebuild the header and transactions of a getblocktemplate answer, checked."""
    if not isinstance(data, dict):
        raise TemplateError("a template is a JSON object")
    raw_txs = data.get("txs", data.get("transactions", []))
    if not isinstance(raw_txs, list):
        raise TemplateError("template 'txs' is not a list")
    try:
        txs = tuple(Transaction.from_bytes(_tx_bytes(t)) for t in raw_txs)
    except TemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - DecodeError and field errors alike
        raise TemplateError(f"template tx does not decode: {exc}") from None
    try:
        header = Header(
            version=_int_field(data, "version"),
            height=_int_field(data, "height"),
            parent=_hex_bytes(data, "parent", 32, "previousblockhash"),
            timestamp=_int_field(data, "timestamp", "curtime"),
            target=_target(data["target"]) if "target" in data else _int_field(data, "target"),
            tx_root=_hex_bytes(data, "tx_root", 32),
            state_root=_hex_bytes(data, "state_root", 32),
            miner=_miner_field(data.get("miner"), network.hrp),
            job_id=_hex_bytes(data, "job_id", 32) if "job_id" in data else NO_JOB,
            m=_int_field(data, "m"),
            k=_int_field(data, "k"),
            n=_int_field(data, "n"),
            # a template naming a job carries the job's commitments; others leave them blank
            h_a=_hex_bytes(data, "h_a", 32) if "h_a" in data else bytes(32),
            h_b=_hex_bytes(data, "h_b", 32) if "h_b" in data else bytes(32),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, TemplateError):
            raise
        raise TemplateError(f"template header fields: {exc}") from None
    if transactions_root(txs) != header.tx_root:
        raise TemplateError("template tx_root does not match its transactions")
    if expected_miner is not None and header.miner != expected_miner:
        raise TemplateError(
            f"template pays {encode_address(network.hrp, header.miner)}, not our address"
        )
    if header.m <= 0 or header.k <= 0 or header.n <= 0:
        raise TemplateError(f"template shape {header.m}x{header.k}x{header.n} is empty")
    lp = data.get("longpollid")
    return RemoteTemplate(BlockTemplate(header, txs), None if lp is None else str(lp))
