"""chain/keys.py (Ed25519 via libsodium) and chain/address.py (bech32m addresses)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.address import (
    ADDRESS_SIZE,
    CHARSET,
    HRP_BY_NETWORK,
    AddressError,
    address_from_pubkey,
    bech32m_decode,
    bech32m_encode,
    decode_address,
    decode_any_address,
    encode_address,
)
from chain.keys import TAG_DEVNET_KEY, PrivateKey, devnet_key, verify
from consensus.hashing import TAG_ADDRESS, tagged_hash

# --- Ed25519 -----------------------------------------------------------------------

# RFC 8032 section 7.1, TEST 1 and TEST 2.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]

# The Ed25519 group order L; S must be below it.
ED25519_L = 2**252 + 27742317777372353535851937790883648493


@pytest.mark.parametrize("seed, pub, msg, sig", RFC8032)
def test_rfc8032_vectors(seed: str, pub: str, msg: str, sig: str) -> None:
    key = PrivateKey.from_seed(bytes.fromhex(seed))
    assert key.public_key.hex() == pub
    assert key.seed.hex() == seed
    assert key.sign(bytes.fromhex(msg)).hex() == sig
    assert verify(bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig))


@given(st.binary(max_size=200), st.data())
def test_sign_verify_and_any_flipped_bit_fails(msg: bytes, data: st.DataObject) -> None:
    key = devnet_key(3)
    sig = key.sign(msg)
    assert len(sig) == 64
    assert verify(key.public_key, msg, sig)

    bit = data.draw(st.integers(0, 64 * 8 - 1))
    bad_sig = bytearray(sig)
    bad_sig[bit // 8] ^= 1 << (bit % 8)
    assert not verify(key.public_key, msg, bytes(bad_sig))

    if msg:
        bit = data.draw(st.integers(0, len(msg) * 8 - 1))
        bad_msg = bytearray(msg)
        bad_msg[bit // 8] ^= 1 << (bit % 8)
        assert not verify(key.public_key, bytes(bad_msg), sig)

    bit = data.draw(st.integers(0, 32 * 8 - 1))
    bad_pub = bytearray(key.public_key)
    bad_pub[bit // 8] ^= 1 << (bit % 8)
    assert not verify(bytes(bad_pub), msg, sig)


def test_verify_other_key_fails() -> None:
    sig = devnet_key(0).sign(b"m")
    assert not verify(devnet_key(1).public_key, b"m", sig)


@pytest.mark.parametrize(
    "pubkey, msg, sig",
    [
        (bytes(31), b"m", bytes(64)),
        (bytes(33), b"m", bytes(64)),
        (bytes(32), b"m", bytes(63)),
        (bytes(32), b"m", bytes(65)),
        (b"", b"", b""),
        ("not bytes", b"m", bytes(64)),
        (bytes(32), "not bytes", bytes(64)),
        (bytes(32), b"m", None),
        (None, None, None),
        (b"\xff" * 32, b"m", b"\xff" * 64),
    ],
)
def test_verify_never_raises_on_bad_input(pubkey: object, msg: object, sig: object) -> None:
    assert verify(pubkey, msg, sig) is False  # type: ignore[arg-type]


def test_verify_rejects_small_order_key_forgery() -> None:
    # With A = identity, R = identity and S = 0, the cofactorless equation
    # [S]B == R + [h]A holds for *every* message. libsodium refuses small-order keys.
    identity = b"\x01" + bytes(31)
    assert not verify(identity, b"any message", identity + bytes(32))
    assert not verify(bytes(32), b"any message", identity + bytes(32))


def test_verify_rejects_non_canonical_s() -> None:
    # S + L is the same scalar mod L; accepting it would make signatures malleable.
    key = devnet_key(0)
    sig = key.sign(b"m")
    s = int.from_bytes(sig[32:], "little")
    assert s + ED25519_L < 2**256
    malleated = sig[:32] + (s + ED25519_L).to_bytes(32, "little")
    assert not verify(key.public_key, b"m", malleated)


def test_private_key_basics() -> None:
    key = PrivateKey.generate()
    assert len(key.seed) == 32 and len(key.public_key) == 32
    assert PrivateKey.from_seed(key.seed) == key
    assert hash(PrivateKey.from_seed(key.seed)) == hash(key)
    assert key.seed.hex() not in repr(key)
    assert key.public_key.hex() in repr(key)
    assert key != PrivateKey.generate()
    with pytest.raises(ValueError, match="32 bytes"):
        PrivateKey.from_seed(bytes(31))


def test_devnet_keys_are_deterministic_and_distinct() -> None:
    from consensus.ints import u32

    assert TAG_DEVNET_KEY == "pouw/devnet/key"
    assert devnet_key(5).seed == tagged_hash(TAG_DEVNET_KEY, u32(5))
    assert devnet_key(5) == devnet_key(5)
    assert len({devnet_key(i).public_key for i in range(20)}) == 20
    # Frozen: see tests/vectors/tx.json, which also lists these.
    assert devnet_key(0).seed.hex() == (
        "39cb46140aa5a60a78c92a5dced37dcebd59bda0f17dae14edcbcf196a2cbd14"
    )


# --- bech32m (BIP-350 test vectors) --------------------------------------------------

VALID_BECH32M = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]

INVALID_BECH32M = [
    (" 1xj0phk", "contains a space"),  # HRP character out of range (0x20)
    ("\x7f" + "1g6xzxy", "outside printable ASCII"),
    ("\x80" + "1vctc34", "outside printable ASCII"),
    (  # overall max length exceeded
        "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
        "too long",
    ),
    ("qyrz8wqd2c9m", "no '1' separator"),
    ("1qyrz8wqd2c9m", "empty network prefix"),
    ("y1b0jsk6g", "invalid character 'b'"),
    ("lt1igcx5c0", "invalid character 'i'"),
    ("in1muywd", "too short"),
    ("mm1crxm3i", "invalid character 'i'"),
    ("au1s5cgom", "invalid character 'o'"),
    ("M1VUXWEZ", "checksum"),  # checksum calculated with uppercase form of HRP
    ("16plkw9", "empty network prefix"),
    ("1p2gdwpf", "empty network prefix"),
]

# BIP-173 bech32 strings: valid bech32, hence invalid bech32m.
VALID_BECH32 = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqc8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]


@pytest.mark.parametrize("text", VALID_BECH32M)
def test_bip350_valid(text: str) -> None:
    hrp, data = bech32m_decode(text)
    assert bech32m_encode(hrp, data) == text.lower()
    # Flipping one bit of the first data character breaks the checksum (BIP test).
    pos = text.rfind("1")
    flipped = text[: pos + 1] + chr(ord(text[pos + 1]) ^ 1) + text[pos + 2 :]
    with pytest.raises(AddressError):
        bech32m_decode(flipped)


@pytest.mark.parametrize("text, reason", INVALID_BECH32M)
def test_bip350_invalid(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        bech32m_decode(text)


@pytest.mark.parametrize("text", VALID_BECH32)
def test_bech32_is_not_bech32m(text: str) -> None:
    with pytest.raises(AddressError, match="bech32 checksum, not bech32m"):
        bech32m_decode(text)


def test_bech32m_encode_rejects_bad_input() -> None:
    with pytest.raises(AddressError, match="human-readable"):
        bech32m_encode("", [])
    with pytest.raises(AddressError, match="human-readable"):
        bech32m_encode("PW", [])
    with pytest.raises(AddressError, match="5-bit"):
        bech32m_encode("pw", [32])
    with pytest.raises(AddressError, match="over 90"):
        bech32m_encode("pw", [0] * 82)


# --- addresses ---------------------------------------------------------------------

RAW20 = st.binary(min_size=ADDRESS_SIZE, max_size=ADDRESS_SIZE)
NETWORK = st.sampled_from(sorted(HRP_BY_NETWORK))


def test_network_prefixes() -> None:
    assert HRP_BY_NETWORK == {"mainnet": "pw", "testnet": "tpw", "devnet": "dpw"}


def test_address_from_pubkey() -> None:
    pub = devnet_key(0).public_key
    assert address_from_pubkey(pub) == tagged_hash(TAG_ADDRESS, pub)[:20]
    with pytest.raises(ValueError):
        address_from_pubkey(bytes(31))


@given(RAW20, NETWORK)
def test_address_round_trip(raw: bytes, network: str) -> None:
    hrp = HRP_BY_NETWORK[network]
    text = encode_address(hrp, raw)
    assert text.startswith(hrp + "1") and text == text.lower()
    assert len(text) == len(hrp) + 1 + 32 + 6
    assert decode_address(text, hrp) == raw
    assert decode_address(text.upper(), hrp) == raw  # QR codes use upper case
    assert decode_any_address(text) == (network, raw)


@given(RAW20, NETWORK, st.data())
def test_any_single_typo_is_caught(raw: bytes, network: str, data: st.DataObject) -> None:
    hrp = HRP_BY_NETWORK[network]
    text = encode_address(hrp, raw)
    pos = data.draw(st.integers(len(hrp) + 1, len(text) - 1))
    char = data.draw(st.sampled_from(CHARSET).filter(lambda c: c != text[pos]))
    typo = text[:pos] + char + text[pos + 1 :]
    with pytest.raises(AddressError, match="typo"):
        decode_address(typo, hrp)


def test_typo_and_swap_messages() -> None:
    text = encode_address("dpw", bytes(range(20)))
    swapped = text[:10] + text[11] + text[10] + text[12:]
    assert swapped != text
    with pytest.raises(AddressError, match=r"bad checksum: typo\?"):
        decode_address(swapped, "dpw")


def test_wrong_network() -> None:
    text = encode_address("tpw", bytes(20))
    with pytest.raises(AddressError, match=r"wrong network: a testnet address, expected mainnet"):
        decode_address(text, "pw")
    other = bech32m_encode("xyz", [0] * 32)
    with pytest.raises(AddressError, match="'xyz' is not a pouw network"):
        decode_address(other, "dpw")
    with pytest.raises(AddressError, match="'xyz' is not a pouw network"):
        decode_any_address(other)


@pytest.mark.parametrize("groups", [31, 33, 40, 0])
def test_wrong_length(groups: int) -> None:
    text = bech32m_encode("dpw", [0] * groups)
    with pytest.raises(AddressError, match="wrong length"):
        decode_address(text, "dpw")


def test_encode_wrong_length() -> None:
    with pytest.raises(AddressError, match="20 bytes, got 21"):
        encode_address("pw", bytes(21))


def test_mixed_case() -> None:
    text = encode_address("pw", bytes(range(20)))
    mixed = text[:-1] + text[-1].upper()
    assert mixed != text
    with pytest.raises(AddressError, match="mixed upper and lower case"):
        decode_address(mixed, "pw")


def test_invalid_character_is_explained() -> None:
    text = encode_address("pw", bytes(20))
    with pytest.raises(AddressError, match=r"invalid character 'b'"):
        decode_address(text[:-1] + "b", "pw")


def test_address_error_is_a_value_error() -> None:
    assert issubclass(AddressError, ValueError)


def test_a_huge_address_is_refused_by_its_length_before_anything_scans_it() -> None:
    """An address of megabytes (an RPC param, a flag) is refused by its length first,
    before the character scans (they took 2.8 s for 10 MB on the event loop, blocking
    every call): the length is what it is told, not the blank in it."""
    with pytest.raises(AddressError, match="too long: 10000005 characters"):
        bech32m_decode("dpw1 " + "q" * 10_000_000)
