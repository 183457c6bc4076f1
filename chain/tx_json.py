"""A validated JSON form of a transaction (pydantic), for clients that take one as
text: kept apart from chain/tx.py so that decoding and signing transactions does not
import pydantic (a tenth of a second of every command's start). The node's RPC writes
its own form (node/rpc/encode.tx_json)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator

from chain.address import decode_address, decode_any_address, encode_address
from chain.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE
from chain.tx import MAX_TX_SIZE, TX_FIXED_SIZE, Transaction
from consensus.ints import U8_MAX, U32_MAX, U64_MAX

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _json_uint(maximum: int) -> Callable[[Any], int]:
    """Validator for an unsigned JSON integer in [0, maximum].

    Accepts a JSON integer or a decimal string: u64 values above 2^53 are not exact
    as JSON numbers in JavaScript, so clients may send them as strings. Floats and
    booleans are refused so that a rounded value is never silently accepted.
    """

    def parse(value: Any) -> int:
        number: int
        if isinstance(value, str):
            if len(value) > len(str(maximum)):
                raise ValueError(f"must be at most {maximum}")
            if not value.isascii() or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
                raise ValueError("must be a decimal integer string without sign or leading zeros")
            number = int(value)
        elif type(value) is int:
            number = value
        else:
            raise ValueError("must be an integer (JSON number without fraction, or a string)")
        if not 0 <= number <= maximum:
            raise ValueError(f"must be in [0, {maximum}]")
        return number

    return parse


def _hex_field(size: int | None, max_size: int | None = None) -> Callable[[Any], bytes]:
    """Validator for a hex field of exactly ``size`` or at most ``max_size`` bytes.

    The length is checked on the text before decoding, so a huge string costs nothing.
    """
    cap = size if size is not None else max_size
    if cap is None:
        raise ValueError("a hex field needs a size or a cap")

    def parse(value: Any) -> bytes:
        if isinstance(value, bytes):  # Python-side construction (from_transaction)
            raw = value
        elif isinstance(value, str):
            if len(value) > 2 * cap:
                raise ValueError(f"longer than {cap} bytes ({2 * cap} hex digits)")
            if value[:2] in ("0x", "0X"):
                raise ValueError("hex without a 0x prefix expected")
            if len(value) % 2 or not all(c in _HEX_DIGITS for c in value):
                raise ValueError("not a hex string (even number of 0-9a-f digits)")
            raw = bytes.fromhex(value)
        else:
            raise ValueError("must be a hex string")
        if size is not None and len(raw) != size:
            raise ValueError(f"must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
        if len(raw) > cap:
            raise ValueError(f"must be at most {cap} bytes, got {len(raw)}")
        return raw

    return parse


def _hex_out(value: bytes) -> str:
    return value.hex()


def _address_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a bech32m address string")
    decode_any_address(value)  # AddressError is a ValueError: pydantic names the field
    return value.lower()


_HexOut = PlainSerializer(_hex_out, return_type=str)
_U64Str = PlainSerializer(str, return_type=str)

# PlainValidator: the validator alone decides (no lax int coercion of 1.0 or True).
JsonU8 = Annotated[int, PlainValidator(_json_uint(U8_MAX))]
JsonU32 = Annotated[int, PlainValidator(_json_uint(U32_MAX))]
JsonU64 = Annotated[int, PlainValidator(_json_uint(U64_MAX)), _U64Str]
Hex32 = Annotated[bytes, PlainValidator(_hex_field(PUBLIC_KEY_SIZE)), _HexOut]
Hex64 = Annotated[bytes, PlainValidator(_hex_field(SIGNATURE_SIZE)), _HexOut]
HexPayload = Annotated[
    bytes, PlainValidator(_hex_field(None, MAX_TX_SIZE - TX_FIXED_SIZE)), _HexOut
]
AddressText = Annotated[str, PlainValidator(_address_text)]


class TransactionJSON(BaseModel):
    """A transaction as JSON text, validated field by field.

    Binary fields are lowercase hex (no 0x), the recipient is bech32m text, u64
    fields are emitted as decimal strings and accepted as strings or JSON integers.
    Parse untrusted text with ``model_validate_json``; a bad field raises a pydantic
    ``ValidationError`` whose ``loc`` names the field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chain_id: JsonU32
    kind: JsonU8
    sender_pubkey: Hex32
    nonce: JsonU64
    fee: JsonU64
    recipient: AddressText
    amount: JsonU64
    payload: HexPayload = b""
    signature: Hex64

    def to_transaction(self, expected_hrp: str) -> Transaction:
        """The binary transaction; the recipient must belong to ``expected_hrp``'s network.

        Raises ``AddressError`` (a ValueError) for an address of another network.
        """
        return Transaction(
            chain_id=self.chain_id,
            kind=self.kind,
            sender_pubkey=self.sender_pubkey,
            nonce=self.nonce,
            fee=self.fee,
            recipient=decode_address(self.recipient, expected_hrp),
            amount=self.amount,
            payload=self.payload,
            signature=self.signature,
        )

    @classmethod
    def from_transaction(cls, tx: Transaction, hrp: str) -> TransactionJSON:
        """JSON form of ``tx`` with the recipient shown for the network ``hrp``."""
        return cls(
            chain_id=tx.chain_id,
            kind=tx.kind,
            sender_pubkey=tx.sender_pubkey,
            nonce=tx.nonce,
            fee=tx.fee,
            recipient=encode_address(hrp, tx.recipient),
            amount=tx.amount,
            payload=tx.payload,
            signature=tx.signature,
        )
