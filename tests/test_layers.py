"""The packages import one way (consensus <- compute, consensus <- chain <- p2p <- node;
wallet beside p2p) and no module imports itself back through others at load time.

A lower layer that needs something of a higher one takes a small Protocol: an import
of ``node`` from ``p2p`` is a failure here even under ``TYPE_CHECKING`` or inside a
function.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package -> the other packages of ours it may import
MAY_IMPORT: dict[str, set[str]] = {
    "consensus": set(),
    "compute": {"consensus"},
    "chain": {"consensus"},
    "p2p": {"consensus", "compute", "chain"},
    "wallet": {"consensus", "compute", "chain"},
    "node": {"consensus", "compute", "chain", "p2p", "wallet"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in MAY_IMPORT:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return []


def _load_time_imports(tree: ast.Module) -> list[str]:
    """What the module imports when it is loaded: module-level statements (and those in
    a module-level try or if), not a ``TYPE_CHECKING`` block, not inside functions."""
    names: list[str] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        stmt = todo.pop()
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            todo.extend(stmt.orelse)
            continue
        if isinstance(stmt, ast.If):
            todo.extend([*stmt.body, *stmt.orelse])
        elif isinstance(stmt, ast.Try):
            todo.extend([*stmt.body, *stmt.orelse, *stmt.finalbody])
            for handler in stmt.handlers:
                todo.extend(handler.body)
        names.extend(_imported(stmt))
    return names


def test_packages_import_one_way() -> None:
    wrong = []
    for name, path in _modules().items():
        package = name.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            for imported in _imported(node):
                other = imported.split(".")[0]
                if other in MAY_IMPORT and other != package and other not in MAY_IMPORT[package]:
                    wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {
        name: {dep for dep in _load_time_imports(ast.parse(path.read_text())) if dep in modules}
        for name, path in modules.items()
    }
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not circles, [" -> ".join(c) for c in circles]


def test_the_checks_see_a_circle_and_a_wrong_way_import() -> None:
    """The two checks above find what they look for (on made-up modules)."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import chain.tx\n"
        "if TYPE_CHECKING:\n"
        "    import node.service\n"
        "try:\n"
        "    from chain import state\n"
        "except ImportError:\n"
        "    pass\n"
        "def f():\n"
        "    import p2p.peer\n"
    )
    assert sorted(_load_time_imports(tree)) == ["chain", "chain.state", "chain.tx", "typing",
                                                "typing.TYPE_CHECKING"]  # fmt: skip
    every = {name for node in ast.walk(tree) for name in _imported(node)}
    assert {"node.service", "p2p.peer"} <= every


def test_the_command_line_starts_without_the_chain_and_the_kernels() -> None:
    """``pouw wallet ...``, ``pouw miner --help`` and the parser of every command load
    neither the chain's state (LevelDB, the block rules) nor Numba's kernels: those are
    most of a second of every wallet command's start. Nor NumPy (85 ms), asyncio, the
    buyer's machinery, pydantic or pycryptodome: only the commands that use them do. A
    handler imports what it needs."""
    import subprocess
    import sys

    heavy = [
        "chain.chainstate", "chain.storage", "numba", "node.service", "node.remote_market",
        "numpy", "asyncio", "wallet.jobs", "pydantic", "Crypto",
    ]  # fmt: skip
    probe = (
        "import sys, node.cli; node.cli.build_parser(); "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60,
        check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]", out.stdout
