"""The blob store keeps what jobs in flight need and lets the rest go (node/
blob_retention.py): after ``keep_s`` by a sweep, and at once, oldest first, when a blob
would not fit under the quota; never a needed blob, nor one young enough to be waiting
for its submit or commit. On real node processes: a paid job's A, B and C leave both
the buyer's and the miner's stores, an open job's operands stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from compute.blobs import BlobError, BlobStore
from node.blob_retention import prune
from tests.test_market_e2e import Proc, market_genesis, wait_for
from tests.test_remote_market import _buyer, _edit_genesis

DAY = 86400.0


def _store(tmp_path: Path, count: int, quota: int = 1 << 30) -> tuple[BlobStore, list[bytes]]:
    store = BlobStore(tmp_path / "blobs", quota)
    rng = np.random.default_rng(4)
    roots = [store.put("a", rng.integers(-64, 64, (64, 256), dtype=np.int8)) for _ in range(count)]
    store.flush()
    return store, roots


def _age(store: BlobStore, root: bytes, seconds: float) -> None:
    """Make ``root`` look stored ``seconds`` ago."""
    when = time.time() - seconds
    for path in store.dir.glob(f"{root.hex()}.*"):
        os.utime(path, (when, when))


def test_prune_deletes_old_unneeded_blobs_and_makes_room_oldest_first(tmp_path: Path) -> None:
    store, (old, needed, fresh, hour, two_hours) = _store(tmp_path, 5)
    for root, age in ((old, 2 * DAY), (needed, 3 * DAY), (fresh, 60), (hour, 3600),
                      (two_hours, 7200)):  # fmt: skip
        _age(store, root, age)
    assert [r for r, _, _ in store.stored()] == [needed, old, two_hours, hour, fresh]
    size = store.stored()[0][2]
    assert prune(store, {needed}, keep_s=DAY) == (1, size)  # by age: only the old one
    assert store.find(old) is None and store.find(needed) is not None
    # room for one more: the oldest unneeded goes first, never a needed or fresh one
    assert prune(store, {needed}, keep_s=DAY, room=1) == (1, size)
    assert store.find(two_hours) is None and store.find(hour) is not None
    assert prune(store, {needed}, keep_s=DAY, room=10 * size) == (1, size)
    assert [r for r, _, _ in store.stored()] == [needed, fresh]
    assert prune(store, {needed}, keep_s=0, room=10 * size) == (0, 0)  # 0: none by age


def test_a_full_store_makes_room_and_says_what_to_do_when_it_cannot(tmp_path: Path) -> None:
    store, roots = _store(tmp_path, 2)
    size = store.stored()[0][2]
    store.quota = 2 * size + size // 2  # room for two blobs
    needed: set[bytes] = set()
    store.make_room = lambda size: prune(
        store, needed, keep_s=0, room=store.used() + size - store.quota, fresh_s=-1
    )  # fmt: skip
    _age(store, roots[0], 20)
    rng = np.random.default_rng(5)
    third = store.put("a", rng.integers(-64, 64, (64, 256), dtype=np.int8))
    store.flush()
    assert store.find(roots[0]) is None  # the oldest went
    assert store.find(roots[1]) is not None and store.find(third) is not None
    needed.update((roots[1], third))  # nothing left that may go
    with pytest.raises(BlobError, match="raise blob_quota_mb"):
        store.put("a", rng.integers(-64, 64, (64, 256), dtype=np.int8))
    assert store.find(roots[1]) is not None and store.find(third) is not None


def _blob_files(node: Proc, root: str) -> list[Path]:
    return list((node.datadir / "devnet" / "blobs").glob(f"{root}.*"))


@pytest.mark.slow  # two nodes and a payout: ~9 s (``pytest -m slow tests/test_blob_retention.py``)
def test_settled_jobs_blobs_leave_the_nodes_and_open_jobs_blobs_stay(tmp_path: Path) -> None:
    genesis = market_genesis(tmp_path, challenge_s=2)
    _edit_genesis(genesis, lambda d: d["difficulty"].update(genesis_target=hex(2**256 // 2**22)))
    from chain.network import load_network

    net = load_network("devnet", genesis)
    keep = ("--blob-keep-hours", "0.001")  # 3.6 s, swept every 0.9 s
    n0 = Proc(tmp_path / "n0", genesis, *keep)  # the buyer's: n1 mines the blocks
    n1 = Proc(tmp_path / "n1", genesis, "--market-key", "1", "--only-bounty", "2000000",
              "--connect", f"127.0.0.1:{n0.p2p}", *keep)  # fmt: skip
    procs = [n0, n1]
    try:
        rpc0 = n0.rpc()
        n1.rpc()
        client = _buyer(n0, net)
        rng = np.random.default_rng(41)

        def operands() -> tuple[np.ndarray, np.ndarray]:
            return (rng.integers(-64, 64, (64, 256), dtype=np.int8),
                    rng.integers(-64, 64, (256, 64), dtype=np.int8))  # fmt: skip

        open_job = client.submit(*operands(), bounty=1_000_000)  # n1 leaves it alone
        paid_job = client.submit(*operands(), bounty=2_000_000)
        client.wait(paid_job, timeout=60)
        assert client.result(paid_job).verified
        wait_for("the payout", lambda: rpc0.call("getjob", paid_job)["status"] == "paid",
                 timeout=60, procs=procs)  # fmt: skip
        paid = rpc0.call("getjob", paid_job)
        roots = [paid["h_a"], paid["h_b"], paid["result_root"]]
        assert _blob_files(n1, paid["h_a"]) and _blob_files(n1, paid["result_root"])
        wait_for("the paid job's blobs gone", lambda: not any(
            _blob_files(node, root) for node in procs for root in roots), timeout=30,
            procs=procs)  # fmt: skip
        still = rpc0.call("getjob", open_job)
        assert still["status"] == "open"
        for root in (still["h_a"], still["h_b"]):  # stored long before, still needed
            assert len(_blob_files(n0, root)) == 2, root
        assert "no job in flight needs" in n0.log_path.read_text()
    finally:
        for p in procs:
            p.stop()


def test_a_blob_stored_again_or_touched_counts_as_new(tmp_path: Path) -> None:
    """A buyer re-uploading an operand, or a miner committing its C again, keeps the
    blob as long as a new one; a needed-roots snapshot taken before that does not
    delete it (the age is checked again under the store's lock)."""
    store = BlobStore(tmp_path / "blobs")
    rng = np.random.default_rng(6)
    again, touched, old = (rng.integers(-64, 64, (64, 256), dtype=np.int8) for _ in range(3))
    roots = [store.put("a", m) for m in (again, touched, old)]
    store.flush()
    for root in roots:
        _age(store, root, 2 * DAY)
    stale = store.stored()  # what a sweep listed before the blobs were used again
    assert store.put("a", again) == roots[0]
    assert store.touch(roots[1]) and not store.touch(bytes(32))
    assert [store.delete_stale(root, time.time() - DAY) for root, _, _ in stale][:2] == [0, 0]
    assert store.find(roots[0]) and store.find(roots[1]) and store.find(roots[2]) is None
    assert store.used() == sum(size for _, _, size in store.stored())


def test_a_blob_cut_short_on_disk_is_written_again(tmp_path: Path) -> None:
    """A file that does not read back (a crash while it was written, with no fsync) is
    not there: storing the blob again writes it anew instead of only touching it, and
    an empty file reads as missing rather than raising."""
    store = BlobStore(tmp_path / "blobs")
    c = np.arange(64 * 16, dtype=np.int32).reshape(64, 16)
    root = store.put("c", c)
    store.flush()
    (npy,) = (tmp_path / "blobs").glob(f"{root.hex()}.c.npy")
    npy.write_bytes(b"")
    assert store.find(root) is None and store.get(root) is None
    assert store.put("c", c) == root
    store.flush()
    assert np.array_equal(store.get(root), c)


def test_an_empty_file_is_left_out_of_the_recent_blobs(tmp_path: Path) -> None:
    """``recent`` (what the node announces to peers at their handshake) skips a file cut
    short by a crash: before, an empty .npy stopped the node's start with EOFError."""
    store = BlobStore(tmp_path / "blobs")
    c = np.arange(64 * 16, dtype=np.int32).reshape(64, 16)
    root = store.put("c", c)
    store.flush()
    (tmp_path / "blobs" / f"{'ab' * 32}.a.npy").write_bytes(b"")
    (tmp_path / "blobs" / f"{'ab' * 32}.a.leaves").write_bytes(b"")
    assert [info.root for info in BlobStore(tmp_path / "blobs").recent(10)] == [root]


def test_a_write_cut_short_leaves_nothing_that_counts_against_the_quota(tmp_path: Path) -> None:
    """What a crash mid-write leaves (a .tmp.npy, leaves without their matrix, a matrix
    without its leaves) is deleted when the store opens: no pruning lists it, so before
    it took quota for good."""
    folder = tmp_path / "blobs"
    store = BlobStore(folder)
    c = np.arange(64 * 16, dtype=np.int32).reshape(64, 16)
    root = store.put("c", c)
    store.flush()
    kept = BlobStore(folder).used()  # (read from the files: .npy headers included)
    for name in (f"{'cd' * 32}.c.tmp.npy", f"{'cd' * 32}.c.leaves", f"{'ef' * 32}.a.npy"):
        (folder / name).write_bytes(b"x" * 1000)
    reopened = BlobStore(folder)
    assert reopened.used() == kept
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{root.hex()}.c.leaves", f"{root.hex()}.c.npy"
    ]  # fmt: skip
    assert np.array_equal(reopened.get(root), c)


def test_a_blob_is_stored_only_with_entries_and_shapes_it_can_hold(tmp_path: Path) -> None:
    """Values that do not fit the kind's dtype are refused, never wrapped (an int16 300
    stored as int8 44 before); a matrix with no columns is refused (peers could not
    decode our announcement of it, and dropped us)."""
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(BlobError, match="do not fit"):
        store.put("a", np.array([[300, 1], [2, -200]], dtype=np.int16))
    with pytest.raises(BlobError, match="integers"):
        store.put("a", np.ones((2, 2), dtype=np.float32))
    with pytest.raises(BlobError, match="not allowed"):
        store.put("a", np.zeros((3, 0), dtype=np.int8))
    fits = np.array([[100, 1], [2, -100]], dtype=np.int16)  # converted: every value fits
    assert np.array_equal(store.get(store.put("a", fits)), fits)
