"""docs/RPC.md against what the node serves: every method, its params (names, order,
optional with default), admin marks and categories, and every error code the server
can answer. The served side comes from the ``help`` method of a real node."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from node.rpc import errors
from tests.test_rpc_util import Harness, run_node

DOC = Path(__file__).resolve().parent.parent / "docs" / "RPC.md"
# A method's entry: `name(params)`, optionally marked **admin**; one in parentheses is
# a reference to an entry elsewhere.
SIGNATURE = re.compile(r"(?<!\()`([a-z]+)\(([^)`]*)\)`( \*\*admin\*\*)?")
# Section headings of "## Methods" and the categories `help` files methods under.
SECTIONS = {
    "Chain": {"chain"},
    "Accounts and transactions": {"accounts"},
    "Mining": {"mining"},
    "Compute market": {"market"},
    "Network and control": {"network", "control"},
    "WebSocket subscriptions (`/ws`)": {"control"},
}


def logical_lines(text: str) -> list[str]:
    """Lines with a bullet's indented continuation lines joined on."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("  ") and out and out[-1].startswith("- "):
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return out


def parse_args(args: str) -> list[tuple[str, bool, Any]]:
    """`a, b?=1, c?="x"` -> [(name, required, default)], defaults read as JSON."""
    params = []
    for arg in filter(None, (a.strip() for a in args.split(","))):
        pname, optional, default = arg.partition("?=")
        params.append((pname, not optional, json.loads(default) if optional else None))
    return params


def documented() -> dict[str, dict[str, Any]]:
    """name -> {args (the text between the parentheses), admin, section} from RPC.md."""
    out: dict[str, dict[str, Any]] = {}
    section = None
    in_methods = False
    for line in logical_lines(DOC.read_text()):
        if line.startswith("## "):
            in_methods = line in ("## Methods", "## WebSocket subscriptions (`/ws`)")
            section = line[3:] if line.startswith("## WebSocket") else None
            continue
        if line.startswith("### "):
            section = line[4:]
            continue
        if not in_methods:
            continue
        for name, args, admin in SIGNATURE.findall(line):
            assert name not in out, f"{name} documented twice"
            out[name] = {"args": args, "admin": bool(admin), "section": section}
    return out


def test_rpc_md_matches_the_served_methods(tmp_path: Path) -> None:
    doc = documented()

    async def body(h: Harness) -> None:
        by_category = await h.result("help")
        served = {m: cat for cat, names in by_category.items() for m in names}
        assert set(doc) == set(served), {
            "served, not documented": sorted(set(served) - set(doc)),
            "documented, not served": sorted(set(doc) - set(served)),
        }
        for name, category in served.items():
            info = await h.result("help", name)
            entry = doc[name]
            assert category in SECTIONS[entry["section"]], (name, category, entry["section"])
            assert entry["admin"] == info["admin"], f"{name}: admin mark"
            want = [(p["name"], p["required"], p["default"]) for p in info["params"]]
            assert parse_args(entry["args"]) == want, name

    run_node(tmp_path, body)


def test_rpc_md_lists_every_error_code_the_server_uses() -> None:
    text = DOC.read_text()
    table = set(int(c) for c in re.findall(r"^\| (-\d+) \|", text, re.MULTILINE))
    sources = "".join(p.read_text() for p in (Path(errors.__file__).parent).glob("*.py"))
    used = {
        value for name, value in vars(errors).items()
        if name.isupper() and isinstance(value, int)
        and re.search(rf"\b{name}\b", sources.replace(f"{name} = ", "")) is not None
    }  # fmt: skip
    assert used <= table, sorted(used - table)
