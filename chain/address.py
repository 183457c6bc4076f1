"""Account addresses: 20-byte ids and their bech32m (BIP-350) text form.

The raw address is ``tagged_hash(TAG_ADDRESS, pubkey)[:20]``: 160 bits keeps
collision search at 2^80 work, as in Bitcoin and Ethereum, and hides the public
key's algorithm so a future key type can share the address space.

The text form is bech32m with a network prefix (``pw1…``, ``tpw1…``, ``dpw1…``) and
the 20 bytes as 32 five-bit groups, with no witness version: the checksum catches
any four substituted characters, and the prefix stops a testnet address being pasted
into a mainnet wallet. Bech32m (not the original bech32) because BIP-350 fixed the
bech32 weakness where inserting or deleting ``q`` before a final ``p`` kept the
checksum valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from consensus.hashing import TAG_ADDRESS, tagged_hash

ADDRESS_SIZE = 20

HRP_BY_NETWORK: dict[str, str] = {"mainnet": "pw", "testnet": "tpw", "devnet": "dpw"}
_NETWORK_BY_HRP = {hrp: net for net, hrp in HRP_BY_NETWORK.items()}

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHAR_VALUE = {c: i for i, c in enumerate(CHARSET)}
BECH32M_CONST = 0x2BC830A3
_BECH32_CONST = 1  # the original BIP-173 constant, recognised only to explain a rejection
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LEN = 6
MAX_BECH32_LEN = 90  # BIP-173 overall length limit
_ADDRESS_GROUPS = ADDRESS_SIZE * 8 // 5  # 160 bits = 32 groups exactly, no padding bits


class AddressError(ValueError):
    """Text that is not a valid address, with the reason in the message."""


def address_from_pubkey(pubkey: bytes) -> bytes:
    """The 20-byte account id of an Ed25519 public key."""
    if len(pubkey) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return tagged_hash(TAG_ADDRESS, pubkey)[:ADDRESS_SIZE]


# --- bech32m (BIP-350) -------------------------------------------------------------


def _gen_xor(top: int) -> int:
    acc = 0
    for i in range(5):
        if (top >> i) & 1:
            acc ^= _GENERATOR[i]
    return acc


# The XOR of generators selected by each 5-bit value of the top bits: one lookup per
# character instead of five conditional XORs (same result as the BIP reference loop).
_GEN_TABLE = tuple(_gen_xor(top) for top in range(32))


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for v in values:
        chk = ((chk & 0x1FFFFFF) << 5 ^ v) ^ _GEN_TABLE[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _checksum(hrp: str, data: Sequence[int]) -> list[int]:
    pm = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ BECH32M_CONST
    return [(pm >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LEN)]


def bech32m_encode(hrp: str, data: Sequence[int]) -> str:
    """Encode 5-bit groups under a lowercase human-readable part."""
    if not hrp or any(not 33 <= ord(c) <= 126 for c in hrp) or hrp != hrp.lower():
        raise AddressError(f"bad human-readable part {hrp!r}")
    if any(not 0 <= d < 32 for d in data):
        raise AddressError("data values must be 5-bit groups")
    out = hrp + "1" + "".join(CHARSET[d] for d in (*data, *_checksum(hrp, data)))
    if len(out) > MAX_BECH32_LEN:
        raise AddressError(f"encoding would be {len(out)} characters, over {MAX_BECH32_LEN}")
    return out


def bech32m_decode(text: str) -> tuple[str, list[int]]:
    """Split and check a bech32m string; returns (lowercase hrp, 5-bit data)."""
    if len(text) > MAX_BECH32_LEN:  # first: the scans below cost seconds on megabytes
        raise AddressError(f"too long: {len(text)} characters, the limit is {MAX_BECH32_LEN}")
    if any(c.isspace() for c in text):
        raise AddressError("contains a space (or another blank): copy the address alone")
    if any(not 33 <= ord(c) <= 126 for c in text):
        raise AddressError("contains a character outside printable ASCII")
    if text.lower() != text and text.upper() != text:
        raise AddressError("mixed upper and lower case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 0:
        raise AddressError("no '1' separator between prefix and data")
    if pos == 0:
        raise AddressError("empty network prefix")
    if len(text) - pos - 1 < _CHECKSUM_LEN:
        raise AddressError("too short to hold a checksum")
    hrp = text[:pos]
    try:
        data = [_CHAR_VALUE[c] for c in text[pos + 1 :]]
    except KeyError as e:
        raise AddressError(f"invalid character {e.args[0]!r} (bech32 has no b, i, o, 1)") from None
    residue = _polymod([*_hrp_expand(hrp), *data])
    if residue != BECH32M_CONST:
        if residue == _BECH32_CONST:
            raise AddressError("bech32 checksum, not bech32m (BIP-350): wrong address format")
        raise AddressError("bad checksum: typo? check the address character by character")
    return hrp, data[:-_CHECKSUM_LEN]


def _convertbits(data: Iterable[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or (acc << (tobits - bits)) & maxv:
        raise AddressError("non-canonical padding in the data part")
    return out


# --- addresses ---------------------------------------------------------------------


def encode_address(hrp: str, raw20: bytes) -> str:
    """Text form of a 20-byte address for the network with prefix ``hrp``."""
    if len(raw20) != ADDRESS_SIZE:
        raise AddressError(f"an address is {ADDRESS_SIZE} bytes, got {len(raw20)}")
    return bech32m_encode(hrp, _convertbits(raw20, 8, 5, pad=True))


def decode_address(text: str, expected_hrp: str) -> bytes:
    """The 20 bytes of an address text, which must belong to ``expected_hrp``'s network.

    Accepts all-lowercase or all-uppercase (QR codes) text; anything else raises
    ``AddressError`` saying why: bad checksum (typo), wrong network, wrong length.
    """
    hrp, data = bech32m_decode(text)
    if hrp != expected_hrp:
        got = _NETWORK_BY_HRP.get(hrp)
        want = _NETWORK_BY_HRP.get(expected_hrp, expected_hrp)
        where = f"a {got} address" if got else f"prefix {hrp!r} is not a pouw network"
        raise AddressError(f"wrong network: {where}, expected {want} ({expected_hrp}1...)")
    return _address_bytes(data)


def decode_any_address(text: str) -> tuple[str, bytes]:
    """(network name, 20 bytes) of an address of any pouw network."""
    hrp, data = bech32m_decode(text)
    network = _NETWORK_BY_HRP.get(hrp)
    if network is None:
        raise AddressError(f"prefix {hrp!r} is not a pouw network ({', '.join(_NETWORK_BY_HRP)})")
    return network, _address_bytes(data)


def _address_bytes(data: list[int]) -> bytes:
    if len(data) != _ADDRESS_GROUPS:
        raise AddressError(
            f"wrong length: {len(data)} data characters ({len(data) * 5 // 8} bytes), "
            f"an address has {_ADDRESS_GROUPS} ({ADDRESS_SIZE} bytes)"
        )
    return bytes(_convertbits(data, 5, 8, pad=False))
