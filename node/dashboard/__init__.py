"""The web dashboard: static files under /dashboard/ on the RPC port, off unless --dashboard.

How the page gets data: it calls ``POST /dashboard/rpc`` (same origin, JSON-RPC, single
or batch) with ``Authorization: Bearer <token>``. That endpoint answers only the
read-only methods in ``READ_ONLY`` and is a proxy into the node's own method table, so
the page never holds the RPC cookie and can change nothing. The token is random per
start; the node writes the page's address with the token
(``http://127.0.0.1:<rpc port>/dashboard/#token=...``) to ``<network_dir>/dashboard.url``
(mode 0600) and removes it at a clean stop. The token travels in the URL fragment, which
browsers never send to servers or put in Referer headers; the page keeps it in
sessionStorage. The static files need no token and hold no data.

Everything is served by the node (no CDN, no library): it works offline.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from node.rpc.errors import INVALID_REQUEST
from node.rpc.jsoncodec import encode_reply
from node.rpc.methods import CHAIN_READS
from node.rpc.protocol import CallContext, Dispatcher, Registry, error_response

if TYPE_CHECKING:
    from node.rpc.service import RpcService
    from node.service import Node

log = logging.getLogger("pouw.rpc")

URL_FILE = "dashboard.url"
FILES = {
    "index.html": "text/html",
    "app.js": "application/javascript",
    "style.css": "text/css",
}
READ_ONLY = (
    *CHAIN_READS,
    "getmempoolinfo",
    "getrawmempool",
    "getmininginfo",
    "getnetworkinfo",
    "getpeerinfo",
    "getconnectioncount",
    "listjobs",
    "getjob",
    "getmarketinfo",
    "getcontribution",
    "uptime",
)
MAX_BODY = 64 * 1024
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Dashboard:
    def __init__(self, node: Node, rpc: RpcService) -> None:
        self.node = node
        self.rpc = rpc
        self.token = secrets.token_urlsafe(32)
        self.dispatcher: Dispatcher | None = None
        self.url_file = Path(node.config.network_dir) / URL_FILE

    def add_routes(self, app: web.Application) -> None:
        registry = Registry()
        for name in READ_ONLY:
            method = self.rpc.registry.methods.get(name)
            if method is not None:
                registry.methods[name] = method
        self.dispatcher = Dispatcher(registry, max_batch=200)
        app.router.add_get("/dashboard", self.redirect)
        app.router.add_get("/dashboard/", self.static)
        app.router.add_get("/dashboard/{name}", self.static)
        app.router.add_post("/dashboard/rpc", self.handle_rpc)

    @property
    def url(self) -> str:
        host = self.rpc.bind if self.rpc.bind not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.rpc.port}/dashboard/#token={self.token}"

    def announce(self) -> None:
        fd = os.open(self.url_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.url + "\n")
        where = self.url.split("#", 1)[0]
        log.info("dashboard on %s (open the address with its token from %s)", where, self.url_file)
        if self.rpc.bind not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "the dashboard is reachable beyond this machine (--rpc-bind %s); "
                "anyone with the token can read the node's data",
                self.rpc.bind,
            )

    def withdraw(self) -> None:
        try:
            if self.url_file.read_text().strip() == self.url:
                self.url_file.unlink()
        except OSError:
            pass

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard/")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html") or "index.html"
        if name not in FILES:
            raise web.HTTPNotFound()
        body = resources.files("node.dashboard").joinpath(name).read_bytes()
        return web.Response(body=body, content_type=FILES[name], charset="utf-8", headers=HEADERS)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )

    async def handle_rpc(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            body = error_response(
                INVALID_REQUEST,
                "unauthorized: the dashboard token is missing "
                f"or stale; open the address in {self.url_file}",
            )
            return web.json_response(body, status=401)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response(error_response(INVALID_REQUEST, "body too large"), status=413)
        data = await request.content.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            return web.json_response(error_response(INVALID_REQUEST, "body too large"), status=413)
        assert self.dispatcher is not None
        reply = await self.dispatcher.handle_body(data, CallContext(authed=True))
        if reply is None:
            return web.Response(status=204)
        return web.Response(
            text=encode_reply(reply),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )
