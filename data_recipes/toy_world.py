"""Write procedural toy-world clips as webdataset tar shards.

    python -m data_recipes.toy_world --out DIR --num-clips N --shard-size S \\
        --frames 8 --size 32 --seed 0 [--textured-fraction 0.3] [--fps 8] [--world toy|crowd]

Output (the project's standard shard layout, read by
:class:`t2vturbo.data.shards.ClipStream`)::

    DIR/toy-000000.tar, DIR/toy-000001.tar, ...   # ceil(N / S) shards, S samples each (last may be short)
        {key}.mp4    H.264 clip of render_clip(...), lossless (crf 0, yuv444p), `frames` x `size` x `size`
        {key}.txt    caption, e.g. "a red circle moving left" (--world crowd: "two red balls moving left fast")
        {key}.json   {"fps", "num_frames", "size", "height", "width", "source": the world's name,
                      "attributes": ToyAttributes.to_dict(), "textured", "bg_seed", "index", "seed"}
    DIR/index.json   {"shards", "urls" (brace pattern), "count", "seed", "command", "args", "shard_info", ...}

Sample ``i`` (key ``f"{i:08d}"``) is a pure function of ``(seed, i)``: its
attributes and background seed are the first draws of
``numpy.random.default_rng([seed, i])`` exactly as in
:meth:`t2vturbo.data.toy.ToyClipDataset.attributes` (so they match
``ToyClipDataset(seed=seed).attributes(i)``); the next draw decides whether the
background is textured (probability ``textured_fraction``).

Determinism: the tar members carry a fixed mtime / owner, and x264 is
deterministic for a given ffmpeg build, so re-running with the same arguments
reproduces the same bytes (only a different ffmpeg version could change the
encoder metadata / bitstream; the decoded frames stay within the lossless
colour-conversion round-off).

Idempotent: if ``DIR/index.json`` records the same arguments and every shard it
lists still exists with the recorded size, nothing is rewritten.  Shards are
written to a temporary name and renamed, and ``index.json`` is written last,
so an interrupted run is simply redone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from t2vturbo.cli import prog
from t2vturbo.data.video_io import write_video
from t2vturbo.data.worlds import get_world

__all__ = ["FORMAT", "SHARD_PATTERN", "clip_sample", "main", "write_toy_shards"]

log = logging.getLogger(__name__)

#: Version tag of this recipe's output (bump when the bytes written change).
FORMAT = "t2vturbo-toy-shards/v1"
#: Shard file names (``.format(shard_index)``).
SHARD_PATTERN = "toy-{:06d}.tar"
#: x264 settings: lossless, full-chroma (decord decodes it; error <= 1 uint8 level).
CRF = 0
PIXEL_FORMAT = "yuv444p"
#: Fixed tar member mtime (reproducible shards).
_TAR_MTIME = 0.0


def _encode_mp4(clip: np.ndarray, fps: float, tmpdir: str) -> bytes:
    path = os.path.join(tmpdir, "clip.mp4")
    write_video(path, clip, fps=fps, crf=CRF, pixel_format=PIXEL_FORMAT)
    with open(path, "rb") as f:
        data = f.read()
    os.remove(path)
    return data


def clip_sample(
    index: int,
    frames: int,
    size: int,
    seed: int,
    textured_fraction: float,
    fps: float,
    tmpdir: str | None = None,
    world: str = "toy",
) -> dict[str, Any]:
    """The webdataset sample (``__key__``, ``mp4``, ``txt``, ``json`` as bytes) for clip ``index`` of the toy
    world ``world`` (:data:`t2vturbo.data.worlds.WORLDS`)."""
    w = get_world(world)
    rng = np.random.default_rng([int(seed), int(index)])
    attrs = w.sample_attributes(rng, size=size, num_frames=frames)
    bg_seed = int(rng.integers(2**31 - 1))  # same two draws as the world's dataset .attributes(i)
    textured = bool(rng.random() < textured_fraction)
    clip = w.render_clip(attrs, frames, size, textured=textured, seed=bg_seed)
    meta = {
        "fps": float(fps),
        "num_frames": int(frames),
        "size": int(size),
        "height": int(size),
        "width": int(size),
        "source": w.name,
        "attributes": attrs.to_dict(),
        "textured": textured,
        "bg_seed": bg_seed,
        "index": int(index),
        "seed": int(seed),
    }
    if tmpdir is None:
        with tempfile.TemporaryDirectory(prefix="toy_mp4_") as d:
            mp4 = _encode_mp4(clip, fps, d)
    else:
        mp4 = _encode_mp4(clip, fps, tmpdir)
    return {
        "__key__": f"{int(index):08d}",
        "mp4": mp4,
        "txt": w.caption(attrs).encode("utf-8"),
        "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
    }


def _args_record(
    num_clips, shard_size, frames, size, seed, textured_fraction, fps, world="toy"
) -> dict[str, Any]:
    # "world" only when not the toy world, so the toy shards' records (and their up-to-date check) are unchanged
    return {
        **({"world": world} if world != "toy" else {}),
        "format": FORMAT,
        "num_clips": int(num_clips),
        "shard_size": int(shard_size),
        "frames": int(frames),
        "size": int(size),
        "seed": int(seed),
        "textured_fraction": float(textured_fraction),
        "fps": float(fps),
        "crf": CRF,
        "pixel_format": PIXEL_FORMAT,
    }


def _command(out: Path, rec: dict[str, Any]) -> str:
    argv = [
        "python", "-m", "data_recipes.toy_world",
        "--out", str(out),
        "--num-clips", str(rec["num_clips"]),
        "--shard-size", str(rec["shard_size"]),
        "--frames", str(rec["frames"]),
        "--size", str(rec["size"]),
        "--seed", str(rec["seed"]),
        "--textured-fraction", repr(rec["textured_fraction"]),
        "--fps", repr(rec["fps"]),
    ] + (["--world", rec["world"]] if "world" in rec else [])  # fmt: skip
    return shlex.join(argv)


def _load_index(out: Path) -> dict[str, Any] | None:
    try:
        with open(out / "index.json") as f:
            idx = json.load(f)
        return idx if isinstance(idx, dict) else None
    except (OSError, ValueError):
        return None


def _index_is_complete(out: Path, idx: dict[str, Any], rec: dict[str, Any]) -> bool:
    if idx.get("args") != rec:
        return False
    info = idx.get("shard_info")
    if not isinstance(info, list) or not info:
        return False
    for sh in info:
        p = out / str(sh.get("name", ""))
        if not p.is_file() or p.stat().st_size != sh.get("bytes"):
            return False
    return True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_toy_shards(
    out: str | os.PathLike,
    num_clips: int,
    shard_size: int,
    frames: int = 8,
    size: int = 32,
    seed: int = 0,
    textured_fraction: float = 0.3,
    fps: float = 8,
    world: str = "toy",
) -> list[str]:
    """Write ``num_clips`` clips of the toy world ``world`` into ``out/toy-{000000..}.tar`` (+ ``out/index.json``).

    Returns the absolute shard paths in order.  Skips all work when
    ``out/index.json`` already records the same arguments and its shards are
    intact (see the module docstring).
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not 0.0 <= float(textured_fraction) <= 1.0:
        raise ValueError(f"textured_fraction must be in [0, 1], got {textured_fraction}")
    if not float(fps) > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    out = Path(out).resolve()
    get_world(world)
    rec = _args_record(num_clips, shard_size, frames, size, seed, textured_fraction, fps, world)

    old = _load_index(out)
    if old is not None and _index_is_complete(out, old, rec):
        log.info("toy shards in %s are up to date (%d clips); nothing to do", out, num_clips)
        return [str(out / sh["name"]) for sh in old["shard_info"]]

    out.mkdir(parents=True, exist_ok=True)
    # Drop a stale index first so a crash below never leaves an index that lies.
    if (out / "index.json").exists():
        os.remove(out / "index.json")

    num_shards = -(-int(num_clips) // int(shard_size))
    shard_info = []
    with tempfile.TemporaryDirectory(prefix="toy_mp4_") as tmpdir:
        for s in range(num_shards):
            name = SHARD_PATTERN.format(s)
            final = out / name
            tmp = out / f".{name}.tmp-{os.getpid()}"
            lo, hi = s * shard_size, min(num_clips, (s + 1) * shard_size)
            with open(tmp, "wb") as f:
                writer = wds.TarWriter(f, mtime=_TAR_MTIME, encoder=False)
                try:
                    for i in range(lo, hi):
                        writer.write(
                            clip_sample(i, frames, size, seed, textured_fraction, fps, tmpdir, world)
                        )
                finally:
                    writer.close()
            os.replace(tmp, final)
            shard_info.append(
                {"name": name, "count": hi - lo, "bytes": final.stat().st_size, "sha256": _sha256(final)}
            )
            log.info("wrote %s (%d clips)", final, hi - lo)

    # Remove shards of a previous, different run that this run did not overwrite.
    new_names = {sh["name"] for sh in shard_info}
    for sh in (old or {}).get("shard_info", []) or []:
        name = str(sh.get("name", "")) if isinstance(sh, dict) else ""
        if name and name not in new_names and "/" not in name and (out / name).is_file():
            os.remove(out / name)

    names = [sh["name"] for sh in shard_info]
    last = SHARD_PATTERN.format(num_shards - 1)
    index = {
        "format": FORMAT,
        "shards": names,
        "urls": names[0] if num_shards == 1 else "toy-{%06d..%s}.tar" % (0, last[4:-4]),
        "count": int(num_clips),
        "seed": int(seed),
        "command": _command(out, rec),
        "args": rec,
        "shard_info": shard_info,
        "layout": {"mp4": "H.264 clip", "txt": "caption", "json": "metadata (fps, attributes, ...)"},
    }
    tmp = out / f".index.json.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, out / "index.json")
    return [str(out / n) for n in names]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog("data_recipes.toy_world"), description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-clips", type=int, required=True)
    p.add_argument("--shard-size", type=int, required=True, help="clips per shard")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="frame height = width in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--textured-fraction", type=float, default=0.3)
    p.add_argument("--fps", type=float, default=8)
    p.add_argument(
        "--world", default="toy", choices=["toy", "crowd"], help="which toy world (docs/TOY_WORLDS.md)"
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shards = write_toy_shards(
        a.out, a.num_clips, a.shard_size, a.frames, a.size, a.seed, a.textured_fraction, a.fps, a.world
    )
    print(f"{len(shards)} shard(s), {a.num_clips} clips -> {Path(a.out).resolve() / 'index.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
