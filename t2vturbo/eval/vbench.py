"""Generate videos in VBench's layout, with a seed manifest, resume and a layout check.

``python -m t2vturbo.eval.vbench --prompts all_dimension.txt --out vbench_out [--checkpoint DIR]``
``python -m t2vturbo.eval.vbench --teacher --checkpoint TEACHER_DIR --steps 50 --prompts P.txt --out OUT``
``python -m t2vturbo.eval.vbench --validate-only --out OUT``

Output layout (``--out OUT``)::

    OUT/videos/<prompt>-<index>.mp4   # the folder to give VBench as --videos_path (nothing else in it)
    OUT/manifest.json                 # every video's prompt, index and seed + the sampling settings
    OUT/vbench_prompts.json           # {file name: prompt}, VBench's --prompt_file for custom_input mode

File names (:func:`video_filename`): VBench's standard mode looks every video up as
``f"{prompt}-{index}{suffix}"`` with ``prompt`` its prompt text *verbatim* (``vbench/__init__.py``,
``build_full_info_json``; sampling recipe in ``prompts/README.md``), so the stem is the prompt
unchanged -- spaces, commas, quotes, apostrophes, periods and non-ASCII letters are kept.  The only
changes are those the file system forces (no VBench prompt needs any of them): surrounding
whitespace is stripped (VBench strips its prompt lines), ``/`` and NUL become ``_``, and a stem
longer than 246 UTF-8 bytes is cut at a character boundary so ``-<index>.mp4`` fits the 255-byte
name limit (the longest VBench prompt has 210 bytes).  Prompts changed this way can still be scored
in VBench's ``custom_input`` mode with ``--prompt_file OUT/vbench_prompts.json``.  Only ``.mp4``
files are written into ``OUT/videos``: VBench takes the video suffix from the *first* file it lists
there, so any other file (a manifest, ``.DS_Store``) can make it miss every video.

Samples per prompt: ``--samples`` (default 5, VBench's standard); VBench's temporal-flickering
prompts (the 75 of ``prompts_per_dimension/temporal_flickering.txt``, built in) get
``--flicker-samples`` (default 25: VBench's static filter then keeps up to 5 static ones);
``--samples-override FILE`` (JSON ``{prompt: count}``) sets any prompt's count.  Repeated prompts
(``all_dimension.txt`` lists two twice) are generated once.

Seeds: ``seed = seed_base + global_index``, where ``global_index`` counts videos in generation
order: prompts in file order (first occurrence), and for each prompt its indices ``0..n-1``.  Each
video is sampled alone (batch of one) from that seed, so any single video can be reproduced with
``python -m t2vturbo.sample --seed SEED --prompt PROMPT`` and the same settings.  Changing the
prompt list or the per-prompt counts shifts later seeds; a resume that would mix seeds is refused.

Resume: existing videos that decode with the expected frame count and size are skipped; others
are regenerated.  Videos are written to ``OUT/.partial`` first and moved into place when
complete.  At the end (and with ``--validate-only``) the layout is checked: per-prompt counts,
missing, unreadable and unexpected files; the exit status is 0 only when everything is in order.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..cli import prog
from .vbench_constants import (
    FLICKER_SAMPLES_PER_PROMPT,
    SAMPLES_PER_PROMPT,
    TEMPORAL_FLICKERING_PROMPTS,
    VBENCH_FPS,
)

__all__ = [
    "MANIFEST_NAME",
    "MAX_STEM_BYTES",
    "PROMPT_MAP_NAME",
    "VIDEOS_SUBDIR",
    "VIDEO_SUFFIX",
    "Job",
    "LayoutReport",
    "check_video",
    "generate_videos",
    "load_sampler",
    "main",
    "parse_video_filename",
    "plan_jobs",
    "read_prompts",
    "sample_counts",
    "sanitize_prompt",
    "validate_layout",
    "video_filename",
]

VIDEO_SUFFIX = ".mp4"
VIDEOS_SUBDIR = "videos"
MANIFEST_NAME = "manifest.json"
PROMPT_MAP_NAME = "vbench_prompts.json"
PARTIAL_SUBDIR = ".partial"
MANIFEST_FORMAT = "t2vturbo-vbench-manifest/1"
#: Longest file-name stem (UTF-8 bytes) so that ``-<index up to 9999>.mp4`` fits in 255 bytes.
MAX_STEM_BYTES = 255 - len("-9999" + VIDEO_SUFFIX)
SEED_RULE = (
    "seed = seed_base + global_index; global_index enumerates videos in generation order: prompts in "
    "file order (first occurrence), indices 0..n-1 within each prompt; one video per sampler call"
)
_NAME_RE = re.compile(r"(?s)(.*)-(0|[1-9][0-9]*)" + re.escape(VIDEO_SUFFIX))

# --------------------------------------------------------------------------- names


def sanitize_prompt(prompt: str) -> str:
    """File-name stem for ``prompt``: the prompt verbatim except what the file system forbids.

    Strips surrounding whitespace, replaces ``/`` and NUL with ``_`` and cuts the stem to
    :data:`MAX_STEM_BYTES` UTF-8 bytes.  Everything else (spaces, quotes, commas, unicode) is kept,
    because VBench matches ``f"{prompt}-{index}.mp4"`` literally.
    """
    stem = str(prompt).strip().replace("/", "_").replace("\x00", "_")
    if not stem:
        raise ValueError("empty prompt")
    raw = stem.encode("utf-8")
    if len(raw) > MAX_STEM_BYTES:
        stem = raw[:MAX_STEM_BYTES].decode("utf-8", errors="ignore").rstrip()
    return stem


def video_filename(prompt: str, index: int) -> str:
    """VBench's ``{prompt}-{index}.mp4`` with the prompt passed through :func:`sanitize_prompt`."""
    if int(index) < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    return f"{sanitize_prompt(prompt)}-{int(index)}{VIDEO_SUFFIX}"


def parse_video_filename(name: str) -> tuple[str, int] | None:
    """``(stem, index)`` of ``<stem>-<index>.mp4`` (index without leading zeros), else None."""
    m = _NAME_RE.fullmatch(name)
    return (m.group(1), int(m.group(2))) if m and m.group(1) else None


# --------------------------------------------------------------------------- planning


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompts of a text file (one per line; stripped; blank lines skipped), repeats removed."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return list(dict.fromkeys(ln for ln in lines if ln))


def sample_counts(
    prompts: Iterable[str],
    samples: int = SAMPLES_PER_PROMPT,
    flicker_samples: int | None = FLICKER_SAMPLES_PER_PROMPT,
    overrides: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Samples per prompt (insertion-ordered, repeats removed).

    ``samples`` for every prompt, ``flicker_samples`` (if not None) for VBench's temporal-flickering
    prompts, and ``overrides[prompt]`` wins over both.  Override keys that are not among the
    prompts raise ``ValueError`` (likely a typo).
    """
    flicker = set(TEMPORAL_FLICKERING_PROMPTS)
    overrides = {str(k).strip(): int(v) for k, v in (overrides or {}).items()}
    counts: dict[str, int] = {}
    for p in prompts:
        p = str(p).strip()
        if not p or p in counts:
            continue
        n = overrides.get(p, flicker_samples if flicker_samples is not None and p in flicker else samples)
        if int(n) < 1:
            raise ValueError(f"sample count must be >= 1, got {n} for {p!r}")
        counts[p] = int(n)
    unknown = sorted(set(overrides) - set(counts))
    if unknown:
        raise ValueError(
            f"--samples-override names {len(unknown)} prompt(s) not in the prompt list, e.g. {unknown[0]!r}"
        )
    return counts


@dataclass(frozen=True)
class Job:
    """One video to generate."""

    prompt: str
    index: int
    global_index: int
    seed: int
    filename: str


def plan_jobs(counts: Mapping[str, int], seed_base: int = 0) -> list[Job]:
    """All videos in generation order with ``seed = seed_base + global_index``.

    Raises ``ValueError`` if two different prompts map to the same file name.
    """
    stems: dict[str, str] = {}
    for p in counts:
        s = sanitize_prompt(p)
        if s in stems and stems[s] != p:
            raise ValueError(f"prompts {stems[s]!r} and {p!r} give the same file name stem {s!r}")
        stems[s] = p
    jobs: list[Job] = []
    for p, n in counts.items():
        for i in range(int(n)):
            g = len(jobs)
            jobs.append(Job(p, i, g, int(seed_base) + g, video_filename(p, i)))
    return jobs


# --------------------------------------------------------------------------- checking


def _ffmpeg_reason(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    logs = [ln.split("] ", 1)[1] for ln in lines if ln.startswith("[") and "] " in ln]
    msg = "; ".join(dict.fromkeys(logs)) or (lines[-1] if lines else type(err).__name__)
    return msg[:200]


def check_video(
    path: str | os.PathLike,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> str | None:
    """None if ``path`` decodes (with the given frame count / size, where given), else the reason."""
    # lazy: video_io imports torch; this module stays torch-free (--validate-only --no-decode, the helpers)
    from ..data.video_io import read_video

    p = Path(path)
    try:
        if p.stat().st_size == 0:
            return "empty file"
        frames = read_video(p)
    except Exception as e:  # noqa: BLE001 - any decoder failure means unreadable
        return f"cannot decode ({_ffmpeg_reason(e)})"
    f, h, w = frames.shape[:3]
    if f == 0:
        return "no frames decoded"
    if num_frames is not None and f != int(num_frames):
        return f"{f} frames decoded, expected {int(num_frames)}"
    if (height is not None and h != int(height)) or (width is not None and w != int(width)):
        return f"size {h}x{w}, expected {height}x{width}"
    return None


@dataclass
class LayoutReport:
    """Result of :func:`validate_layout`."""

    videos_dir: str
    expected: dict[str, int]  # prompt -> expected count
    found: dict[str, int]  # prompt -> readable videos found
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    unexpected: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    decoded: bool = True

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unreadable or self.unexpected)

    @property
    def num_expected(self) -> int:
        return sum(self.expected.values())

    @property
    def incomplete_prompts(self) -> list[str]:
        return [p for p, n in self.expected.items() if self.found.get(p, 0) < n]

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "videos_dir": self.videos_dir,
            "prompts": len(self.expected),
            "complete_prompts": len(self.expected) - len(self.incomplete_prompts),
            "expected_videos": self.num_expected,
            "good_videos": sum(self.found.values()),
            "missing": len(self.missing),
            "unreadable": len(self.unreadable),
            "unexpected": len(self.unexpected),
            "decoded": self.decoded,
        }

    def format(self, max_items: int = 20) -> str:
        s = self.summary()
        lines = [
            f"VBench layout check of {self.videos_dir}",
            f"  prompts: {s['prompts']} expected, {s['complete_prompts']} complete, "
            f"{len(self.incomplete_prompts)} incomplete",
            f"  videos:  {s['expected_videos']} expected, {s['good_videos']} good, {s['missing']} missing, "
            f"{s['unreadable']} unreadable, {s['unexpected']} unexpected"
            + ("" if self.decoded else " (files not decoded)"),
        ]

        def block(title: str, items: list[str]) -> None:
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {it}" for it in items[:max_items])
                if len(items) > max_items:
                    lines.append(f"    ... and {len(items) - max_items} more")

        block("missing", [repr(m) for m in self.missing])
        block("unreadable", [f"{n!r}: {r}" for n, r in self.unreadable])
        block("unexpected", [f"{n!r}: {r}" for n, r in self.unexpected])
        block(
            "incomplete prompts",
            [f"{p!r}: {self.found.get(p, 0)}/{self.expected[p]}" for p in self.incomplete_prompts],
        )
        lines.append("  RESULT: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def validate_layout(
    videos_dir: str | os.PathLike,
    counts: Mapping[str, int],
    *,
    decode: bool = True,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    progress: bool = False,
) -> LayoutReport:
    """Check ``videos_dir`` against ``counts`` (prompt -> videos expected, indices ``0..n-1``).

    Reports missing files, files that do not decode (or have the wrong frame count / size, when
    given; skipped with ``decode=False``) and anything unexpected: wrong names, unknown prompts,
    indices beyond the plan, non-``.mp4`` files and folders.
    """
    d = Path(videos_dir)
    by_stem = {sanitize_prompt(p): p for p in counts}
    report = LayoutReport(
        str(d), {p: int(n) for p, n in counts.items()}, {p: 0 for p in counts}, decoded=decode
    )
    if not d.is_dir():
        report.missing = [video_filename(p, i) for p, n in counts.items() for i in range(int(n))]
        report.unexpected.append((str(d), "videos folder does not exist"))
        return report
    present: set[str] = set()
    to_check: list[tuple[str, str]] = []  # (name, prompt)
    for entry in sorted(os.scandir(d), key=lambda e: e.name):
        name = entry.name
        if entry.is_dir(follow_symlinks=False):
            report.unexpected.append((name, "a folder (VBench expects only video files here)"))
            continue
        if not name.endswith(VIDEO_SUFFIX):
            report.unexpected.append(
                (
                    name,
                    f"not a {VIDEO_SUFFIX} file (VBench takes the video suffix from the "
                    "first file it lists, so stray files can hide every video)",
                )
            )
            continue
        parsed = parse_video_filename(name)
        if parsed is None:
            report.unexpected.append((name, "not named '<prompt>-<index>.mp4'"))
            continue
        stem, idx = parsed
        prompt = by_stem.get(stem)
        if prompt is None:
            report.unexpected.append(
                (name, "prompt not in the prompt list (misspelt or differently sanitised?)")
            )
            continue
        if idx >= counts[prompt]:
            report.unexpected.append((name, f"index {idx} beyond the {counts[prompt]} samples planned"))
            continue
        present.add(name)
        to_check.append((name, prompt))
    report.missing = [
        n
        for p, k in counts.items()
        for n in (video_filename(p, i) for i in range(int(k)))
        if n not in present
    ]
    it: Iterable[tuple[str, str]] = to_check
    if decode and progress:
        it = tqdm(to_check, desc="checking videos", unit="video")
    for name, prompt in it:
        reason = check_video(d / name, num_frames, height, width) if decode else None
        if reason is None:
            report.found[prompt] += 1
        else:
            report.unreadable.append((name, reason))
    return report


# --------------------------------------------------------------------------- generation


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def generate_videos(
    sample_fn: Callable[[str, int], Any],
    jobs: Sequence[Job],
    out: str | os.PathLike,
    *,
    fps: float = VBENCH_FPS,
    crf: int = 0,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_progress: Callable[[dict[str, str]], None] | None = None,
    save_every: int = 50,
) -> dict[str, str]:
    """Generate the missing videos of ``jobs`` into ``out/videos``; returns ``{file name: status}``.

    ``sample_fn(prompt, seed)`` returns one video (float ``[F, 3, H, W]`` in ``[-1, 1]`` or uint8
    ``[F, H, W, 3]``).  Status: ``"existing"`` (kept: decodes with the expected frames / size),
    ``"generated"`` or ``"regenerated"`` (an unreadable file was replaced).  ``on_progress(statuses)``
    is called every ``save_every`` videos and at the end (the CLI saves its manifest there).
    """
    # lazy: video_io imports torch; this module stays torch-free (see check_video)
    from ..data.video_io import write_video

    out = Path(out)
    vdir, pdir = out / VIDEOS_SUBDIR, out / PARTIAL_SUBDIR
    vdir.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    bar = None
    if progress:
        bar = tqdm(total=len(jobs), desc="vbench videos", unit="video")
    counts: Counter[str] = Counter()
    try:
        for n, job in enumerate(jobs, 1):
            path = vdir / job.filename
            kind = "generated"
            if path.exists() and not overwrite:
                if check_video(path, num_frames, height, width) is None:
                    kind = "existing"
                else:
                    kind = "regenerated"
            if kind != "existing":
                video = sample_fn(job.prompt, job.seed)
                if hasattr(video, "detach"):
                    video = (
                        video.detach().float().cpu() if video.is_floating_point() else video.detach().cpu()
                    )
                pdir.mkdir(parents=True, exist_ok=True)
                tmp = write_video(pdir / job.filename, video, fps=fps, crf=crf)
                os.replace(tmp, path)
            status[job.filename] = kind
            counts[kind] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: v for k, v in counts.items()}, refresh=False)
            if on_progress is not None and (n % max(1, save_every) == 0):
                on_progress(status)
    finally:
        if bar is not None:
            bar.close()
        if on_progress is not None:
            on_progress(status)
        if pdir.is_dir() and not any(pdir.iterdir()):
            pdir.rmdir()
    return status


# --------------------------------------------------------------------------- models


def load_sampler(
    checkpoint: str | os.PathLike | None,
    teacher: bool = False,
    *,
    device: str = "cpu",
    steps: int | None = None,
    guidance: float | None = None,
    eta: float = 0.0,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> tuple[Callable[[str, int], Any], dict[str, Any]]:
    """``(sample_fn(prompt, seed) -> [F, 3, H, W], settings)`` for a student export or the teacher.

    ``checkpoint``: a student export folder (or a run's output dir; default: the only export
    under ``outputs/``, several are refused); with ``teacher=True`` a teacher folder (``unet/config.json``) or an export
    (its ``teacher_path`` is used).  ``settings`` holds everything that determines the samples.
    """
    # lazy: the models (torch, diffusers) load only here: scoring and tables run without them
    import torch

    from ..sample import sample_student, sample_teacher  # lazy: as above
    from ..student_export import StudentExport, load_teacher  # lazy: as above

    net = None
    if teacher:
        bb, meta = load_teacher(checkpoint, device)
        ckpt = Path(checkpoint) if checkpoint else Path(meta["teacher_path"])
        bb.teacher.eval()
    else:
        ex = StudentExport.resolve(checkpoint)
        (bb, net), meta, ckpt = ex.load(device), ex.meta, ex.dir
    opt = StudentExport(meta=meta).get

    settings: dict[str, Any] = {
        "who": "teacher" if teacher else "student",
        "checkpoint": str(ckpt.resolve()),
        "family": meta.get("family", "unet3d"),
        "steps": int(steps if steps is not None else (50 if teacher else 4)),
        "guidance": float(opt("guidance", guidance)),
        "num_frames": int(opt("num_frames", num_frames)),
        "height": int(opt("height", height)),
        "width": int(opt("width", width)),
    }
    if "teacher_path" in meta:
        settings["teacher_path"] = str(meta["teacher_path"])
    common = {k: settings[k] for k in ("num_frames", "height", "width")}
    if teacher:
        settings.update(sampler="ddim (eta=0) + classifier-free guidance", guidance_form="lcm")

        def sample_fn(prompt: str, seed: int):
            with torch.no_grad():
                v = sample_teacher(
                    bb,
                    [prompt],
                    steps=settings["steps"],
                    guidance=settings["guidance"],
                    seed=int(seed),
                    guidance_form="lcm",
                    **common,
                )
            return v[0]
    else:
        settings.update(
            sampler="multistep consistency",
            eta=float(eta),
            num_ddim_timesteps=int(opt("num_ddim_timesteps", None)),
            sigma_data=float(opt("sigma_data", None)),
            timestep_scaling=float(opt("timestep_scaling", None)),
            motion_percentage=float(opt("motion_percentage", None)),
        )

        def sample_fn(prompt: str, seed: int):
            with torch.no_grad():
                v = sample_student(
                    bb,
                    net,
                    [prompt],
                    steps=settings["steps"],
                    num_ddim_timesteps=settings["num_ddim_timesteps"],
                    guidance=settings["guidance"],
                    eta=settings["eta"],
                    seed=int(seed),
                    sigma_data=settings["sigma_data"],
                    timestep_scaling=settings["timestep_scaling"],
                    motion_percentage=settings["motion_percentage"],
                    **common,
                )
            return v[0]

    return sample_fn, settings


# --------------------------------------------------------------------------- CLI

# Settings that must match for a resume to keep existing videos.
_RESUME_KEYS = (
    "who",
    "checkpoint",
    "steps",
    "guidance",
    "eta",
    "num_frames",
    "height",
    "width",
    "fps",
    "crf",
    "num_ddim_timesteps",
    "sigma_data",
    "timestep_scaling",
    "guidance_form",
)


def _manifest(
    args,
    settings: dict[str, Any],
    jobs: Sequence[Job],
    counts: Mapping[str, int],
    overrides: Mapping[str, int] | None,
    status: Mapping[str, str],
    created: str,
) -> dict[str, Any]:
    import torch  # lazy: only for its version; importing this module stays torch-free

    return {
        "format": MANIFEST_FORMAT,
        "created": created,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "videos_dir": VIDEOS_SUBDIR,
        "prompts_file": str(Path(args.prompts).resolve()),
        "num_prompts": len(counts),
        "num_videos": len(jobs),
        "samples": args.samples,
        "flicker_samples": args.flicker_samples,
        "samples_override": dict(overrides or {}),
        "seed_base": args.seed_base,
        "seed_rule": SEED_RULE,
        "settings": settings,
        "device": args.device,
        "torch": torch.__version__,
        "command": [sys.executable, "-m", "t2vturbo.eval.vbench", *args.argv],
        "videos": [{**asdict(j), "status": status.get(j.filename, "pending")} for j in jobs],
    }


def _counts_from_manifest(m: Mapping[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in m["videos"]:
        counts[v["prompt"]] = max(counts.get(v["prompt"], 0), int(v["index"]) + 1)
    return counts


def _load_overrides(path: str | None) -> dict[str, int] | None:
    if not path:
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a JSON object {{prompt: samples}}")
    return {str(k): int(v) for k, v in data.items()}


def _resume_conflicts(old: Mapping[str, Any], settings: Mapping[str, Any], jobs: Sequence[Job]) -> list[str]:
    out = []
    old_s = old.get("settings", {})
    for k in _RESUME_KEYS:
        if old_s.get(k) != settings.get(k):
            out.append(f"{k}: {old_s.get(k)!r} -> {settings.get(k)!r}")
    old_seeds = {v["filename"]: v["seed"] for v in old.get("videos", [])}
    moved = [j.filename for j in jobs if j.filename in old_seeds and old_seeds[j.filename] != j.seed]
    if moved:
        out.append(
            f"seeds of {len(moved)} video(s) differ from the manifest (prompt list, counts or --seed-base "
            f"changed), e.g. {moved[0]!r}"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog("t2vturbo.eval.vbench"), description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", help="prompt file, one per line (e.g. VBench's prompts/all_dimension.txt)")
    ap.add_argument("--out", required=True, help="output folder: OUT/videos (for VBench), OUT/manifest.json")
    ap.add_argument("--samples", type=int, default=SAMPLES_PER_PROMPT, help="videos per prompt (default 5)")
    ap.add_argument(
        "--flicker-samples",
        type=int,
        default=FLICKER_SAMPLES_PER_PROMPT,
        help="videos per prompt for VBench's 75 temporal-flickering prompts (default 25; "
        "set equal to --samples to disable)",
    )
    ap.add_argument("--samples-override", help="JSON {prompt: samples} for any prompt (wins over both)")
    ap.add_argument(
        "--checkpoint",
        help="student export (or run dir; default: the only export under outputs/); with "
        "--teacher a teacher folder or an export (its teacher)",
    )
    ap.add_argument("--teacher", action="store_true", help="sample the teacher (DDIM + CFG) instead")
    ap.add_argument("--steps", type=int, help="sampling steps (default: 4 student, 50 teacher)")
    ap.add_argument("--guidance", type=float, help="w (LCM form); default: the export's, else 7.5")
    ap.add_argument("--eta", type=float, default=0.0, help="motion-guidance strength embedding (student)")
    ap.add_argument("--seed-base", type=int, default=0, help="seed = seed_base + global video index")
    ap.add_argument("--num-frames", type=int, help="default: the export's (8 for a bare teacher)")
    ap.add_argument("--height", type=int, help="default: the export's (32 for a bare teacher)")
    ap.add_argument("--width", type=int, help="default: the export's (32 for a bare teacher)")
    ap.add_argument("--fps", type=float, default=VBENCH_FPS, help="frame rate written (VBench samples at 8)")
    ap.add_argument(
        "--crf", type=int, default=0, help="x264 CRF (0 = lossless yuv444p; 17-23 = yuv420p, smaller)"
    )
    ap.add_argument("--device", default=None, help="default: cuda if available")
    ap.add_argument(
        "--overwrite", action="store_true", help="regenerate every video, ignoring existing files"
    )
    ap.add_argument(
        "--validate-only",
        action="store_true",
        help="only check OUT/videos (against --prompts or the manifest)",
    )
    ap.add_argument("--no-decode", action="store_true", help="validation: check names only, do not decode")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]

    out = Path(args.out)
    manifest_path = out / MANIFEST_NAME
    old = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else None
    try:
        overrides = _load_overrides(args.samples_override)
        counts = None
        if args.prompts:
            counts = sample_counts(read_prompts(args.prompts), args.samples, args.flicker_samples, overrides)
            if not counts:
                ap.error(f"no prompts in {args.prompts}")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.validate_only:
        if counts is None:
            if old is None:
                print(
                    f"error: no --prompts and no {manifest_path}: nothing to validate against",
                    file=sys.stderr,
                )
                return 2
            counts = _counts_from_manifest(old)
        st = (old or {}).get("settings", {})
        shape = {
            k: getattr(args, k) if getattr(args, k) is not None else st.get(k)
            for k in ("num_frames", "height", "width")
        }
        rep = validate_layout(
            out / VIDEOS_SUBDIR, counts, decode=not args.no_decode, progress=not args.no_progress, **shape
        )
        print(rep.format())
        return 0 if rep.ok else 1

    if counts is None:
        ap.error("--prompts is required (except with --validate-only)")
    import torch  # lazy: only generation needs torch (--validate-only runs without it)

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        jobs = plan_jobs(counts, args.seed_base)
        sample_fn, settings = load_sampler(
            args.checkpoint,
            args.teacher,
            device=args.device,
            steps=args.steps,
            guidance=args.guidance,
            eta=args.eta,
            num_frames=args.num_frames,
            height=args.height,
            width=args.width,
        )
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings.update(fps=float(args.fps), crf=int(args.crf))
    if old is not None and not args.overwrite:
        conflicts = _resume_conflicts(old, settings, jobs)
        if conflicts:
            print(
                f"error: {out} holds videos made with other settings; use a new --out or --overwrite:\n  "
                + "\n  ".join(conflicts),
                file=sys.stderr,
            )
            return 2
    out.mkdir(parents=True, exist_ok=True)
    created = (old or {}).get("created") if not args.overwrite else None
    created = created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_json(out / PROMPT_MAP_NAME, {j.filename: j.prompt for j in jobs})

    def save(status: Mapping[str, str]) -> None:
        _write_json(manifest_path, _manifest(args, settings, jobs, counts, overrides, status, created))

    save({})
    n_stems = sum(1 for p in counts if sanitize_prompt(p) != p)
    print(
        f"{len(jobs)} videos for {len(counts)} prompts -> {out / VIDEOS_SUBDIR} ({settings['who']}, "
        f"{settings['steps']} steps, guidance {settings['guidance']}, seeds {args.seed_base}.."
        f"{args.seed_base + len(jobs) - 1})"
        + (f"; {n_stems} prompt(s) renamed for the file system (see {PROMPT_MAP_NAME})" if n_stems else ""),
        flush=True,
    )
    t0 = time.perf_counter()
    status = generate_videos(
        sample_fn,
        jobs,
        out,
        fps=args.fps,
        crf=args.crf,
        num_frames=settings["num_frames"],
        height=settings["height"],
        width=settings["width"],
        overwrite=args.overwrite,
        progress=not args.no_progress,
        on_progress=save,
    )
    c = Counter(status.values())
    print(
        f"generated {c['generated'] + c['regenerated']} ({c['regenerated']} replaced unreadable files), "
        f"kept {c['existing']} existing, in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    rep = validate_layout(
        out / VIDEOS_SUBDIR,
        counts,
        decode=not args.no_decode,
        num_frames=settings["num_frames"],
        height=settings["height"],
        width=settings["width"],
    )
    print(rep.format())
    final = _manifest(args, settings, jobs, counts, overrides, status, created)
    final["validation"] = rep.summary()
    _write_json(manifest_path, final)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
