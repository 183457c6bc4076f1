"""RPC authentication: a random cookie file plus an optional configured user.

Only salted HMAC-SHA256 digests of the accepted ``user:password`` pairs are kept in
memory; a presented pair is hashed the same way and compared with every accepted
digest in constant time (``hmac.compare_digest``, no early exit).

A header value that passed is remembered by its keyed BLAKE2b digest (never as text),
so a client that sends the same ``Authorization`` on every call (all do) is let in by
one short hash and a set lookup instead of base64, HMAC-SHA256 and the comparisons. A
header that failed is never remembered: every wrong guess pays the full check (and the
service's pause).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from wallet.rpc import COOKIE_NAME  # wallet.rpc.read_cookie reads what this module writes

COOKIE_USER = "__cookie__"
# Each wrong password is answered after this pause (RPC and blob uploads), as
# bitcoind does: it slows guessing down; a client with the right one never waits.
AUTH_FAIL_DELAY_S = 0.25
# Distinct accepted header values remembered (the same credential may be spelled with
# other scheme case or padding); past it the set is cleared and refilled as calls come.
MAX_REMEMBERED = 64


def cookie_path(network_dir: Path) -> Path:
    return Path(network_dir) / COOKIE_NAME


def write_cookie(network_dir: Path) -> tuple[Path, str]:
    """Write a fresh ``__cookie__:<64 hex>`` cookie, readable by the owner only."""
    secret = secrets.token_hex(32)
    path = cookie_path(network_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(COOKIE_NAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{COOKIE_USER}:{secret}")
    os.replace(tmp, path)
    return path, secret


def remove_cookie(path: Path, secret: str) -> None:
    """Remove the cookie if it is still ours (another node may have replaced it)."""
    try:
        if path.read_text() == f"{COOKIE_USER}:{secret}":
            path.unlink()
    except (OSError, UnicodeDecodeError):  # gone, or replaced by something not ours
        pass


class Authenticator:
    def __init__(self) -> None:
        self._salt = secrets.token_bytes(32)
        self._digests: list[bytes] = []
        self._passed: set[bytes] = set()  # keyed digests of header values that passed

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.digest(self._salt, f"{user}:{password}".encode(), hashlib.sha256)

    def allow(self, user: str, password: str) -> None:
        if ":" in user:
            raise ValueError("an RPC user name may not contain ':'")
        self._digests.append(self._digest(user, password))

    def check(self, user: str, password: str) -> bool:
        presented = self._digest(user, password)
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(presented, digest)
        return ok

    def check_header(self, header: str | None) -> bool | None:
        """True/False for presented credentials; None when there is no Basic header."""
        if not header:
            return None
        try:
            raw = header.encode()
        except UnicodeEncodeError:  # undecodable bytes: never a valid Basic credential
            return False
        key = hashlib.blake2b(raw, key=self._salt, digest_size=16).digest()
        if key in self._passed:  # an unguessable keyed digest: the lookup leaks nothing
            return True
        ok = self._check_header(header)
        if ok:
            if len(self._passed) >= MAX_REMEMBERED:
                self._passed.clear()
            self._passed.add(key)
        return ok

    def _check_header(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            text = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = text.partition(":")
        return bool(sep) and self.check(user, password)
