"""Blob store and transfer: every piece checked; bad peers (corrupt, stalling, too much
data) are dropped and the download finishes from an honest one."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from compute.blob_fetch import FetchReport, fetch_blob
from compute.blobs import BlobError, BlobStore, line_leaves
from consensus.commitments import commit_cols, commit_rows
from consensus.result import result_root
from node.blobs import BlobServer
from tests.marketutil import operands


def test_store_roots_match_chain_commitments(tmp_path: Path) -> None:
    a, b = operands(64, 128, 32)
    c = a.astype(np.int64) @ b.astype(np.int64)
    store = BlobStore(tmp_path / "blobs", quota=1 << 20)
    assert store.put("a", a) == commit_rows(a)
    assert store.put("bt", b.T) == commit_cols(b)
    assert store.put("c", c) == result_root(c)
    assert np.array_equal(store.get(commit_rows(a)), a)  # type: ignore[arg-type]
    with pytest.raises(BlobError, match="does not match"):
        store.put("a", a + 1, commit_rows(a))
    small = BlobStore(tmp_path / "small", quota=1000)
    with pytest.raises(BlobError, match="quota"):
        small.put("a", a)


def test_leaf_words_are_checked_against_the_root(tmp_path: Path) -> None:
    """The leaves a miner hands its engine: as words, pending or on disk; a leaves file
    that no longer hashes to the root gives None (the engine then hashes the rows)."""
    from compute.blobs import line_leaf_array

    a, b = operands(64, 128, 32)
    store = BlobStore(tmp_path / "blobs", quota=1 << 20)
    root, bt_root = store.put("a", a), store.put("bt", b.T)
    assert np.array_equal(store.leaf_words(root), line_leaf_array("a", a))  # type: ignore[arg-type]
    store.flush()
    again = BlobStore(tmp_path / "blobs")
    assert np.array_equal(again.leaf_words(bt_root), line_leaf_array("bt", b.T))  # type: ignore[arg-type]
    leaves = tmp_path / "blobs" / f"{root.hex()}.a.leaves"
    raw = bytearray(leaves.read_bytes())
    raw[5] ^= 1
    leaves.write_bytes(bytes(raw))
    assert again.leaf_words(root) is None and again.leaf_words(b"\0" * 32) is None


def test_writes_behind_serve_at_once_and_land_on_disk(tmp_path: Path) -> None:
    """A put blob is served from memory before its file exists; flush puts it on disk
    where a fresh store finds it; the caller's array is copied (or, handed over, made
    read-only); a blob deleted while pending never reaches the disk; the quota counts
    pending bytes."""
    a, b = operands(64, 128, 32)
    store = BlobStore(tmp_path / "blobs", quota=4 * a.nbytes)
    mine = a.copy()
    root = store.put("a", mine)
    mine[0, 0] += 1  # the store kept its own copy
    assert np.array_equal(store.get(root), a)  # type: ignore[arg-type]
    assert store.rows(root, 1, 2) == a[1:3].tobytes()
    assert store.leaves(root) is not None and store.find(root) is not None
    given = b.T.copy()
    bt_root = store.put("bt", given, owned=True)
    assert not given.flags.writeable
    store.flush()
    assert (tmp_path / "blobs" / f"{root.hex()}.a.npy").exists()
    again = BlobStore(tmp_path / "blobs")
    assert np.array_equal(again.get(bt_root), b.T)  # type: ignore[arg-type]
    assert [i.root for i in again.recent(8)] and again.find(root) is not None
    with pytest.raises(BlobError, match="quota"):
        store.put("a", operands(128, 128, 32, seed=9)[0])  # over what is left
    gone = store.put("c", a.astype(np.int64) @ b.astype(np.int64))
    store.delete(gone)
    store.close()
    assert not list((tmp_path / "blobs").glob(f"{gone.hex()}.*"))
    assert store.find(gone) is None


class BadPeer:
    """Serves a blob honestly except for one misbehaviour."""

    def __init__(self, store: BlobStore, mode: str) -> None:
        self.store, self.mode = store, mode
        self.server = BlobServer(store)

    def app(self) -> web.Application:
        app = self.server.app()
        if self.mode == "honest":
            return app
        app = web.Application()
        app.router.add_get("/blob/{root}/leaves", self.server.leaves)
        app.router.add_get("/blob/{root}/rows", self.rows)
        return app

    async def rows(self, request: web.Request) -> web.StreamResponse:
        resp = await self.server.rows(request)
        body = bytearray(resp.body)  # type: ignore[arg-type]
        if self.mode == "corrupt":
            body[len(body) // 2] ^= 1
        elif self.mode == "more":
            body += b"\x00" * 4096
        elif self.mode == "stall":
            out = web.StreamResponse()
            await out.prepare(request)
            await out.write(bytes(body[:10]))
            await asyncio.sleep(2)
            return out
        return web.Response(body=bytes(body))


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    return runner, f"http://127.0.0.1:{port}"


def test_fetch_survives_bad_peers(tmp_path: Path) -> None:
    a, b = operands(512, 1024, 8)  # 512 KiB of A: one range
    src = BlobStore(tmp_path / "src")
    root = src.put("a", a)

    async def run() -> tuple[np.ndarray, FetchReport]:
        runners, urls = [], []
        for mode in ("corrupt", "stall", "more", "honest"):
            runner, url = await _serve(BadPeer(src, mode).app())
            runners.append(runner)
            urls.append(url)
        try:
            report = FetchReport()
            dst = BlobStore(tmp_path / "dst")
            got = await fetch_blob(urls, root, "a", 512, 1024, dst, timeout=1.0, report=report)
            assert dst.find(root) is not None
            return got, report
        finally:
            for r in runners:
                await r.cleanup()

    got, report = asyncio.run(run())
    assert np.array_equal(got, a)
    assert report.leaves == line_leaves("a", a)  # the checked leaves, for the engine
    reasons = " | ".join(report.bad_peers.values())
    assert "does not match its leaf" in reasons
    assert "more than" in reasons
    assert "Timeout" in reasons or "timeout" in reasons.lower()
    assert len(report.bad_peers) == 3


def test_fetch_fails_cleanly_without_honest_peer(tmp_path: Path) -> None:
    a, _ = operands(16, 64, 8)
    src = BlobStore(tmp_path / "src")
    root = src.put("a", a)

    async def run() -> None:
        runner, url = await _serve(BadPeer(src, "corrupt").app())
        try:
            with pytest.raises(BlobError, match="no peer left"):
                await fetch_blob([url], root, "a", 16, 64, timeout=1.0)
            with pytest.raises(BlobError, match="leaves"):  # wrong root: leaves mismatch
                await fetch_blob([url], bytes(32), "a", 16, 64, timeout=1.0)
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_upload_needs_the_cookie(tmp_path: Path) -> None:
    a, _ = operands(16, 64, 8)
    buf = io.BytesIO()
    np.save(buf, a)

    async def run() -> None:
        server = BlobServer(BlobStore(tmp_path / "s"), auth=("__cookie__", "secret"))
        runner, url = await _serve(server.app())
        try:
            async with aiohttp.ClientSession() as s:
                r = await s.post(f"{url}/blob?kind=a", data=buf.getvalue())
                assert r.status == 401
                import base64

                token = base64.b64encode(b"__cookie__:secret").decode()
                headers = {"Authorization": f"Basic {token}"}
                r = await s.post(f"{url}/blob?kind=a", data=buf.getvalue(), headers=headers)
                assert r.status == 200 and (await r.json())["root"] == commit_rows(a).hex()
                r = await s.get(f"{url}/blob/{commit_rows(a).hex()}/rows?start=0&count=999")
                assert r.status == 400
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_b_is_hashed_by_its_columns_and_its_transpose_stored(tmp_path: Path) -> None:
    """The buyer hashes B^T's blob from B's columns (compute/blobs.bt_root_of), from a
    strided block of B too, while a worker transposes B for the upload: the node
    stores exactly B^T under that root."""
    import threading

    from compute.blobs import blob_root, bt_root_of
    from compute.transpose import transposed
    from wallet.jobs import upload_blob

    _, b = operands(16, 96, 197)
    block = b[8:, 1:]  # rows and columns of B: not contiguous
    expected = np.ascontiguousarray(block.T)
    assert bt_root_of(block) == blob_root("bt", expected)
    store = BlobStore(tmp_path / "s")
    ready = threading.Event()
    done = threading.Event()
    where: list[str] = []

    async def serve() -> None:
        server = BlobServer(store, auth=("__cookie__", "secret"))
        runner, url = await _serve(server.app())
        where.append(url)
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.01)
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(10)
        root = upload_blob(where[0], "bt", transposed(block), ("__cookie__", "secret"))
    finally:
        done.set()
        thread.join(10)
    assert root == bt_root_of(block)
    assert np.array_equal(store.get(root), expected)  # type: ignore[arg-type]


def test_a_probe_is_answered_from_one_row_and_the_stored_row_roots(tmp_path: Path) -> None:
    """The standalone miner answers a probe from its node's copy of C without all of C:
    the store's leaves of C are its row roots, so one row and the leaves give the same
    proof as C itself (consensus/result.row_proof)."""
    from consensus.result import RESULT_CHUNK, result_proof, result_row_roots, row_proof

    c = np.random.default_rng(3).integers(-(2**31), 2**31 - 1, (37, 200), dtype=np.int32)
    store = BlobStore(tmp_path / "blobs")
    root = store.put("c", c)
    leaves = store.leaves(root)
    assert leaves is not None
    roots = [leaves[i : i + 32] for i in range(0, len(leaves), 32)]
    assert roots == result_row_roots(c)
    for i, chunk in ((0, 0), (36, 3), (17, 1)):
        want = result_proof(c, i, chunk * RESULT_CHUNK)
        assert row_proof(c[i].tobytes(), roots, i, chunk * RESULT_CHUNK) == want


def test_an_upload_must_be_of_its_kinds_dtype_and_shape(tmp_path: Path) -> None:
    """An upload whose dtype is not its kind's (int8 for A and Bᵀ, int32 for C) is 400,
    not converted (an int16 300 came back as 44 before); so is a matrix without columns
    (a peer could not decode our announcement of it, and dropped us)."""
    import base64

    headers = {"Authorization": "Basic " + base64.b64encode(b"__cookie__:secret").decode()}

    def npy(x: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, x)
        return buf.getvalue()

    async def run() -> None:
        server = BlobServer(BlobStore(tmp_path / "s"), auth=("__cookie__", "secret"))
        runner, url = await _serve(server.app())
        try:
            async with aiohttp.ClientSession() as s:
                for kind, x, why in (
                    ("a", np.array([[300, 1], [2, -200]], dtype=np.int16), "int8 matrix"),
                    ("c", np.array([[2**63 - 1]], dtype=np.int64), "int32 matrix"),
                    ("a", np.zeros((3, 0), dtype=np.int8), "not allowed"),
                ):
                    r = await s.post(f"{url}/blob?kind={kind}", data=npy(x), headers=headers)
                    assert r.status == 400 and why in await r.text(), (kind, x.dtype)
                ok = np.array([[1, 2], [3, 4]], dtype=np.int32)
                r = await s.post(f"{url}/blob?kind=c", data=npy(ok), headers=headers)
                assert r.status == 200
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_fetch_never_follows_a_redirect(tmp_path: Path) -> None:
    """A peer answering with a redirect is dropped; the target is never asked (a peer
    could aim our requests at any host: a service on our loopback, a metadata IP)."""
    a, _ = operands(16, 64, 8)
    src = BlobStore(tmp_path / "src")
    root = src.put("a", a)
    asked: list[str] = []

    async def run() -> FetchReport:
        honest = web.Application()
        server = BlobServer(src)

        async def leaves(request: web.Request) -> web.StreamResponse:
            asked.append(request.path)
            return await server.leaves(request)

        honest.router.add_get("/blob/{root}/leaves", leaves)
        target, target_url = await _serve(honest)

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{target_url}{request.path_qs}")

        liar = web.Application()
        liar.router.add_get("/blob/{root}/{what}", redirect)
        runner, url = await _serve(liar)
        report = FetchReport()
        try:
            with pytest.raises(BlobError, match="no peer served"):
                await fetch_blob([url], root, "a", 16, 64, timeout=1.0, report=report)
        finally:
            await runner.cleanup()
            await target.cleanup()
        return report

    report = asyncio.run(run())
    assert asked == [] and "302" in " ".join(report.bad_peers.values())
