"""The student export: the one writer and the one reader of a distilled student.

Layout (``OUTPUT_DIR/export`` of a distillation run)::

    student.safetensors      the student's weights (fp32; LoRA merged), GuidedDenoiser keys
    t2vturbo_student.json    how to rebuild and sample it: family, teacher (a relative reference:
                             :func:`teacher_reference`; old exports: an absolute teacher_path), backbone_kwargs,
                             prediction_type, num_ddim_timesteps, sigma_data, timestep_scaling, clip size,
                             guidance (the middle of its w range), eta, motion_percentage, w_range, step,
                             the command and the run's config (no absolute path: :func:`portable_config`)
    teacher/                 the teacher itself, when it had no folder of its own (a tiny random one)
    diffusers/               optionally the student as a plain diffusers pipeline (export_pipeline.py)

:meth:`StudentExport.resolve` accepts the export folder, a run's output dir (``RUN/export``) or nothing
(the only export under ``outputs/``; several are refused, listed); :func:`load_teacher` also accepts a teacher folder itself.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from .backbones import load_backbone

log = logging.getLogger("t2vturbo")

STUDENT_FILE = "student.safetensors"
STUDENT_META = "t2vturbo_student.json"

#: sampling settings of a student, with the values used when an export's meta lacks them
SAMPLING_DEFAULTS: dict[str, Any] = {
    "num_frames": 8,
    "height": 32,
    "width": 32,
    "num_ddim_timesteps": 200,
    "sigma_data": 0.5,
    "timestep_scaling": 10.0,
    "guidance": 7.5,
    "eta": 0.0,
    # eta is given at the sampling steps with t >= T (1 - motion_percentage), 0 below (the official pipelines)
    "motion_percentage": 0.5,
}


def find_latest_export(root="outputs", every: bool = False):
    """The export folder with the newest ``t2vturbo_student.json`` under ``root`` (None: none); with
    ``every``, all the export folders under ``root``, newest first (``[]``: none)."""
    metas = sorted(Path(root).glob(f"**/{STUDENT_META}"), key=lambda p: p.stat().st_mtime, reverse=True)
    if every:
        return [m.parent for m in metas]
    return metas[0].parent if metas else None


@dataclass
class StudentExport:
    """An export folder and its meta (see module docstring). ``StudentExport(meta=m)`` (no folder) reads the
    settings of a meta alone, with :data:`SAMPLING_DEFAULTS` where it has none."""

    dir: Path | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        # an export with a relative `teacher` reference: `teacher_path` (as old exports had it, and as the readers
        # of meta use it) is where the teacher is on this machine, in memory only (write() drops it)
        if (
            self.dir is not None
            and isinstance(self.meta.get("teacher"), dict)
            and "teacher_path" not in self.meta
        ):
            try:
                self.meta["teacher_path"] = str(self.find_teacher())
            except FileNotFoundError:
                pass  # load_teacher() raises it, with what was looked for

    # ---- finding one ------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, path=None, root="outputs") -> StudentExport:
        """The export at ``path`` (an export folder, or a run dir holding ``export/``), or, when ``path`` is
        None, the only export under ``root``. Raises FileNotFoundError saying what was expected, also when
        ``root`` holds several exports (it lists them: path, step, time written; the choice is the caller's)."""
        if path is None:
            found = find_latest_export(root, every=True)
            if not found:
                raise FileNotFoundError(
                    f"no distilled student found under {str(root)}/: run `make distill` "
                    "(or pass --checkpoint DIR)"
                )
            if len(found) > 1:
                import time

                def step(d):
                    try:
                        return json.loads((d / STUDENT_META).read_text()).get("step", "?")
                    except (OSError, ValueError, AttributeError):
                        return "?"

                rows = "\n".join(
                    f"  {str(d)}  step {step(d)}  written "
                    + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((d / STUDENT_META).stat().st_mtime))
                    for d in found
                )
                raise FileNotFoundError(
                    f"{len(found)} student exports under {str(root)}/ (newest first); choose one with "
                    f"--checkpoint DIR:\n{rows}"
                )
            path = found[0]
        d = Path(path)
        for cand in (d, d / "export"):
            meta_f = cand / STUDENT_META
            if meta_f.is_file():
                try:
                    meta = json.loads(meta_f.read_text())
                except (OSError, ValueError) as e:
                    raise FileNotFoundError(f"cannot read the student export {str(meta_f)!r}: {e}") from None
                if not isinstance(meta, dict):
                    raise FileNotFoundError(f"{str(meta_f)!r} is not a student export's meta (a JSON object)")
                return cls(cand, meta)
        raise FileNotFoundError(
            f"{str(d)!r} is not a t2vturbo student: expected {STUDENT_META} and {STUDENT_FILE} "
            "(written to OUTPUT_DIR/export by `python -m t2vturbo.distill`)"
        )

    # ---- reading ----------------------------------------------------------------------------------
    @property
    def weights(self) -> Path:
        return self.dir / STUDENT_FILE

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self.weights.is_file():
            raise FileNotFoundError(
                f"student export {str(self.dir)!r} has {STUDENT_META} but no {STUDENT_FILE}"
            )
        return load_file(str(self.weights))

    def get(self, name: str, value=None):
        """``value`` if given, else the export's setting, else :data:`SAMPLING_DEFAULTS`."""
        if value is not None:
            return value
        return self.meta.get(name, SAMPLING_DEFAULTS[name])

    def sampling_kwargs(self) -> tuple[dict, dict]:
        """(clip size, consistency-sampler settings) as keyword arguments of ``t2vturbo.sample``'s samplers:
        ``num_frames, height, width`` and ``num_ddim_timesteps, sigma_data, timestep_scaling, eta,
        motion_percentage`` (an export without ``motion_percentage``: 0.5, the official default)."""
        size = {k: int(self.get(k)) for k in ("num_frames", "height", "width")}
        cm = dict(
            num_ddim_timesteps=int(self.get("num_ddim_timesteps")),
            sigma_data=float(self.get("sigma_data")),
            timestep_scaling=float(self.get("timestep_scaling")),
            eta=float(self.get("eta")),
            motion_percentage=float(self.get("motion_percentage")),
        )
        return size, cm

    def find_teacher(self) -> Path:
        """Where the teacher is on this machine: the meta's ``teacher`` reference (the package's shipped toy
        teacher, or a path relative to the export folder, or a hub id found in the local Hugging Face cache),
        or an old export's ``teacher_path``. Raises FileNotFoundError naming what was looked for and how to
        point at the teacher."""
        m = self.meta
        if isinstance(m.get("teacher"), dict):
            return resolve_teacher(m["teacher"], self.dir, self.dir / STUDENT_META if self.dir else None)
        if m.get("teacher_path"):  # an export of before the relative references: the path as written
            p = Path(m["teacher_path"])
            if not p.is_absolute() and self.dir is not None and not p.exists():
                p = self.dir / p
            if p.exists():
                return p
            raise FileNotFoundError(
                f"the teacher of the student export {str(self.dir)!r} was not found: teacher_path "
                f"{m['teacher_path']!r} does not exist; put the teacher there, or edit teacher_path in "
                f"{str(self.dir / STUDENT_META) if self.dir else STUDENT_META} (or pass teacher=PATH)"
            )
        raise FileNotFoundError(
            f"the student export {str(self.dir)!r} names no teacher (neither `teacher` nor `teacher_path` in "
            f"{STUDENT_META}): pass teacher=PATH"
        )

    def backbone_kwargs(self) -> dict:
        """``backbone_kwargs`` of the meta with its export-relative paths (``backbone_path_kwargs``) made
        usable here."""
        kw = dict(self.meta.get("backbone_kwargs", {}))
        for k in self.meta.get("backbone_path_kwargs", []):
            if kw.get(k) is not None and self.dir is not None:
                kw[k] = str(Path(os.path.normpath(self.dir.resolve() / kw[k])))
        return kw

    def load_teacher(self, device="cpu", teacher=None):
        """The teacher backbone the student was distilled from (:meth:`find_teacher`, or the folder
        ``teacher`` when given), rebuilt with the meta's ``backbone_kwargs``."""
        path = Path(teacher) if teacher is not None else self.find_teacher()
        return load_backbone(self.meta.get("family", "unet3d"), str(path), **self.backbone_kwargs()).to(
            device
        )

    def load(self, device="cpu", teacher=None):
        """``(backbone, student)``: the teacher backbone and the student in eval mode, on ``device``
        (``teacher``: the teacher folder, when not the export's own)."""
        bb = self.load_teacher(device, teacher)
        net = bb.make_student()
        net.load_state_dict(self.state_dict())
        return bb, net.to(device).eval()

    def load_into(self, module, teacher_path=None) -> None:
        """Initialise ``module`` (a fresh student of the same teacher) from this export; warns when the export
        was distilled from another teacher folder than ``teacher_path``."""
        try:
            theirs = self.find_teacher()
        except FileNotFoundError:
            theirs = self.meta.get("teacher_path") or self.meta.get("teacher")
        if theirs and teacher_path and Path(str(theirs)).resolve() != Path(teacher_path).resolve():
            log.warning(
                "the student export %s was distilled from %s, model.path is %s",
                self.dir,
                theirs,
                teacher_path,
            )
        missing, unexpected = module.load_state_dict(self.state_dict(), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"student export {self.dir} does not fit model.path's student: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        log.info("initialised the student from %s (step %s)", self.dir, self.meta.get("step"))

    # ---- writing ----------------------------------------------------------------------------------
    @staticmethod
    def meta_for(
        cfg, bb, step: int, weights: str, teacher_path, export_dir, command: str | None = None
    ) -> dict:
        """The meta of a student trained with config ``cfg`` on backbone ``bb``, to be written to
        ``export_dir``: the teacher (folder or file ``teacher_path``) as a relative reference
        (:func:`teacher_reference`), no absolute path of this machine (:func:`portable_config`); ``command``:
        the command line that trained it (Hydra's overrides), when known."""
        o, m = cfg.objective, cfg.model
        kwargs = dict(bb.export_kwargs(m))
        path_kwargs = sorted(k for k, v in kwargs.items() if k.endswith("_path") and isinstance(v, str))
        for k in path_kwargs:  # e.g. videocrafter2's tokenizer_path: relative to the export folder
            kwargs[k] = Path(
                os.path.relpath(Path(kwargs[k]).resolve(), Path(export_dir).resolve())
            ).as_posix()
        return {
            "family": m.family,
            # where the teacher is, relative only (StudentExport.find_teacher resolves it)
            "teacher": teacher_reference(teacher_path, export_dir, getattr(m, "arch", None)),
            # load_backbone(family, teacher, **backbone_kwargs) rebuilds the teacher
            "backbone_kwargs": kwargs,
            "backbone_path_kwargs": path_kwargs,
            "prediction_type": bb.prediction_type,
            "num_ddim_timesteps": o.num_ddim_timesteps,
            "sigma_data": o.sigma_data,
            "timestep_scaling": o.timestep_scaling,
            "num_frames": m.num_frames,
            "height": m.height,
            "width": m.width,
            "weights": weights,
            "guidance": (o.w_min + o.w_max) / 2,
            "eta": float(cfg.guidance.eta) if cfg.guidance.motion else 0.0,
            # eta at sampling steps t >= T (1 - p): the guided fraction of the grid it was trained with
            "motion_percentage": float(cfg.guidance.tau),
            "w_range": [o.w_min, o.w_max],
            "step": step,
            "command": command,
            "config": portable_config(OmegaConf.to_container(cfg)),
        }

    @classmethod
    def write(cls, out, state_dict: dict[str, torch.Tensor], meta: dict) -> StudentExport:
        """Write ``student.safetensors`` (fp32, atomically) and the meta into ``out``, both with the modes of
        any new file (0644 under umask 022; safetensors alone would write 0600). A meta with a ``teacher``
        reference is written without ``teacher_path`` (the absolute path :meth:`find_teacher` found here)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if isinstance(meta.get("teacher"), dict):
            meta = {k: v for k, v in meta.items() if k != "teacher_path"}
        tmp = out / (STUDENT_FILE + ".tmp")
        save_file({k: v.contiguous().float() for k, v in state_dict.items()}, str(tmp))
        normalize_modes(tmp)
        tmp.replace(out / STUDENT_FILE)
        (out / STUDENT_META).write_text(json.dumps(meta, indent=2))
        normalize_modes(out / STUDENT_META)
        return cls(out, dict(meta))


def load_teacher(path=None, device="cpu"):
    """``(backbone, meta)`` of a teacher folder (diffusers layout, ``unet/config.json``) or of a student
    export's teacher (``meta`` is then the export's; ``{}`` for a teacher folder)."""
    if path is not None and (Path(path) / "unet" / "config.json").exists():
        return load_backbone("unet3d", str(path)).to(device), {}
    try:
        ex = StudentExport.resolve(path)
    except FileNotFoundError:
        if path is None:
            raise
        raise FileNotFoundError(
            f"{str(path)!r} is neither a teacher folder (unet/config.json) nor a student "
            f"export ({STUDENT_META})"
        ) from None
    return ex.load_teacher(device), ex.meta


# ---- portable exports: relative teacher references, no absolute path of this machine, normal modes ----------

PACKAGE = "t2vturbo"

#: the public releases of the architectures the model options name (``model.arch``, conf/model/*.yaml): hub id,
#: license (None: not stated by the release)
KNOWN_TEACHERS: dict[str, tuple[str, str | None]] = {
    "wan2.1_t2v_1.3b": ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "apache-2.0"),
    "wan2.1_t2v_14b": ("Wan-AI/Wan2.1-T2V-14B-Diffusers", "apache-2.0"),
    "modelscope_1.7b": ("ali-vilab/text-to-video-ms-1.7b", "cc-by-nc-4.0"),
    "videocrafter2_512_v2": ("VideoCrafter/VideoCrafter2", None),
}


def current_umask() -> int:
    """The process umask (read without changing it where /proc says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normalize_modes(*paths) -> None:
    """Give each path, and everything under a folder, the mode of a new file (0666) or folder (0777) less the
    umask: safetensors (and so diffusers' save_pretrained) writes its files 0600."""
    mask = current_umask()
    for root in paths:
        root = Path(root)
        for p in [root, *(root.rglob("*") if root.is_dir() else ())]:
            if p.is_symlink() or not p.exists():
                continue
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def package_root() -> Path:
    """The installed ``t2vturbo`` package folder (where its data, e.g. ``assets/toy_teacher``, lies)."""
    return Path(str(importlib.resources.files(PACKAGE))).resolve()


def hub_id_of(path) -> str | None:
    """The hub id of a folder in the Hugging Face cache (``.../models--ORG--NAME/snapshots/REV/...``), else None."""
    parts = Path(path).parts
    for i, part in enumerate(parts[:-1]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            return part[len("models--") :].replace("--", "/", 1)
    return None


def teacher_reference(teacher_path, export_dir, arch: str | None = None) -> dict:
    """The meta's ``teacher`` entry for the teacher at ``teacher_path`` of an export in ``export_dir``:
    ``{"package": "t2vturbo", "path": "assets/toy_teacher"}`` for a teacher shipped inside the package, else
    ``{"path": <relative to the export folder>}``; plus ``name`` (the folder's name), ``hub_id`` (when the folder
    is a Hugging Face cache snapshot) and ``arch`` (``model.arch``, when set). Never an absolute path."""
    t = Path(teacher_path).resolve()
    pkg = package_root()
    if t.is_relative_to(pkg):
        ref: dict[str, Any] = {"package": PACKAGE, "path": t.relative_to(pkg).as_posix()}
    else:
        ref = {"path": Path(os.path.relpath(t, Path(export_dir).resolve())).as_posix()}
    ref["name"] = t.name if t.is_dir() or not t.suffix else t.parent.name
    hub = hub_id_of(t)
    if hub:
        ref["hub_id"] = hub
    if arch:
        ref["arch"] = str(arch)
    return ref


def _describe(ref: dict) -> str:
    what = ref.get("hub_id") or ref.get("name") or ref.get("path")
    return f"{what}" + (f" ({ref['arch']})" if ref.get("arch") else "")


def resolve_teacher(ref: dict, export_dir, meta_file=None) -> Path:
    """The teacher a ``teacher`` reference (:func:`teacher_reference`) names, on this machine: the package's
    data, the path relative to ``export_dir`` (or absolute, if a user wrote one), else the hub id's snapshot in
    the local Hugging Face cache (no download). FileNotFoundError says what was looked for and how to fix it."""
    looked: list[str] = []
    if ref.get("package"):
        try:
            cand = Path(str(importlib.resources.files(ref["package"]))) / ref.get("path", "")
        except ModuleNotFoundError:
            looked.append(f"package {ref['package']!r} (not installed)")
        else:
            if cand.exists():
                return cand
            looked.append(str(cand))
    elif ref.get("path") is not None:
        p = Path(ref["path"])
        if not p.is_absolute():
            if export_dir is None:
                raise FileNotFoundError(
                    f"teacher path {ref['path']!r} is relative to an export folder: none given"
                )
            p = Path(os.path.normpath(Path(export_dir).resolve() / p))
        if p.exists():
            return p
        looked.append(str(p))
    if ref.get("hub_id"):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(ref["hub_id"], local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the cache (LocalEntryNotFoundError, offline errors...)
            looked.append(f"{ref['hub_id']} in the local Hugging Face cache")
    where = looked[0] if looked else "?"
    fix = (
        f'put the teacher there (a symlink will do), or edit "teacher" in {str(meta_file or STUDENT_META)} '
        '("path": its folder, relative to the export folder), or pass teacher=PATH'
    )
    if ref.get("hub_id"):
        fix += f"; download it with: hf download {ref['hub_id']} --local-dir {where}"
    raise FileNotFoundError(
        f"the teacher {_describe(ref)} of the student export {str(export_dir)!r} was not found: looked for "
        f"{' and '.join(looked) or 'nothing (empty reference)'}; {fix}"
    )


def portable_path(value: str, cwd=None) -> str:
    """``value`` without this machine's absolute paths: an absolute path inside the working directory becomes
    relative to it (as the run's command line names it, e.g. ``artifacts/toy_shards/...``), one inside the
    installed package ``t2vturbo/...`` (``t2vturbo/assets/toy_teacher``), any other absolute path its last
    component; ``file://`` URLs, ``a::b`` shard lists and the words of ``pipe:`` commands alike.
    Relative paths and other URLs are kept."""
    roots = {Path(cwd or os.getcwd()).absolute()}
    roots |= {r.resolve() for r in roots}

    def one(s: str) -> str:
        if s.startswith("file://"):
            return "file://" + one(s[len("file://") :]) if s[len("file://") :].startswith("/") else s
        if not os.path.isabs(s):
            return s
        p = Path(os.path.normpath(s))
        for root in roots:
            if p.is_relative_to(root):
                return p.relative_to(root).as_posix() or "."
        pkg = package_root()
        if p.is_relative_to(pkg):  # package data of an installed t2vturbo: as the checkout names it
            return f"{PACKAGE}/{p.relative_to(pkg).as_posix()}"
        return p.name

    if value.startswith("pipe:"):
        return "pipe:" + " ".join(one(w) for w in value[len("pipe:") :].split(" "))
    if "::" in value:
        return "::".join(one(v) for v in value.split("::"))
    return one(value)


def portable_config(node, cwd=None):
    """A copy of a config container (dicts / lists) with every string made :func:`portable_path`."""
    if isinstance(node, dict):
        return {k: portable_config(v, cwd) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [portable_config(v, cwd) for v in node]
    if isinstance(node, str):
        return portable_path(node, cwd)
    return node


#: keys under which diffusers / transformers record where a model was loaded from (an absolute path here)
LOADED_FROM_KEYS = ("_name_or_path", "name_or_path")


def scrub_loaded_from(root) -> list[Path]:
    """Make the "loaded from" records (:data:`LOADED_FROM_KEYS`) of the JSON files under ``root`` (the
    ``config.json`` files diffusers and transformers write) :func:`portable_path`; returns the files changed."""
    changed = []
    for f in sorted(Path(root).rglob("*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        new = {
            k: portable_path(v) if k in LOADED_FROM_KEYS and isinstance(v, str) else v
            for k, v in data.items()
        }
        if new != data:
            f.write_text(json.dumps(new, indent=2, sort_keys=False) + "\n")
            changed.append(f)
    return changed
