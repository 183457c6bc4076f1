"""Generate tests/vectors/state.json, the frozen state-root test vectors.

Run from anywhere: ``python tests/vectors/gen_state.py`` rewrites the file;
``--check`` exits non-zero if the committed file differs from what the code produces.
tests/test_state_tree.py recomputes every vector from the code and also checks it
against an independent, from-the-spec implementation. Regenerate only for a
deliberate, documented change of the state root (docs/PROTOCOL.md, "State root").
All bytes are lowercase hex.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chain.state_hash import leaf_hash, state_path, value_digest  # noqa: E402
from chain.state_tree import StateTree  # noqa: E402

OUT = Path(__file__).with_name("state.json")


def _maps() -> list[tuple[str, dict[bytes, bytes]]]:
    return [
        ("empty state", {}),
        ("one key", {b"alice": b"\x00\x00\x00\x00\x00\x00\x00\x64"}),
        ("empty key and empty value", {b"": b""}),
        ("two keys", {b"alice": b"100", b"bob": b"200"}),
        (
            "eight keys, 64-byte key, 1 KiB value",
            {
                **{b"acct/%d" % i: b"balance=%d" % (i * 1000) for i in range(6)},
                b"\xff" * 64: b"max-length key",
                b"job/1": bytes(range(256)) * 4,
            },
        ),
        ("forty keys", {b"k%02d" % i: b"v%d" % (i * i) for i in range(40)}),
    ]


def build() -> dict[str, Any]:
    maps = []
    for note, m in _maps():
        maps.append(
            {
                "note": note,
                "items": [[k.hex(), v.hex()] for k, v in sorted(m.items())],
                "root": StateTree.build(m.items()).root.hex(),
            }
        )
    primitives = {
        "key": b"alice".hex(),
        "value": b"100".hex(),
        "path": state_path(b"alice").hex(),
        "value_digest": value_digest(b"100").hex(),
        "leaf": leaf_hash(state_path(b"alice"), value_digest(b"100")).hex(),
    }
    big = dict(_maps()[-1][1])
    tree = StateTree.build(big.items())
    proofs = []
    for key in (b"k07", b"absent"):
        proofs.append(
            {
                "root": tree.root.hex(),
                "key": key.hex(),
                "value": None if key not in big else big[key].hex(),
                "proof": tree.prove(key).to_bytes().hex(),
            }
        )
    return {
        "description": "pouw state root vectors: maps, their roots, proofs (see gen_state.py)",
        "primitives": primitives,
        "maps": maps,
        "proofs": proofs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    text = json.dumps(build(), indent=1) + "\n"
    if ap.parse_args().check:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
