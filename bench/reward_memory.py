"""Peak memory of one training step with image + video rewards vs without (tiny config).

    python bench/reward_memory.py [--rewards hpsv2_clip,internvideo2] [--repeats 2]

Each configuration is a separate process (``python -m t2vturbo.distill``, 2 optimizer steps, batch
2, the tiny UNet3D teacher of the tests, 8 frames of 32x32), run interleaved ``--repeats`` times;
the figure is the trainer's own ``max_rss_mib`` after the last step (``cuda_max_allocated_mib`` on
a GPU). The rewards are their tiny random configs (``reward.paths.NAME=tiny``): the point is the
cost of the reward path itself (decode of the chosen frames under activation checkpointing, the
reward forward and backward), not of full-size reward weights.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rewards",
        default="hpsv2_clip,internvideo2",
        help="comma-separated reward names (one image, one video)",
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from t2vturbo.backbones import write_tiny_model_dir

    work = Path(tempfile.mkdtemp(prefix="t2v_rmem_"))
    teacher = write_tiny_model_dir(work / "teacher", vae="autoencoder_kl", block_out_channels=(32, 64))
    names = [n for n in a.rewards.split(",") if n]
    common = [
        f"model.path={teacher}",
        "data=toy",
        "train.max_steps=2",
        "train.micro_batch_size=2",
        "train.log_every=1",
        "train.progress=false",
        "train.eval_every=0",
        "train.ckpt_every=0",
        "train.export_diffusers=false",
    ]
    with_r = [f"+reward.weights.{n}=1.0" for n in names] + [f"+reward.paths.{n}=tiny" for n in names]
    with_r += ["reward.image_frames=2", "reward.video_frames=4"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res: dict = {
        "date": datetime.date.today().isoformat(),
        "rewards": names,
        "runs": {"none": [], "rewards": []},
    }
    for r in range(a.repeats):
        for mode, extra in (("none", []), ("rewards", with_r)):
            out = work / f"{mode}{r}"
            cmd = [sys.executable, "-m", "t2vturbo.distill", *common, *extra, f"output_dir={out}"]
            pr = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if pr.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{pr.stdout[-2000:]}\n{pr.stderr[-3000:]}")
            last = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()][-1]
            res["runs"][mode].append(
                {k: last[k] for k in ("max_rss_mib", "step_time") if k in last}
                | {k: last[k] for k in last if k.startswith("reward/")}
            )
            print(mode, r, res["runs"][mode][-1], flush=True)
    med = {m: statistics.median(x["max_rss_mib"] for x in v) for m, v in res["runs"].items()}
    res["median_peak_rss_mib"] = med
    res["delta_mib"] = med["rewards"] - med["none"]
    print(
        f"peak RSS: no rewards {med['none']:.0f} MiB, with {'+'.join(names)} {med['rewards']:.0f} MiB "
        f"(+{res['delta_mib']:.0f} MiB)"
    )
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
