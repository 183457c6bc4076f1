"""compute/numba_cache.py: cached kernels are dropped when a module they inline changes."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compute import numba_cache
from compute.numba_cache import FED_MODULES, STAMP_NAME, _drop_if_stale

ROOT = Path(__file__).resolve().parent.parent


def _project_imports(path: Path) -> set[str]:
    """The compute/ and consensus/ modules ``path`` imports at module level (a kernel
    sees module-level names only), as repo-relative files."""
    modules: list[str] = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
    return {
        m.replace(".", "/") + ".py" for m in modules
        if m.split(".")[0] in ("compute", "consensus") and m != "compute.numba_cache"
    }  # fmt: skip


def test_every_module_feeding_a_cached_kernel_is_fingerprinted() -> None:
    """A module with cached kernels that imports another project module (whose code or
    constants its kernels may freeze) must have that module in FED_MODULES and must call
    drop_stale() before its first kernel is defined."""
    cached = [
        p for p in sorted((ROOT / "compute").glob("*.py"))
        if "cache=True" in p.read_text() and p.name != "gen_lanes.py"
    ]  # fmt: skip
    assert {p.name for p in cached} >= {"kernels.py", "fasthash.py", "int8_kernels.py"}
    for path in cached:
        imports = _project_imports(path)
        assert imports <= set(FED_MODULES), (path.name, imports - set(FED_MODULES))
        if imports:
            text = path.read_text()
            assert 0 < text.find("\ndrop_stale()") < text.find("@nb.njit"), path.name


def test_the_cache_is_found_under_numba_0_60_names_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Numba 0.60 and 0.61 (pyproject allows them) name the locators with a leading
    underscore."""
    from numba.core import caching

    expected = numba_cache.cache_dir()
    for name in numba_cache._LOCATORS:
        monkeypatch.setattr(caching, "_" + name, getattr(caching, name), raising=False)
        monkeypatch.delattr(caching, name)
    assert numba_cache.cache_dir() == expected


def test_entries_are_dropped_only_when_the_sources_differ(tmp_path: Path) -> None:
    entries = ["kernels.row_leaves-10.py311.nbi", "kernels.row_leaves-10.py311.1.nbc"]
    other = tmp_path / "kernels.cpython-311.pyc"
    other.write_bytes(b"pyc")
    # A fresh cache: stamped, nothing to drop.
    assert _drop_if_stale(tmp_path, "a") is False
    assert (tmp_path / STAMP_NAME).read_text().strip() == "a"
    for name in entries:
        (tmp_path / name).write_bytes(b"x")
    assert _drop_if_stale(tmp_path, "a") is False  # same sources: kept
    assert all((tmp_path / name).exists() for name in entries)
    assert _drop_if_stale(tmp_path, "b") is True  # other sources: dropped, restamped
    assert not any((tmp_path / name).exists() for name in entries) and other.exists()
    assert (tmp_path / STAMP_NAME).read_text().strip() == "b"
    # Entries without a stamp (written before this guard existed): of unknown sources.
    (tmp_path / STAMP_NAME).unlink()
    (tmp_path / entries[0]).write_bytes(b"x")
    assert _drop_if_stale(tmp_path, "b") is True and not (tmp_path / entries[0]).exists()


def test_the_fingerprint_covers_every_fed_module(tmp_path: Path) -> None:
    for name in FED_MODULES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    base = numba_cache.sources_fingerprint(tmp_path)
    assert base == numba_cache.sources_fingerprint(ROOT)
    for name in FED_MODULES:
        original = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(original + b"\n")
        assert numba_cache.sources_fingerprint(tmp_path) != base, name
        (tmp_path / name).write_bytes(original)


# A kernel of its own beside the copied modules: it inlines sha256_lanes.compress as
# kernels.py and fasthash.py do, and compiles in about a second.
_PROBE = """
import numba as nb
import numpy as np

from compute.numba_cache import drop_stale
from compute.sha256_lanes import BUFFER_WORDS, compress

drop_stale()


@nb.njit(cache=True)
def compress_once(buf):
    compress(buf)


buf = np.arange(BUFFER_WORDS, dtype=np.uint32)
compress_once(buf)
print(buf.tobytes().hex()[-64:])
"""


def test_a_changed_intrinsic_is_not_served_from_an_old_cache(tmp_path: Path) -> None:
    """The real failure: a copy of the tree runs a cached kernel that inlines
    sha256_lanes.py's compression, then sha256_lanes.py alone changes (one round
    constant). Without the guard Numba loads the old machine code, keyed on the
    kernel's own file only, and prints the old state (checked by hand: it does)."""
    for package in ("compute", "consensus"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    (tmp_path / "compute" / "probe.py").write_text(_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = str(tmp_path)

    def state() -> str:
        out = subprocess.run([sys.executable, "-m", "compute.probe"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        return out.stdout.strip()

    first = state()
    assert state() == first  # the same sources: the same answer (from the cache)
    assert any(p.suffix == ".nbi" for p in (tmp_path / "compute" / "__pycache__").iterdir())
    lanes = tmp_path / "compute" / "sha256_lanes.py"
    assert "0x428A2F98" in lanes.read_text()
    lanes.write_text(lanes.read_text().replace("0x428A2F98", "0x428A2F99", 1))
    assert state() != first
