"""Keystore files (scrypt + AES-256-GCM), amounts, and offline signing by ``Wallet``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chain.address import AddressError, address_from_pubkey, encode_address
from chain.keys import devnet_key
from chain.network import load_network
from chain.tx import Transaction, check_transaction
from wallet import (
    AmountError,
    KeystoreError,
    KeystoreExistsError,
    Wallet,
    WalletError,
    WrongPasswordError,
    default_keystore_path,
    format_coins,
    parse_amount,
)
from wallet.keystore import (
    MIN_SCRYPT_N,
    decrypt_keystore,
    encrypt_seed,
    keystore_address,
    load_key,
    read_keystore,
)

DEVNET = load_network("devnet")
FAST_N = MIN_SCRYPT_N
SEED = bytes(range(32))


def _keystore() -> dict[str, object]:
    return encrypt_seed(SEED, "correct horse", "dpw", scrypt_n=FAST_N)


def test_round_trip_and_format() -> None:
    data = _keystore()
    assert data["version"] == 1 and data["kdf"] == "scrypt" and data["cipher"] == "aes-256-gcm"
    assert set(data["kdfparams"]) == {"n", "r", "p", "salt"}  # type: ignore[arg-type]
    key = decrypt_keystore(data, "correct horse")
    assert key.seed == SEED
    assert data["address"] == encode_address("dpw", address_from_pubkey(key.public_key))
    assert SEED.hex() not in json.dumps(data)
    other = _keystore()  # fresh salt and nonce every time
    assert other["nonce"] != data["nonce"] and other["ciphertext"] != data["ciphertext"]


def test_wrong_password_fails_cleanly() -> None:
    with pytest.raises(WrongPasswordError, match="wrong password, or the file was modified"):
        decrypt_keystore(_keystore(), "Correct horse")


def _flip_hex(value: str) -> str:
    return ("1" if value[0] == "0" else "0") + value[1:]


TAMPERS = {
    "version": lambda d: d.update(version=2),
    "address": lambda d: d.update(address=encode_address("dpw", bytes(20))),
    "kdf": lambda d: d.update(kdf="pbkdf2"),
    "kdfparams.n": lambda d: d["kdfparams"].update(n=FAST_N * 2),
    "kdfparams.r": lambda d: d["kdfparams"].update(r=4),
    "kdfparams.p": lambda d: d["kdfparams"].update(p=2),
    "kdfparams.salt": lambda d: d["kdfparams"].update(salt=_flip_hex(d["kdfparams"]["salt"])),
    "cipher": lambda d: d.update(cipher="aes-128-gcm"),
    "nonce": lambda d: d.update(nonce=_flip_hex(d["nonce"])),
    "ciphertext": lambda d: d.update(ciphertext=_flip_hex(d["ciphertext"])),
    "tag": lambda d: d.update(tag=_flip_hex(d["tag"])),
    "ciphertext-short": lambda d: d.update(ciphertext=d["ciphertext"][:-2]),
    "nonce-missing": lambda d: d.pop("nonce"),
    "kdfparams-huge-n": lambda d: d["kdfparams"].update(n=2**30),
    "kdfparams-n-not-power-of-two": lambda d: d["kdfparams"].update(n=3000),
    "kdfparams-huge-p": lambda d: d["kdfparams"].update(p=10**6),
    "salt-not-hex": lambda d: d["kdfparams"].update(salt="zz" * 32),
}


@pytest.mark.parametrize("field", sorted(TAMPERS))
def test_every_tampered_field_fails_with_a_typed_error(tmp_path: Path, field: str) -> None:
    data = _keystore()
    TAMPERS[field](data)
    path = tmp_path / "w.json"
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(KeystoreError) as info:
        load_key(path, "correct horse")
    assert str(info.value)  # a message that says why
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]


def test_tampered_address_is_caught_by_the_tag_not_only_the_recheck() -> None:
    data = _keystore()
    data["address"] = encode_address("dpw", address_from_pubkey(devnet_key(1).public_key))
    with pytest.raises(WrongPasswordError):
        decrypt_keystore(data, "correct horse")


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="no keystore"):
        read_keystore(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KeystoreError, match="not a JSON keystore"):
        read_keystore(bad)
    bad.write_text("[]")
    with pytest.raises(KeystoreError):
        read_keystore(bad)
    bad.write_bytes(b" " * 100_000)
    with pytest.raises(KeystoreError, match="too large"):
        read_keystore(bad)


def test_wallet_create_load_never_overwrites(tmp_path: Path) -> None:
    path = default_keystore_path(tmp_path, "devnet", "alice")
    assert path == tmp_path / "devnet" / "wallets" / "alice.json"
    w = Wallet.create(path, "pw", DEVNET, scrypt_n=FAST_N)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keystore_address(path) == w.address and w.address.startswith("dpw1")
    assert Wallet.load(path, "pw").address == w.address
    before = path.read_bytes()
    with pytest.raises(KeystoreExistsError):
        Wallet.create(path, "pw2", DEVNET, scrypt_n=FAST_N)
    assert path.read_bytes() == before
    with pytest.raises(WrongPasswordError):
        Wallet.load(path, "nope")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["alice.json"]  # no temp files left
    with pytest.raises(WalletError):
        default_keystore_path(tmp_path, "devnet", "../evil")
    with pytest.raises(WalletError, match="testnet"):
        Wallet.load(path, "pw", load_network("testnet"))


def test_build_transfer_signs_offline(tmp_path: Path) -> None:
    w = Wallet.create(tmp_path / "k.json", "pw", DEVNET, seed=devnet_key(0).seed, scrypt_n=FAST_N)
    assert w.public_key == devnet_key(0).public_key
    to = encode_address("dpw", address_from_pubkey(devnet_key(1).public_key))
    tx = w.build_transfer(to, parse_amount("1.5"), fee=1000, nonce=7)
    assert check_transaction(tx, DEVNET.chain_id).ok
    assert Transaction.from_bytes(tx.to_bytes()) == tx
    assert (tx.amount, tx.fee, tx.nonce, tx.chain_id) == (150_000_000, 1000, 7, DEVNET.chain_id)
    with pytest.raises(AddressError, match="wrong network"):
        w.build_transfer(encode_address("pw", bytes(20)), 1)
    with pytest.raises(WalletError, match="tx-zero-amount"):
        w.build_transfer(to, 0)
    assert "seed" not in repr(w) and SEED.hex() not in repr(w)


@pytest.mark.parametrize(
    ("text", "units"),
    [("1.5", 150_000_000), ("150000000u", 150_000_000), ("0.00000001", 1), ("2", 200_000_000),
     (".5", 50_000_000), ("1_000", 100_000_000_000), ("0u", 0)],
)  # fmt: skip
def test_parse_amount(text: str, units: int) -> None:
    assert parse_amount(text) == units


@pytest.mark.parametrize(
    "text", ["1.000000001", "-1", "1e5", "abc", "1.5u", "", "u", "99999999999999999999"]
)
def test_parse_amount_rejects(text: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(text)


def test_format_coins() -> None:
    assert format_coins(150_000_000) == "1.5"
    assert format_coins(1) == "0.00000001"
    assert format_coins(0) == "0.0"


def test_the_package_names_load_on_first_use() -> None:
    """wallet/__init__ loads its names lazily: each one in ``__all__`` has a home that
    defines it, and nothing else is an attribute of the package."""
    import importlib

    import wallet

    assert sorted(wallet.__all__) == sorted(wallet._HOME)
    for name in wallet.__all__:
        assert getattr(wallet, name) is getattr(importlib.import_module(wallet._HOME[name]), name)
    with pytest.raises(AttributeError, match="no attribute 'Walet'"):
        _ = wallet.Walet  # type: ignore[attr-defined]
