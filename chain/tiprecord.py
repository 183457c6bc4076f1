"""The tip record: a small file, outside LevelDB, naming the last tip the node reported.

``<datadir>/<network>/chain.tip`` holds one line, ``height hash work`` (work in hex),
rewritten (temporary file + rename) after the chain database has durably moved its
tip. The database write comes first, so the record is never ahead of a healthy
database; when it is ahead at start-up, LevelDB lost writes it had acknowledged
(a truncated or damaged log or table) and the node says so instead of silently
serving a shorter chain.

The record is advisory: one that cannot be read is ignored with a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pouw.chain")

TIP_RECORD_NAME = "chain.tip"
# One line of at most ~20 + 64 + 128 characters; anything longer is not a tip record.
MAX_TIP_RECORD_BYTES = 512


@dataclass(frozen=True)
class ReportedTip:
    height: int
    hash: bytes
    work: int


class TipRecord:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False

    def read(self) -> ReportedTip | None:
        """The recorded tip, or None (no record, or one that does not parse)."""
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_TIP_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("ignoring the tip record %s: %s", self.path, exc.strerror or exc)
            return None
        parsed = parse_tip_record(raw)
        if parsed is None:
            log.warning("ignoring the tip record %s: not 'height hash work'", self.path)
        return parsed

    def write(self, height: int, block_hash: bytes, work: int) -> None:
        """Record the tip (no fsync: a stale record after a power cut is only older)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(f"{height} {block_hash.hex()} {work:x}\n", encoding="ascii")
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._warned:  # the database write succeeded; this one only helps
                log.warning("cannot write the tip record %s: %s", self.path, exc.strerror or exc)
                self._warned = True


def parse_tip_record(raw: bytes) -> ReportedTip | None:
    if len(raw) > MAX_TIP_RECORD_BYTES:
        return None
    try:
        height_text, hash_text, work_text = raw.decode("ascii").split()
        height, block_hash, work = int(height_text), bytes.fromhex(hash_text), int(work_text, 16)
    except ValueError:  # also UnicodeDecodeError and a wrong number of fields
        return None
    if height < 0 or work < 0 or len(block_hash) != 32:
        return None
    return ReportedTip(height, block_hash, work)
