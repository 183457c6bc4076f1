"""The RPC service: aiohttp server for JSON-RPC over HTTP POST ``/`` and WebSocket ``/ws``.

Started and stopped by the Node (``node.services``). Writes the cookie file at start
and removes it at a clean stop. Every call needs auth (cookie or the configured
user), like bitcoind; a wrong credential is answered after a 250 ms pause.

Slow or greedy clients are bounded (docs/RPC.md, "Limits"): a connection must send
complete request headers within the idle timeout of opening or of its last answer,
a body within the body timeout, the number of open connections is capped (503 past
it), and so is the number of subscriptions per WebSocket.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from chain.address import encode_address
from chain.block import MAX_BLOCK_SIZE
from chain.job_record import job_key
from chain.tx import Transaction
from node.capped_site import CappedSite, overloaded_response
from node.events import TipChange
from node.rpc.auth import (
    AUTH_FAIL_DELAY_S,
    COOKIE_USER,
    Authenticator,
    remove_cookie,
    write_cookie,
)
from node.rpc.encode import header_json, kind_name
from node.rpc.errors import INVALID_REQUEST, MISC_ERROR, RpcError
from node.rpc.job_events import notices, touched_jobs
from node.rpc.jsoncodec import encode_reply
from node.rpc.methods import Methods, register_all
from node.rpc.protocol import MAX_WAIT_MS, CallContext, Dispatcher, Registry, error_response

if TYPE_CHECKING:
    from node.service import Node

log = logging.getLogger("pouw.rpc")

# A submitblock of the largest block in hex, plus room for the envelope.
DEFAULT_MAX_BODY = 2 * MAX_BLOCK_SIZE + 64 * 1024
WS_QUEUE = 1024  # messages (replies, notifications) a WebSocket client may lag behind
# ... and bytes: past either the socket is dropped (a client that does not read would
# otherwise hold every reply it asked for in our memory)
WS_QUEUE_BYTES = 64 * 1024 * 1024
LOCAL_BINDS = {"127.0.0.1", "::1", "localhost"}
# bitcoind's -rpcservertimeout: a connection idle this long (no complete request
# headers since it opened or since its last answer) is closed.
IDLE_TIMEOUT_S = 30.0
# A body must arrive within this long of its headers: the largest (DEFAULT_MAX_BODY,
# ~42 MB: a submitblock of the largest block in hex) needs 2.8 Mbit/s; a typical
# call arrives with its headers, a local miner's block well under a second.
BODY_TIMEOUT_S = 120.0
# Open HTTP and WebSocket connections at once; past it a new one gets 503 and is
# closed. Each connection costs a socket and buffers; miners and wallets use a few.
MAX_CONNECTIONS = 256
OVERLOADED = overloaded_response(
    encode_reply(error_response(MISC_ERROR, "too many connections")).encode(), "application/json"
)
# Subscriptions one WebSocket may hold: 3 topics, with room for several consumers
# sharing a socket; each one multiplies the notifications a single event sends.
MAX_SUBSCRIPTIONS = 32
# Calls one WebSocket may have running at once: a call that waits (waitfornewblock)
# leaves the socket free for others, and its reply comes when it is done (JSON-RPC
# replies carry their ids); past this the socket's next message is read only when one
# of its calls ends. Each waiting call holds a few hundred bytes.
MAX_WS_CALLS = 16
WS_CLOSE_TIMEOUT_S = 2.0  # at a stop: a WebSocket's close handshake, then it is cut
CHUNK = 64 * 1024
MAX_WAIT_S = MAX_WAIT_MS / 1000
# A waiting call looks this often whether its client's connection closed (and stops):
# a client that leaves frees its connection slot within this long.
GONE_CHECK_S = 1.0


def _connection_gone(request: web.BaseRequest) -> Callable[[], bool]:
    """Whether ``request``'s connection closed (the client left)."""

    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    return gone


class WsSession:
    """One WebSocket connection: its subscriptions and its outgoing queue."""

    def __init__(
        self, service: RpcService, ws: web.WebSocketResponse, request: web.BaseRequest
    ) -> None:
        self.service = service
        self.ws = ws
        self.request = request
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(WS_QUEUE)
        self.queued_bytes = 0
        self.subs: dict[str, str] = {}  # id -> topic
        self.overflowed = False

    def subscribe(self, topic: str) -> str:
        cap = self.service.max_subscriptions
        if len(self.subs) >= cap:
            raise RpcError(MISC_ERROR, f"too many subscriptions on this socket (at most {cap})")
        sid = f"0x{next(self.service._sub_ids):x}"
        self.subs[sid] = topic
        return sid

    def unsubscribe(self, sid: str) -> bool:
        return self.subs.pop(sid, None) is not None

    def publish(self, topic: str, result: Any) -> None:
        for sid, t in self.subs.items():
            if t != topic:
                continue
            msg = {"jsonrpc": "2.0", "method": "subscription",
                   "params": {"subscription": sid, "topic": topic, "result": result}}  # fmt: skip
            self.send(msg)

    def send(self, msg: Any) -> None:
        if self.overflowed:
            return
        text = encode_reply(msg)
        # (one reply of any size goes when nothing waits: HTTP serves it too)
        if self.queued_bytes and self.queued_bytes + len(text) > WS_QUEUE_BYTES:
            self._overflow()
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self._overflow()
            return
        self.queued_bytes += len(text)

    def _overflow(self) -> None:
        """The client reads too slowly: drop the socket now (the writer may be stuck on
        a client that reads nothing), and everything queued for it."""
        self.overflowed = True
        log.info(
            "RPC: a WebSocket client reads too slowly (%d messages, %d bytes queued): "
            "closing it", self.queue.qsize(), self.queued_bytes,
        )  # fmt: skip
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def writer(self) -> None:
        while True:
            text = await self.queue.get()
            if text is None or self.overflowed:
                await self.ws.close(message=b"subscriber too slow")
                return
            self.queued_bytes -= len(text)
            await self.ws.send_str(text)


class RpcService:
    name = "rpc"

    def __init__(self, node: Node) -> None:
        self.node = node
        cfg = node.config
        self.bind = cfg.rpc_bind
        self.port = node.network.rpc_port if cfg.rpc_port is None else cfg.rpc_port
        extra = cfg.extra
        self.max_body = int(extra.get("rpc_max_body", DEFAULT_MAX_BODY))  # type: ignore[call-overload]
        self.idle_timeout = float(extra.get("rpc_idle_timeout", IDLE_TIMEOUT_S))  # type: ignore[arg-type]
        self.body_timeout = float(extra.get("rpc_body_timeout", BODY_TIMEOUT_S))  # type: ignore[arg-type]
        self.max_connections = int(extra.get("rpc_max_connections", MAX_CONNECTIONS))  # type: ignore[call-overload]
        self.max_subscriptions = int(extra.get("rpc_max_subscriptions", MAX_SUBSCRIPTIONS))  # type: ignore[call-overload]
        self.auth = Authenticator()
        if cfg.rpc_user is not None:
            if cfg.rpc_password is None:
                raise ValueError("rpc_user needs rpc_password")
            self.auth.allow(cfg.rpc_user, cfg.rpc_password)
        self.registry = Registry()
        self.methods = Methods(node, self)
        register_all(self.registry, self.methods)
        self.warmup_message: str | None = "RPC server starting"
        self.dispatcher = Dispatcher(
            self.registry,
            max_batch=int(extra.get("rpc_max_batch", 1000)),  # type: ignore[call-overload]
            allow_anonymous=bool(extra.get("rpc_allow_anonymous", False)),
            warmup=lambda: self.warmup_message,
        )
        self.cookie: tuple[Path, str] | None = None
        self.sessions: set[WsSession] = set()
        self._sub_ids = itertools.count(1)
        self._change = asyncio.Event()
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self._stopping = False

    # --- change notification (long-poll, waitfornewblock, subscriptions) ---------------

    def longpollid(self) -> str:
        return f"{self.node.chain.tip.hash.hex()}{self._seq:x}"

    def _changed(self) -> None:
        self._seq += 1
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def wait_change(
        self, done: Callable[[], bool], timeout: float | None, ctx: CallContext
    ) -> None:
        """Wait until ``done()`` holds (checked at each tip or mempool change), the
        timeout (at most MAX_WAIT_S) passes, the caller's connection closes, or the
        service stops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(MAX_WAIT_S if timeout is None else timeout, MAX_WAIT_S)
        gone = ctx.gone
        while not done() and not self._stopping:
            if gone is not None and gone():
                return  # nobody to answer: the connection's slot is free again
            left = deadline - loop.time()
            if left <= 0:
                return
            change = self._change
            try:
                await asyncio.wait_for(
                    change.wait(), left if gone is None else min(left, GONE_CHECK_S)
                )
            except TimeoutError:
                continue

    def _on_tip(self, change: TipChange) -> None:
        self._changed()
        if not self.sessions:
            return
        reorg = bool(change.disconnected)
        for block in change.connected:
            head = header_json(block.header, self.node.network)
            head["reorg"] = reorg
            for s in self.sessions:
                s.publish("newHeads", head)
        watching = [s for s in self.sessions if "jobs" in s.subs.values()]
        if watching:
            self._publish_jobs(change, watching)

    def _publish_jobs(self, change: TipChange, watching: list[WsSession]) -> None:
        """The ``jobs`` topic: the jobs this tip change touched (node/rpc/job_events.py)."""
        chain = self.node.chain
        ids = touched_jobs(
            change.connected, change.disconnected, self.node.db.get_undo,
            lambda job_id: chain.state_get(job_key(job_id)),
        )  # fmt: skip
        if not ids:
            return
        jobs = self.methods.jobs_on_chain(ids)
        for result in notices(chain.tip.height, chain.tip.hash, bool(change.disconnected), jobs):
            for s in watching:
                s.publish("jobs", result)

    def _on_tx(self, tx: Transaction) -> None:
        self._changed()
        if not self.sessions:
            return
        hrp = self.node.network.hrp
        item = {"txid": tx.txid.hex(), "kind": tx.kind, "type": kind_name(tx.kind),
                "sender": encode_address(hrp, tx.sender),
                "recipient": encode_address(hrp, tx.recipient), "amount": tx.amount,
                "fee": tx.fee, "nonce": tx.nonce}  # fmt: skip
        for s in self.sessions:
            s.publish("newTransactions", item)

    # --- HTTP ------------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> tuple[bool, web.Response | None]:
        ok = self.auth.check_header(request.headers.get("Authorization"))
        if ok:
            return True, None
        return await self._refuse(request, ok)

    async def _refuse(
        self, request: web.Request, ok: bool | None
    ) -> tuple[bool, web.Response | None]:
        """Anonymous (None) or wrong (False) credentials: (False, None) for an anonymous
        caller where that is allowed, else the 401 answer (a wrong one after a pause)."""
        if ok is None and self.dispatcher.allow_anonymous:
            return False, None
        if ok is False:
            log.warning("RPC: wrong credentials from %s", request.remote)
            await asyncio.sleep(AUTH_FAIL_DELAY_S)
        body = error_response(
            INVALID_REQUEST,
            "unauthorized: HTTP Basic auth needed "
            "(__cookie__:<hex> from the datadir's .cookie, or rpc_user)",
        )
        return False, web.json_response(
            body, status=401, headers={"WWW-Authenticate": 'Basic realm="jsonrpc"'}
        )

    def _too_large(self) -> web.Response:
        body = error_response(INVALID_REQUEST, f"request body over {self.max_body} bytes")
        return web.json_response(body, status=413)

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        ok = self.auth.check_header(request.headers.get("Authorization"))
        authed = True
        if not ok:
            authed, refusal = await self._refuse(request, ok)
            if refusal is not None:
                return refusal
        content = request.content
        if content.is_eof():  # it came with the headers (the common case): take it as it is
            data = content.read_nowait()
            if len(data) > self.max_body:
                return self._too_large()
            body: bytes | None = data
        else:
            length = request.content_length
            if length is not None and length > self.max_body:
                return self._too_large()
            try:
                async with asyncio.timeout(self.body_timeout):
                    body = await self._read_body(request)
            except TimeoutError:
                return await self._body_timeout(request)
        if body is None:
            return self._too_large()
        ctx = CallContext(authed=authed, gone=_connection_gone(request))
        reply = await self.dispatcher.handle_body(body, ctx)
        if reply is None:
            return web.Response(status=204)
        return web.Response(body=encode_reply(reply).encode(), content_type="application/json")

    async def _body_timeout(self, request: web.Request) -> web.StreamResponse:
        reply = error_response(
            INVALID_REQUEST, f"request body not received within {self.body_timeout:g} s"
        )
        resp = web.json_response(reply, status=408)
        resp.force_close()
        await resp.prepare(request)
        await resp.write_eof()
        request.protocol.force_close()  # no lingering read of the rest of a dripped body
        return resp

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None once it passes the cap (counted while reading)."""
        chunks = []
        size = 0
        while True:
            chunk = await request.content.read(CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        authed, refusal = await self._authorize(request)
        if refusal is not None:
            return refusal
        ws = web.WebSocketResponse(max_msg_size=self.max_body, heartbeat=30)
        await ws.prepare(request)
        session = WsSession(self, ws, request)
        self.sessions.add(session)
        writer = asyncio.create_task(session.writer())
        ctx = CallContext(authed=authed, session=session, gone=_connection_gone(request))
        running: set[asyncio.Task[None]] = set()

        async def call(data: str) -> None:
            reply = await self.dispatcher.handle_body(data, ctx)
            if reply is not None:
                session.send(reply)

        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.BINARY:
                        session.send(error_response(INVALID_REQUEST, "send JSON text frames"))
                    continue
                if len(running) >= MAX_WS_CALLS:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(call(msg.data))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            self.sessions.discard(session)
            for task in running:  # the client left: nobody waits for these replies
                task.cancel()
            writer.cancel()
        return ws

    # --- lifetime ----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post("/", self.handle_http)
        app.router.add_get("/ws", self.handle_ws)
        return app

    async def start(self) -> None:
        self.node.events.tip_changed.connect(self._on_tip)
        self.node.events.tx_accepted.connect(self._on_tx)
        self.cookie = write_cookie(self.node.config.network_dir)
        self.auth.allow(COOKIE_USER, self.cookie[1])
        self._runner = RpcRunner(
            self.make_app(), self.handle_http, access_log=None, keepalive_timeout=self.idle_timeout
        )
        await self._runner.setup()
        site = CappedSite(
            self._runner, self.bind, self.port, max_connections=self.max_connections,
            name="RPC", response=OVERLOADED,
        )  # fmt: skip
        await site.start()
        self.port = site.port
        if self.bind not in LOCAL_BINDS:
            log.warning(
                "!!! JSON-RPC is listening on %s:%d, not on localhost: anyone who can reach "
                "this port can try credentials. Firewall it, or use --rpc-bind 127.0.0.1 !!!",
                self.bind, self.port,
            )  # fmt: skip
        log.info("JSON-RPC on http://%s:%d/ (WebSocket /ws), cookie %s",
                 self.bind, self.port, self.cookie[0])  # fmt: skip
        self.warmup_message = None

    async def stop(self) -> None:
        self._stopping = True
        self._changed()  # wake long-polls
        with_events = self.node.events
        for signal, fn in ((with_events.tip_changed, self._on_tip),
                           (with_events.tx_accepted, self._on_tx)):  # fmt: skip
            try:
                signal.disconnect(fn)  # type: ignore[arg-type]
            except ValueError:
                pass
        for s in list(self.sessions):
            try:  # (a client that reads nothing would hold the close frame forever)
                await asyncio.wait_for(s.ws.close(), WS_CLOSE_TIMEOUT_S)
            except TimeoutError:
                if s.request.transport is not None:
                    s.request.transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.cookie is not None:
            remove_cookie(*self.cookie)
            self.cookie = None


class RpcRunner(web.AppRunner):
    """An AppRunner whose server hands ``POST /`` straight to the JSON-RPC handler, past
    the router and middleware machinery (a measurable share of a cheap call's time);
    every other request (WebSocket, dashboard) goes through the application."""

    def __init__(
        self,
        app: web.Application,
        rpc_handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.rpc_handler = rpc_handler

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        through_app = server.request_handler
        rpc = self.rpc_handler

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            if request.method == "POST" and request.path == "/":
                return await rpc(request)  # type: ignore[arg-type]
            return await through_app(request)

        server.request_handler = handle
        return server
