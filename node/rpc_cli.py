"""``pouw rpc METHOD [PARAMS...]``: one JSON-RPC call to a running node, like
bitcoin-cli (cookie auth from --datadir, or --rpc-user/--rpc-password); prints the
result as JSON."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from chain.datadir import default_datadir
from chain.network import load_network
from node.usage import EXIT_FAILURE, UsageError

log = logging.getLogger("pouw")

# `pouw rpc` waits as long as a long poll may (waitfornewblock and waitforjob wait up
# to 300 s); Ctrl-C stops it. Other methods answer within seconds on a sound node: a
# node (or anything else on that port) that takes a call and never answers is given up
# after 5 minutes.
RPC_COMMAND_TIMEOUT_S = 24 * 3600.0
RPC_CALL_TIMEOUT_S = 300.0
LONG_WAIT_METHODS = frozenset({"waitfornewblock", "waitforjob", "getblocktemplate"})


def cmd_rpc(args: argparse.Namespace) -> int:
    """Cookie auth from --datadir, like bitcoin-cli; prints the result as JSON."""
    from wallet.rpc import (
        METHOD_NOT_FOUND,
        RpcClient,
        RpcConnectionError,
        RpcError,
        check_node_url,
        local_port,
    )

    params = []
    for text in args.params:
        try:
            value = json.loads(text)
        except ValueError as exc:
            if text.lstrip()[:1] in ("[", "{", '"'):  # meant as JSON: not sent as a string
                raise UsageError(f"parameter {text!r} is not valid JSON ({exc})") from None
            value = text
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise UsageError(
                f"parameter {text!r} holds a number that is not finite (JSON has none)"
            ) from None
        params.append(value)
    datadir = args.datadir or default_datadir()
    timeout = RPC_COMMAND_TIMEOUT_S if args.method in LONG_WAIT_METHODS else RPC_CALL_TIMEOUT_S
    if args.rpc is not None and (args.rpc_host is not None or args.rpc_port is not None):
        raise UsageError("--rpc is the whole URL: give it, or --rpc-host/--rpc-port, not both")
    try:
        rpc_url = None if args.rpc is None else check_node_url(args.rpc)
    except RpcConnectionError as exc:  # not a URL at all: a usage error
        raise UsageError(str(exc)) from None
    rpc_host = "127.0.0.1" if args.rpc_host is None else args.rpc_host
    host = rpc_host.strip("[]")
    if not host or any(c in host for c in "/@ []") or host.count(":") == 1:
        raise UsageError(
            f"--rpc-host {rpc_host!r} is not a host: give a name or an address "
            "(127.0.0.1, ::1, node.example), and the port with --rpc-port"
        )
    if (args.rpc_user is None) != (args.rpc_password is None):
        raise UsageError("--rpc-user and --rpc-password go together (or neither: the cookie)")
    try:
        if rpc_url is not None:  # the cookie of --datadir unless --rpc-user is given
            cookie_dir = datadir if args.rpc_user is None else None
            client = RpcClient.from_options(
                rpc_url, args.network, cookie_dir, args.rpc_user,
                args.rpc_password, timeout=timeout,
            )  # fmt: skip
        elif args.rpc_user is not None:
            port = args.rpc_port or local_port(
                datadir, args.network, load_network(args.network).rpc_port
            )
            url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
            client = RpcClient(url, args.rpc_user, args.rpc_password, timeout=timeout)
        else:
            client = RpcClient.from_datadir(
                datadir, args.network, args.rpc_port, host, timeout=timeout
            )
    except RpcConnectionError as exc:  # no readable cookie: the node is down (or elsewhere)
        log.error("%s", exc)
        return EXIT_FAILURE  # (as a node that does not answer, and as `pouw wallet`)
    try:
        result = client.call(args.method, *params)
    except RpcError as exc:
        hint = "\n(`pouw rpc help` lists the methods)" if exc.code == METHOD_NOT_FOUND else ""
        print(f"error code: {exc.code}\nerror message:\n{exc.message}{hint}", file=sys.stderr)
        return EXIT_FAILURE
    except RpcConnectionError as exc:  # (its message says where and what to check)
        log.error("%s", exc)
        return EXIT_FAILURE
    print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0
