"""Measure a toy-world teacher and write its MANIFEST.json (the record a shipped teacher carries).

    python bench/teacher_manifest.py TEACHER_DIR --run RUN_DIR [--guidance 4] [--steps 50 8 4] \
        [--num-prompts 60] [--probe-prompts 8] [--what TEXT] [--command TEXT] [--dry-run]

For the teacher folder (diffusers layout; its world from :func:`t2vturbo.data.worlds.world_of_teacher`):

* ToyBench of its DDIM + CFG at each of ``--steps`` and ``--guidance`` on the first ``--num-prompts`` of the world's
  held-out prompts (seed 0, one sample per prompt), with each line's 95 % interval; the lines of fewer steps are
  also compared with the first (most steps) line, paired over prompts, and the score ratio is recorded
  (issue #24: DDIM 4 / DDIM 50 <= 0.85 in the crowd world);
* the time-embedding ablation of ``bench/time_embedding_probe.py`` (x0-space mean squares, ratio to the CFG gap);
* the training record from ``--run`` (the training run's output dir: its .hydra/config.yaml and the last line of
  its metrics.jsonl: steps, batch, lr, seed, loss);
* every file's size and sha256, and the total size.

Writes TEACHER_DIR/MANIFEST.json (``--dry-run``: prints it only). The hashes let a test check that the shipped
files are the measured ones.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from time_embedding_probe import default_prompts, probe  # noqa: E402

from t2vturbo.data.worlds import world_of_teacher  # noqa: E402
from t2vturbo.eval import toybench as tb  # noqa: E402
from t2vturbo.student_export import load_teacher  # noqa: E402


def file_table(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "MANIFEST.json":
            out[p.relative_to(root).as_posix()] = {
                "bytes": p.stat().st_size,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            }
    return out


def training_record(run: Path) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml"), resolve=False)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    last = max(lines, key=lambda r: r.get("step", 0))
    t = cfg["train"]
    return {
        "experiment": cfg.get("experiment_name"),
        "objective": cfg["objective"],
        "model_tiny": cfg["model"]["tiny"],
        "data": {k: cfg["data"].get(k) for k in ("kind", "world", "caption_dropout", "directions")},
        "steps": int(last["step"]),
        "batch": int(t["micro_batch_size"]) * int(t.get("grad_accum", 1) or 1),
        "samples_seen": int(last["step"]) * int(t["micro_batch_size"]) * int(t.get("grad_accum", 1) or 1),
        "lr": t["lr"],
        "seed": cfg.get("seed"),
        "last_metrics": {k: last[k] for k in ("step", "loss", "grad_norm", "step_time") if k in last},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("teacher")
    ap.add_argument("--run", help="the training run's output dir (its .hydra/config.yaml and metrics.jsonl)")
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--steps", type=int, nargs="+", default=[50, 8, 4])
    ap.add_argument("--num-prompts", type=int, default=60)
    ap.add_argument("--probe-prompts", type=int, default=8)
    ap.add_argument("--what", default="")
    ap.add_argument("--command", default="")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(a.teacher)
    world = world_of_teacher(root).name
    bb, _ = load_teacher(root)
    prompts = tb.select_prompts(a.num_prompts, 0, world)
    lines, bench = [], {}
    for s in a.steps:
        res = tb.run_toybench(bb, None, steps=s, guidance=a.guidance, prompts=prompts)
        print(tb.format_summary(res), flush=True)
        key = f"ddim_{s}_cfg_{a.guidance:g}"
        bench[key] = {k: v for k, v in res.items() if k != "per_prompt"}
        bench[key]["command"] = (
            f"python -m t2vturbo.eval.toybench --teacher --checkpoint {root} --steps {s} --guidance {a.guidance:g} "
            f"--num-prompts {a.num_prompts}"
        )
        lines.append((key, res))
    ref_key, ref = lines[0]
    for key, res in lines[1:]:
        d = tb.paired_difference(res, ref)
        bench[key]["minus_" + ref_key] = {"diff": d["score"]["diff"], "ci95": d["score"]["ci95"]}
        bench[key]["score_ratio_to_" + ref_key] = res["score"] / ref["score"] if ref["score"] else None
        print(tb.format_comparison(res, ref, d), flush=True)
    pr = probe(bb, default_prompts(world, a.probe_prompts))
    ov = pr["overall"]["x0"]
    print(f"time embedding (x0 space, mean squares): gap {ov['gap']:.3g}, zeroed {ov['zeroed']:.3g} "
          f"(ratio {ov['ratio_zeroed']:.3f}), t+300 ratio {ov['ratio_shift_plus']:.3f}, "
          f"t-300 ratio {ov['ratio_shift_minus']:.3f}")  # fmt: skip
    files = file_table(root)
    manifest = {
        "what": a.what,
        "world": world,
        "command": a.command,
        **({"training": training_record(Path(a.run))} if a.run else {}),
        "toybench": bench,
        "time_embedding_probe": {
            "command": f"python bench/time_embedding_probe.py --teacher {root} --num-prompts {a.probe_prompts}",
            "overall_x0": ov,
            "per_t": [{"t": r["t"], **r["x0"]} for r in pr["per_t"]],
        },
        "measured_with": f"python bench/teacher_manifest.py {' '.join(sys.argv[1:] if argv is None else argv)}",
        "date": datetime.date.today().isoformat(),
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files.values()),
    }
    text = json.dumps(manifest, indent=2) + "\n"
    if a.dry_run:
        print(text)
    else:
        (root / "MANIFEST.json").write_text(text)
        print(f"wrote {root / 'MANIFEST.json'} ({manifest['total_bytes'] / 1e6:.1f} MB of files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
