"""Every decoder of a file the node or wallet reads raises only its own typed error.

Settings TOML, genesis JSON, keystore JSON, the peers file and the records stored in
the chain database (block index, blocks, undo data, accounts, contributions, jobs)
are fed mutations of real encodings (flipped, truncated, spliced, extended bytes),
structural edits (a field replaced by any JSON value, deep nesting) and raw bytes.
The default run tries a few hundred inputs per decoder; the long run:

    pytest -m slow tests/test_file_decoders_fuzz.py
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.block import Block
from chain.encoding import DecodeError
from chain.genesis import genesis_block
from chain.index_record import BlockStatus, IndexRecord
from chain.job_record import Job, JobStatus
from chain.keys import PrivateKey
from chain.network import NetworkError, load_network, parse_genesis
from chain.state import Account, Contribution, decode_undo, encode_undo
from chain.storage import CorruptionError
from chain.tiprecord import parse_tip_record
from node.settings_file import ConfigError, parse_config
from p2p.addrbook import AddressBook
from wallet.keystore import (
    DEFAULT_SCRYPT_N,
    DEFAULT_SCRYPT_P,
    DEFAULT_SCRYPT_R,
    MIN_SCRYPT_N,
    KeystoreError,
    check_kdf_params,
    decrypt_keystore,
    encrypt_seed,
    parse_keystore_bytes,
)

DEFAULT_EXAMPLES = 150  # per decoder: the whole file stays within a few seconds
SLOW_EXAMPLES = 20_000  # per decoder in the slow run (about 200k inputs in all)

# --- real encodings the mutations start from ---------------------------------------

DEVNET = load_network("devnet")
GENESIS_TEXT = resources.files("genesis").joinpath("devnet.json").read_bytes()
SETTINGS_TEXT = (
    b'mine = true\nminer_address = "dpw1qqqq"\nrpc_port = 29332\ndebug = ["net", "sync"]\n'
    b'log_level = "debug"\nmin_bounty_per_mac = 1.5\ngenesis_file = "~/genesis.json"\n'
    b"blob_quota_mb = 100\nlisten = false\n"
)
KEYSTORE = encrypt_seed(bytes(range(32)), "pw", DEVNET.hrp, scrypt_n=MIN_SCRYPT_N)
KEYSTORE_TEXT = json.dumps(KEYSTORE, indent=2).encode()
PEERS_TEXT = json.dumps(
    {"version": 1, "addresses": [{"host": "10.0.0.1", "port": 29333, "last_seen": 5}]}
).encode()
GENESIS_BLOCK = genesis_block(DEVNET)
JOB = Job(
    buyer=bytes(range(20)), m=64, k=128, n=64, h_a=bytes(32), h_b=bytes(range(32)),
    bounty=10**9, expires=500, submitted=7, status=JobStatus.CLAIMED, data_url=b"http://x/a",
)  # fmt: skip
INDEX = IndexRecord(
    bytes(range(32)), bytes(32), 5, 2**70 + 3, BlockStatus.HEADER_VALID | BlockStatus.VALID, 99
)
UNDO = encode_undo({b"a" + bytes(20): Account(5, 1).to_bytes(), b"S": None})
CONTRIBUTION = Contribution(3, 2**100, 10**20, 5, 7, 1).to_bytes()
TIP_RECORD = f"31 {bytes(range(32)).hex()} {2**70 + 5:x}\n".encode()


# --- mutation strategies -----------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few random edits: flips, cuts, insertions, repeats."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def json_edited(draw: st.DrawFn, seed: bytes) -> bytes:
    """The JSON document ``seed`` with one value (or the whole) replaced by any JSON."""
    doc = json.loads(seed)
    path = draw(st.sampled_from(_paths(doc)))
    value = draw(JSON_VALUES)
    if not path:
        return json.dumps(value).encode()
    target = doc
    for part in path[:-1]:
        target = target[part]
    if draw(st.booleans()) and isinstance(target, dict):
        target.pop(path[-1])
    else:
        target[path[-1]] = value
    return json.dumps(doc).encode()


def deep(open_: bytes, close: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(50, 200_000).map(lambda n: open_ * n + close * n)


def inputs(seed: bytes, *, json_doc: bool = False, extra: list[bytes] = ()) -> Any:  # type: ignore[assignment]
    choices = [mutated(seed), st.binary(max_size=300), st.sampled_from([seed, *extra])]
    if json_doc:
        choices += [json_edited(seed), deep(b"[", b"]"), deep(b'{"a":', b"}")]
    return st.one_of(*choices)


# --- the decoders and the one error each may raise ----------------------------------


class NeverRaised(Exception):
    """Advisory files (peers, tip record): their decoders may raise nothing at all."""


def _settings(raw: bytes) -> object:
    return parse_config(raw, Path("pouw.toml"), explicit=True)


def _peers(raw: bytes) -> object:
    # The peers file is advisory: any content is ignored with a warning, never raised.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "peers.json"
        path.write_bytes(raw)
        return AddressBook(path)


def _keystore(raw: bytes) -> object:
    parsed = parse_keystore_bytes(raw)
    if parsed[1].n == MIN_SCRYPT_N and parsed[1].r * parsed[1].p <= 16:
        decrypt_keystore(json.loads(raw), "pw")  # cheap enough to run the whole unlock
    return parsed


TOML_EXTRA = [
    b"min_bounty_per_mac = 1.5\n",
    b"min_bounty_per_mac = 1\n",
    b'genesis_file = "~nosuchuser_pouw/x"\n',
    b'genesis_file = "a\\u0000b"\n',
    b"[a]\nb = 1\n",
    b"debug = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    b"x = " + b"{a=" * 3000 + b"1" + b"}" * 3000 + b"\n",
    b"rpc_port = 1979-05-27T07:32:00Z\n",
    b"rpc_port = 99999999999999999999999999\n",
]
GENESIS_EXTRA = [b"\x80", b"5", b"[]", b'{"pouw": 5}', b"\xef\xbb\xbf{}"]

DECODERS: dict[str, tuple[Callable[[bytes], object], type[Exception], Any]] = {
    "settings": (_settings, ConfigError, st.one_of(
        inputs(SETTINGS_TEXT, extra=TOML_EXTRA), deep(b"a = [", b"]"),
        st.lists(st.sampled_from(TOML_EXTRA + [SETTINGS_TEXT]), max_size=4).map(b"".join),
    )),
    "genesis": (
        parse_genesis, NetworkError, inputs(GENESIS_TEXT, json_doc=True, extra=GENESIS_EXTRA)
    ),
    "keystore": (_keystore, KeystoreError, inputs(KEYSTORE_TEXT, json_doc=True)),
    "peers": (_peers, NeverRaised, inputs(PEERS_TEXT, json_doc=True)),
    "index record": (IndexRecord.from_bytes, CorruptionError, inputs(INDEX.to_bytes())),
    "block": (Block.from_bytes, DecodeError, inputs(GENESIS_BLOCK.to_bytes())),
    "undo": (decode_undo, DecodeError, inputs(UNDO)),
    "account": (Account.from_bytes, DecodeError, inputs(Account(10**12, 9).to_bytes())),
    "contribution": (Contribution.from_bytes, DecodeError, inputs(CONTRIBUTION)),
    "job": (Job.from_bytes, DecodeError, inputs(JOB.to_bytes())),
    "tip record": (parse_tip_record, NeverRaised, inputs(TIP_RECORD)),
}  # fmt: skip


def _check(name: str, raw: bytes) -> None:
    decode, allowed, _ = DECODERS[name]
    try:
        decode(raw)
    except allowed:
        pass
    except Exception as exc:  # noqa: BLE001 - the point: name what escaped
        raise AssertionError(
            f"{name} decoder raised {type(exc).__name__}: {exc!r:.300} on {raw[:120]!r}"
        ) from exc


def _fuzz(name: str, examples: int) -> None:
    @settings(
        max_examples=examples, deadline=None, derandomize=examples < SLOW_EXAMPLES,
        suppress_health_check=list(HealthCheck), database=None,
    )  # fmt: skip
    @given(DECODERS[name][2])
    def run(raw: bytes) -> None:
        _check(name, raw)

    quiet = [logging.getLogger(name) for name in ("pouw.p2p", "pouw.chain")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # the advisory files warn once per input
        logger.setLevel(logging.ERROR)
    try:
        run()
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_raises_only_its_own_error(name: str) -> None:
    _fuzz(name, DEFAULT_EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_raises_only_its_own_error_long(name: str) -> None:
    _fuzz(name, int(os.environ.get("POUW_FUZZ_EXAMPLES", SLOW_EXAMPLES)))


def test_real_encodings_still_decode() -> None:
    """The seeds are real: each decodes to what was encoded (so the fuzz starts valid)."""
    assert parse_genesis(GENESIS_TEXT) == DEVNET
    assert _settings(SETTINGS_TEXT)["min_bounty_per_mac"] == 1.5  # type: ignore[index]
    seed_key = PrivateKey.from_seed(bytes(range(32)))
    assert decrypt_keystore(KEYSTORE, "pw").public_key == seed_key.public_key
    assert len(_peers(PEERS_TEXT)) == 1  # type: ignore[arg-type]
    assert IndexRecord.from_bytes(INDEX.to_bytes()) == INDEX
    assert Block.from_bytes(GENESIS_BLOCK.to_bytes()).hash == GENESIS_BLOCK.hash
    assert Job.from_bytes(JOB.to_bytes()) == JOB
    assert decode_undo(UNDO)[b"S"] is None
    tip = parse_tip_record(TIP_RECORD)
    assert tip is not None and tip.height == 31 and tip.work == 2**70 + 5


@pytest.mark.parametrize(
    ("name", "raw", "words"),
    [
        ("settings", b"min_bounty_per_mac = 1.5\n", None),
        ("settings", b'genesis_file = "~nosuchuser_pouw/x"\n', "nosuchuser_pouw"),
        ("settings", b"a = " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("genesis", b"\x80", "not UTF-8"),
        ("genesis", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("genesis", b'{"network": "devnet", "pouw": 5}', "pouw"),
        ("keystore", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("job", JOB.to_bytes().replace(bytes([JobStatus.CLAIMED]) + bytes(20), b"\x09" + bytes(20)),
         "status"),
        # found by the long fuzz: a port of 2E333 (a float infinity) raised OverflowError
        ("peers", b'{"addresses": [{"host": "10.0.0.1", "port": 2E333, "last_seen": 5}]}',
         None),
        # an integer of more than 4300 digits: Python refuses to parse it with a bare
        # ValueError, which the narrower decode errors did not catch (a traceback)
        ("settings", b"rpc_port = " + b"9" * 5000 + b"\n", "malformed TOML"),
        ("genesis", b'{"network": ' + b"9" * 5000 + b"}", "not valid JSON"),
        ("keystore", b'{"n": ' + b"9" * 5000 + b"}", "not a JSON keystore"),
    ],
)  # fmt: skip
def test_reported_inputs_get_a_typed_error(name: str, raw: bytes, words: str | None) -> None:
    """The inputs of issue 12, each: the decoder's own error (or a clean decode)."""
    decode, allowed, _ = DECODERS[name]
    if words is None:
        decode(raw)
        return
    with pytest.raises(allowed, match=words):
        decode(raw)


def test_keystore_kdf_cost_is_capped() -> None:
    """n=2^22, r=8, p=16 (4 GiB, minutes) is refused before scrypt runs."""
    doc = dict(KEYSTORE, kdfparams=dict(KEYSTORE["kdfparams"], n=2**22, r=8, p=16))
    with pytest.raises(KeystoreError, match=r"2\^21"):
        parse_keystore_bytes(json.dumps(doc).encode())
    # each over 256 MiB of memory, over p = 4, or over 4x the default's work:
    for n, r, p in ((2**19, 8, 1), (2**17, 8, 8), (2**21, 2, 1), (2**18, 8, 3)):
        doc = dict(KEYSTORE, kdfparams=dict(KEYSTORE["kdfparams"], n=n, r=r, p=p))
        with pytest.raises(KeystoreError):
            parse_keystore_bytes(json.dumps(doc).encode())
    check_kdf_params(DEFAULT_SCRYPT_N, DEFAULT_SCRYPT_R, DEFAULT_SCRYPT_P)  # default: fine


@pytest.mark.parametrize(
    "text",
    ['{"bans": 5}', '{"bans": {"a": 1}}', '[1, 2]',
     '{"bans": [{"address": "10.0.0.9", "created": 1e999, "until": 5}]}'],
)  # fmt: skip
def test_a_bans_file_of_the_wrong_shape_is_ignored(text: str, tmp_path: Path) -> None:
    """bans.json is ours but a person may edit it: entries that do not fit are skipped
    (a list that is not one, a time of 1e999) and the node starts."""
    from p2p.addrbook import BanList

    path = tmp_path / "bans.json"
    path.write_text(text)
    assert BanList(path).bans == {}
