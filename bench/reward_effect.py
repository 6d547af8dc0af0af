"""Rewards on the toy world: does the reward move what it should?

    python bench/reward_effect.py --distill          # colour reward beta>0 vs beta=0 distillation (#3/#5 target)
    python bench/reward_effect.py --vader            # VADER mode: 100 steps of reward fine-tuning (#5 target)
    python bench/reward_effect.py --distill --experiment crowd   # --distill on the crowd world (--vader: toy only)

``--distill``: two students distilled from the same teacher with the same seed, steps and data
(``experiment=toy``), one with ``reward=toy`` (toy colour reward, beta = ``--beta``) and one with ``reward=none``;
both scored by ToyBench (4 steps, all the world's held-out prompts: toy 60, crowd 108); the teacher's 50-step
ToyBench in the same run for reference. ``--experiment crowd``: the same on the crowd world (``experiment=crowd``,
the crowd teacher, ToyBench's crowd prompts and metrics; default ``--out`` outputs/bench/rewards_crowd).
``--vader`` (toy only): ``experiment=toy_vader`` from a distilled student (``--student``), ToyBench (and the mean
toy-colour reward of the ToyBench samples) before and after.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: --experiment: the t2vturbo.distill experiment (named after its toy world) -> its default teacher
EXPERIMENTS = {"toy": "t2vturbo/assets/toy_teacher", "crowd": "t2vturbo/assets/crowd_teacher"}


def sh(argv, log: Path, env):
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        r = subprocess.run(argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        sys.exit(f"{' '.join(map(str, argv))} failed; see {log}:\n{log.read_text()[-3000:]}")


def toybench(target: Path, out: Path, env, steps=4, teacher=False, prompts=None, world="toy") -> dict:
    """ToyBench of ``target`` on ``world``'s first ``prompts`` held-out prompts (None: all): the world's
    accuracies, dynamic degree, flicker and steps."""
    from t2vturbo.eval.toybench import accuracy_keys  # lazy: imports torch (--help stays fast)

    rep = out.with_suffix(".json")
    argv = [
        sys.executable,
        "-m",
        "t2vturbo.eval.toybench",
        "--checkpoint",
        str(target),
        "--steps",
        str(steps),
        "--world",
        world,
        *([] if prompts is None else ["--num-prompts", str(prompts)]),
        "--json",
        str(rep),
    ]
    if teacher:
        argv.append("--teacher")
    sh(argv, out.with_suffix(".log"), env)
    r = json.loads(rep.read_text())
    return {k: r[k] for k in (*accuracy_keys(r), "dynamic_degree", "flicker", "steps")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--experiment",
        default="toy",
        choices=sorted(EXPERIMENTS),
        help="toy: experiment=toy on the one-shape world; crowd: experiment=crowd on the crowd world (no --vader)",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="default: the experiment's, " + ", ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()),
    )
    p.add_argument(
        "--out", default=None, help="default: outputs/bench/rewards, outputs/bench/rewards_crowd for crowd"
    )
    p.add_argument("--distill", action="store_true")
    p.add_argument("--vader", action="store_true")
    p.add_argument("--steps", type=int, default=200, help="distillation steps of each --distill run")
    p.add_argument("--beta", type=float, default=1.0, help="toy colour reward weight of the beta>0 run")
    p.add_argument(
        "--student", default=None, help="--vader: student export to fine-tune (default: the beta=0 run's)"
    )
    p.add_argument("--vader-steps", type=int, default=100)
    p.add_argument(
        "--prompts",
        type=int,
        default=None,
        help="ToyBench prompts (default: all of the world's, toy 60, crowd 108)",
    )
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.vader and a.experiment != "toy":
        sys.exit(
            f"--vader is toy-only (experiment=toy_vader); drop it or use --experiment toy, not {a.experiment}"
        )
    a.teacher = a.teacher or EXPERIMENTS[a.experiment]
    a.out = a.out or "outputs/bench/rewards" + ("" if a.experiment == "toy" else f"_{a.experiment}")
    if a.distill and not (REPO / "t2vturbo" / "conf" / "experiment" / f"{a.experiment}.yaml").is_file():
        sys.exit(f"no experiment={a.experiment} in this tree (t2vturbo/conf/experiment/{a.experiment}.yaml)")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    out = Path(a.out).resolve()
    teacher = Path(a.teacher).resolve()
    res: dict = {
        "date": datetime.date.today().isoformat(),
        "experiment": a.experiment,
        "teacher": str(teacher),
        "command": " ".join(["reward_effect.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    common = [
        f"model.path={teacher}",
        "train.progress=false",
        "train.eval_every=0",
        "train.log_every=10",
        "train.ckpt_every=0",
    ]
    if a.distill:
        res["teacher_50"] = toybench(
            teacher, out / "teacher_50", env, steps=50, teacher=True, prompts=a.prompts, world=a.experiment
        )
        # beta0 names reward=none: the experiment's own reward (experiment=crowd: the colour reward) is off
        for name, extra in (
            ("beta0", ["reward=none"]),
            ("beta", ["reward=toy", f"reward.weights.toy_color={a.beta}"]),
        ):
            d = out / f"distill_{name}"
            subprocess.run(["rm", "-rf", str(d)], check=True)
            sh(
                [
                    sys.executable,
                    "-m",
                    "t2vturbo.distill",
                    f"experiment={a.experiment}",
                    *common,
                    *extra,
                    f"train.max_steps={a.steps}",
                    f"output_dir={d}",
                ],
                out / f"distill_{name}.log",
                env,
            )
            res[f"student_{name}"] = toybench(
                d / "export", out / f"toybench_{name}", env, prompts=a.prompts, world=a.experiment
            )
            print(name, res[f"student_{name}"], flush=True)
        print("teacher 50-step", res["teacher_50"], flush=True)
    if a.vader:
        student = Path(a.student).resolve() if a.student else out / "distill_beta0" / "export"
        res["vader_before"] = toybench(student, out / "vader_before", env, prompts=a.prompts)
        d = out / "vader"
        subprocess.run(["rm", "-rf", str(d)], check=True)
        sh(
            [
                sys.executable,
                "-m",
                "t2vturbo.distill",
                "experiment=toy_vader",
                *common,
                "train.log_every=1",
                f"objective.init_from={student}",
                f"train.max_steps={a.vader_steps}",
                f"output_dir={d}",
            ],
            out / "vader.log",
            env,
        )
        rows = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
        r = [row["reward/toy_color"] for row in rows if "reward/toy_color" in row]
        res["vader_train_reward_first10"] = sum(r[:10]) / 10
        res["vader_train_reward_last10"] = sum(r[-10:]) / 10
        res["vader_after"] = toybench(d / "export", out / "vader_after", env, prompts=a.prompts)
        print(
            "vader before",
            res["vader_before"],
            "after",
            res["vader_after"],
            f"train reward first10 {res['vader_train_reward_first10']:.3f} last10 {res['vader_train_reward_last10']:.3f}",
        )
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
