"""Motion guidance (ARCHITECTURE.md §4): what it costs and what it does, on the toy world.

    python bench/motion_guidance.py                       # cost: step time + peak memory (~10 min, 2 cores)
    python bench/motion_guidance.py --quality             # + MG-on vs MG-off students on ToyBench
    python bench/motion_guidance.py --json outputs/bench/mg.json
    python bench/motion_guidance.py --experiment crowd    # the crowd world (experiment=crowd, crowd teacher)

**Cost.** Three real training runs of the same toy distillation (``python -m t2vturbo.distill
experiment=toy``, same teacher, seed, batch and data), each ``--steps`` optimizer steps, run one
after the other and repeated ``--repeats`` times interleaved (no-MG, online-MG, precomputed, no-MG,
...):

* ``no_mg``: consistency distillation with CFG only (the teacher online);
* ``online_mg``: ``guidance=motion guidance.inversion_stride=1`` (the reference's inversion at every grid
  point; ``experiment=toy`` itself uses 10): the teacher online, DDIM inversion of the clip to the step and
  the motion score dE/dz_t by autograd inside every training step;
* ``precomputed``: ``data=precomputed`` on shards that ``python -m t2vturbo.precompute
  guidance=motion`` wrote beforehand from the same clips (stage 1, timed separately): the trainer
  holds only the student (and the EMA target).

Step time is the median of the per-step ``step_time`` the trainer logs (``train.log_every=1``), the
first ``--warmup`` steps left out; peak memory is the trainer's own ``max_rss_mib`` (getrusage of
the training process; ``cuda_max_allocated_mib`` on a GPU) at its last step. Ratios are taken
between medians of the same round and then the median over rounds.

**Quality** (``--quality``). Two students distilled with the same seed, steps and data, MG off vs
on (``guidance=motion``, online, ``guidance.inversion_stride`` = ``--inversion-stride`` to keep it
CPU-sized), each scored by ToyBench (4 steps, all the world's held-out prompts: toy 60, crowd 108):
``dynamic_degree``, ``direction_acc``, ``score`` and the world's other accuracies. Every run of this bench is
``reward=none``: motion guidance alone, whatever reward the experiment trains with.

``--experiment crowd`` does all of it on the crowd world instead (``experiment=crowd``, crowd shards, the crowd
teacher, ToyBench's crowd prompts and metrics), in its own ``--out`` (default ``outputs/bench/motion_guidance_crowd``).

Needs the experiment's teacher (``make toy-teacher EXPERIMENT=toy|crowd`` or ``--teacher DIR``); writes its runs
under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from sampling import cpu_model, loadavg  # noqa: E402

MODES = ("no_mg", "online_mg", "precomputed")
#: --experiment: the t2vturbo.distill experiment (named after its toy world) -> its default teacher
EXPERIMENTS = {"toy": "t2vturbo/assets/toy_teacher", "crowd": "t2vturbo/assets/crowd_teacher"}


def run(argv: list[str], env: dict, log: Path) -> float:
    """Run a command to completion (output to ``log``); its wall time. Raises with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}); {log}:\n{tail}")
    return wall


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def summarize(rows: list[dict], warmup: int) -> dict:
    times = [r["step_time"] for r in rows if r["step"] > warmup]
    last = rows[-1]
    out = {
        "steps": len(rows),
        "median_step_s": statistics.median(times),
        "min_step_s": min(times),
        "step_times_s": [round(t, 4) for t in times],
        "peak_rss_mib": last.get("max_rss_mib"),
    }
    if "cuda_max_allocated_mib" in last:
        out["peak_cuda_mib"] = last["cuda_max_allocated_mib"]
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--experiment",
        default="toy",
        choices=sorted(EXPERIMENTS),
        help="toy: experiment=toy on the one-shape world; crowd: experiment=crowd on the crowd world",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="teacher folder (diffusers layout; default: the experiment's, "
        + ", ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items())
        + ")",
    )
    p.add_argument(
        "--out",
        default=None,
        help="work folder (runs, shards, logs; default: outputs/bench/motion_guidance, "
        "outputs/bench/motion_guidance_crowd for crowd)",
    )
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per cost run")
    p.add_argument("--warmup", type=int, default=1, help="first steps left out of the step time")
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the three cost runs")
    p.add_argument("--batch", type=int, default=8, help="micro batch size (all runs)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run")
    p.add_argument(
        "--quality", action="store_true", help="also distill MG-off / MG-on students and score them"
    )
    p.add_argument("--no-cost", action="store_true", help="skip the cost part (with --quality: quality only)")
    p.add_argument("--quality-steps", type=int, default=200, help="optimizer steps of each quality run")
    p.add_argument(
        "--inversion-stride", type=int, default=10, help="guidance.inversion_stride of the MG-on quality run"
    )
    p.add_argument(
        "--prompts",
        type=int,
        default=None,
        help="ToyBench prompts for the quality runs (default: all of the world's, toy 60, crowd 108)",
    )
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    a.teacher = a.teacher or EXPERIMENTS[a.experiment]
    if a.out is None:
        a.out = "outputs/bench/motion_guidance" + ("" if a.experiment == "toy" else f"_{a.experiment}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out).resolve()
    teacher = Path(a.teacher).resolve()
    if not (teacher / "unet").is_dir():
        sys.exit(
            f"no {a.experiment} teacher at {teacher} (expected unet/ vae/ text_encoder/ tokenizer/ scheduler/): "
            f"run `make toy-teacher EXPERIMENT={a.experiment}` or pass --teacher DIR"
        )
    if not (REPO / "t2vturbo" / "conf" / "experiment" / f"{a.experiment}.yaml").is_file():
        sys.exit(f"no experiment={a.experiment} in this tree (t2vturbo/conf/experiment/{a.experiment}.yaml)")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONUNBUFFERED="1")
    py = sys.executable
    common = [
        f"model.path={teacher}",
        "train.progress=false",
        "reward=none",  # motion guidance alone (experiment=crowd trains with the colour reward)
        "train.eval_every=0",
        "train.log_every=1",
        f"train.micro_batch_size={a.batch}",
        "train.ckpt_every=0",
    ]
    res: dict = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count(), "threads": a.threads},
        "loadavg_start": loadavg(),
        "experiment": a.experiment,
        "teacher": str(teacher),
        "settings": {"steps": a.steps, "warmup": a.warmup, "repeats": a.repeats, "batch": a.batch},
    }

    if not a.no_cost:
        res.update(cost(a, out, env, py, common))
    if a.quality:
        res["quality"] = quality(a, out, teacher, env, py)
    res["loadavg_end"] = loadavg()
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {a.json}")
    return 0


def cost(a, out: Path, env: dict, py: str, common: list[str]) -> dict:
    """Stage-1 precompute, then interleaved no-MG / online-MG / precomputed training runs."""
    res: dict = {}
    world = a.experiment  # each experiment is named after its toy world
    # Clips: one shard of the experiment's toy world, enough for every run without repeating a clip.
    n_clips = a.steps * a.batch
    shards = out / "shards"
    if not (shards / "toy-000000.tar").exists():
        run(
            [
                py,
                "-m",
                "data_recipes.toy_world",
                "--out",
                str(shards),
                "--num-clips",
                str(n_clips),
                "--shard-size",
                str(n_clips),
                "--seed",
                "1",
                *([] if world == "toy" else ["--world", world]),
            ],
            env,
            out / "logs" / "shards.log",
        )
    # data_recipes.toy_world names the shards toy-*.tar in either world; data=crowd_shards sets data.world=crowd
    data = [f"data={world}_shards", f"data.urls={shards / 'toy-000000.tar'}", f"data.num_samples={n_clips}"]

    # Stage 1 of the two-stage mode (timed once; its cost is paid offline, once per dataset).
    pre = out / "pre"
    if pre.exists():
        subprocess.run(["rm", "-rf", str(pre)], check=True)
    wall = run(
        [
            py,
            "-m",
            "t2vturbo.precompute",
            f"experiment={a.experiment}",
            "guidance=motion",
            "guidance.inversion_stride=1",
            *common,
            *data,
            "data.resampled=false",
            f"precompute.out={pre}",
            "precompute.dtype=fp32",
        ],
        env,
        out / "logs" / "precompute.log",
    )
    pre_shards = sorted(pre.glob("*.tar"))
    res["precompute"] = {
        "clips": n_clips,
        "seconds": wall,
        "seconds_per_clip": wall / n_clips,
        "shards": [p.name for p in pre_shards],
    }
    print(f"precompute (stage 1, guidance=motion): {n_clips} clips in {wall:.1f} s", flush=True)

    mode_args = {
        "no_mg": ["guidance=cfg", *data],
        "online_mg": ["guidance=motion", "guidance.inversion_stride=1", *data],
        "precomputed": [
            "guidance=motion",
            "guidance.inversion_stride=1",
            "data=precomputed",
            f"data.urls={pre_shards[0]}",
            f"data.num_samples={n_clips}",
            *([] if world == "toy" else [f"data.world={world}"]),  # data=precomputed does not say the world
        ],
    }
    rounds = []
    for r in range(a.repeats):
        rnd = {}
        for mode in MODES:
            d = out / f"run{r}_{mode}"
            subprocess.run(["rm", "-rf", str(d)], check=True)
            wall = run(
                [
                    py,
                    "-m",
                    "t2vturbo.distill",
                    f"experiment={a.experiment}",
                    *common,
                    *mode_args[mode],
                    f"train.max_steps={a.steps}",
                    f"output_dir={d}",
                ],
                env,
                out / "logs" / f"run{r}_{mode}.log",
            )
            rnd[mode] = {**summarize(read_metrics(d), a.warmup), "wall_s": wall}
            print(
                f"round {r} {mode:12s} median step {rnd[mode]['median_step_s']:.3f} s  "
                f"peak RSS {rnd[mode]['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        rnd["ratio_precomputed_over_online_mg"] = (
            rnd["precomputed"]["median_step_s"] / rnd["online_mg"]["median_step_s"]
        )
        rnd["ratio_online_mg_over_no_mg"] = rnd["online_mg"]["median_step_s"] / rnd["no_mg"]["median_step_s"]
        rnd["ratio_precomputed_over_no_mg"] = (
            rnd["precomputed"]["median_step_s"] / rnd["no_mg"]["median_step_s"]
        )
        rounds.append(rnd)
    res["rounds"] = rounds
    for k in (
        "ratio_precomputed_over_online_mg",
        "ratio_online_mg_over_no_mg",
        "ratio_precomputed_over_no_mg",
    ):
        res[k] = statistics.median(r[k] for r in rounds)
    print(
        f"step time precomputed / online-MG = {res['ratio_precomputed_over_online_mg']:.3f}; "
        f"online-MG / no-MG = {res['ratio_online_mg_over_no_mg']:.2f}; "
        f"precomputed / no-MG = {res['ratio_precomputed_over_no_mg']:.2f} (medians over {a.repeats} rounds)",
        flush=True,
    )
    return res


def quality(a, out: Path, teacher: Path, env: dict, py: str) -> dict:
    """MG-off vs MG-on students: same seed, steps and data; ToyBench 4-step on both (the experiment's world)."""
    from t2vturbo.eval.toybench import accuracy_keys  # lazy: imports torch (--help stays fast)

    common = [
        f"model.path={teacher}",
        "train.progress=false",
        "reward=none",  # motion guidance alone (experiment=crowd trains with the colour reward)
        "train.eval_every=0",
        "train.log_every=10",
        f"train.max_steps={a.quality_steps}",
        "train.ckpt_every=0",
    ]
    runs = {
        "mg_off": ["guidance=cfg"],
        "mg_on": ["guidance=motion", f"guidance.inversion_stride={a.inversion_stride}"],
    }
    q: dict = {"steps": a.quality_steps, "inversion_stride": a.inversion_stride, "prompts": a.prompts}
    num_prompts = [] if a.prompts is None else ["--num-prompts", str(a.prompts)]
    for name, extra in runs.items():
        d = out / f"quality_{name}"
        subprocess.run(["rm", "-rf", str(d)], check=True)
        wall = run(
            [py, "-m", "t2vturbo.distill", f"experiment={a.experiment}", *common, *extra, f"output_dir={d}"],
            env,
            out / "logs" / f"quality_{name}.log",
        )
        rep = d / "toybench.json"
        run(
            [
                py,
                "-m",
                "t2vturbo.eval.toybench",
                "--checkpoint",
                str(d / "export"),
                "--steps",
                "4",
                "--world",
                a.experiment,
                *num_prompts,
                "--json",
                str(rep),
            ],
            env,
            out / "logs" / f"toybench_{name}.log",
        )
        tb = json.loads(rep.read_text())
        q["prompts"] = tb["num_prompts"]
        q[name] = {
            "train_wall_s": wall,
            **{k: tb[k] for k in (*accuracy_keys(tb), "dynamic_degree", "flicker")},
        }
        print(
            f"{name}: dynamic_degree {tb['dynamic_degree']:.3f} direction_acc {tb['direction_acc']:.3f} "
            f"score {tb['score']:.3f} (trained {wall:.0f} s)",
            flush=True,
        )
    return q


if __name__ == "__main__":
    sys.exit(main())
