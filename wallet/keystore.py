"""Keystore files: one Ed25519 seed encrypted with scrypt and AES-256-GCM.

File format (JSON, version 1)::

    {
      "version": 1,
      "address": "dpw1...",                      # bech32m, shown without the password
      "kdf": "scrypt",
      "kdfparams": {"n": 131072, "r": 8, "p": 1, "salt": "<32 hex bytes>"},
      "cipher": "aes-256-gcm",
      "nonce": "<12 hex bytes>",
      "ciphertext": "<32 hex bytes>",            # the encrypted 32-byte seed
      "tag": "<16 hex bytes>"
    }

The key is ``scrypt(password, salt, n, r, p)`` (32 bytes). Every other field is bound
to the ciphertext as GCM associated data (a canonical JSON of version, address, kdf,
kdfparams and cipher), so a change to *any* byte of the file, or a wrong password,
fails the tag check: :class:`WrongPasswordError`. After decryption the seed's address
must equal the stored one. Loading never writes; saving writes a temporary file and
renames it (mode 0600), and never overwrites an existing keystore.

Bounds on the kdf parameters are checked before scrypt runs, so a doctored file
cannot make the wallet allocate gigabytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.address import AddressError, address_from_pubkey, decode_any_address, encode_address
from chain.datadir import sync_folder
from chain.keys import SEED_SIZE, PrivateKey

KEYSTORE_VERSION = 1
KDF = "scrypt"
CIPHER = "aes-256-gcm"
# scrypt cost: 2^17 * 128 * 8 = 128 MiB and ~0.3-0.5 s per unlock on one core.
DEFAULT_SCRYPT_N = 2**17
DEFAULT_SCRYPT_R = 8
DEFAULT_SCRYPT_P = 1
MIN_SCRYPT_N = 2**10  # tests use the minimum; real wallets the default
# A doctored file must not make an unlock take more than ~256 MiB or a few seconds.
# scrypt needs 128 * n * r bytes per lane (lanes run one after another here), and its
# time grows with 128 * n * r * p: the default costs 128 MiB and ~0.4 s, so a budget
# of 4x the default's work stays within a few seconds on one core.
MAX_SCRYPT_MEMORY = 256 * 1024**2
MAX_SCRYPT_WORK = 4 * 128 * DEFAULT_SCRYPT_N * DEFAULT_SCRYPT_R * DEFAULT_SCRYPT_P
MAX_SCRYPT_N = MAX_SCRYPT_MEMORY // 128  # 2^21, reachable with r = 1 only
MAX_SCRYPT_P = 4
SALT_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_KEYSTORE_BYTES = 64 * 1024


class WalletError(Exception):
    """Anything the wallet refuses to do, with the reason in the message."""


class KeystoreError(WalletError):
    """A keystore file that cannot be read: missing, malformed, unsupported."""


class WrongPasswordError(KeystoreError):
    """The GCM tag check failed: a wrong password, or the file was modified."""


class KeystoreExistsError(WalletError):
    """Refusing to overwrite an existing keystore file."""


@dataclass(frozen=True)
class KdfParams:
    n: int
    r: int
    p: int
    salt: bytes

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "r": self.r, "p": self.p, "salt": self.salt.hex()}


def check_kdf_params(n: int, r: int, p: int) -> None:
    """Raise KeystoreError unless (n, r, p) is a sane, bounded scrypt cost."""
    for name, value in (("n", n), ("r", r), ("p", p)):
        if type(value) is not int or value < 1:
            raise KeystoreError(f"kdfparams.{name} must be a positive integer, got {value!r}")
    if n & (n - 1) or not MIN_SCRYPT_N <= n <= MAX_SCRYPT_N:
        raise KeystoreError(f"kdfparams.n must be a power of two in [2^10, 2^21], got {n}")
    if p > MAX_SCRYPT_P or 128 * n * r > MAX_SCRYPT_MEMORY or 128 * n * r * p > MAX_SCRYPT_WORK:
        raise KeystoreError(
            f"scrypt cost n={n} r={r} p={p} is beyond what a keystore may ask (at most "
            f"{MAX_SCRYPT_MEMORY // 1024**2} MiB and {MAX_SCRYPT_WORK // 1024**2} MiB of work, "
            f"p <= {MAX_SCRYPT_P}); the file was not written by this wallet"
        )


def derive_key(password: str, params: KdfParams) -> bytes:
    check_kdf_params(params.n, params.r, params.p)
    from Crypto.Protocol.KDF import scrypt  # (loaded by the commands that unlock only)

    key = scrypt(password.encode("utf-8"), params.salt, 32, N=params.n, r=params.r, p=params.p)
    assert isinstance(key, bytes)
    return key


def _aad(address: str, kdf: KdfParams) -> bytes:
    header = {
        "version": KEYSTORE_VERSION,
        "address": address,
        "kdf": KDF,
        "kdfparams": kdf.to_json(),
        "cipher": CIPHER,
    }
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def encrypt_seed(
    seed: bytes,
    password: str,
    hrp: str,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    scrypt_r: int = DEFAULT_SCRYPT_R,
    scrypt_p: int = DEFAULT_SCRYPT_P,
) -> dict[str, Any]:
    """The keystore JSON object for ``seed`` under ``password`` (address for ``hrp``)."""
    if len(seed) != SEED_SIZE:
        raise WalletError(f"a seed is {SEED_SIZE} bytes, got {len(seed)}")
    if not password:
        raise WalletError("an empty password is not allowed")
    key = PrivateKey.from_seed(seed)
    address = encode_address(hrp, address_from_pubkey(key.public_key))
    kdf = KdfParams(scrypt_n, scrypt_r, scrypt_p, secrets.token_bytes(SALT_SIZE))
    nonce = secrets.token_bytes(NONCE_SIZE)
    from Crypto.Cipher import AES

    cipher = AES.new(derive_key(password, kdf), AES.MODE_GCM, nonce=nonce, mac_len=TAG_SIZE)
    cipher.update(_aad(address, kdf))
    ciphertext, tag = cipher.encrypt_and_digest(seed)
    return {
        "version": KEYSTORE_VERSION,
        "address": address,
        "kdf": KDF,
        "kdfparams": kdf.to_json(),
        "cipher": CIPHER,
        "nonce": nonce.hex(),
        "ciphertext": ciphertext.hex(),
        "tag": tag.hex(),
    }


def _hex(data: dict[str, Any], name: str, size: int, where: str = "") -> bytes:
    value = data.get(name)
    label = f"{where}{name}"
    if not isinstance(value, str):
        raise KeystoreError(f"keystore field {label!r} is missing or not a string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise KeystoreError(f"keystore field {label!r} is not hex") from None
    if len(raw) != size:
        raise KeystoreError(f"keystore field {label!r} must be {size} bytes, got {len(raw)}")
    return raw


def parse_keystore(data: object) -> tuple[str, KdfParams, bytes, bytes, bytes]:
    """(address, kdf params, nonce, ciphertext, tag) of a keystore object, checked."""
    if not isinstance(data, dict):
        raise KeystoreError("a keystore is a JSON object")
    version = data.get("version")
    if version != KEYSTORE_VERSION:
        raise KeystoreError(f"unsupported keystore version {version!r} (this wallet reads 1)")
    if data.get("kdf") != KDF:
        raise KeystoreError(f"unsupported kdf {data.get('kdf')!r} (expected {KDF!r})")
    if data.get("cipher") != CIPHER:
        raise KeystoreError(f"unsupported cipher {data.get('cipher')!r} (expected {CIPHER!r})")
    address = data.get("address")
    if not isinstance(address, str):
        raise KeystoreError("keystore field 'address' is missing")
    try:
        decode_any_address(address)
    except AddressError as exc:
        raise KeystoreError(f"keystore field 'address' is not a pouw address: {exc}") from None
    kp = data.get("kdfparams")
    if not isinstance(kp, dict):
        raise KeystoreError("keystore field 'kdfparams' is missing")
    check_kdf_params(kp.get("n"), kp.get("r"), kp.get("p"))  # type: ignore[arg-type]
    kdf = KdfParams(kp["n"], kp["r"], kp["p"], _hex(kp, "salt", SALT_SIZE, "kdfparams."))
    return (
        address,
        kdf,
        _hex(data, "nonce", NONCE_SIZE),
        _hex(data, "ciphertext", SEED_SIZE),
        _hex(data, "tag", TAG_SIZE),
    )


def decrypt_keystore(data: object, password: str) -> PrivateKey:
    """The key in a keystore object; WrongPasswordError if the tag check fails."""
    address, kdf, nonce, ciphertext, tag = parse_keystore(data)
    from Crypto.Cipher import AES

    cipher = AES.new(derive_key(password, kdf), AES.MODE_GCM, nonce=nonce, mac_len=TAG_SIZE)
    cipher.update(_aad(address, kdf))
    try:
        seed = cipher.decrypt_and_verify(ciphertext, tag)
    except ValueError:
        raise WrongPasswordError(
            "cannot unlock the keystore: wrong password, or the file was modified "
            "(AES-GCM authentication tag check failed)"
        ) from None
    key = PrivateKey.from_seed(seed)
    _, raw = decode_any_address(address)
    if address_from_pubkey(key.public_key) != raw:  # unreachable unless the AAD is forged
        raise KeystoreError("the decrypted key does not match the keystore's address")
    return key


def read_keystore(path: Path) -> dict[str, Any]:
    """The JSON object of a keystore file (read only, size-capped)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_KEYSTORE_BYTES + 1)
    except FileNotFoundError:
        raise KeystoreError(
            f"no keystore at {path}: make one with `pouw wallet create` or `pouw wallet "
            "import`, or name the file it is in"
        ) from None
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_KEYSTORE_BYTES:
        raise KeystoreError(f"{path} is too large to be a keystore")
    try:
        data = json.loads(raw)
    except ValueError as exc:  # (JSON and UTF-8 errors, an integer of over 4300 digits)
        raise KeystoreError(f"{path} is not a JSON keystore: {exc}") from None
    except RecursionError:
        raise KeystoreError(f"{path} is not a keystore: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise KeystoreError(f"{path} is not a keystore (not a JSON object)")
    return data


def parse_keystore_bytes(raw: bytes) -> tuple[str, KdfParams, bytes, bytes, bytes]:
    """:func:`parse_keystore` of a file's bytes (what :func:`read_keystore` reads)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:  # (JSON and UTF-8 errors, an integer of over 4300 digits)
        raise KeystoreError(f"not a JSON keystore: {exc}") from None
    except RecursionError:
        raise KeystoreError("not a keystore: JSON nested too deeply") from None
    return parse_keystore(data)


def load_key(path: Path, password: str) -> PrivateKey:
    return decrypt_keystore(read_keystore(path), password)


def keystore_address(path: Path) -> str:
    """The address a keystore file declares (no password needed; not authenticated)."""
    address, *_ = parse_keystore(read_keystore(path))
    return address


def write_keystore(path: Path, data: dict[str, Any]) -> None:
    """Write a new keystore file atomically with mode 0600; never overwrite one."""
    path = Path(path)
    if path.exists():
        raise KeystoreExistsError(f"{path} already exists; not overwriting a keystore")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # link() fails if the target appeared meanwhile: no overwrite even in a race.
        os.link(tmp, path)
        sync_folder(path.parent)  # the new name survives a power cut too
    except FileExistsError:
        raise KeystoreExistsError(f"{path} already exists; not overwriting a keystore") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
