"""Data loading: decode throughput of the shard reader, and the loader vs the training step.

    python bench/data_throughput.py                      # ~3 min on 2 cores
    python bench/data_throughput.py --json outputs/bench/data.json

1. **Decode throughput** (clips/s on one core: one process, ``OMP_NUM_THREADS=1``, decord with one
   thread) of :class:`t2vturbo.data.shards.ClipStream` reading webdataset shards of H.264 clips
   (yuv420p, crf 23) that this script writes first: 16 frames sampled from 320x512 clips of 24
   frames, resized + centre-cropped to 256 (a real-data setting), and the toy world's 8 frames at
   32x32 (``data_recipes.toy_world`` shards). Each figure is the median of ``--repeats`` full passes.
2. **Loader vs training step** on the toy config: the samples/s the loader delivers (the
   trainer's own DataLoader settings: ``ClipStream`` + ``collate_clips``, micro batch 8, in the
   training process, no workers) against the samples/s one training step consumes
   (``python -m t2vturbo.distill experiment=toy``, CFG only, median of its logged ``samples_per_s``),
   measured in the same run. The margin is their ratio (target >= 2).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from sampling import cpu_model, loadavg  # noqa: E402


def synthetic_clip(rng: np.random.Generator, frames: int, h: int, w: int) -> np.ndarray:
    """A textured background with a few moving squares (compresses like real footage, not like noise)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = (
        np.stack(
            [
                np.sin(xx / rng.uniform(5, 30)),
                np.cos(yy / rng.uniform(5, 30)),
                np.sin((xx + yy) / rng.uniform(5, 30)),
            ],
            -1,
        )
        * 60
        + 120
    ).astype(np.float32)
    out = np.empty((frames, h, w, 3), np.uint8)
    boxes = [
        (
            rng.integers(0, h - 40),
            rng.integers(0, w - 40),
            rng.integers(-4, 5),
            rng.integers(-4, 5),
            rng.integers(0, 255, 3),
        )
        for _ in range(4)
    ]
    for f in range(frames):
        img = np.roll(base, f * 2, axis=1).copy()
        for y, x, dy, dx, col in boxes:
            yy0, xx0 = int(np.clip(y + dy * f, 0, h - 40)), int(np.clip(x + dx * f, 0, w - 40))
            img[yy0 : yy0 + 40, xx0 : xx0 + 40] = col
        out[f] = img.astype(np.uint8)
    return out


def write_real_size_shard(path: Path, n: int, frames: int, h: int, w: int, fps: float = 24.0) -> None:
    import webdataset as wds

    from t2vturbo.data.video_io import write_video

    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d, open(path, "wb") as f:
        wr = wds.TarWriter(f, encoder=False, mtime=0.0)
        for i in range(n):
            mp4 = Path(d) / "c.mp4"
            write_video(mp4, synthetic_clip(rng, frames, h, w), fps=fps, crf=23, pixel_format="yuv420p")
            wr.write(
                {
                    "__key__": f"{i:06d}",
                    "mp4": mp4.read_bytes(),
                    "txt": b"a synthetic clip",
                    "json": json.dumps({"fps": fps, "width": w, "height": h}).encode(),
                }
            )
        wr.close()


def decode_rate(urls, num_frames: int, size: int, repeats: int) -> dict:
    from t2vturbo.data.shards import ClipStream

    times, n = [], 0
    for _ in range(repeats):
        s = ClipStream(
            urls, num_frames, size, shuffle_buffer=0, resampled=False, rank=0, world_size=1, decode_threads=1
        )
        t0 = time.perf_counter()
        n = sum(1 for _ in s)
        times.append(time.perf_counter() - t0)
        assert s.num_skipped == 0, s.skip_stats()
    med = statistics.median(times)
    return {"clips": n, "seconds": [round(t, 3) for t in times], "clips_per_s": n / med}


def loader_rate(urls, num_frames: int, size: int, batch: int, batches: int) -> float:
    from torch.utils.data import DataLoader

    from t2vturbo.data.shards import ClipStream, collate_clips

    s = ClipStream(
        urls,
        num_frames,
        size,
        shuffle_buffer=64,
        resampled=True,
        rank=0,
        world_size=1,
        loader_batch_size=batch,
    )
    dl = iter(DataLoader(s, batch_size=batch, num_workers=0, collate_fn=collate_clips, drop_last=True))
    next(dl)  # open the first shard
    t0 = time.perf_counter()
    for _ in range(batches):
        next(dl)
    return batch * batches / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/bench/data", help="work folder")
    p.add_argument(
        "--teacher", default="t2vturbo/assets/toy_teacher", help="toy teacher (for the training step)"
    )
    p.add_argument("--clips", type=int, default=24, help="clips in the 320x512 shard")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="training steps of the toy run")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from data_recipes.toy_world import write_toy_shards

    out = Path(a.out).resolve()
    res: dict = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["data_throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count(), "threads": 1},
        "loadavg_start": loadavg(),
    }

    big = out / "real_320x512" / "clips-000000.tar"
    if not big.exists():
        write_real_size_shard(big, a.clips, 24, 320, 512)
    toy = write_toy_shards(out / "toy", 256, 256, frames=8, size=32, seed=0, textured_fraction=0.0)
    res["decode_320x512_16f_to_256"] = decode_rate([str(big)], 16, 256, a.repeats)
    res["decode_toy_8f_32"] = decode_rate(toy, 8, 32, a.repeats)
    for k in ("decode_320x512_16f_to_256", "decode_toy_8f_32"):
        print(
            f"{k}: {res[k]['clips_per_s']:.1f} clips/s on one core ({res[k]['clips']} clips, passes {res[k]['seconds']} s)"
        )

    res["loader_samples_per_s"] = loader_rate(toy, 8, 32, 8, 24)
    run = out / "toy_run"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "t2vturbo.distill",
            "experiment=toy",
            "guidance=cfg",
            f"model.path={Path(a.teacher).resolve()}",
            f"data.urls={toy[0]}",
            f"train.max_steps={a.steps}",
            "train.log_every=1",
            "train.eval_every=0",
            "train.progress=false",
            "train.ckpt_every=0",
            f"output_dir={run}",
        ],
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        sys.exit(r.stdout[-3000:] + r.stderr[-3000:])
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    res["train_samples_per_s"] = statistics.median(r["samples_per_s"] for r in rows[1:])
    res["loader_margin"] = res["loader_samples_per_s"] / res["train_samples_per_s"]
    print(
        f"loader {res['loader_samples_per_s']:.1f} samples/s vs training step {res['train_samples_per_s']:.2f} "
        f"samples/s: margin {res['loader_margin']:.1f}x"
    )
    res["loadavg_end"] = loadavg()
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
