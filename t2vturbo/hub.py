"""Hub-ready student exports: the model card, and pushing an export to the Hugging Face Hub.

    python -m t2vturbo.hub card EXPORT_DIR [--report RUN_DIR/report.json]
    python -m t2vturbo.hub push EXPORT_DIR REPO_ID [--private] [--revision BRANCH] [--message MSG]

``card`` (re)writes ``EXPORT_DIR/README.md``: Hugging Face model-card metadata (library, base model = the
teacher's hub id when known, tags, the teacher's license when known, ``pipeline_tag: text-to-video``) and a body
with the recipe, the training data, the ToyBench / VBench figures of the run's ``report.json`` (by default the
one beside the export, ``RUN_DIR/report.json``, which ``python -m t2vturbo.eval.report`` writes after the
export), the command that trained it and how to sample it. Every distillation export already has one (written
before the report exists: run ``card`` again afterwards to add the figures).

``push`` uploads the export folder (``HfApi.create_repo(exist_ok=True)`` + ``upload_folder``), writing the card
first if it has none. It needs a token (``hf auth login`` or ``HF_TOKEN``); errors are one line.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, HTTPError, LocalTokenNotFoundError

from .cli import prog
from .student_export import (
    KNOWN_TEACHERS,
    PACKAGE,
    STUDENT_FILE,
    STUDENT_META,
    StudentExport,
    normalize_modes,
    portable_path,
)

log = logging.getLogger("t2vturbo")

CARD_FILE = "README.md"
REPORT_FILE = "report.json"
TAGS = ["text-to-video", "t2v-turbo", "consistency-distillation", "t2vturbo"]


class HubError(RuntimeError):
    """A push that cannot be done (no token, the hub refused): the message is one line."""


# ---- what the card says ------------------------------------------------------------------------------------


def project_license() -> str:
    """This project's license (the toy teacher's and the tiny teachers' it writes), as a hub license id."""
    try:
        md = importlib.metadata.metadata(PACKAGE)
        lic = md.get("License-Expression") or md.get("License")
    except importlib.metadata.PackageNotFoundError:
        lic = None
    return (lic or "Apache-2.0").lower()


def teacher_info(ex: StudentExport) -> dict[str, Any]:
    """``{"hub_id", "license", "label", "where"}`` of the export's teacher (None where unknown)."""
    meta = ex.meta
    ref = meta.get("teacher") if isinstance(meta.get("teacher"), dict) else {}
    arch = ref.get("arch") or (meta.get("config") or {}).get("model", {}).get("arch")
    known = KNOWN_TEACHERS.get(arch or "", (None, None))
    hub_id = ref.get("hub_id") or known[0]
    lic = None
    try:  # the teacher's own card, when its folder has one (a hub snapshot)
        teacher_dir = ex.find_teacher()
        card_file = teacher_dir / CARD_FILE
        if card_file.is_file():
            lic = ModelCard.load(card_file, ignore_metadata_errors=True).data.license
    except (FileNotFoundError, OSError, ValueError):
        pass
    if ref.get("package"):
        where = f"shipped with the `{ref['package']}` package (`{ref['package']}/{ref['path']}`)"
        label = f"`{ref['package']}/{ref['path']}` (shipped with the package)"
        lic = lic or project_license()
    elif ref.get("path") is not None:
        inside = not ref["path"].startswith("..") and ref["path"] != "."
        where = (
            f"in this folder (`{ref['path']}/`)"
            if inside
            else f"expected at `{ref['path']}` relative to this folder (not part of the upload)"
        )
        label = f"`{hub_id}`" if hub_id else f"`{ref.get('name') or ref['path']}`"
        if inside:  # a tiny teacher the run wrote itself
            label = f"`{ref['path']}/` (a tiny random teacher, written with the student)"
            lic = lic or project_license()
    else:  # an old export: an absolute teacher_path
        where = (
            "given by an absolute `teacher_path` (an old export: it loads only on the machine that wrote it)"
        )
        label = f"`{hub_id}`" if hub_id else "`" + Path(str(meta.get("teacher_path", "?"))).name + "`"
    return {
        "hub_id": hub_id,
        "license": lic or known[1],
        "label": label,
        "where": where,
        "ref": ref,
    }


def find_report(ex: StudentExport, report=None) -> Path | None:
    """``report`` if given (a report.json or a run dir holding one), else the run's ``report.json`` beside
    the export (``RUN_DIR/export`` -> ``RUN_DIR/report.json``), else None."""
    if report is not None:
        p = Path(report)
        p = p / REPORT_FILE if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(
                f"no report at {str(p)!r} (python -m t2vturbo.eval.report RUN_DIR writes it)"
            )
        return p
    for cand in (ex.dir / REPORT_FILE, ex.dir.parent / REPORT_FILE):
        if cand.is_file():
            return cand
    return None


def _fmt(x, spec=".3f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def _report_lines(rep: dict[str, Any]) -> list[str]:
    out = []
    tbench = rep.get("toybench") or {}
    if tbench:
        from .eval.report import ACCURACY_LABELS, report_accuracy_keys, world_of_report

        s = rep.get("settings") or {}
        world = world_of_report(rep)
        # toy: colour, shape, direction; crowd: colour, count, direction, speed
        accs = report_accuracy_keys(rep)[1:]
        out += [
            "### ToyBench",
            "",
            f"{s.get('num_prompts', '?')} held-out {world}-world prompts, {s.get('samples_per_prompt', '?')} "
            f"samples per prompt (seed {s.get('seed', '?')}); score in [0, 1] with its 95 % interval.",
            "",
            "| run | score [95 % CI] | " + " | ".join(ACCURACY_LABELS[k] for k in accs) + " |",
            "| --- | --- |" + " --- |" * len(accs),
        ]
        for r in tbench.values():
            lo, hi = (r.get("score_ci95") or [None, None])[:2]
            out.append(
                f"| {r.get('label', '?')} | {_fmt(r.get('score'))} [{_fmt(lo)}, {_fmt(hi)}] |"
                + "".join(f" {_fmt(r.get(k))} |" for k in accs)
            )
        comps = rep.get("comparisons") or {}
        if comps:
            out += ["", "| paired comparison | score difference | 95 % CI |", "| --- | --- | --- |"]
            for c in comps.values():
                sc = c.get("score") or {}
                lo, hi = (sc.get("ci95") or [None, None])[:2]
                out.append(
                    f"| {c.get('label', '?')} | {_fmt(sc.get('diff'), '+.3f')} | "
                    f"[{_fmt(lo, '+.3f')}, {_fmt(hi, '+.3f')}] |"
                )
        out.append("")
    vbench = rep.get("vbench")
    if isinstance(vbench, dict) and vbench:
        out += ["### VBench", "", "| dimension | score |", "| --- | --- |"]
        out += [
            f"| {k} | {_fmt(v, '.4f') if isinstance(v, (int, float)) else v} |" for k, v in vbench.items()
        ]
        out.append("")
    if rep.get("command"):
        out += [f"Measured with `{portable_command(str(rep['command']))}`.", ""]
    return out


def _data_line(cfg: dict[str, Any]) -> str:
    d = cfg.get("data") or {}
    kind = d.get("kind", "?")
    if kind == "toy":
        world = d.get("world", "toy")
        return f"the {world} world, rendered on the fly (`data.kind=toy data.world={world}`)"
    if kind == "shards":
        return f"webdataset shards `{Path(str(d.get('urls') or '?')).name}` (`data.kind=shards`)"
    if kind == "mixture":
        srcs = ", ".join(
            f"{s.get('name', '?')} (`{Path(str(s.get('urls') or '?')).name}`, weight {s.get('weight', 1)})"
            for s in d.get("sources") or []
        )
        return f"a mixture of {srcs or 'no sources'} (`data.kind=mixture`)"
    return f"`data.kind={kind}`"


def _command(ex: StudentExport) -> str | None:
    cmd = ex.meta.get("command")
    if cmd:
        return str(cmd)
    hydra = ex.dir.parent / ".hydra" / "overrides.yaml"  # the run dir of an export written before `command`
    if hydra.is_file():
        from omegaconf import OmegaConf

        overrides = [str(o) for o in OmegaConf.to_container(OmegaConf.load(hydra)) or []]
        return command_line(overrides)
    return None


def portable_command(cmd: str) -> str:
    """A shell command line with each word (and each ``key=value``'s value) made :func:`portable_path`."""
    import shlex

    try:
        words = shlex.split(cmd)
    except ValueError:
        return portable_path(cmd)

    def one(w: str) -> str:
        key, eq, value = w.partition("=")
        return f"{key}={portable_path(value)}" if eq and not os.path.isabs(w) else portable_path(w)

    return shlex.join(one(w) for w in words)


def command_line(overrides: list[str]) -> str:
    """``python -m t2vturbo.distill OVERRIDES`` with each override's value made portable (no absolute paths)."""
    import shlex

    def one(o: str) -> str:
        key, eq, value = o.partition("=")
        return f"{key}={portable_path(value)}" if eq else o

    return shlex.join(["python", "-m", "t2vturbo.distill", *[one(o) for o in overrides]])


def card_for(export_dir, report=None, repo_id: str | None = None) -> ModelCard:
    """The model card of a student export (module docstring); ``report``: a report.json (default: the run's)."""
    ex = StudentExport.resolve(export_dir)
    meta, cfg = ex.meta, ex.meta.get("config") or {}
    o, m = cfg.get("objective") or {}, cfg.get("model") or {}
    t = teacher_info(ex)
    lora = meta.get("lora") or {}
    has_pipe = (ex.dir / "diffusers" / "model_index.json").is_file()
    has_lora = bool((lora.get("files") or {}).get("diffusers"))
    tags = list(TAGS) + [str(meta.get("family", "unet3d"))]
    if has_lora or (m.get("lora") or {}).get("enabled"):
        tags.append("lora")
    if (cfg.get("data") or {}).get("kind") == "toy" or "toy" in str((cfg.get("data") or {}).get("urls", "")):
        tags.append("toy-world")
    data = ModelCardData(
        library_name="diffusers" if (has_pipe or has_lora) else PACKAGE,
        base_model=t["hub_id"],
        license=t["license"],
        pipeline_tag="text-to-video",
        tags=tags,
    )
    report_file = find_report(ex, report)
    rep = json.loads(report_file.read_text()) if report_file else None
    w_lo, w_hi = (meta.get("w_range") or [None, None])[:2]
    rw = (cfg.get("reward") or {}).get("weights") or {}
    gd = cfg.get("guidance") or {}
    tr = cfg.get("train") or {}
    name = repo_id or cfg.get("experiment_name") or ex.dir.name
    body = [
        f"# {name}: a few-step text-to-video student",
        "",
        f"Distilled with t2vturbo (the T2V-Turbo-v2 recipe) from the teacher {t['label']} "
        f"(`model.family={meta.get('family', 'unet3d')}`): it was distilled for 4 steps (any step count up to the grid's works), with the guidance "
        "scale w and the motion strength eta as inputs of the network instead of classifier-free guidance.",
        "",
        "## Recipe",
        "",
        f"- objective: `{o.get('name', '?')}` (loss {o.get('loss', '-')}, {o.get('num_ddim_timesteps', '?')}-point "
        f"teacher DDIM grid, consistency target: {o.get('target', '-')})",
        f"- guidance scale w ~ U[{w_lo}, {w_hi}] during training; default at sampling: w = {meta.get('guidance')}",
        f"- motion guidance: {'on' if gd.get('motion') else 'off'}; eta = {meta.get('eta')} at the steps with "
        f"t >= 1000 (1 - {StudentExport(meta=meta).get('motion_percentage')})",
        "- rewards: " + (", ".join(f"{k} x {v}" for k, v in rw.items()) if rw else "none"),
        "- weights: "
        + (
            f"LoRA rank {m['lora'].get('rank')}, alpha {m['lora'].get('alpha')} on "
            f"{m['lora'].get('target_modules')} (merged into `{STUDENT_FILE}`)"
            if (m.get("lora") or {}).get("enabled")
            else "full fine-tune"
        )
        + f", {meta.get('weights', 'student')} weights",
        f"- trained steps: {meta.get('step')} (lr {tr.get('lr', '?')}, {tr.get('micro_batch_size', '?')} clips "
        f"per rank x {tr.get('grad_accum', 1)} accumulation, {tr.get('precision', 'fp32')})",
        f"- clips: {meta.get('num_frames')} frames of {meta.get('height')}x{meta.get('width')}",
        f"- data: {_data_line(cfg)}",
        "",
        "## Evaluation",
        "",
    ]
    body += _report_lines(rep) if rep else ["No report yet (`python -m t2vturbo.eval.report RUN_DIR`).", ""]
    cmd = _command(ex)
    body += ["## How it was made", "", "```bash", cmd or "# (the Hydra overrides are unknown)", "```", ""]
    if not cmd:
        body += [f"The whole training config is the `config` of `{STUDENT_META}`.", ""]
    local = "STUDENT_DIR"
    get = f"hf download {repo_id} --local-dir {local}" if repo_id else f"# {local}: this folder"
    body += [
        "## Sampling",
        "",
        f"The teacher is needed too: it is {t['where']}"
        + (f"; get it with `hf download {t['hub_id']}`" if t["hub_id"] and "relative" in t["where"] else "")
        + ". With t2vturbo installed:",
        "",
        "```bash",
        get,
        f'python -m t2vturbo.sample --checkpoint {local} --steps 4 --prompt "a red circle moving left"',
        "```",
        "",
    ]
    if has_pipe:
        body += [
            "With diffusers alone (`diffusers/`: the student as a pipeline; guidance_scale is w itself):",
            "",
            "```python",
            "from diffusers import DiffusionPipeline",
            f'pipe = DiffusionPipeline.from_pretrained("{local}/diffusers", trust_remote_code=True)',
            'frames = pipe("a red circle moving left", num_inference_steps=4).frames',
            "```",
            "",
        ]
    if has_lora:
        files = lora["files"]
        body += [
            "## LoRA adapter",
            "",
            f"`{files['diffusers']}`: the adapters alone in diffusers' LoRA layout ({lora.get('component')}.* keys; "
            f"the scale alpha / r = {lora.get('scale_folded_into_lora_B')} is folded into lora_B). "
            f"`{files['guidance_layers']}`: the student's w / eta projections, which are not LoRA layers: the "
            "teacher needs them before the adapter gives the student.",
        ]
        if files.get("comfyui"):
            body.append(f"`{files['comfyui']}`: the same adapters under the original Wan names (ComfyUI).")
        if lora.get("component") == "unet":
            body += [
                "",
                "```python",
                "from t2vturbo.lora_formats import teacher_pipeline",
                f'pipe = teacher_pipeline("{local}")  # the teacher + {files["guidance_layers"]}',
                f'pipe.load_lora_weights("{local}")',
                "```",
            ]
        body.append("")
    body += [
        "## Files",
        "",
        f"- `{STUDENT_FILE}`: the student (fp32; LoRA merged), `{STUDENT_META}`: how to rebuild and sample it "
        "(teacher reference, schedule, sampling defaults, the training config)",
    ]
    if (ex.dir / "teacher").is_dir():
        body.append("- `teacher/`: the (tiny) teacher the student was distilled from")
    if (ex.dir / "unet_official.pt").is_file():
        body.append(
            "- `unet_official.pt`: the UNet in the official T2V-Turbo-v2 layout (the demo's unet_mg.pt)"
        )
    if has_pipe:
        body.append("- `diffusers/`: the student as a diffusers pipeline (T2VTurboPipeline + LCMScheduler)")
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body).rstrip() + "\n"
    return ModelCard(content)


def write_card(export_dir, report=None, repo_id: str | None = None) -> Path:
    """Write (or refresh) ``EXPORT_DIR/README.md``; returns its path."""
    ex = StudentExport.resolve(export_dir)
    path = ex.dir / CARD_FILE
    card_for(ex.dir, report, repo_id).save(path)
    normalize_modes(path)
    return path


# ---- push ----------------------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def push(
    export_dir,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    report=None,
) -> str:
    """Upload a student export to the hub repo ``repo_id`` (created if missing; ``revision``: a branch, created
    from main if missing); returns the commit's URL. Raises HubError (one line) when it cannot."""
    ex = StudentExport.resolve(export_dir)
    if not (ex.dir / STUDENT_FILE).is_file():
        raise HubError(f"{str(ex.dir)!r} has {STUDENT_META} but no {STUDENT_FILE}: nothing to push")
    if not isinstance(ex.meta.get("teacher"), dict):
        log.warning(
            "%s names its teacher by an absolute teacher_path (an old export): the pushed copy will not find it",
            ex.dir,
        )
    if report is not None or not (ex.dir / CARD_FILE).is_file():
        write_card(ex.dir, report, repo_id)
    token = token or get_token()
    if not token:
        raise HubError(
            f"no Hugging Face token to push {repo_id}: run `hf auth login` or set HF_TOKEN (a token with write access)"
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(ex.dir),
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"t2vturbo student (step {ex.meta.get('step')})",
            ignore_patterns=["*.tmp", ".*"],
        )
    except (LocalTokenNotFoundError, HfHubHTTPError, HTTPError, OSError) as e:
        raise HubError(f"push of {str(ex.dir)!r} to {repo_id} failed: {_one_line(e)}") from None
    return str(getattr(info, "commit_url", None) or info)


# ---- CLI -----------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=prog("t2vturbo.hub"), description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("card", help="(re)write EXPORT_DIR/README.md, the model card")
    c.add_argument("export_dir", help="a student export (OUTPUT_DIR/export) or a run dir holding export/")
    c.add_argument("--report", help="the run's report.json (default: RUN_DIR/report.json beside the export)")
    c.add_argument("--repo-id", help="the hub repo it goes to (named in the card's download line)")
    p = sub.add_parser("push", help="upload EXPORT_DIR to the hub repo REPO_ID")
    p.add_argument("export_dir", help="a student export (OUTPUT_DIR/export) or a run dir holding export/")
    p.add_argument("repo_id", help="hub repo, e.g. you/t2vturbo-toy")
    p.add_argument(
        "--private", action="store_true", help="create the repo private (an existing repo is kept)"
    )
    p.add_argument("--revision", help="branch to push to (created if missing; default: main)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--report", help="refresh the card with this report.json first")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "card":
            path = write_card(a.export_dir, a.report, a.repo_id)
            print(f"wrote {path}")
        else:
            url = push(
                a.export_dir,
                a.repo_id,
                private=True if a.private else None,
                revision=a.revision,
                commit_message=a.message,
                report=a.report,
            )
            print(f"pushed {a.export_dir} to {a.repo_id}: {url}")
    except (FileNotFoundError, ValueError, HubError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
