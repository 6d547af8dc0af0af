"""The evaluation report of a toy-world distillation run: ToyBench, paired comparisons, guidance response.

    python -m t2vturbo.eval.report RUN_DIR [--num-prompts P] [--samples-per-prompt 4] [--guidance W] ...

What `make distill` prints after training, for the student export of RUN_DIR (a run's output dir
holding ``export/``, or an export folder itself):

1. ToyBench (:mod:`t2vturbo.eval.toybench`) of the teacher, DDIM with ``--steps`` (4) steps at the
   student's guidance and at the teacher's own (``--teacher-guidance``, 4), and DDIM with
   ``--reference-steps`` (50) at the teacher's guidance (1 sample per prompt);
2. ToyBench of the student (``--steps`` steps, at its export's guidance unless ``--guidance``);
3. the student minus each teacher line, paired over prompts, with a 95 % bootstrap interval;
4. the guidance-response check (:mod:`t2vturbo.eval.guidance_response`).

Every ToyBench line uses the same ``--num-prompts`` held-out prompts (seeded shuffle; default all of the
world's: toy 60, crowd 108) and seed, so the numbers equal those of the separate
``python -m t2vturbo.eval.toybench`` runs with the same options.  The toy world (``toy``: colour, shape and
direction accuracy; ``crowd``: colour, count, direction and speed) is the one the student was trained on: the
world recorded by the toy-world shards it read (their index.json), else its training config's ``data.world``,
else its teacher's (:func:`report_world`). Writes RUN_DIR/report.json (every number, the per-prompt tables
included, and the ``world``), a readable RUN_DIR/report.md and, with matplotlib installed
(``pip install 'matplotlib>=3.8'``), the picture of the run RUN_DIR/report.png that report.md shows: the
training losses of RUN_DIR/metrics.jsonl over the steps (raw and smoothed) beside the ToyBench bars of the
teacher lines and the student. ``--plot-only`` re-renders the picture (and report.md) from an existing
report.json and metrics.jsonl without evaluating anything. Where RUN_DIR has a tensorboard dir, the ToyBench
scores and the world's accuracies go there too (``final/toybench/...`` scalars at the export's training step:
metrics of the run's hparams session, see ``t2vturbo.train.logger``). The lines
about the picture go to stderr.

ToyBench scores toy-world clips (either world): the report refuses a student whose export says it was trained on
other data (``--if-toy``: say so and exit 0 instead, for jobs that end every run with a report;
``--force``: run anyway).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..cli import prog
from ..data.shards import expand_shard_urls
from ..data.worlds import WORLDS, World, world_of_teacher
from ..student_export import StudentExport
from . import toybench as tb
from .guidance_response import REFERENCE_STEPS, format_table, guidance_response

__all__ = [
    "ACCURACY_LABELS",
    "NUM_PROMPTS",
    "REPORT_JSON",
    "REPORT_MD",
    "REPORT_PNG",
    "NotToyWorld",
    "format_markdown",
    "main",
    "plot_report",
    "plot_run",
    "report_accuracy_keys",
    "report_world",
    "run_report",
    "toy_world_data",
    "toybench_to_tensorboard",
    "world_of_report",
    "write_report",
]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
METRICS_JSONL = "metrics.jsonl"
MATPLOTLIB_HINT = "pip install 'matplotlib>=3.8' (the `plots` extra; make setup installs it)"
# `make distill`'s defaults (Makefile: TOYBENCH_PROMPTS, TOYBENCH_SAMPLES, TOY_TEACHER_GUIDANCE, GUIDANCE_RESPONSE_PROMPTS)
# every held-out prompt of each toy world (ToyBench's default): toy 60, crowd 108
NUM_PROMPTS = {name: len(w.held_out_prompts()) for name, w in WORLDS.items()}
SAMPLES_PER_PROMPT = 4
# the shipped toy teacher's best few-step w (its MANIFEST's reference scores are at w = 4)
TEACHER_GUIDANCE = 4.0
GUIDANCE_RESPONSE_PROMPTS = 8
STEPS = 4
# The `format` of a toy-world shard folder's index.json (data_recipes/toy_world.py, FORMAT) up to its version.
TOY_SHARDS_FORMAT = "t2vturbo-toy-shards/"


#: the column / axis label of each ToyBench accuracy (:data:`t2vturbo.eval.toybench.WORLD_ACCURACY_KEYS`)
ACCURACY_LABELS = {
    "score": "score",
    "color_acc": "colour",
    "shape_acc": "shape",
    "count_acc": "count",
    "direction_acc": "direction",
    "speed_acc": "speed",
}


class NotToyWorld(ValueError):
    """The export was trained on data other than a toy world: ToyBench does not measure it."""


# --------------------------------------------------------------------------- which students ToyBench measures


@functools.lru_cache(maxsize=64)
def _toy_shard_world(folder: str) -> str | None:
    """The toy world of a shard folder ``data_recipes.toy_world`` wrote (its index.json's ``args.world``: written
    for worlds other than ``toy``), None for any other folder."""
    try:
        index = json.loads((Path(folder) / "index.json").read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(index, dict) and str(index.get("format", "")).startswith(TOY_SHARDS_FORMAT)):
        return None
    args = index.get("args")
    world = (args.get("world") if isinstance(args, dict) else None) or "toy"
    return str(world) if world in WORLDS else None


def training_config(export_dir: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The run's training config as Hydra wrote it (``RUN/.hydra/config.yaml``, with this machine's paths), else
    the one the export records (its paths made relative or cut to a name, so the export can be shared)."""
    import yaml

    for run in (export_dir.parent, export_dir):
        f = run / ".hydra" / "config.yaml"
        if f.is_file():
            try:
                cfg = yaml.safe_load(f.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(cfg, dict):
                return cfg
    cfg = meta.get("config")
    return cfg if isinstance(cfg, dict) else None


def _data_world(meta: dict[str, Any]) -> tuple[bool | None, str, str | None]:
    """(trained on one toy world?, the data in words, that world's name or None): :func:`toy_world_data`."""
    cfg = meta.get("config")
    data = cfg.get("data") if isinstance(cfg, dict) else None
    if not isinstance(data, dict):
        return None, "unknown (the export records no training config)", None
    kind = data.get("kind")
    if kind == "toy":
        world = str(data.get("world") or "toy")
        if world not in WORLDS:
            return False, f"data.kind=toy with data.world={world}, no toy world", None
        if world == "toy":
            return True, "data.kind=toy (toy clips rendered on the fly)", world
        return True, f"data.kind=toy, data.world={world} ({world}-world clips rendered on the fly)", world
    if kind == "shards":
        specs = [data.get("urls")]
    elif kind == "mixture":
        specs = [s.get("urls") if isinstance(s, dict) else None for s in data.get("sources") or []]
    else:
        return False, f"data.kind={kind}", None
    if not specs or any(not s for s in specs):
        return False, f"data.kind={kind} without shard urls", None
    urls = [u for spec in specs for u in expand_shard_urls(spec)]
    worlds = {u: _toy_shard_world(str(Path(u).parent)) for u in urls}
    other = [u for u, w in worlds.items() if w is None]
    if other:
        return (
            False,
            f"data.kind={kind} with shards that data_recipes.toy_world did not write (e.g. {other[0]})",
            None,
        )
    names = sorted(set(worlds.values()))
    if len(names) > 1:
        first = {w: next(u for u, v in worlds.items() if v == w) for w in names}
        return (
            False,
            f"data.kind={kind} with shards of {len(names)} toy worlds ("
            + ", ".join(f"{w}: e.g. {u}" for w, u in first.items())
            + "); ToyBench scores one world",
            None,
        )
    (world,) = names
    said = data.get("world")
    note = f"; data.world says {said}" if said and said != world else ""
    return True, f"data.kind={kind}, {world}-world shards ({', '.join(str(s) for s in specs)}){note}", world


def toy_world_data(meta: dict[str, Any]) -> tuple[bool | None, str]:
    """(whether the export was trained on a toy world, its data in words) from the training config its meta
    records: ``data.kind=toy`` (either ``data.world``), or shards (``data.urls``, or every ``data.sources[*].urls``
    of a mixture) that all lie in folders written by ``data_recipes.toy_world`` for one world (a folder's
    index.json records the world: ``args.world``, ``toy`` when absent). ``None`` when the export records no
    config."""
    ok, words, _ = _data_world(meta)
    return ok, words


def report_world(meta: dict[str, Any]) -> World:
    """The toy world ToyBench scores an export (``meta`` with its training ``config``, see
    :func:`training_config`) on: the world of the toy-world shards it was trained on, else the export's
    ``world`` or its config's ``data.world``, else its teacher's MANIFEST.json ``world``, else ``toy``
    (:func:`~t2vturbo.data.worlds.world_of_teacher`)."""
    _, _, world = _data_world(meta)
    if world is not None:
        return WORLDS[world]
    try:
        return world_of_teacher(meta.get("teacher_path"), meta)
    except (OSError, ValueError):  # an unreadable MANIFEST.json, or a world this version does not know
        return WORLDS["toy"]


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
    num_prompts: int | None = None,
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

    ``num_prompts`` (None: all) and ``guidance_response_prompts`` count held-out prompts of the student's toy world
    (:func:`report_world`). Raises FileNotFoundError (naming the path) when RUN_DIR or the teacher cannot be found,
    NotToyWorld when the export was trained on other data than a toy world (unless ``force``), ValueError on bad
    settings (before loading any model).
    """
    say = echo or (lambda line: None)
    t0 = time.perf_counter()
    ranges = ", ".join(f"{w} {n}" for w, n in NUM_PROMPTS.items())
    if num_prompts is not None and num_prompts < 1:
        raise ValueError(
            f"num_prompts must be in [1, P], P the world's held-out prompts ({ranges}), got {num_prompts}"
        )
    if guidance_response_prompts < 0:
        raise ValueError(f"guidance_response_prompts must be >= 0, got {guidance_response_prompts}")
    if min(samples_per_prompt, steps, reference_steps, batch_size) < 1:
        raise ValueError("samples_per_prompt, steps, reference_steps and batch_size must be >= 1")
    export_dir, meta = _find_export(run_dir)
    trained = {**meta, "config": training_config(Path(export_dir), meta)}
    toy, data = toy_world_data(trained)
    if toy is False and not force:
        raise NotToyWorld(
            f"{export_dir}: ToyBench measures toy-world students only, and this one was trained on {data}"
        )
    world = report_world(trained).name
    try:
        prompts = tb.select_prompts(num_prompts, seed, world)
    except ValueError as e:
        raise ValueError(f"{e} (the {world} world's held-out prompts)") from None
    if guidance_response_prompts > NUM_PROMPTS[world]:
        raise ValueError(
            f"guidance_response_prompts must be in [0, {NUM_PROMPTS[world]}] (the {world} world's held-out "
            f"prompts), got {guidance_response_prompts}"
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
            world=world,
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
        "world": world,
        "command": _command(run_dir, settings),
        "settings": settings,
        "toybench": results,
        "comparisons": comparisons,
        "guidance_response": response,
        "seconds": time.perf_counter() - t0,
    }


def world_of_report(rep: dict[str, Any]) -> str:
    """A report's toy world: its ``world``, else (a report of before the worlds) the one whose accuracies its
    ToyBench lines carry, else ``toy``."""
    world = rep.get("world")
    if world in tb.WORLD_ACCURACY_KEYS:
        return str(world)
    for r in (rep.get("toybench") or {}).values():
        for w, keys in tb.WORLD_ACCURACY_KEYS.items():
            if isinstance(r, dict) and all(k in r for k in keys):
                return w
    return "toy"


def report_accuracy_keys(rep: dict[str, Any]) -> tuple[str, ...]:
    """``score`` and the accuracies of a report's toy world (:data:`t2vturbo.eval.toybench.WORLD_ACCURACY_KEYS`):
    its ``world``, else (a report of before the worlds) the set its ToyBench lines carry, else the toy world's."""
    return tb.WORLD_ACCURACY_KEYS[world_of_report(rep)]


def _command(run_dir: str | Path, settings: dict[str, Any]) -> str:
    """The command line that reproduces a report with these settings."""
    argv = ["python", "-m", "t2vturbo.eval.report", str(run_dir)]
    keys = "teacher num_prompts samples_per_prompt guidance teacher_guidance guidance_response_prompts steps "
    for k in (keys + "reference_steps seed").split():
        argv += ["--" + k.replace("_", "-"), str(settings[k])]
    return shlex.join(argv)


def format_markdown(rep: dict[str, Any]) -> str:
    """report.md: the run, the ToyBench table, the paired comparisons and the guidance-response table; the
    accuracy columns are those of the report's toy world (:func:`report_accuracy_keys`)."""
    s = rep["settings"]
    world = world_of_report(rep)
    accs = tb.WORLD_ACCURACY_KEYS[world][1:]
    heads = " | ".join(ACCURACY_LABELS[k] for k in accs)
    rule = " --- |" * len(accs)
    out = [
        f"# Evaluation report: {rep['run_dir']}",
        "",
        f"- student: `{rep['export']}` (training step {rep['train_step']}; data: {rep['data']})",
        f"- teacher: `{rep['teacher']}`",
        f"- ToyBench: {s['num_prompts']} held-out {world}-world prompts (seed {s['seed']}); samples per prompt: "
        f"{s['samples_per_prompt']} (the reference line: 1); device {s['device']}; {rep['seconds']:.0f} s in all",
        f"- command: `{rep['command']}`",
        "",
        *([f"![ToyBench and training losses]({rep['plot']})", ""] if rep.get("plot") else []),
        "## ToyBench",
        "",
        f"| run | score [95 % CI] | {heads} | dynamic | flicker | background | seconds |",
        f"| --- | --- |{rule} --- | --- | --- | --- |",
    ]
    for r in rep["toybench"].values():
        lo, hi = r["score_ci95"]
        cells = "".join(f" {r[k]:.3f} |" for k in accs)
        out.append(
            f"| {r['label']} | {r['score']:.3f} [{lo:.3f}, {hi:.3f}] |{cells} {r['dynamic_degree']:.2f} "
            f"| {r['flicker']:.3f} | {r['background_clean']:.3f} | {r['seconds']:.1f} |"
        )
    out += [
        "",
        "## Student minus teacher",
        "",
        "Per-prompt differences, mean over prompts, paired 95 % bootstrap interval (prompts resampled).",
        "",
        f"| comparison | score | 95 % CI | verdict | {heads} | prompts |",
        f"| --- | --- | --- | ---{rule} --- |",
    ]
    for c in rep["comparisons"].values():
        lo, hi = c["score"]["ci95"]
        cells = "".join(f" {c[k]['diff']:+.3f} |" for k in accs)
        out.append(
            f"| {c['label']} | {c['score']['diff']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {tb.verdict(c['score']['ci95'])}"
            f" |{cells} {c['num_prompts']} |"
        )
    out += ["", "## Guidance response", ""]
    if rep["guidance_response"] is None:
        out.append("Not run (`--guidance-response-prompts 0`, or the export records no w_range).")
    else:  # blank lines around the table: Markdown would read the lines next to it as its rows
        caption, *table, response = format_table(rep["guidance_response"]).split("\n")
        out += [caption, "", *table, "", response]
    return "\n".join(out) + "\n"


def write_report(rep: dict[str, Any], run_dir: str | Path, plot: bool = True) -> tuple[Path, Path]:
    """Write RUN_DIR/report.json and RUN_DIR/report.md; returns their paths. ``plot``: first render
    RUN_DIR/report.png (:func:`plot_run`), which report.md then shows (``rep["plot"]``); without matplotlib, or
    when the picture fails, report.json and report.md are written without it and a line on stderr says why."""
    d = Path(run_dir)
    if plot:
        rep["plot"] = None
        try:
            png = plot_run(d, rep)
        except ImportError as e:
            print(f"report: no {REPORT_PNG} ({e}): {MATPLOTLIB_HINT}", file=sys.stderr, flush=True)
        except (OSError, ValueError) as e:
            print(f"report: no {REPORT_PNG}: {e}", file=sys.stderr, flush=True)
        else:
            rep["plot"] = png.name
            print(f"report: {png}", file=sys.stderr, flush=True)
    paths = d / REPORT_JSON, d / REPORT_MD
    paths[0].write_text(json.dumps(rep, indent=2) + "\n")
    paths[1].write_text(format_markdown(rep))
    return paths


# --------------------------------------------------------------------------- the picture


def _metrics_path(run_dir: Path, rep: dict[str, Any] | None) -> Path:
    """RUN_DIR/metrics.jsonl, or the one beside the export when RUN_DIR is an export folder."""
    cands = [run_dir / METRICS_JSONL]
    if rep and rep.get("export"):
        cands.append(Path(rep["export"]).parent / METRICS_JSONL)
    return next((p for p in cands if p.is_file()), cands[0])


def loss_series(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """The training losses of metrics.jsonl rows, ``{key: (steps, values)}`` in step order: every ``loss_*`` key,
    and ``loss`` (the total) unless it is the one term itself. A step logged again (a resumed run) takes the later
    value; non-finite values ("nan" strings) are left out."""
    by_key: dict[str, dict[int, float]] = {}
    for r in rows:
        if "step" not in r:
            continue
        for k, v in r.items():
            if (k == "loss" or k.startswith("loss_")) and isinstance(v, (int, float)) and math.isfinite(v):
                by_key.setdefault(k, {})[int(r["step"])] = float(v)
    terms = sorted(k for k in by_key if k != "loss")
    if len(terms) == 1 and "loss" in by_key:
        the_term = by_key[terms[0]]
        if all(abs(by_key["loss"].get(s, v) - v) <= 1e-6 * max(1.0, abs(v)) for s, v in the_term.items()):
            del by_key["loss"]
    keys = terms + (["loss"] if "loss" in by_key else [])
    return {k: (sorted(by_key[k]), [by_key[k][s] for s in sorted(by_key[k])]) for k in keys}


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Centred moving mean over ``window`` values (``window // 2`` each side; fewer at the ends)."""
    c = [0.0]
    for v in values:
        c.append(c[-1] + v)
    h, n = window // 2, len(values)
    return [(c[min(n, i + h + 1)] - c[max(0, i - h)]) / (min(n, i + h + 1) - max(0, i - h)) for i in range(n)]


def _plot_losses(ax, steps: list[int], values: list[float], key: str) -> None:
    window = max(3, len(values) // 20) | 1 if len(values) >= 10 else 1  # odd: centred
    if window > 1:
        ax.plot(steps, values, color="tab:blue", alpha=0.35, linewidth=0.8, label="raw")
        ax.plot(
            steps, smooth(values, window), color="tab:blue", linewidth=2, label=f"moving mean of {window}"
        )
    else:
        ax.plot(steps, values, color="tab:blue", linewidth=1.5, marker=".", label="raw")
    pos = [v for v in values if v > 0]
    if len(pos) == len(values) and max(pos) > 10 * min(pos):  # over a decade: log scale
        ax.set_yscale("log")
    ax.set_title(f"training loss: {key}")
    ax.set_ylabel(key)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")


# per toy world: the bar groups, (key in a ToyBench result, axis label); the teacher lines in blues, the student in
# orange
TOYBENCH_BARS = {
    world: tuple((k, ACCURACY_LABELS[k]) for k in keys) for world, keys in tb.WORLD_ACCURACY_KEYS.items()
}
TEACHER_COLOURS = ("#c6dbef", "#6baed6", "#2171b5")
STUDENT_COLOUR = "tab:orange"


def _plot_toybench(ax, note, rep: dict[str, Any]) -> None:
    runs = list(rep["toybench"].items())
    world = world_of_report(rep)
    bars = TOYBENCH_BARS[world]
    n = len(runs)
    width = 0.8 / max(n, 1)
    teacher_i = 0
    for j, (key, r) in enumerate(runs):
        if key == "student":
            colour = STUDENT_COLOUR
        else:
            colour = TEACHER_COLOURS[teacher_i % len(TEACHER_COLOURS)]
            teacher_i += 1
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(bars))]
        ys = [float(r[m]) for m, _ in bars]
        lo, hi = r.get("score_ci95") or (ys[0], ys[0])
        err = [[ys[0] - lo] + [0] * (len(ys) - 1), [hi - ys[0]] + [0] * (len(ys) - 1)]
        drawn = ax.bar(xs, ys, width, color=colour, edgecolor="black", linewidth=0.5, label=r["label"])
        ax.errorbar(xs[:1], ys[:1], yerr=[err[0][:1], err[1][:1]], fmt="none", ecolor="black", capsize=3)
        for b, y in zip(drawn, ys):
            ax.annotate(
                f"{y:.2f}",
                (b.get_x() + b.get_width() / 2, y),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                xytext=(0, 4 if b is not drawn[0] else 12),
                textcoords="offset points",
            )
    ax.set_xticks(range(len(bars)), [name for _, name in bars])
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("ToyBench (higher is better)")
    s = rep.get("settings") or {}
    ax.set_title(f"ToyBench: {s.get('num_prompts', '?')} held-out {world}-world prompts (score: 95 % CI)")
    ax.grid(True, axis="y", alpha=0.3)
    note.set_axis_off()
    handles, labels = ax.get_legend_handles_labels()
    note.legend(handles, labels, fontsize=8, loc="upper center", ncol=2, frameon=False)
    diffs = [
        f"{c['label']}: {c['score']['diff']:+.3f} [{c['score']['ci95'][0]:+.3f}, {c['score']['ci95'][1]:+.3f}] "
        f"{tb.verdict(c['score']['ci95'])}"
        for c in (rep.get("comparisons") or {}).values()
    ]
    if diffs:
        note.text(
            0.5,
            0.45,
            "score, paired over prompts (95 % CI):\n" + "\n".join(diffs),
            transform=note.transAxes,
            ha="center",
            va="top",
            fontsize=8,
        )


def plot_report(
    rep: dict[str, Any] | None, rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None
) -> Path:
    """One PNG: the training losses of ``rows`` (metrics.jsonl) over the steps, one panel per loss (raw and a
    trailing mean; log scale where they span more than a decade), beside the ToyBench bars of ``rep`` (a report:
    the teacher lines and the student, their score with its 95 % interval, the accuracies of the report's world --
    toy: colour / shape / direction, crowd: colour / count / direction / speed -- and the paired differences). Either part may be missing (a panel says so). Needs matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = loss_series(rows)
    n = max(1, len(losses))
    fig = plt.figure(figsize=(14, max(6.0, 2.8 * n)), dpi=100)
    grid = fig.add_gridspec(
        n, 2, width_ratios=(1.2, 1), hspace=0.45, wspace=0.18, left=0.06, right=0.98, top=0.9, bottom=0.09
    )
    if losses:
        for i, (k, (steps, vals)) in enumerate(losses.items()):
            ax = fig.add_subplot(grid[i, 0])
            _plot_losses(ax, steps, vals, k)
            ax.set_xlabel("training step" if i == n - 1 else "")
    else:
        ax = fig.add_subplot(grid[:, 0])
        ax.text(
            0.5,
            0.5,
            "no training losses\n(no metrics.jsonl rows with loss values)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
    if rep and rep.get("toybench"):
        right = grid[:, 1].subgridspec(2, 1, height_ratios=(3, 1), hspace=0.15)
        _plot_toybench(fig.add_subplot(right[0]), fig.add_subplot(right[1]), rep)
    else:
        ax = fig.add_subplot(grid[:, 1])
        ax.text(
            0.5, 0.5, "no ToyBench scores\n(no report.json)", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=12)
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_run(run_dir: str | Path, rep: dict[str, Any] | None = None) -> Path:
    """RUN_DIR/report.png (:func:`plot_report`) from ``rep`` (default: RUN_DIR/report.json when there is one)
    and RUN_DIR/metrics.jsonl. FileNotFoundError naming both when RUN_DIR has neither; ImportError without
    matplotlib."""
    from ..train.logger import read_metrics

    d = Path(run_dir)
    if rep is None and (d / REPORT_JSON).is_file():
        try:
            rep = json.loads((d / REPORT_JSON).read_text())
        except ValueError as e:
            raise ValueError(f"{d / REPORT_JSON} is not a report (not JSON: {e})") from None
        if not isinstance(rep, dict) or not isinstance(rep.get("toybench"), dict):
            raise ValueError(f"{d / REPORT_JSON} is not a report (no toybench table)")
    metrics = _metrics_path(d, rep)
    rows = read_metrics(metrics)
    if rep is None and not rows:
        raise FileNotFoundError(
            f"nothing to plot in {str(d)!r}: neither {REPORT_JSON} nor {METRICS_JSONL} rows"
        )
    step = rep.get("train_step") if rep else max((r.get("step", 0) for r in rows), default=0)
    return plot_report(rep, rows, d / REPORT_PNG, title=f"Run report: {d} (training step {step})")


def toybench_to_tensorboard(rep: dict[str, Any], run_dir: str | Path) -> Path | None:
    """Where RUN_DIR has a tensorboard dir (a training run's): each ToyBench score of ``rep`` as the scalar
    ``final/toybench/<line>``, each accuracy of the report's world (:func:`report_accuracy_keys`) as
    ``final/toybench/<line>/<accuracy>`` (e.g. ``final/toybench/student/count_acc``) and each paired score
    difference as ``final/toybench/student_minus_<line>``, at the export's training step; the guidance response as
    ``final/guidance_response``. Returns the dir or None."""
    d = Path(run_dir) / "tensorboard"
    if not d.is_dir():
        return None
    from torch.utils.tensorboard import SummaryWriter

    step = int(rep.get("train_step") or 0)
    accs = report_accuracy_keys(rep)[1:]
    with SummaryWriter(str(d)) as w:
        for k, r in rep["toybench"].items():
            w.add_scalar(f"final/toybench/{k}", float(r["score"]), step)
            for a in accs:
                w.add_scalar(f"final/toybench/{k}/{a}", float(r[a]), step)
        for k, c in (rep.get("comparisons") or {}).items():
            w.add_scalar(f"final/toybench/student_minus_{k}", float(c["score"]["diff"]), step)
        g = rep.get("guidance_response")
        if g and g.get("response") is not None:
            w.add_scalar("final/guidance_response", float(g["response"]), step)
    return d


def plot_only(run_dir: str | Path) -> int:
    """``--plot-only``: re-render RUN_DIR/report.png from report.json and metrics.jsonl (and report.md, which
    shows it); 2 with a message naming the path when there is nothing to plot or no matplotlib."""
    d = Path(run_dir)
    if not d.is_dir():
        print(f"error: RUN_DIR {str(d)!r} does not exist (or is not a directory)", file=sys.stderr)
        return 2
    try:
        png = plot_run(d)
    except ImportError as e:
        print(f"error: --plot-only needs matplotlib ({e}): {MATPLOTLIB_HINT}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if (d / REPORT_JSON).is_file():
        rep = json.loads((d / REPORT_JSON).read_text())
        rep["plot"] = png.name
        write_report(rep, d, plot=False)
    print(f"report: {png}", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog=prog("t2vturbo.eval.report"),
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
        help="first P of a seeded shuffle of the held-out prompts of the student's toy world (default: all of them: "
        + ", ".join(f"{w} {n}" for w, n in NUM_PROMPTS.items())
        + ")",
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
    ap.add_argument(
        "--plot-only",
        action="store_true",
        help=f"only re-render RUN_DIR/{REPORT_PNG} (and {REPORT_MD}) from RUN_DIR/{REPORT_JSON} and "
        f"RUN_DIR/{METRICS_JSONL}: no model is loaded, nothing is evaluated",
    )
    which = ap.add_mutually_exclusive_group()
    which.add_argument(
        "--force", action="store_true", help="run even if the export was not trained on a toy world"
    )
    which.add_argument(
        "--if-toy",
        action="store_true",
        help="for a student not trained on a toy world, say so and exit 0 (no report)",
    )
    a = ap.parse_args(argv)
    if a.plot_only:
        return plot_only(a.run_dir)

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
    try:
        toybench_to_tensorboard(rep, a.run_dir)
    except OSError as e:
        print(f"report: the ToyBench scores are not in tensorboard: {e}", file=sys.stderr, flush=True)
    print(f"report: {paths[0]}, {paths[1]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
