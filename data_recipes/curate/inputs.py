"""Input listing: raw video paths + captions from input metadata, and the chunk split.

* A folder: every ``*.mp4 / *.mov / *.mkv / *.webm / *.avi`` below it (recursive, suffix case
  insensitive), sorted by relative path.
* A list file: one path per line (blank lines and ``#`` comments skipped), or JSONL
  (``.jsonl`` / ``.json`` suffix, or a first entry starting with ``{``): ``{"path": ..., "caption": ...}``
  per line.  Relative paths are relative to the list file's folder.

Caption of a video, first found wins: the list file's ``caption`` (``source: "list"``), a sidecar
``{stem}.txt`` next to the video (``"txt"``), a sidecar ``{stem}.json`` with ``{"caption": ...}``
(``"json"``).  Blank captions count as none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VIDEO_SUFFIXES", "InputVideo", "chunk_slice", "list_inputs", "sidecar_caption"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class InputVideo:
    path: str  # absolute
    caption: str | None
    caption_source: str | None  # list | txt | json | None


def sidecar_caption(video: Path) -> tuple[str | None, str | None]:
    """``(caption, source)`` from ``{stem}.txt`` or ``{stem}.json`` next to ``video``."""
    txt = video.with_suffix(".txt")
    if txt.is_file():
        cap = txt.read_text(encoding="utf-8", errors="replace").strip()
        if cap:
            return cap, "txt"
    js = video.with_suffix(".json")
    if js.is_file():
        try:
            meta = json.loads(js.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        cap = meta.get("caption") if isinstance(meta, dict) else None
        if isinstance(cap, str) and cap.strip():
            return cap.strip(), "json"
    return None, None


def _entry(path: Path, caption: object) -> InputVideo:
    if isinstance(caption, str) and caption.strip():
        return InputVideo(str(path), caption.strip(), "list")
    cap, src = sidecar_caption(path)
    return InputVideo(str(path), cap, src)


def _list_file(path: Path) -> list[InputVideo]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    jsonl = path.suffix.lower() in (".jsonl", ".json") or (bool(lines) and lines[0].startswith("{"))
    base = path.parent
    out = []
    for n, ln in enumerate(lines, 1):
        if jsonl:
            try:
                rec = json.loads(ln)
            except ValueError as e:
                raise ValueError(f"{path}: entry {n} is not valid JSON ({e}): {ln[:120]!r}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
                raise ValueError(f'{path}: entry {n} needs a "path" string: {ln[:120]!r}')
            p, cap = rec["path"], rec.get("caption")
        else:
            p, cap = ln, None
        q = Path(p).expanduser()
        out.append(_entry((q if q.is_absolute() else base / q).resolve(), cap))
    return out


def list_inputs(input_path: str | Path) -> list[InputVideo]:
    """All input videos in their global order (see the module docstring)."""
    root = Path(input_path).expanduser().resolve()
    if root.is_dir():
        vids = [p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
        vids.sort(key=lambda p: p.relative_to(root).as_posix())
        return [_entry(p, None) for p in vids]
    if root.is_file():
        return _list_file(root)
    raise FileNotFoundError(f"input {str(input_path)!r}: no such file or directory")


def chunk_slice(n: int, index: int, count: int) -> range:
    """Global indices of chunk ``index`` of ``count``: contiguous, sizes differ by at most one."""
    return range(index * n // count, (index + 1) * n // count)
