"""The evaluation report of a toy-world distillation run: ToyBench, paired comparisons, guidance response.

    python -m t2vturbo.eval.report RUN_DIR [--num-prompts 60] [--samples-per-prompt 4] [--guidance W] ...

What `make distill` prints after training, for the student export of RUN_DIR (a run's output dir
holding ``export/``, or an export folder itself):

1. ToyBench (:mod:`t2vturbo.eval.toybench`) of the teacher, DDIM with ``--steps`` (4) steps at the
   student's guidance and at the teacher's own (``--teacher-guidance``, 4), and DDIM with
   ``--reference-steps`` (50) at the teacher's guidance (1 sample per prompt);
2. ToyBench of the student (``--steps`` steps, at its export's guidance unless ``--guidance``);
3. the student minus each teacher line, paired over prompts, with a 95 % bootstrap interval;
4. the guidance-response check (:mod:`t2vturbo.eval.guidance_response`).

Every ToyBench line uses the same ``--num-prompts`` held-out prompts (seeded shuffle) and seed, so
the numbers equal those of the separate ``python -m t2vturbo.eval.toybench`` runs with the same
options. Writes RUN_DIR/report.json (every number, the per-prompt tables included) and a readable
RUN_DIR/report.md.

ToyBench scores toy-world clips: the report refuses a student whose export says it was trained on
other data (``--if-toy``: say so and exit 0 instead, for jobs that end every run with a report;
``--force``: run anyway).
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.shards import expand_shard_urls
from ..data.toy import held_out_prompts
from ..student_export import StudentExport
from . import toybench as tb
from .guidance_response import REFERENCE_STEPS, format_table, guidance_response

__all__ = [
    "REPORT_JSON",
    "REPORT_MD",
    "NotToyWorld",
    "format_markdown",
    "main",
    "run_report",
    "toy_world_data",
    "write_report",
]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
# `make distill`'s defaults (Makefile: TOYBENCH_PROMPTS, TOYBENCH_SAMPLES, TOY_TEACHER_GUIDANCE, GUIDANCE_RESPONSE_PROMPTS)
NUM_PROMPTS = len(held_out_prompts())
SAMPLES_PER_PROMPT = 4
# the shipped toy teacher's best few-step w (its MANIFEST's reference scores are at w = 4)
TEACHER_GUIDANCE = 4.0
GUIDANCE_RESPONSE_PROMPTS = 8
STEPS = 4
# The `format` of a toy-world shard folder's index.json (data_recipes/toy_world.py, FORMAT) up to its version.
TOY_SHARDS_FORMAT = "t2vturbo-toy-shards/"


class NotToyWorld(ValueError):
    """The export was trained on data other than the toy world: ToyBench does not measure it."""


# --------------------------------------------------------------------------- which students ToyBench measures


@functools.lru_cache(maxsize=64)
def _toy_shard_folder(folder: str) -> bool:
    try:
        index = json.loads((Path(folder) / "index.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and str(index.get("format", "")).startswith(TOY_SHARDS_FORMAT)


def toy_world_data(meta: dict[str, Any]) -> tuple[bool | None, str]:
    """(whether the export was trained on the toy world, its data in words) from the training config its meta
    records: ``data.kind=toy``, or shards (``data.urls``, or every ``data.sources[*].urls`` of a mixture) that all
    lie in folders written by ``data_recipes.toy_world``. ``None`` when the export records no config."""
    cfg = meta.get("config")
    data = cfg.get("data") if isinstance(cfg, dict) else None
    if not isinstance(data, dict):
        return None, "unknown (the export records no training config)"
    kind = data.get("kind")
    if kind == "toy":
        return True, "data.kind=toy (toy clips rendered on the fly)"
    if kind == "shards":
        specs = [data.get("urls")]
    elif kind == "mixture":
        specs = [s.get("urls") if isinstance(s, dict) else None for s in data.get("sources") or []]
    else:
        return False, f"data.kind={kind}"
    if not specs or any(not s for s in specs):
        return False, f"data.kind={kind} without shard urls"
    urls = [u for spec in specs for u in expand_shard_urls(spec)]
    other = [u for u in urls if not _toy_shard_folder(str(Path(u).parent))]
    if other:
        return (
            False,
            f"data.kind={kind} with shards that data_recipes.toy_world did not write (e.g. {other[0]})",
        )
    return True, f"data.kind={kind}, toy-world shards ({', '.join(str(s) for s in specs)})"


# --------------------------------------------------------------------------- loading (the one place that does)


def _find_export(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """(export folder, its meta) of RUN_DIR; FileNotFoundError naming RUN_DIR when it has none."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(
            f"RUN_DIR {str(d)!r} does not exist (or is not a directory): give a run's output "
            "dir (OUTPUT_DIR, holding export/) or a student export folder"
        )
    try:
        ex = StudentExport.resolve(d)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"RUN_DIR {str(d)!r} holds no usable student export: {e}") from None
    return ex.dir, ex.meta


def _load(export_dir: Path, teacher: str | None, device: str) -> tuple[Any, Any, dict[str, Any], Any, str]:
    """(student's backbone, student, meta, teacher's backbone, teacher path): the teacher is the export's own
    (its ``teacher_path``) unless ``teacher`` names another folder (or export)."""
    ex = StudentExport.resolve(export_dir)
    (bb, net), meta = ex.load(device), ex.meta
    own = str(meta["teacher_path"])
    if teacher is None or Path(teacher).resolve() == Path(own).resolve():
        return bb, net, meta, bb, own
    teacher_bb, _, _, _ = tb.load_model(teacher, teacher=True, device=device)
    return bb, net, meta, teacher_bb, str(teacher)


# --------------------------------------------------------------------------- the report


def run_report(
    run_dir: str | Path,
    *,
    teacher: str | None = None,
    num_prompts: int = NUM_PROMPTS,
    samples_per_prompt: int = SAMPLES_PER_PROMPT,
    guidance: float | None = None,
    teacher_guidance: float = TEACHER_GUIDANCE,
    guidance_response_prompts: int = GUIDANCE_RESPONSE_PROMPTS,
    steps: int = STEPS,
    reference_steps: int = REFERENCE_STEPS,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    force: bool = False,
    echo: Callable[[str], Any] | None = print,
) -> dict[str, Any]:
    """Run the report (module docstring) and return it as a dict; each line is passed to ``echo`` as it is ready.

    Raises FileNotFoundError (naming the path) when RUN_DIR or the teacher cannot be found, NotToyWorld when the
    export was trained on other data than the toy world (unless ``force``), ValueError on bad settings.
    """
    say = echo or (lambda line: None)
    t0 = time.perf_counter()
    prompts = tb.select_prompts(num_prompts, seed)
    if min(samples_per_prompt, steps, reference_steps, batch_size) < 1:
        raise ValueError("samples_per_prompt, steps, reference_steps and batch_size must be >= 1")
    if not 0 <= guidance_response_prompts <= NUM_PROMPTS:
        raise ValueError(
            f"guidance_response_prompts must be in [0, {NUM_PROMPTS}], got {guidance_response_prompts}"
        )
    export_dir, meta = _find_export(run_dir)
    toy, data = toy_world_data(meta)
    if toy is False and not force:
        raise NotToyWorld(
            f"{export_dir}: ToyBench measures toy-world students only, and this one was trained on {data}"
        )
    bb, net, meta, teacher_bb, teacher_path = _load(export_dir, teacher, device)
    w_s = tb.student_guidance(meta) if guidance is None else float(guidance)
    w_t, spp, ref = float(teacher_guidance), int(samples_per_prompt), int(reference_steps)
    runs = {  # key: (label, student or None for the teacher, steps, w, samples per prompt), in `make distill`'s order
        "teacher_at_student_w": (f"teacher DDIM {steps}, student's w={w_s:g}", None, steps, w_s, spp),
        "teacher_at_teacher_w": (f"teacher DDIM {steps}, w={w_t:g}", None, steps, w_t, spp),
        "teacher_reference": (f"teacher DDIM {ref} reference, w={w_t:g}", None, ref, w_t, 1),
        "student": (f"student {steps} steps, w={w_s:g}", net, steps, w_s, spp),
    }
    common = dict(prompts=prompts, seed=seed, batch_size=batch_size, meta=meta)
    results: dict[str, dict[str, Any]] = {}
    for key, (label, student, n, w, k) in runs.items():
        res = tb.run_toybench(
            teacher_bb if student is None else bb, student, n, w, samples_per_prompt=k, **common
        )
        results[key] = {**res, "label": label}
        say(tb.format_summary(res, label))
    teachers = {r["label"]: r for k, r in results.items() if k != "student"}
    by_label = tb.compare_with(results["student"], teachers, seed=seed, echo=say)
    comparisons = {
        k: {**by_label[r["label"]], "label": f"student minus {r['label']}"}
        for k, r in results.items()
        if k != "student"
    }

    response = None
    if guidance_response_prompts and meta.get("w_range"):
        response = guidance_response(
            bb,
            net,
            meta,
            num_prompts=guidance_response_prompts,
            steps=steps,
            reference_steps=reference_steps,
            reference_bb=teacher_bb,
        )
        say(format_table(response))
    elif guidance_response_prompts:
        say("guidance response: skipped (the export records no w_range)")
    settings = dict(
        teacher=teacher_path,
        num_prompts=len(prompts),
        samples_per_prompt=int(samples_per_prompt),
        guidance=w_s,
        teacher_guidance=w_t,
        guidance_response_prompts=int(guidance_response_prompts),
        steps=int(steps),
        reference_steps=int(reference_steps),
        seed=int(seed),
        batch_size=int(batch_size),
        device=str(device),
    )
    return {
        "run_dir": str(run_dir),
        "export": str(export_dir),
        "teacher": teacher_path,
        "train_step": meta.get("step"),
        "data": data,
        "toy_world": toy,
        "command": _command(run_dir, settings),
        "settings": settings,
        "toybench": results,
        "comparisons": comparisons,
        "guidance_response": response,
        "seconds": time.perf_counter() - t0,
    }


def _command(run_dir: str | Path, settings: dict[str, Any]) -> str:
    """The command line that reproduces a report with these settings."""
    argv = ["python", "-m", "t2vturbo.eval.report", str(run_dir)]
    keys = "teacher num_prompts samples_per_prompt guidance teacher_guidance guidance_response_prompts steps "
    for k in (keys + "reference_steps seed").split():
        argv += ["--" + k.replace("_", "-"), str(settings[k])]
    return shlex.join(argv)


def format_markdown(rep: dict[str, Any]) -> str:
    """report.md: the run, the ToyBench table, the paired comparisons and the guidance-response table."""
    s = rep["settings"]
    out = [
        f"# Evaluation report: {rep['run_dir']}",
        "",
        f"- student: `{rep['export']}` (training step {rep['train_step']}; data: {rep['data']})",
        f"- teacher: `{rep['teacher']}`",
        f"- ToyBench: {s['num_prompts']} held-out prompts (seed {s['seed']}); samples per prompt: "
        f"{s['samples_per_prompt']} (the reference line: 1); device {s['device']}; {rep['seconds']:.0f} s in all",
        f"- command: `{rep['command']}`",
        "",
        "## ToyBench",
        "",
        "| run | score [95 % CI] | colour | shape | direction | dynamic | flicker | background | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rep["toybench"].values():
        lo, hi = r["score_ci95"]
        out.append(
            f"| {r['label']} | {r['score']:.3f} [{lo:.3f}, {hi:.3f}] | {r['color_acc']:.3f} | {r['shape_acc']:.3f}"
            f" | {r['direction_acc']:.3f} | {r['dynamic_degree']:.2f} | {r['flicker']:.3f} "
            f"| {r['background_clean']:.3f} | {r['seconds']:.1f} |"
        )
    out += [
        "",
        "## Student minus teacher",
        "",
        "Per-prompt differences, mean over prompts, paired 95 % bootstrap interval (prompts resampled).",
        "",
        "| comparison | score | 95 % CI | verdict | colour | shape | direction | prompts |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in rep["comparisons"].values():
        lo, hi = c["score"]["ci95"]
        out.append(
            f"| {c['label']} | {c['score']['diff']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {tb.verdict(c['score']['ci95'])}"
            f" | {c['color_acc']['diff']:+.3f} | {c['shape_acc']['diff']:+.3f} "
            f"| {c['direction_acc']['diff']:+.3f} | {c['num_prompts']} |"
        )
    out += ["", "## Guidance response", ""]
    if rep["guidance_response"] is None:
        out.append("Not run (`--guidance-response-prompts 0`, or the export records no w_range).")
    else:  # blank lines around the table: Markdown would read the lines next to it as its rows
        caption, *table, response = format_table(rep["guidance_response"]).split("\n")
        out += [caption, "", *table, "", response]
    return "\n".join(out) + "\n"


def write_report(rep: dict[str, Any], run_dir: str | Path) -> tuple[Path, Path]:
    """Write RUN_DIR/report.json and RUN_DIR/report.md; returns their paths."""
    d = Path(run_dir)
    paths = d / REPORT_JSON, d / REPORT_MD
    paths[0].write_text(json.dumps(rep, indent=2) + "\n")
    paths[1].write_text(format_markdown(rep))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m t2vturbo.eval.report",
        description=__doc__.split("\n")[0],
        epilog="Defaults are `make distill`'s.",
    )
    ap.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run's output dir (holding export/) or a student export"
    )
    ap.add_argument(
        "--teacher",
        help="teacher folder (or an export: its teacher) of the teacher lines and the "
        "guidance response; default: the export's teacher_path",
    )
    ap.add_argument(
        "--num-prompts",
        type=int,
        default=NUM_PROMPTS,
        help="first P of a seeded shuffle of the held-out prompts (default: all %(default)s)",
    )
    ap.add_argument(
        "--samples-per-prompt",
        type=int,
        default=SAMPLES_PER_PROMPT,
        help="of the few-step lines (the reference line has 1); default %(default)s",
    )
    ap.add_argument(
        "--guidance",
        type=float,
        help="w of the student and of the first teacher line; default: the "
        "export's (the middle of its training range)",
    )
    ap.add_argument(
        "--teacher-guidance",
        type=float,
        default=TEACHER_GUIDANCE,
        help="the teacher's own w (second and reference lines); default %(default)s",
    )
    ap.add_argument(
        "--guidance-response-prompts",
        type=int,
        default=GUIDANCE_RESPONSE_PROMPTS,
        help="prompts of the guidance-response check (0: skip it); default %(default)s",
    )
    ap.add_argument(
        "--steps", type=int, default=STEPS, help="steps of the student and the few-step teacher lines"
    )
    ap.add_argument(
        "--reference-steps",
        type=int,
        default=REFERENCE_STEPS,
        help="DDIM steps of the teacher's reference line and of the guidance response's teacher",
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="ToyBench's prompt shuffle, sampling noise and bootstrap"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    which = ap.add_mutually_exclusive_group()
    which.add_argument(
        "--force", action="store_true", help="run even if the export was not trained on the toy world"
    )
    which.add_argument(
        "--if-toy",
        action="store_true",
        help="for a student not trained on the toy world, say so and exit 0 (no report)",
    )
    a = ap.parse_args(argv)

    def echo(line: str) -> None:
        print(line, flush=True)

    try:
        rep = run_report(
            a.run_dir,
            teacher=a.teacher,
            num_prompts=a.num_prompts,
            samples_per_prompt=a.samples_per_prompt,
            guidance=a.guidance,
            teacher_guidance=a.teacher_guidance,
            guidance_response_prompts=a.guidance_response_prompts,
            steps=a.steps,
            reference_steps=a.reference_steps,
            seed=a.seed,
            batch_size=a.batch_size,
            device=a.device,
            force=a.force,
            echo=echo,
        )
    except NotToyWorld as e:
        if a.if_toy:
            print(f"report: skipped: {e}", flush=True)
            return 0
        print(f"error: {e} (--force runs it anyway)", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = write_report(rep, a.run_dir)
    print(f"report: {paths[0]}, {paths[1]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
