"""``pouw job ...``: buy matrix products on the compute market and collect C.

    pouw job quote 512 4096 4096                    # going rate, suggested bounty, wait
    pouw job submit A.npy B.npy --bounty 1.5 [--expiry 3600] [--parts 3]
    pouw job status PRODUCT_ID                       # pending, open, claimed, ... per part
    pouw job result PRODUCT_ID -o C.npy --a A.npy --b B.npy [--wait 600]
    pouw job reclaim PRODUCT_ID                      # cancel the parts nobody claimed
    pouw job list [--limit 10]                       # products submitted from this datadir

``submit`` checks that entries are integers in [-64, 63] (and says how to quantize
if not), cuts the product into jobs (wallet/products.py), uploads each part's A and
B to the node's blob endpoint (with its RPC cookie), sends one JOB_SUBMIT per part
and keeps a manifest under <datadir>/<network>/products/. ``result`` downloads each
part's C, checks it against its committed root and against A and B (Freivalds),
challenges a wrong C or probes a withheld one by itself, and writes the reassembled
product. The blob endpoint defaults to the RPC URL's port + 3 (--blob-url overrides).
Wiring: ``add_job_parser(subparsers)`` from node/cli.py's ``build_parser``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wallet.amount import amount_arg, check_fee, format_coins
from wallet.args import positive_arg, seconds_arg, whole_arg
from wallet.job_terms import DEFAULT_EXPIRY_S, DEFAULT_JOB_FEE, DEFAULT_LIST_LIMIT, JobError
from wallet.rpc import BLOB_PORT_OFFSET, shown_url

if TYPE_CHECKING:  # (loaded by the commands that build a client: see _client)
    import numpy as np

    from wallet.jobs import JobClient

MAX_PORT = 65535


def blob_url_for(rpc_url: str | None, rpc_port: int) -> str:
    """The blob endpoint beside an RPC URL (same host, port + 3)."""
    from wallet.rpc import check_node_url

    if not rpc_url:
        return f"http://127.0.0.1:{rpc_port + BLOB_PORT_OFFSET}"
    parts = urlsplit(check_node_url(rpc_url))
    port = (parts.port or rpc_port) + BLOB_PORT_OFFSET
    if port > MAX_PORT:
        raise JobError(f"--rpc {shown_url(rpc_url)!r}: its port + 3 is no port: pass --blob-url")
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def _client(args: argparse.Namespace) -> JobClient:
    from wallet import cli as wcli
    from wallet.jobs import JobClient  # (the buyer's machinery: loaded by `pouw job` only)
    from wallet.rpc import RpcClient, RpcConnectionError, check_node_url, local_port, read_cookie

    network = wcli._network(args)  # noqa: SLF001 - shared option handling
    try:
        rpc = wcli._rpc(args, network)  # noqa: SLF001
    except RpcConnectionError:  # no cookie: the node is down (or elsewhere)
        if not getattr(args, "node_optional", False):
            raise
        # `list` still shows this datadir's products, each "node not reachable" (also
        # where no URL can be had: an rpc_port of 0 in the node's settings)
        try:
            rpc = RpcClient(wcli.default_rpc_url(args, network))
        except RpcConnectionError:
            rpc = RpcClient(f"http://127.0.0.1:{network.rpc_port}")
    if args.blob_url:
        blob = check_node_url(args.blob_url, "--blob-url", credentials=False)
    elif args.rpc:
        blob = blob_url_for(args.rpc, network.rpc_port)
    else:  # the local node of --datadir: its blob port
        port = local_port(wcli._datadir(args), network.name, network.rpc_port, "blob")  # noqa: SLF001
        blob = f"http://127.0.0.1:{port}"
    key: Any = None
    if args.command_needs_key == "later":  # unlocked only if a challenge or probe is sent

        def key() -> Any:
            return wcli._unlock(args, network).signing_key  # noqa: SLF001

    elif args.command_needs_key:
        key = wcli._unlock(args, network).signing_key  # noqa: SLF001
    datadir = wcli._datadir(args)  # noqa: SLF001
    # uploads take the node's RPC credentials (node/blobs.py): those the RPC client
    # uses (--rpc-user, the --rpc URL's, the cookie), else the datadir's cookie
    auth = rpc.credentials()
    if auth is None:
        try:
            auth = read_cookie(datadir, network.name)
        except RpcConnectionError:  # read_cookie's error for a missing or malformed cookie
            auth = None
    products = datadir / network.name / "products"
    return JobClient(key, network, rpc, blob, auth, manifest_dir=products)


NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every .npy file


def _load(path: Path, name: str) -> np.ndarray:
    import numpy as np  # (here: no other command needs it)

    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise JobError(
                    f"{path} is not a .npy file ({name} must be one: numpy.save(path, "
                    "matrix) writes it)"
                )
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot read {name} from {path}: {exc}") from None


def _print(args: argparse.Namespace, obj: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(obj))
        return
    for key, value in obj.items():
        print(f"{key}: {value}")


def cmd_quote(args: argparse.Namespace) -> int:
    q = _client(args).quote(args.m, args.k, args.n, min_parts=args.parts)
    coins = format_coins(q.suggested_bounty)
    if args.json:  # amounts in base units, as RPC gives them; the bounty also in coins
        _print(args, {
            "multiply_adds": q.multiply_adds, "parts": q.parts,
            "going_bounty_per_multiply_add": q.going_bounty_per_multiply_add,
            "suggested_bounty": q.suggested_bounty, "suggested_bounty_coins": coins,
            "network_multiply_adds_per_s": q.network_multiply_adds_per_s,
            "expected_wait_s": q.expected_wait_s, "tip_age_s": q.tip_age_s,
        })  # fmt: skip
        return 0
    if q.expected_wait_s is not None:
        wait = f"{q.expected_wait_s:.1f}"
    elif q.network_multiply_adds_per_s > 0 and q.tip_age_s is not None:
        wait = f"unknown: no block for {q.tip_age_s} s (is any miner running?)"
    else:
        wait = "unknown (no miner seen)"
    _print(args, {
        "multiply_adds": q.multiply_adds, "parts": q.parts,
        "going_bounty_per_multiply_add": f"{q.going_bounty_per_multiply_add:.6g} base units",
        # coins, as --bounty reads them (a bare 1 there is one coin, 10^8 base units)
        "suggested_bounty": f"{coins} coins ({q.suggested_bounty}u): submit --bounty {coins}",
        "network_multiply_adds_per_s": f"{q.network_multiply_adds_per_s:.3g}",
        "expected_wait_s": wait,
    })  # fmt: skip
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    check_fee(args.fee, args.max_fee)
    client = _client(args)
    a, b = _load(args.a, "A"), _load(args.b, "B")
    pid = client.submit(a, b, args.bounty, args.expiry, args.fee, min_parts=args.parts)
    plan = client.manifest(pid)
    parts = len(plan.job_ids) if plan is not None else 1
    if args.json:
        print(json.dumps({"product_id": pid, "parts": parts}))
        return 0
    print(pid)  # alone on stdout, for PID=$(pouw job submit ...)
    if args.parts > parts:
        print(f"--parts {args.parts}: this shape splits into {parts} part(s) at most (tiles "
              "and the noise rank set the smallest part)", file=sys.stderr)  # fmt: skip
    node = _same_node(args)
    a_arg, b_arg = shlex.quote(str(args.a)), shlex.quote(str(args.b))
    key = f" --password-file {shlex.quote(str(args.password_file))}" if args.password_file else ""
    print(
        f"submitted {parts} part(s), bounty {format_coins(args.bounty)} coins; "
        f"`pouw job status {pid} {node}` follows it; `pouw job result {pid} -o C.npy "
        f"--a {a_arg} --b {b_arg} --wait 600 {node}{key}` collects C",
        file=sys.stderr,
    )
    return 0


def _same_node(args: argparse.Namespace) -> str:
    """The options that point a later ``pouw job`` command at this node and wallet (a
    password in --rpc shown as ***: put it back, or use --rpc-user/--rpc-password)."""
    out = ["--network", args.network]
    for flag, value in (
        ("--datadir", args.datadir), ("--genesis-file", args.genesis_file),
        ("--rpc", args.rpc and shown_url(args.rpc)), ("--blob-url", args.blob_url),
        ("--wallet-file", args.wallet_file),
        ("--wallet", args.wallet if args.wallet != "default" else None),
    ):  # fmt: skip
        if value is not None:
            out += [flag, str(value)]
    return " ".join(shlex.quote(x) for x in out)


AMOUNT_FIELDS = ("bounty", "bond")  # base units in getjob's answer
TIME_FIELDS = ("expires", "claim_deadline", "window_end", "mtp")  # median time past, Unix s
HEIGHT_FIELDS = ("submitted", "committed_height")  # block heights


def _utc(unix_s: float) -> str:
    """A time as every text output of `pouw job` prints it (UTC, as the chain keeps it)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix_s))


def _state_words(job: dict[str, Any]) -> str:
    """A job's status for text output, saying when a claim lapsed: an open job with
    claims behind it had each of them lapse (their bonds went to the buyer), and a
    claimed job past its deadline reopens at a coming block."""
    state = str(job.get("status", "?"))
    claims = job.get("claims")
    if state == "open" and isinstance(claims, int) and claims > 0:
        return (f"open ({claims} claim(s) lapsed, their bonds paid to the buyer; "
                "waiting for another miner)")  # fmt: skip
    if state == "claimed" and job.get("claim_lapsed"):
        return "claimed (the claim lapsed: the part reopens for another miner in a coming block)"
    return state


def _readable(job: dict[str, Any]) -> dict[str, Any]:
    """A job as getjob gives it, with amounts in coins and times as UTC dates (the text
    output; --json keeps the node's numbers)."""
    out = dict(job)
    if "job_id" in out:
        out["status"] = _state_words(job)
    for key in AMOUNT_FIELDS:
        if isinstance(out.get(key), int):
            out[key] = f"{format_coins(out[key])} coins ({out[key]}u)"
    for key in TIME_FIELDS:
        if isinstance(out.get(key), int) and out[key] > 0:
            out[key] = _utc(out[key])
    for key in HEIGHT_FIELDS:
        if isinstance(out.get(key), int):
            out[key] = f"height {out[key]}"
    if isinstance(out.get("bounty_per_multiply_add"), int | float):
        out["bounty_per_multiply_add"] = f"{out['bounty_per_multiply_add']:g} base units"
    return out


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    info = client.status(client.full_id(args.product_id))
    if not args.json and "parts" in info:
        parts = info.pop("parts")
        info["counts"] = ", ".join(f"{count} {state}" for state, count in info["counts"].items())
        _print(args, info)
        for job in parts:
            print(f"  {job['job_id']}: {_state_words(job)}")
        return 0
    _print(args, info if args.json else _readable(info))
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    client = _client(args)
    args.product_id = client.full_id(args.product_id)
    a, b = _load(args.a_file, "A"), _load(args.b_file, "B")
    client.check_operands(args.product_id, a, b)  # wrong files: said now, not after a wait
    if args.wait:  # what happens meanwhile, on stderr (stdout stays the result)
        client.wait(args.product_id, args.wait, progress=lambda line: print(line, file=sys.stderr))
    res = client.result(args.product_id, a, b, challenge=not args.no_challenge)
    out: dict[str, Any] = {"verified": res.verified}
    if res.verified:
        path = args.output if args.output.suffix == ".npy" else Path(f"{args.output}.npy")
        try:
            import numpy as np

            np.save(path, res.c)  # (numpy.save adds .npy to a name without it)
        except OSError as exc:
            raise JobError(
                f"C is verified but cannot be written to {path} ({exc.strerror or exc}): "
                "give -o a path in a folder that exists and that you may write to"
            ) from None
        out["output"] = str(path)
    if res.actions:
        out["actions"] = res.actions
    if not args.json and not res.verified:
        out["next"] = (
            f"a challenge or probe went out: after its window `pouw job status "
            f"{args.product_id}` shows each part refunded (its bounty back) or paid"
            if res.challenge_txid
            else "nothing was sent: see the actions above"
        )
    _print(args, out)
    return 0 if res.verified else 1


def cmd_list(args: argparse.Namespace) -> int:
    rows = _client(args).products(args.limit)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no products submitted from this datadir yet (`pouw job submit` keeps them)")
        return 0
    for row in rows:
        when = _utc(row["submitted"])
        if "m" not in row:  # an unreadable manifest
            print(f"{row['product_id']}  {when}  {row['status']}")
            continue
        counts = row.get("counts", {})
        parts = ", ".join(f"{v} {k}" for k, v in counts.items()) if len(counts) > 1 else ""
        print(
            f"{row['product_id']}  {when}  {row['m']}x{row['k']}x{row['n']}  "
            f"{row['parts']} part(s)  bounty {format_coins(row['bounty'])}  {row['status']}"
            + (f" ({parts})" if parts else "")
        )
    return 0


def cmd_reclaim(args: argparse.Namespace) -> int:
    check_fee(args.fee, args.max_fee)
    client = _client(args)
    txids = client.reclaim(client.full_id(args.product_id), args.fee)
    _print(args, {"reclaim_txids": txids if args.json else ", ".join(txids)})
    return 0


def _run(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from chain.network import NetworkError
        from wallet.amount import AmountError
        from wallet.cli import say_failure
        from wallet.keystore import WalletError
        from wallet.rpc import NodeUrlError, RpcConnectionError, RpcError

        try:
            return int(handler(args))
        except BrokenPipeError:  # stdout closed early: pouw's main says nothing
            raise
        except NodeUrlError as exc:  # a flag's value: a usage error, as for `pouw rpc`
            say_failure(args, str(exc), exc)
            return 2
        except RpcError as exc:
            say_failure(args, f"the node refused: {exc}", exc)
            return 1
        except (JobError, WalletError, AmountError, RpcConnectionError, NetworkError,
                OSError) as exc:  # fmt: skip
            say_failure(args, str(exc), exc)
            return 1

    return run


def add_job_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``job`` and its subcommands; each sets ``handler`` (returns an int)."""
    from wallet.cli import _add_common, _add_password, add_max_fee

    job = subparsers.add_parser("job", help="compute market: submit products, fetch results")
    sub = job.add_subparsers(dest="job_command", required=True)

    def common(p: argparse.ArgumentParser, key: bool | str) -> None:
        """``key``: the command signs (True), may sign ("later": unlocked only then), or
        only reads (False)."""
        _add_common(p, rpc=True)
        if key:
            _add_password(p)
        else:  # (one set of flags serves every job command; this one unlocks nothing)
            p.add_argument("--password-file", type=Path, help=argparse.SUPPRESS)
        p.add_argument("--blob-url", help="the node's blob endpoint (default rpc port + 3)")
        p.set_defaults(command_needs_key=key)

    quote = sub.add_parser("quote", help="going rate, suggested bounty and wait for a shape")
    common(quote, False)
    for dim in ("m", "k", "n"):
        quote.add_argument(dim, type=int)
    quote.add_argument("--parts", type=positive_arg, default=1,
                       help="as submit's --parts: the quote is for the same cut")  # fmt: skip
    quote.set_defaults(handler=_run(cmd_quote))

    submit = sub.add_parser("submit", help="post A . B with a bounty (split into jobs)")
    common(submit, True)
    submit.add_argument("a", type=Path, metavar="A.npy")
    submit.add_argument("b", type=Path, metavar="B.npy")
    submit.add_argument("--bounty", type=amount_arg, required=True,
                        help="escrowed reward for the whole product: coins (1.5) or base "
                             "units (150000000u)")  # fmt: skip
    submit.add_argument("--expiry", type=whole_arg, default=DEFAULT_EXPIRY_S,
                        help="seconds the jobs stay claimable: 60 to the network's "
                             "max_open_s")  # fmt: skip
    submit.add_argument("--parts", type=positive_arg, default=1,
                        help="cut into at least this many jobs (one per miner), as far as "
                             "the shape allows (tile and noise-rank multiples)")  # fmt: skip
    submit.add_argument(
        "--fee",
        type=amount_arg,
        default=DEFAULT_JOB_FEE,
        help="fee of each transaction: coins, or base units with a u suffix",
    )
    add_max_fee(submit)
    submit.set_defaults(handler=_run(cmd_submit))

    status = sub.add_parser("status", help="a product's (or a job's) state on chain")
    common(status, False)
    status.add_argument("product_id")
    status.set_defaults(handler=_run(cmd_status))

    result = sub.add_parser("result", help="download and check C; challenge or probe if bad")
    common(result, "later")  # the wallet is unlocked only to challenge or probe
    result.add_argument("product_id")
    result.add_argument("-o", "--output", type=Path, required=True, metavar="C.npy")
    result.add_argument("--a", dest="a_file", type=Path, required=True, metavar="A.npy")
    result.add_argument("--b", dest="b_file", type=Path, required=True, metavar="B.npy")
    result.add_argument("--wait", type=seconds_arg, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for every part to deliver")  # fmt: skip
    result.add_argument("--no-challenge", action="store_true", help="only report a bad C")
    result.set_defaults(handler=_run(cmd_result))

    listing = sub.add_parser("list", help="products submitted from this datadir, newest first")
    common(listing, False)
    listing.add_argument("--limit", type=positive_arg, default=DEFAULT_LIST_LIMIT,
                         help="show at most this many (each part is one RPC call)")  # fmt: skip
    listing.set_defaults(handler=_run(cmd_list), node_optional=True)

    reclaim = sub.add_parser("reclaim", help="cancel the parts nobody has claimed")
    common(reclaim, True)
    reclaim.add_argument("product_id")
    reclaim.add_argument("--fee", type=amount_arg, default=DEFAULT_JOB_FEE)
    add_max_fee(reclaim)
    reclaim.set_defaults(handler=_run(cmd_reclaim))
    return job
