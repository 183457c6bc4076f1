"""HTTP endpoints for matrix blobs: a small aiohttp app on its own port.

    GET  /blob/{root}/info                    {"kind", "rows", "cols"}
    GET  /blob/{root}/leaves                  32 bytes per line (check against the root)
    GET  /blob/{root}/rows?start=S&count=N    N lines' raw bytes (check each against its leaf)
    POST /blob?kind=a|bt|c[&root=HEX]         body: one .npy matrix; needs the RPC's
                                              credentials (HTTP Basic: its cookie or
                                              --rpc-user); returns {"root": HEX}

Reads are public (the data is content-addressed and checked by the reader); uploads
are local and authenticated. Bodies are capped before they are read; a request that
asks for too many rows is refused. ``BlobService(node)`` runs it next to the node
(name "blobs") and hands its store and port to the node's P2P service, which announces
the blobs to peers (docs/P2P.md, "Blob announcements"); ``BlobServer`` runs without a
node (tests, the job client).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from aiohttp import web

if TYPE_CHECKING:
    from node.rpc.auth import Authenticator
    from node.service import Node
    from p2p.service import P2PService

from compute.blobs import (
    FETCH_RANGE_BYTES,
    KINDS,
    MAX_UPLOAD,
    BlobError,
    BlobStore,
    blob_dtype,
    check_blob_shape,
)
from node.blob_retention import BlobRetention
from node.capped_site import CappedSite, overloaded_response
from node.config import port_after_rpc
from wallet.rpc import BLOB_PORT_OFFSET

log = logging.getLogger("pouw.blobs")

# devnet: rpc 29332 -> blobs 29335 (metrics take +2); defined beside the clients' default
DEFAULT_BLOB_PORT_OFFSET = BLOB_PORT_OFFSET
MAX_ROWS_BYTES = 4 * FETCH_RANGE_BYTES  # largest rows reply
# An upload's body must arrive within this long (counted once its turn came): the
# largest (MAX_UPLOAD, ~1 GiB over loopback or a LAN) takes seconds; a client dripping
# bytes is cut off.
UPLOAD_TIMEOUT_S = 300.0
IDLE_TIMEOUT_S = 30.0  # as the RPC server: no complete request headers for 30 s closes
# Open connections at once (peers fetching rows, uploads): past it a new one gets 503.
# A fetching peer keeps FETCH_PARALLEL requests in flight; a few dozen peers fit.
MAX_CONNECTIONS = 256
OVERLOADED = overloaded_response(b"too many connections\n", "text/plain")
# Uploads read at once: each holds its whole body (up to MAX_UPLOAD) in memory while it
# arrives and is hashed; more wait their turn. A buyer sends two at a time, a miner one.
MAX_UPLOADS_AT_ONCE = 3


class NpyError(ValueError):
    """The body is not a 2-D integer .npy matrix."""


# A .npy header (magic, length, dict) fits in this many bytes: format 1.0 caps its
# length field at 65535, and 2.0 headers of a 2-D integer matrix are far shorter.
NPY_HEADER_MAX = 65536 + 12


def parse_npy(body: bytes | bytearray) -> np.ndarray:
    """A 2-D integer matrix from the bytes of one .npy file (format 1.0 or 2.0).

    The header is checked before anything is allocated: the data must be exactly the
    size the header promises, so a header claiming a huge shape costs nothing. Zip
    (.npz), pickled and structured arrays are refused. The matrix reads ``body`` in
    place (no copy)."""
    buf = io.BytesIO(bytes(memoryview(body)[:NPY_HEADER_MAX]))
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise NpyError(f"unsupported .npy version {version}")
    except (ValueError, SyntaxError, tokenize.TokenError, EOFError) as exc:
        raise NpyError(f"not a .npy file: {exc}") from None
    if len(shape) != 2 or dtype.kind not in "iu" or dtype.hasobject:
        raise NpyError(f"need a 2-D integer matrix, got shape {shape} dtype {dtype}")
    data = memoryview(body)[buf.tell() :]  # no copy: the array reads the body in place
    if len(data) != shape[0] * shape[1] * dtype.itemsize:
        raise NpyError(f"data is {len(data)} bytes, the header says {shape} of {dtype}")
    flat = np.frombuffer(data, dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C")


def _root(request: web.Request) -> bytes:
    text = request.match_info["root"]
    if len(text) != 64:
        raise web.HTTPBadRequest(text="root must be 64 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise web.HTTPBadRequest(text="root must be 64 hex digits") from None


class BlobServer:
    def __init__(
        self,
        store: BlobStore,
        bind: str = "127.0.0.1",
        port: int = 0,
        auth: tuple[str, str] | None = None,
        max_upload: int = MAX_UPLOAD,
    ) -> None:
        self.store = store
        self.bind = bind
        self.port = port
        self.auth = auth
        # the node's RPC check of an Authorization header (node/rpc/auth.Authenticator:
        # the cookie and --rpc-user): when set, uploads take what the RPC takes
        self.check_auth: Callable[[str | None], bool | None] | None = None
        self.max_upload = max_upload
        self._uploads = asyncio.Semaphore(MAX_UPLOADS_AT_ONCE)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_upload)
        app.router.add_get("/blob/{root}/info", self.info)
        app.router.add_get("/blob/{root}/leaves", self.leaves)
        app.router.add_get("/blob/{root}/rows", self.rows)
        app.router.add_post("/blob", self.upload)
        return app

    async def info(self, request: web.Request) -> web.Response:
        info = self.store.find(_root(request))
        if info is None:
            raise web.HTTPNotFound(text="no such blob")
        return web.json_response({"kind": info.kind, "rows": info.rows, "cols": info.cols})

    async def leaves(self, request: web.Request) -> web.Response:
        data = self.store.leaves(_root(request))
        if data is None:
            raise web.HTTPNotFound(text="no such blob")
        return web.Response(body=data, content_type="application/octet-stream")

    async def rows(self, request: web.Request) -> web.Response:
        root = _root(request)
        try:
            start = int(request.query.get("start", "0"))
            count = int(request.query.get("count", "1"))
        except ValueError:
            raise web.HTTPBadRequest(text="start and count must be integers") from None
        info = self.store.find(root)
        if info is None:
            raise web.HTTPNotFound(text="no such blob")
        if count < 1 or count * info.line_bytes > MAX_ROWS_BYTES:
            raise web.HTTPBadRequest(text=f"ask at most {MAX_ROWS_BYTES} bytes of rows")
        data = self.store.rows(root, start, count)
        if data is None:
            raise web.HTTPBadRequest(text="rows out of range")
        return web.Response(body=data, content_type="application/octet-stream")

    async def upload(self, request: web.Request) -> web.Response:
        if self.check_auth is not None:
            ok = self.check_auth(request.headers.get("Authorization"))
            if ok is not True:
                if ok is False:  # wrong credentials: a pause, as the RPC makes
                    from node.rpc.auth import AUTH_FAIL_DELAY_S

                    log.warning("blob upload: wrong credentials from %s", request.remote)
                    await asyncio.sleep(AUTH_FAIL_DELAY_S)
                raise web.HTTPUnauthorized(
                    text="uploads need the node's RPC credentials (its cookie, or its "
                    "--rpc-user/--rpc-password)"
                )
        elif self.auth is not None:
            from aiohttp import BasicAuth

            try:
                got = BasicAuth.decode(request.headers.get("Authorization", ""))
            except ValueError:
                got = None
            if got is None or (got.login, got.password) != self.auth:
                raise web.HTTPUnauthorized(text="uploads need the RPC cookie")
        kind = request.query.get("kind", "")
        if kind not in KINDS:
            raise web.HTTPBadRequest(text=f"kind must be one of {KINDS}")
        if request.content_length is not None and request.content_length > self.max_upload:
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.max_upload, actual_size=request.content_length
            )
        async with self._uploads:
            try:
                async with asyncio.timeout(UPLOAD_TIMEOUT_S):
                    body = await self._read_body(request)
            except TimeoutError:
                raise web.HTTPRequestTimeout(text="upload not received in time") from None
            try:
                root = bytes.fromhex(request.query["root"]) if "root" in request.query else None
                if root is not None and len(root) != 32:
                    raise BlobError("root must be 64 hex digits")
                matrix = parse_npy(body)
                want = blob_dtype(kind)
                if matrix.dtype != want:  # (never converted: values would wrap silently)
                    raise BlobError(
                        f"a blob of kind {kind} must be a {want} matrix, not {matrix.dtype}"
                    )
                check_blob_shape(kind, matrix.shape)
                # hashing megabytes off the event loop: other requests go on meanwhile
                got_root = await asyncio.to_thread(self.store.put, kind, matrix, root, owned=True)
            except (BlobError, ValueError, OSError) as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"root": got_root.hex()})

    async def _read_body(self, request: web.Request) -> bytes | bytearray:
        """The upload's body: into one buffer of the announced size (16 MB arrive in
        one copy, not in a buffer grown and copied again and again)."""
        size = request.content_length
        if size is None:
            return await request.read()
        body = bytearray(size)
        view, got = memoryview(body), 0
        async for chunk in request.content.iter_any():
            if got + len(chunk) > size:
                raise web.HTTPBadRequest(text="the body is longer than its Content-Length")
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
        if got != size:
            raise web.HTTPBadRequest(text=f"the body ended after {got} of {size} bytes")
        return body

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, keepalive_timeout=IDLE_TIMEOUT_S)
        await self._runner.setup()
        site = CappedSite(
            self._runner, self.bind, self.port, max_connections=MAX_CONNECTIONS,
            name="blob server", response=OVERLOADED,
        )  # fmt: skip
        await site.start()
        self.port = site.port
        log.info("blob server on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def blob_dir(network_dir: Path) -> Path:
    return Path(network_dir) / "blobs"


class BlobService:
    """The node's blob server (a Service: name, async start/stop).

    Settings: ``blob_bind`` (default ``rpc_bind``), ``blob_port`` (default the RPC
    port + 3), ``blob_quota_mb``, ``blob_keep_hours`` (node/blob_retention.py). The
    store is ``network_dir / "blobs"``.
    """

    name = "blobs"

    def __init__(self, node: Node) -> None:
        cfg = node.config
        self.node = node
        self.store = BlobStore(blob_dir(cfg.network_dir), cfg.blob_quota_mb * 2**20)
        port = cfg.blob_port
        if port is None:
            port = port_after_rpc(cfg.rpc_port, node.network.rpc_port, DEFAULT_BLOB_PORT_OFFSET)
        self.server = BlobServer(self.store, cfg.blob_bind or cfg.rpc_bind, port)
        self.retention = BlobRetention(node, self.store, cfg.blob_keep_hours * 3600.0)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        rpc_auth = self._rpc_authenticator()
        if rpc_auth is not None:  # uploads take what the RPC takes, the cookie included
            self.server.check_auth = rpc_auth.check_header
        else:  # (the node adds this service after its RPC service only)
            log.warning("no RPC service: blob uploads are disabled")
            self.server.auth = ("", os.urandom(16).hex())
        await self.server.start()
        self.retention.start()
        p2p = self._p2p()
        if p2p is not None:
            p2p.attach_blobs(self.store, self.server.port, self.server.bind)

    def _rpc_authenticator(self) -> Authenticator | None:
        """The node's RPC credential check, if it runs an RPC service."""
        from node.rpc.auth import Authenticator

        for service in self.node.services:
            auth = getattr(service, "auth", None)
            if isinstance(auth, Authenticator):
                return auth
        return None

    def _p2p(self) -> P2PService | None:
        """The node's P2P service, if it runs one (it announces our blobs)."""
        from p2p.service import P2PService

        return next((s for s in self.node.services if isinstance(s, P2PService)), None)

    async def stop(self) -> None:
        p2p = self._p2p()
        if p2p is not None:
            p2p.detach_blobs(self.store)
        await self.server.stop()
        await self.retention.stop()
        await asyncio.to_thread(self.store.close)  # blobs still being written
