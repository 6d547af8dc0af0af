"""The student export: the one writer and the one reader of a distilled student.

Layout (``OUTPUT_DIR/export`` of a distillation run)::

    student.safetensors      the student's weights (fp32; LoRA merged), GuidedDenoiser keys
    t2vturbo_student.json    how to rebuild and sample it: family, teacher_path, backbone_kwargs,
                             prediction_type, num_ddim_timesteps, sigma_data, timestep_scaling, clip size,
                             guidance (the middle of its w range), eta, motion_percentage, w_range, step,
                             the run's config
    teacher/                 the teacher itself, when it had no folder of its own (a tiny random one)
    diffusers/               optionally the student as a plain diffusers pipeline (export_pipeline.py)

:meth:`StudentExport.resolve` accepts the export folder, a run's output dir (``RUN/export``) or nothing
(the newest export under ``outputs/``); :func:`load_teacher` also accepts a teacher folder itself.
"""

from __future__ import annotations

import json
import logging
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


def find_latest_export(root="outputs") -> Path | None:
    """The export folder with the newest ``t2vturbo_student.json`` under ``root`` (None: none)."""
    metas = sorted(Path(root).glob(f"**/{STUDENT_META}"), key=lambda p: p.stat().st_mtime)
    return metas[-1].parent if metas else None


@dataclass
class StudentExport:
    """An export folder and its meta (see module docstring). ``StudentExport(meta=m)`` (no folder) reads the
    settings of a meta alone, with :data:`SAMPLING_DEFAULTS` where it has none."""

    dir: Path | None = None
    meta: dict = field(default_factory=dict)

    # ---- finding one ------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, path=None, root="outputs") -> StudentExport:
        """The export at ``path`` (an export folder, or a run dir holding ``export/``), or the newest under
        ``root`` when ``path`` is None. Raises FileNotFoundError saying what was expected."""
        if path is None:
            found = find_latest_export(root)
            if found is None:
                raise FileNotFoundError(
                    f"no distilled student found under {str(root)}/: run `make distill` "
                    "(or pass --checkpoint DIR)"
                )
            path = found
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

    def load_teacher(self, device="cpu"):
        """The teacher backbone the student was distilled from (``teacher_path``, ``backbone_kwargs``)."""
        m = self.meta
        return load_backbone(m.get("family", "unet3d"), m["teacher_path"], **m.get("backbone_kwargs", {})).to(
            device
        )

    def load(self, device="cpu"):
        """``(backbone, student)``: the teacher backbone and the student in eval mode, on ``device``."""
        bb = self.load_teacher(device)
        net = bb.make_student()
        net.load_state_dict(self.state_dict())
        return bb, net.to(device).eval()

    def load_into(self, module, teacher_path=None) -> None:
        """Initialise ``module`` (a fresh student of the same teacher) from this export; warns when the export
        was distilled from another teacher folder than ``teacher_path``."""
        theirs = self.meta.get("teacher_path")
        if theirs and teacher_path and Path(theirs).resolve() != Path(teacher_path).resolve():
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
    def meta_for(cfg, bb, step: int, weights: str, teacher_path: str) -> dict:
        """The meta of a student trained with config ``cfg`` on backbone ``bb``."""
        o, m = cfg.objective, cfg.model
        return {
            "family": m.family,
            "teacher_path": teacher_path,
            # load_backbone(family, teacher_path, **backbone_kwargs) rebuilds the teacher
            "backbone_kwargs": bb.export_kwargs(m),
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
            "config": OmegaConf.to_container(cfg),
        }

    @classmethod
    def write(cls, out, state_dict: dict[str, torch.Tensor], meta: dict) -> StudentExport:
        """Write ``student.safetensors`` (fp32, atomically) and the meta into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / (STUDENT_FILE + ".tmp")
        save_file({k: v.contiguous().float() for k, v in state_dict.items()}, str(tmp))
        tmp.replace(out / STUDENT_FILE)
        (out / STUDENT_META).write_text(json.dumps(meta, indent=2))
        return cls(out, meta)


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
