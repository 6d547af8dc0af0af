"""ToyBench: prompt adherence of a student (or teacher) on a toy world's held-out prompts.

``python -m t2vturbo.eval.toybench --checkpoint OUTPUT_DIR/export --steps 4``
``python -m t2vturbo.eval.toybench --teacher --checkpoint TEACHER_DIR --steps 50``

Samples videos for a deterministic (seeded) selection of the world's held-out prompts and scores
them with its analytic pixel metrics: the ``toy`` world's 60 prompts with
:mod:`t2vturbo.eval.toy_metrics` (colour, shape and direction accuracy), the ``crowd`` world's 108
with :mod:`t2vturbo.eval.crowd_metrics` (colour, count, direction and speed); ``score`` is the mean
of the accuracies. Plus dynamic degree, flicker and background cleanliness.  The world is the
checkpoint's (:func:`t2vturbo.data.worlds.world_of_teacher`) unless ``--world`` says otherwise.
Prints one summary line and optionally writes a JSON report.

Uncertainty: the prompts are the sampling units.  The report carries each prompt's mean
accuracies (``per_prompt``) and a 95 % percentile-bootstrap interval of ``score`` over prompts
(``score_ci95``).  ``--baseline OTHER.json`` (repeatable) compares the run with earlier reports
on the prompts they share: the mean per-prompt difference of ``score`` (and of each accuracy)
with a paired bootstrap interval, so "A is clearly above B" can be read off as an interval that
excludes 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cli import prog
from ..data.worlds import WORLDS, get_world, world_of_prompt, world_of_teacher
from ..sample import sample_student, sample_teacher
from ..student_export import SAMPLING_DEFAULTS, StudentExport, load_teacher
from . import crowd_metrics, toy_metrics

__all__ = [
    "ACCURACY_KEYS",
    "WORLD_ACCURACY_KEYS",
    "accuracy_keys",
    "metrics_of",
    "BOOTSTRAP_RESAMPLES",
    "DEFAULT_GUIDANCE",
    "bootstrap_ci",
    "compare_with",
    "format_comparison",
    "format_summary",
    "load_model",
    "main",
    "paired_difference",
    "per_prompt_scores",
    "run_toybench",
    "select_prompts",
    "student_guidance",
    "verdict",
]

DEFAULT_GUIDANCE = SAMPLING_DEFAULTS["guidance"]
DEFAULT_STEPS = {"student": 4, "teacher": 50}
#: ``score`` and the accuracies it is the mean of, per toy world
WORLD_ACCURACY_KEYS = {
    "toy": ("score", "color_acc", "shape_acc", "direction_acc"),
    "crowd": ("score", "color_acc", "count_acc", "direction_acc", "speed_acc"),
}
ACCURACY_KEYS = WORLD_ACCURACY_KEYS["toy"]
BOOTSTRAP_RESAMPLES = 2000
_METRICS = {"toy": toy_metrics, "crowd": crowd_metrics}


def metrics_of(world: str):
    """The pixel-metrics module (``score_clip``, ``aggregate``) of a toy world."""
    return _METRICS[get_world(world).name]


def accuracy_keys(results: Sequence[dict[str, Any]] | dict[str, Any]) -> tuple[str, ...]:
    """The :data:`WORLD_ACCURACY_KEYS` entry whose accuracies the per-clip results (or a per-prompt row) carry."""
    r = results if isinstance(results, dict) else results[0]
    for keys in WORLD_ACCURACY_KEYS.values():
        if all(k in r for k in keys):
            return keys
    raise ValueError(
        f"results carry none of the toy worlds' accuracy sets {list(WORLD_ACCURACY_KEYS.values())}"
    )


def select_prompts(num_prompts: int | None = None, seed: int = 0, world: str = "toy") -> list[str]:
    """The first ``num_prompts`` of a seeded shuffle of the world's held-out prompts (all if None)."""
    prompts = get_world(world).held_out_prompts()
    n = len(prompts) if num_prompts is None else int(num_prompts)
    if not 1 <= n <= len(prompts):
        raise ValueError(f"num_prompts must be in [1, {len(prompts)}], got {num_prompts}")
    order = np.random.default_rng(int(seed)).permutation(len(prompts))
    return [prompts[i] for i in order[:n]]


def per_prompt_scores(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{prompt: {score, <accuracies>, clips}}`` (toy: colour, shape, direction; crowd: colour, count, direction,
    speed): the mean of each accuracy over that prompt's clips (per-clip results of the world's
    ``score_clip``), prompts in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(str(r["prompt"]), []).append(r)
    keys = accuracy_keys(results) if results else ()
    return {
        p: {**{k: float(np.mean([float(r[k]) for r in rs])) for k in keys}, "clips": len(rs)}
        for p, rs in groups.items()
    }


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (resampled with replacement,
    ``n_boot`` times, seeded).  One value gives a zero-width interval."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D sequence")
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1, got level={level}, n_boot={n_boot}")
    idx = np.random.default_rng(int(seed)).integers(0, v.size, size=(int(n_boot), v.size))
    means = v[idx].mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(lo), float(hi)


def paired_difference(
    report: dict[str, Any], baseline: dict[str, Any], *, n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """``report`` minus ``baseline`` on the prompts both scored (their ``per_prompt`` tables).

    For ``score`` and each accuracy of the world: the mean over shared prompts of the per-prompt
    difference, and a paired percentile-bootstrap 95 % interval (prompts resampled together,
    the same resampling for every key).  Raises ``ValueError`` when a report has no
    ``per_prompt`` table or the two share no prompt.
    """
    for name, r in (("report", report), ("baseline", baseline)):
        if not isinstance(r.get("per_prompt"), dict) or not r["per_prompt"]:
            raise ValueError(
                f"the {name} has no per_prompt table (written by ToyBench since 2026-11-24): re-run it"
            )
    a, b = report["per_prompt"], baseline["per_prompt"]
    shared = [p for p in a if p in b]
    if not shared:
        raise ValueError("the two reports share no prompt: run them with the same --num-prompts and --seed")
    idx = np.random.default_rng(int(seed)).integers(0, len(shared), size=(int(n_boot), len(shared)))
    out: dict[str, Any] = {"num_prompts": len(shared)}
    keys = accuracy_keys(a[shared[0]])
    if accuracy_keys(b[shared[0]]) != keys:
        raise ValueError("the two reports score different toy worlds")
    for k in keys:
        d = np.array([a[p][k] - b[p][k] for p in shared], dtype=np.float64)
        lo, hi = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
        out[k] = {"diff": float(d.mean()), "ci95": [float(lo), float(hi)]}
    return out


def verdict(ci95: Sequence[float]) -> str:
    """``above`` / ``below`` when a difference's interval excludes 0 on that side, else ``not separable``."""
    lo, hi = ci95
    return "above" if lo > 0 else "below" if hi < 0 else "not separable"


def format_comparison(res: dict[str, Any], base: dict[str, Any], cmp: dict[str, Any], name: str = "") -> str:
    """One line: ``ToyBench student steps=4 vs teacher steps=4 (NAME): score +0.012 [95% CI ...] ...``."""
    s = cmp["score"]
    accs = " ".join(
        f"{k.removesuffix('_acc').replace('color', 'colour')} {cmp[k]['diff']:+.3f}"
        for k in cmp
        if k.endswith("_acc")
    )
    lo, hi = s["ci95"]
    where = f" ({name})" if name else ""
    return (
        f"ToyBench {res.get('who', '?')} steps={res['steps']} vs {base.get('who', '?')} steps={base.get('steps', '?')}"
        f"{where}: score {s['diff']:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}] ({verdict(s['ci95'])}); {accs}; "
        f"{cmp['num_prompts']} shared prompts"
    )


def compare_with(
    res: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    *,
    seed: int = 0,
    echo: Callable[[str], Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{name: paired_difference(res, baseline)}`` for each named baseline report, each passed to ``echo`` as its
    :func:`format_comparison` line."""
    out = {}
    for name, base in baselines.items():
        out[name] = paired_difference(res, base, seed=seed)
        if echo is not None:
            echo(format_comparison(res, base, out[name], name))
    return out


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module | None) -> Iterator[None]:
    """Temporarily put ``module`` in eval mode (restoring each submodule's flag afterwards)."""
    if module is None:
        yield
        return
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, f in flags:
            m.training = f


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def run_toybench(
    bb,
    net=None,
    steps: int = 4,
    guidance: float = DEFAULT_GUIDANCE,
    prompts: Sequence[str] | None = None,
    *,
    samples_per_prompt: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    meta: dict[str, Any] | None = None,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    eta: float | None = None,
    num_ddim_timesteps: int | None = None,
    sigma_data: float | None = None,
    timestep_scaling: float | None = None,
    return_samples: bool = False,
    world: str | None = None,
) -> dict[str, Any]:
    """Sample and score; returns the :func:`~t2vturbo.eval.toy_metrics.aggregate` dict plus
    ``steps, seconds, sampling_seconds, guidance, num_prompts, samples_per_prompt, who``.

    ``net`` is a student (:class:`GuidedDenoiser`), sampled with the multistep consistency
    sampler; ``net=None`` samples the teacher of ``bb`` with DDIM + CFG.  ``prompts`` default
    to all 60 held-out prompts in :func:`select_prompts` order.  Each prompt gets
    ``samples_per_prompt`` videos; batch ``b`` (of ``batch_size`` videos) uses seed
    ``seed + b``.  Sampling settings come from the keyword arguments, else ``meta`` (an
    export's ``t2vturbo_student.json``), else 8 frames of 32x32 and the trainer defaults.
    The student is sampled in eval mode and its train/eval flags are restored afterwards.
    With ``return_samples`` the per-clip results are included under ``"samples"``.
    """
    opt = StudentExport(meta=dict(meta or {})).get

    nf, h, w = int(opt("num_frames", num_frames)), int(opt("height", height)), int(opt("width", width))
    if prompts is None:
        prompts = select_prompts(world=world or world_of_teacher(None, meta).name)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("run_toybench needs at least one prompt")
    worlds = {world_of_prompt(p).name for p in prompts}
    if len(worlds) != 1:
        raise ValueError(f"the prompts mix toy worlds {sorted(worlds)}: score one world per run")
    metrics = metrics_of(worlds.pop())
    if samples_per_prompt < 1 or batch_size < 1:
        raise ValueError("samples_per_prompt and batch_size must be >= 1")
    jobs = [p for p in prompts for _ in range(int(samples_per_prompt))]
    who = "teacher" if net is None else "student"
    device = getattr(bb, "device", None)

    t0 = time.perf_counter()
    sampling = 0.0
    results: list[dict[str, Any]] = []
    ctx = _eval_mode(net if net is not None else getattr(bb, "teacher", None))
    with ctx, torch.no_grad():
        for b, start in enumerate(range(0, len(jobs), batch_size)):
            batch = jobs[start : start + batch_size]
            ts = time.perf_counter()
            if net is None:
                video = sample_teacher(
                    bb, batch, steps=steps, guidance=guidance, num_frames=nf, height=h, width=w, seed=seed + b
                )
            else:
                video = sample_student(
                    bb,
                    net,
                    batch,
                    steps=steps,
                    num_ddim_timesteps=int(opt("num_ddim_timesteps", num_ddim_timesteps)),
                    guidance=guidance,
                    eta=float(opt("eta", eta)),
                    motion_percentage=float(opt("motion_percentage")),
                    num_frames=nf,
                    height=h,
                    width=w,
                    seed=seed + b,
                    sigma_data=float(opt("sigma_data", sigma_data)),
                    timestep_scaling=float(opt("timestep_scaling", timestep_scaling)),
                )
            _sync(device)
            video = video.detach().float().cpu()
            sampling += time.perf_counter() - ts
            for p, v in zip(batch, video):
                results.append(metrics.score_clip(v, p))
    out: dict[str, Any] = dict(metrics.aggregate(results))
    table = per_prompt_scores(results)
    out["per_prompt"] = table
    out["score_ci95"] = list(bootstrap_ci([v["score"] for v in table.values()], seed=seed))
    out.update(
        world=world_of_prompt(prompts[0]).name,
        eta=float(opt("eta", eta)) if net is not None else None,
        steps=int(steps),
        seconds=time.perf_counter() - t0,
        sampling_seconds=sampling,
        guidance=float(guidance),
        num_prompts=len(prompts),
        samples_per_prompt=int(samples_per_prompt),
        seed=int(seed),
        num_frames=nf,
        height=h,
        width=w,
        who=who,
    )
    if return_samples:
        out["samples"] = results
    return out


def format_summary(res: dict[str, Any], name: str = "") -> str:
    """One line: ``ToyBench student steps=4 (NAME) score=0.912 color=1.000 ... seconds=12.3``."""
    where = f" ({name})" if name else ""
    accs = " ".join(f"{k.removesuffix('_acc')}={res[k]:.3f}" for k in accuracy_keys(res)[1:])
    return (
        f"ToyBench {res.get('who', '?')} steps={res['steps']}{where} score={res['score']:.3f} {accs} "
        f"dynamic={res['dynamic_degree']:.2f} flicker={res['flicker']:.3f} "
        f"background={res['background_clean']:.3f} seconds={res['seconds']:.1f}"
        + (
            f" score_ci95=[{res['score_ci95'][0]:.3f},{res['score_ci95'][1]:.3f}]"
            if "score_ci95" in res
            else ""
        )
    )


def student_guidance(meta: dict[str, Any] | None) -> float:
    """The w a student is sampled at unless told otherwise: its export's (the middle of its training range)."""
    return float(StudentExport(meta=dict(meta or {})).get("guidance"))


def load_model(
    checkpoint: str | Path | None, teacher: bool = False, device: str | torch.device = "cpu"
) -> tuple[Any, Any, dict[str, Any], Path]:
    """(bb, net or None, meta, checkpoint path): the student export ``checkpoint`` (or a run's output dir; default:
    the only export under outputs/; several are refused, listed), or with ``teacher`` a teacher folder or the teacher of an export."""
    if teacher:
        bb, meta = load_teacher(checkpoint, device)
        return bb, None, meta, Path(checkpoint) if checkpoint else Path(meta.get("teacher_path", ""))
    ex = StudentExport.resolve(checkpoint)
    bb, net = ex.load(device)
    return bb, net, ex.meta, Path(checkpoint) if checkpoint else ex.dir


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog("t2vturbo.eval.toybench"), description=__doc__.split("\n")[0])
    ap.add_argument(
        "--checkpoint",
        help="student export folder (or a run's output dir); with --teacher a "
        "teacher folder or an export (its teacher_path); default: the only export under outputs/ (several: choose one)",
    )
    ap.add_argument("--teacher", action="store_true", help="benchmark the teacher (DDIM + CFG) instead")
    ap.add_argument("--steps", type=int, help="sampling steps (default: 4 student, 50 teacher)")
    ap.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="w (LCM form: cond + w (cond - uncond)); default: the student's training-range middle "
        f"(from its export), {DEFAULT_GUIDANCE} for a teacher",
    )
    ap.add_argument(
        "--eta",
        type=float,
        default=None,
        help="motion-strength embedding of the student (default: its export's eta, 0 without one)",
    )
    ap.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        help="first P prompts of a seeded shuffle of the world's held-out prompts (default: all; toy 60, crowd 108)",
    )
    ap.add_argument(
        "--world",
        choices=sorted(WORLDS),
        help="the toy world's prompts and metrics (default: the checkpoint's: its export's data.world or its "
        "MANIFEST.json's world, else toy)",
    )
    ap.add_argument("--samples-per-prompt", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="prompt shuffle and sampling noise seed")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", help="write the report here")
    ap.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="REPORT.json",
        help="an earlier ToyBench report to compare with (paired over shared prompts); repeatable",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--num-frames", type=int, help="default: the training run's (8 for a bare teacher)")
    ap.add_argument("--height", type=int, help="default: the training run's (32 for a bare teacher)")
    ap.add_argument("--width", type=int, help="default: the training run's (32 for a bare teacher)")
    args = ap.parse_args(argv)

    if args.samples_per_prompt < 1 or args.batch_size < 1:
        ap.error("--samples-per-prompt and --batch-size must be >= 1")
    try:
        bb, net, meta, ckpt = load_model(args.checkpoint, args.teacher, args.device)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    world = args.world or world_of_teacher(ckpt if args.teacher else None, meta).name
    try:
        prompts = select_prompts(args.num_prompts, args.seed, world)
    except ValueError as e:
        ap.error(str(e))
    baselines = {}
    for f in args.baseline:
        try:
            base = json.loads(Path(f).read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"cannot read the baseline report {f}: {e}", file=sys.stderr)
            return 2
        if not isinstance(base, dict) or not isinstance(base.get("per_prompt"), dict):
            print(
                f"the baseline report {f} has no per_prompt table (written by ToyBench since 2026-11-24): re-run it",
                file=sys.stderr,
            )
            return 2
        if not any(p in base["per_prompt"] for p in prompts):
            print(
                f"the baseline report {f} shares no prompt with this run: use the same --num-prompts and --seed",
                file=sys.stderr,
            )
            return 2
        baselines[str(f)] = base
    who = "teacher" if args.teacher else "student"
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[who]
    if args.guidance is None:
        args.guidance = student_guidance(meta) if not args.teacher else DEFAULT_GUIDANCE
    res = run_toybench(
        bb,
        net,
        steps=steps,
        guidance=args.guidance,
        prompts=prompts,
        samples_per_prompt=args.samples_per_prompt,
        seed=args.seed,
        batch_size=args.batch_size,
        meta=meta,
        num_frames=args.num_frames,
        height=args.height,
        width=args.width,
        eta=args.eta,
    )
    res["checkpoint"] = str(ckpt)
    print(format_summary(res), flush=True)
    if baselines:
        res["baselines"] = compare_with(
            res, baselines, seed=args.seed, echo=lambda line: print(line, flush=True)
        )
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
