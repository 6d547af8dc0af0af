"""Restartable per-stage result files.

``{work}/{stage}.jsonl``: a header line ``{"stage", "fingerprint", "format"}``, then one JSON record
per processed item, appended and flushed as soon as the item is done.  ``{work}/{stage}.done``:
written (atomically) once every item of the stage is processed.  The fingerprint hashes the
stage's settings and the fingerprint of the stage before it, so a changed recipe invalidates
exactly the stages it affects and every stage after them; their files are then discarded and
recomputed.  A record half-written by a killed process (a last line without its newline) is cut
off on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "StageFile", "fingerprint"]

log = logging.getLogger(__name__)

FORMAT = "t2vturbo-curate/v1"


def fingerprint(previous: str, settings: Any) -> str:
    """sha256 (16 hex digits) of ``previous`` and the JSON of ``settings``."""
    blob = json.dumps([FORMAT, previous, settings], sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StageFile:
    """The records of one stage (see the module docstring)."""

    def __init__(self, work_dir: Path, stage: str, fp: str):
        self.stage = stage
        self.fingerprint = fp
        self.path = Path(work_dir) / f"{stage}.jsonl"
        self.done_path = Path(work_dir) / f"{stage}.done"
        self.records: dict[str, dict[str, Any]] = {}
        self._fh = None
        self._load()

    # ---- loading ---------------------------------------------------------------------------
    def _discard(self, why: str) -> None:
        log.info("stage %s: %s; recomputing it", self.stage, why)
        for p in (self.done_path, self.path):
            if p.exists():
                p.unlink()

    def _load(self) -> None:
        if not self.path.exists():
            if self.done_path.exists():
                self.done_path.unlink()
            return
        with open(self.path, "rb") as f:
            data = f.read()
        good = data.rfind(b"\n") + 1  # a last line without its newline was cut by a crash
        lines = data[:good].splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("fingerprint") != self.fingerprint:
            self._discard(
                "settings changed since its files were written" if header else "unreadable stage file"
            )
            return
        if good < len(data):
            log.warning("stage %s: dropping a half-written record at the end of %s", self.stage, self.path)
            with open(self.path, "r+b") as f:
                f.truncate(good)
        for n, ln in enumerate(lines[1:], 2):
            try:
                rec = json.loads(ln)
            except ValueError:
                log.warning("stage %s: skipping unreadable line %d of %s", self.stage, n, self.path)
                continue
            self.records[str(rec["id"])] = rec

    @property
    def complete(self) -> bool:
        if not self.done_path.is_file():
            return False
        try:
            done = json.loads(self.done_path.read_text())
        except ValueError:
            return False
        return done.get("fingerprint") == self.fingerprint and done.get("records") == len(self.records)

    # ---- writing ---------------------------------------------------------------------------
    def append(self, rec: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._fh = open(self.path, "a", encoding="utf-8")
            if new:
                header = {"stage": self.stage, "fingerprint": self.fingerprint, "format": FORMAT}
                self._fh.write(json.dumps(header) + "\n")
        self._fh.write(json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.records[str(rec["id"])] = rec

    def finish(self) -> None:
        """Mark the stage complete (after every item was appended)."""
        if self._fh is None and not self.path.exists():
            self.append_header_only()
        if self._fh is not None:
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
        tmp = self.done_path.with_name(self.done_path.name + f".tmp-{os.getpid()}")
        tmp.write_text(
            json.dumps({"stage": self.stage, "fingerprint": self.fingerprint, "records": len(self.records)})
        )
        os.replace(tmp, self.done_path)

    def append_header_only(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"stage": self.stage, "fingerprint": self.fingerprint, "format": FORMAT}
        self.path.write_text(json.dumps(header) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
