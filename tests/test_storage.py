"""Tests for chain.storage (LevelDB layer) and chain.datadir (the datadir lock)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import plyvel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.datadir import DataDir, DatadirLockedError
from chain.index_record import INDEX_RECORD_MIN_LEN, MAX_WORK_BYTES, BlockStatus, IndexRecord
from chain.storage import (
    BatchClosedError,
    ChainDB,
    CorruptionError,
    NetworkMismatchError,
    SchemaVersionError,
    StorageError,
    open_chain,
)
from chain.storage_keys import META_SCHEMA, SCHEMA_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]


def H(n: int | str) -> bytes:
    return hashlib.sha256(f"block-{n}".encode()).digest()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _record(n: int = 1, **kw: object) -> IndexRecord:
    fields: dict[str, object] = dict(
        hash=H(n),
        parent=H(n - 1) if n else bytes(32),
        height=n,
        cumulative_work=(n + 1) * 1_000_003,
        status=BlockStatus.HEADER_VALID | BlockStatus.DATA_STORED,
        timestamp=1_700_000_000 + n,
    )
    fields.update(kw)
    return IndexRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path):
    chain = open_chain(tmp_path / "dd", network="devnet")
    yield chain
    chain.close()


# --- IndexRecord ------------------------------------------------------------------


@pytest.mark.parametrize("work", [0, 1, 255, 256, 2**64, 2 ** (8 * MAX_WORK_BYTES) - 1])
def test_index_record_round_trip(work: int) -> None:
    rec = _record(7, cumulative_work=work, status=BlockStatus.VALID | BlockStatus.DATA_STORED)
    raw = rec.to_bytes()
    assert len(raw) == INDEX_RECORD_MIN_LEN + (work.bit_length() + 7) // 8
    back = IndexRecord.from_bytes(raw)
    assert back == rec
    assert isinstance(back.status, BlockStatus)
    assert back.to_bytes() == raw


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(0, 2**64 - 1),
    work=st.integers(0, 2 ** (8 * MAX_WORK_BYTES) - 1),
    status=st.integers(0, 15),
    ts=st.integers(0, 2**64 - 1),
    h=st.binary(min_size=32, max_size=32),
    p=st.binary(min_size=32, max_size=32),
)
def test_index_record_round_trip_property(
    height: int, work: int, status: int, ts: int, h: bytes, p: bytes
) -> None:
    rec = IndexRecord(h, p, height, work, BlockStatus(status), ts)
    assert IndexRecord.from_bytes(rec.to_bytes()) == rec


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_index_record_garbage_raises_only_corruption(data: bytes) -> None:
    try:
        rec = IndexRecord.from_bytes(data)
    except CorruptionError:
        return
    assert rec.to_bytes() == data  # anything accepted is canonical


def test_index_record_truncated_raises_corruption() -> None:
    raw = _record(3, cumulative_work=2**100).to_bytes()
    for cut in range(len(raw)):
        with pytest.raises(CorruptionError):
            IndexRecord.from_bytes(raw[:cut])
    with pytest.raises(CorruptionError):
        IndexRecord.from_bytes(raw + b"\x00")


def test_index_record_strict_decoding() -> None:
    rec = _record(3, cumulative_work=0x0102)
    raw = bytearray(rec.to_bytes())
    work_len_at = 32 + 32 + 8
    # non-minimal work encoding (leading zero byte)
    bad = bytes(raw[:work_len_at]) + b"\x00\x03" + b"\x00\x01\x02" + bytes(raw[work_len_at + 4 :])
    with pytest.raises(CorruptionError, match="minimal"):
        IndexRecord.from_bytes(bad)
    # work length over the cap
    over = bytes(raw[:work_len_at]) + (MAX_WORK_BYTES + 1).to_bytes(2, "big")
    over += b"\x01" * (MAX_WORK_BYTES + 1) + bytes(raw[work_len_at + 4 :])
    with pytest.raises(CorruptionError, match="work length"):
        IndexRecord.from_bytes(over)
    # unknown status bits
    status_at = work_len_at + 2 + 2
    raw[status_at : status_at + 4] = (0x10).to_bytes(4, "big")
    with pytest.raises(CorruptionError, match="status"):
        IndexRecord.from_bytes(bytes(raw))


def test_index_record_validates_fields() -> None:
    with pytest.raises(ValueError):
        _record(1, hash=b"\x00" * 31)
    with pytest.raises(TypeError):
        _record(1, parent="00" * 32)
    with pytest.raises(ValueError):
        _record(1, cumulative_work=2 ** (8 * MAX_WORK_BYTES))
    with pytest.raises(ValueError):
        _record(1, cumulative_work=-1)
    with pytest.raises(ValueError):
        _record(1, height=2**64)
    with pytest.raises(ValueError):
        _record(1, status=16)
    with pytest.raises(ValueError):
        _record(1, timestamp=-1)
    assert _record(1, status=5).status == BlockStatus.HEADER_VALID | BlockStatus.VALID


# --- ChainDB round trips ------------------------------------------------------------


def test_round_trips(db: ChainDB) -> None:
    assert db.get_block(H(1)) is None
    assert db.get_index(H(1)) is None
    assert db.get_tip() is None and db.get_genesis() is None
    assert db.active_hash_at(0) is None

    db.put_block(H(1), b"body-1")
    rec = _record(1)
    db.put_index(rec)
    db.put_undo(H(1), b"undo-1")
    db.set_active_hash(0, H(0))
    db.set_active_hash(1, H(1))
    db.set_tip(H(1))
    db.set_genesis(H(0))
    db.put_state(b"acct/a", b"1")
    db.put_state(b"", b"empty key")

    assert db.get_block(H(1)) == b"body-1" and db.has_block(H(1))
    assert not db.has_block(H(2))
    assert db.get_index(H(1)) == rec
    assert db.get_undo(H(1)) == b"undo-1"
    assert db.active_hash_at(0) == H(0) and db.active_hash_at(1) == H(1)
    assert db.active_hash_at(2) is None
    assert db.get_tip() == H(1) and db.get_genesis() == H(0)
    assert db.get_state(b"acct/a") == b"1" and db.get_state(b"") == b"empty key"
    db.delete_state(b"acct/a")
    assert db.get_state(b"acct/a") is None
    assert db.network == "devnet" and db.schema_version == SCHEMA_VERSION


def test_persists_across_reopen(tmp_path: Path) -> None:
    with open_chain(tmp_path, network="testnet") as db:
        db.put_index(_record(5))
        db.set_tip(H(5))
        db.put_state(b"k", b"v")
        db.set_active_hash(2**64 - 1, H(5))
    with open_chain(tmp_path, network="testnet") as db:
        assert db.get_index(H(5)) == _record(5)
        assert db.get_tip() == H(5)
        assert db.get_state(b"k") == b"v"
        assert db.active_hash_at(2**64 - 1) == H(5)


def test_iter_state_and_index(db: ChainDB) -> None:
    items = {b"a/1": b"x", b"a/2": b"y", b"a0": b"z", b"b/1": b"w", b"\xff": b"hi"}
    with db.atomic() as batch:
        for k, v in items.items():
            batch.put_state(k, v)
        for n in (3, 1, 2):
            batch.put_index(_record(n))
        batch.set_tip(H(3))  # metadata must not leak into state iteration
        batch.put_block(H(1), b"s-looking body")
    assert list(db.iter_state()) == sorted(items.items())
    assert list(db.iter_state(b"a/")) == [(b"a/1", b"x"), (b"a/2", b"y")]
    assert list(db.iter_state(b"a")) == [(b"a/1", b"x"), (b"a/2", b"y"), (b"a0", b"z")]
    assert list(db.iter_state(b"c")) == []
    recs = list(db.iter_index())
    assert sorted(r.height for r in recs) == [1, 2, 3]
    assert [r.hash for r in recs] == sorted(r.hash for r in recs)


def test_argument_validation(db: ChainDB) -> None:
    with pytest.raises(ValueError):
        db.put_block(b"short", b"x")
    with pytest.raises(TypeError):
        db.put_state("str-key", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        db.put_state(b"k", bytearray(b"v"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        db.active_hash_at(-1)
    with pytest.raises(TypeError):
        db.set_tip(H(1).hex())  # type: ignore[arg-type]


def test_closed_db_and_fork_guard(tmp_path: Path) -> None:
    db = open_chain(tmp_path, network="devnet")
    db._pid = -1  # pretend we are a forked child
    with pytest.raises(StorageError, match="spawn"):
        db.get_tip()
    db._pid = os.getpid()
    db.close()
    db.close()  # idempotent
    assert db.closed and not db.datadir.locked
    with pytest.raises(StorageError, match="closed"):
        db.get_tip()


def test_chaindb_needs_locked_datadir(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    dd.close()
    with pytest.raises(StorageError, match="not locked"):
        ChainDB(dd, network="devnet")
    with DataDir(tmp_path) as dd2, ChainDB(dd2, network="devnet") as db:
        db.set_tip(H(1))
    assert not dd2.locked


def test_create_if_missing_false(tmp_path: Path) -> None:
    with DataDir(tmp_path) as dd:
        with pytest.raises(StorageError):
            ChainDB(dd, network="devnet", create_if_missing=False)


# --- metadata guards ----------------------------------------------------------------


def test_network_mismatch(tmp_path: Path) -> None:
    with open_chain(tmp_path, network="devnet") as db:
        db.set_tip(H(1))
    with pytest.raises(NetworkMismatchError) as info:
        open_chain(tmp_path, network="mainnet")
    msg = str(info.value)
    assert "--network devnet" in msg and "--datadir" in msg
    # where --network devnet would look for it (a copied folder is elsewhere)
    assert f"looks for it in {tmp_path.parent / 'devnet' / 'chain'}" in msg, msg
    assert info.value.found == "devnet" and info.value.expected == "mainnet"
    # the failed open released both the LevelDB and the datadir lock
    with open_chain(tmp_path, network="devnet") as db:
        assert db.get_tip() == H(1)


def _raw_put(datadir: Path, key: bytes, value: bytes) -> None:
    raw = plyvel.DB(str(datadir / "chain"), create_if_missing=True)
    try:
        raw.put(key, value, sync=True)
    finally:
        raw.close()


def test_unknown_schema_version(tmp_path: Path) -> None:
    open_chain(tmp_path, network="devnet").close()
    _raw_put(tmp_path, META_SCHEMA, (SCHEMA_VERSION + 1).to_bytes(4, "big"))
    with pytest.raises(SchemaVersionError) as info:
        open_chain(tmp_path, network="devnet")
    assert info.value.found == SCHEMA_VERSION + 1
    assert "--reindex" in str(info.value) and "--datadir" in str(info.value)
    # lock released after the failure
    DataDir(tmp_path).close()


def test_foreign_database_without_schema(tmp_path: Path) -> None:
    _raw_put(tmp_path, b"something", b"else")
    with pytest.raises(SchemaVersionError, match="no pouw schema"):
        open_chain(tmp_path, network="devnet")


def test_corrupted_index_record_in_db(tmp_path: Path) -> None:
    raw = _record(9).to_bytes()
    with open_chain(tmp_path, network="devnet") as db:
        db.put_index(_record(9))
    _raw_put(tmp_path, b"i" + H(9), raw[:-3])  # truncated
    with open_chain(tmp_path, network="devnet") as db:
        with pytest.raises(CorruptionError):
            db.get_index(H(9))
        with pytest.raises(CorruptionError):
            list(db.iter_index())
    _raw_put(tmp_path, b"i" + H(9), _record(8).to_bytes())  # record under the wrong key
    with open_chain(tmp_path, network="devnet") as db:
        with pytest.raises(CorruptionError):
            db.get_index(H(9))
    _raw_put(tmp_path, b"mtip", b"\x01" * 31)
    with open_chain(tmp_path, network="devnet") as db:
        with pytest.raises(CorruptionError):
            db.get_tip()


# --- atomic batches -----------------------------------------------------------------


def test_atomic_commit_and_isolation(db: ChainDB) -> None:
    db.put_state(b"old", b"1")
    db.put_state(b"gone", b"x")
    with db.atomic(sync=True) as batch:
        batch.put_block(H(1), b"body")
        batch.put_index(_record(1))
        batch.put_undo(H(1), b"undo")
        batch.set_active_hash(1, H(1))
        batch.put_state(b"old", b"2")
        batch.put_state(b"new", b"3")
        batch.delete_state(b"gone")
        batch.set_tip(H(1))
        batch.set_genesis(H(0))
        assert len(batch) == 9
        # reads through the db see the database as before the batch ...
        assert db.get_state(b"old") == b"1" and db.get_state(b"new") is None
        assert db.get_state(b"gone") == b"x" and db.get_tip() is None
        # ... pending_state sees the batch's own writes
        assert batch.pending_state(b"old") == b"2"
        assert batch.pending_state(b"new") == b"3"
        assert batch.pending_state(b"gone") is None
        assert batch.pending_state(b"untouched") is None
    assert db.get_state(b"old") == b"2" and db.get_state(b"new") == b"3"
    assert db.get_state(b"gone") is None
    assert db.get_block(H(1)) == b"body" and db.get_undo(H(1)) == b"undo"
    assert db.get_index(H(1)) == _record(1)
    assert db.active_hash_at(1) == H(1) and db.get_tip() == H(1) and db.get_genesis() == H(0)
    assert not batch.is_open
    with pytest.raises(BatchClosedError):
        batch.put_state(b"late", b"x")
    with pytest.raises(BatchClosedError):
        batch.pending_state(b"old")


def test_atomic_exception_writes_nothing(db: ChainDB) -> None:
    db.set_tip(H(0))
    db.put_state(b"keep", b"0")
    with pytest.raises(RuntimeError, match="boom"):
        with db.atomic() as batch:
            batch.put_block(H(1), b"body")
            batch.put_index(_record(1))
            batch.put_undo(H(1), b"undo")
            batch.set_active_hash(1, H(1))
            batch.put_state(b"keep", b"1")
            batch.put_state(b"new", b"1")
            batch.delete_state(b"keep")
            batch.set_tip(H(1))
            raise RuntimeError("boom")
    assert db.get_block(H(1)) is None and db.get_index(H(1)) is None
    assert db.get_undo(H(1)) is None and db.active_hash_at(1) is None
    assert db.get_state(b"keep") == b"0" and db.get_state(b"new") is None
    assert db.get_tip() == H(0)
    assert not batch.is_open
    # an invalid argument inside the block also aborts the whole batch
    with pytest.raises(ValueError):
        with db.atomic(sync=False) as batch:
            batch.put_state(b"new", b"2")
            batch.set_tip(b"bad")
    assert db.get_state(b"new") is None and db.get_tip() == H(0)


def test_atomic_unsynced_batch(db: ChainDB) -> None:
    with db.atomic(sync=False) as batch:
        for i in range(1000):
            batch.put_state(b"k%04d" % i, b"v")
    assert len(list(db.iter_state(b"k"))) == 1000


def test_a_database_opened_without_durability_keeps_its_writes(tmp_path: Path) -> None:
    """durable=False drops the fsyncs, not the writes: all there after a reopen."""
    from chain.storage import open_chain

    db = open_chain(tmp_path / "d", network="devnet", durable=False)
    assert not db.durable
    with db.atomic(sync=True) as batch:
        batch.put_state(b"k", b"v")
    db.put_state(b"one", b"1", sync=True)
    db.close()
    again = open_chain(tmp_path / "d", network="devnet")
    try:
        assert again.durable
        assert again.get_state(b"k") == b"v" and again.get_state(b"one") == b"1"
    finally:
        again.close()


# --- the datadir lock ---------------------------------------------------------------


def test_lock_same_process(tmp_path: Path) -> None:
    with DataDir(tmp_path / "dd") as dd:
        assert dd.locked and (dd.path / "LOCK").exists()
        with pytest.raises(DatadirLockedError) as info:
            DataDir(tmp_path / "dd")
        assert info.value.holder_pid == os.getpid()
        assert str(os.getpid()) in str(info.value) and "--datadir" in str(info.value)
        with pytest.raises(DatadirLockedError):
            open_chain(tmp_path / "dd", network="devnet")
    assert not dd.locked
    with DataDir(tmp_path / "dd"):
        pass


_TRY_LOCK = textwrap.dedent(
    """
    import sys
    from chain.datadir import DataDir, DatadirLockedError
    try:
        DataDir(sys.argv[1])
    except DatadirLockedError as exc:
        print("locked", exc.holder_pid)
    else:
        print("acquired")
    """
)

_HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from chain.storage import open_chain
    db = open_chain(sys.argv[1], network="devnet")
    print("holding", flush=True)
    sys.stdin.read()
    db.close()
    """
)


def test_lock_second_opener_in_subprocess(tmp_path: Path) -> None:
    with DataDir(tmp_path):
        out = subprocess.run(
            [sys.executable, "-c", _TRY_LOCK, str(tmp_path)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        assert out == ["locked", str(os.getpid())]
    out = subprocess.run(
        [sys.executable, "-c", _TRY_LOCK, str(tmp_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert out == ["acquired"]


def test_lock_held_by_subprocess(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        with pytest.raises(DatadirLockedError) as info:
            open_chain(tmp_path, network="devnet")
        assert info.value.holder_pid == proc.pid
        assert f"process {proc.pid}" in str(info.value)
        proc.communicate("", timeout=30)  # let it close cleanly
        assert proc.returncode == 0
        open_chain(tmp_path, network="devnet").close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lock_released_by_sigkill(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        with pytest.raises(DatadirLockedError):
            DataDir(tmp_path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.stdout is not None:
            proc.stdout.close()
    open_chain(tmp_path, network="devnet").close()


# --- crash consistency under kill -9 ---------------------------------------------------

_CRASH_WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from chain.storage import open_chain

    def h(n):
        return hashlib.sha256(b"block-%d" % n).digest()

    db = open_chain(sys.argv[1], network="devnet")
    raw = db.get_state(b"counter")
    n = int.from_bytes(raw, "big") if raw is not None else 0
    print("ready", n, flush=True)
    while True:
        n += 1
        value = n.to_bytes(8, "big")
        with db.atomic(sync=True) as batch:
            batch.put_state(b"counter", value)
            for i in range(64):
                batch.put_state(b"k%03d" % i, value * 16)
            batch.put_state(b"d%020d" % n, value)
            batch.delete_state(b"d%020d" % (n - 1))
            batch.put_block(h(n), value * 128)
            batch.set_active_hash(n, h(n))
            batch.set_tip(h(n))
    """
)


def _crash_hash(n: int) -> bytes:
    return hashlib.sha256(b"block-%d" % n).digest()


def _check_consistent(path: Path) -> int:
    with open_chain(path, network="devnet") as db:
        raw = db.get_state(b"counter")
        n = int.from_bytes(raw, "big") if raw is not None else 0
        value = n.to_bytes(8, "big")
        if n == 0:
            assert db.get_tip() is None
            assert list(db.iter_state()) == []
            return 0
        assert db.get_tip() == _crash_hash(n), f"tip does not match counter {n}"
        assert db.active_hash_at(n) == _crash_hash(n)
        assert db.active_hash_at(n + 1) is None
        assert db.get_block(_crash_hash(n)) == value * 128
        ks = list(db.iter_state(b"k"))
        assert len(ks) == 64 and all(v == value * 16 for _, v in ks)
        assert list(db.iter_state(b"d")) == [(b"d%020d" % n, value)]
        return n


def _crash_loop(path: Path, trials: int, max_delay: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    counters = [0]
    for _ in range(trials):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CRASH_WRITER, str(path)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            assert line and line[0] == "ready", proc.stderr.read() if proc.stderr else ""
            assert int(line[1]) == counters[-1]
            time.sleep(rng.uniform(0.0, max_delay))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        n = _check_consistent(path)
        assert n >= counters[-1]
        counters.append(n)
    return counters


def test_crash_consistency_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("POUW_CRASH_SEED", random.randrange(2**32)))
    counters = _crash_loop(tmp_path, trials=10, max_delay=0.15, seed=seed)
    assert counters[-1] > 0, f"writer made no progress (seed {seed}): {counters}"


@pytest.mark.slow
def test_crash_consistency_sigkill_long(tmp_path: Path) -> None:
    seed = int(os.environ.get("POUW_CRASH_SEED", random.randrange(2**32)))
    counters = _crash_loop(tmp_path, trials=100, max_delay=0.3, seed=seed)
    assert counters[-1] > 0, f"writer made no progress (seed {seed}): {counters}"


def test_a_lock_that_cannot_be_opened_for_want_of_permission_says_so(tmp_path: Path) -> None:
    """(Not 'in use by another process': the datadir belongs to another user.)"""
    import plyvel

    from chain.storage_errors import classify

    exc = plyvel.IOError(f"IO error: {tmp_path}/chain/LOCK: Permission denied")
    msg = str(classify(exc, tmp_path / "chain", "devnet", "opening"))
    assert "permission denied" in msg and "writable by the user running the node" in msg, msg
    assert "another process" not in msg


def test_leveldb_errors_read_as_text_and_name_the_record_kind(tmp_path: Path) -> None:
    """plyvel carries LevelDB's status as bytes: the message shows its words, not b'...',
    and a failed read names what was read."""
    import plyvel

    from chain.storage_errors import classify
    from chain.storage_keys import PREFIX_BLOCK, record_kind

    exc = plyvel.CorruptionError(b"Corruption: checksum mismatch")
    doing = f"reading a {record_kind(PREFIX_BLOCK)} record"
    msg = str(classify(exc, tmp_path / "chain", "devnet", doing))
    assert "is damaged (Corruption: checksum mismatch) while reading a block record" in msg, msg
    assert "b'" not in msg and "--repair" in msg
