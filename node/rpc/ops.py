"""Operator additions to the RPC server, kept apart from the method groups.

* ``logging [include] [exclude]``: bitcoind's method: turn debug log categories on and
  off at run time; returns every category with whether it is on (admin).
* Every registered method is timed into the node's metrics (calls and latency by method).
* ``--dashboard``: the dashboard's routes on the same aiohttp app (node/dashboard/).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from node import logs
from node.rpc.errors import INVALID_PARAMETER, MISC_ERROR, RpcError
from node.rpc.protocol import CallContext, Method, Params, Registry
from node.rpc.service import RpcService

if TYPE_CHECKING:
    from node.service import Node


class LoggingParams(Params):
    include: list[str] | None = None
    exclude: list[str] | None = None


def register_logging(registry: Registry) -> None:
    def logging_method(ctx: CallContext, p: LoggingParams) -> dict[str, bool]:
        """Debug log categories: include and exclude are lists of categories (or "all");
        without params, only report. Result: {category: enabled}. Like bitcoind's logging."""
        control = logs.current()
        if control is None:
            raise RpcError(MISC_ERROR, "logging is not set up in this process")
        try:
            return control.change(p.include or (), p.exclude or ())
        except ValueError as exc:
            raise RpcError(INVALID_PARAMETER, str(exc)) from None

    registry.add("logging", logging_method, LoggingParams, category="control", admin=True)


def time_methods(registry: Registry, node: Node) -> None:
    """Wrap every registered handler so calls and latency reach the node's metrics."""
    for name, method in list(registry.methods.items()):
        registry.methods[name] = replace(method, handler=_timed(method, node))


def _timed(method: Method, node: Node) -> Any:
    inner = method.handler
    name = method.name
    stats = node.metrics.rpc_stats.method(name)  # looked up once, not per call
    ok_call = stats.ok_call
    clock = time.perf_counter

    if not inspect.iscoroutinefunction(inner):  # no coroutine to create and await

        def timed_sync(ctx: CallContext, params: Any) -> Any:
            t0 = clock()
            try:
                result = inner(ctx, params)
            except BaseException:
                stats.call(clock() - t0, "error")
                raise
            ok_call(clock() - t0)
            return result

        timed_sync.__doc__ = inner.__doc__
        return timed_sync

    async def timed(ctx: CallContext, params: Any) -> Any:
        t0 = clock()
        try:
            result = await inner(ctx, params)
        except BaseException:
            stats.call(clock() - t0, "error")
            raise
        ok_call(clock() - t0)
        return result

    timed.__doc__ = inner.__doc__
    return timed


class NodeRpcService(RpcService):
    """The RPC service the node runs: RpcService plus logging, timing and the dashboard."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        register_logging(self.registry)
        self.dashboard: Any = None
        if node.config.dashboard:
            from node.dashboard import Dashboard  # noqa: PLC0415 - only when enabled

            self.dashboard = Dashboard(node, self)

    def make_app(self) -> web.Application:
        time_methods(self.registry, self.node)  # after every method is registered
        app = super().make_app()
        if self.dashboard is not None:
            self.dashboard.add_routes(app)
        return app

    async def start(self) -> None:
        await super().start()
        if self.dashboard is not None:
            self.dashboard.announce()

    async def stop(self) -> None:
        if self.dashboard is not None:
            self.dashboard.withdraw()
        await super().stop()
