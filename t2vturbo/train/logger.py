"""Metrics to tensorboard, ``metrics.jsonl`` and the console (rank 0 only).

Tensorboard (``OUTPUT_DIR/tensorboard``) gets the scalars of :meth:`MetricLogger.log`, the validation clips as
animated GIFs (:meth:`MetricLogger.log_video`: the image summary ``SummaryWriter.add_video`` writes, encoded with
PIL instead of moviepy), the validation prompts as text, and at the end of a run the hparams session
(:meth:`MetricLogger.log_hparams`): the run's main config values (:func:`run_hparams`) and its final metrics
(:func:`final_metrics`, as ``final/...`` scalars).

The hparams session is written into the run's own event dir, not into the timestamped subdir that
``SummaryWriter.add_hparams`` makes: there the session is the same tensorboard run as the loss curves and
videos (the HPARAMS tab links to them), and every scalar of the run, including the ToyBench scores that
``t2vturbo.eval.report`` adds later, is a metric of it. Only the session start / end infos are written, no
``Experiment`` summary: tensorboard takes the first experiment summary it finds in a logdir for all runs, so
in a sweep one run's list of hparams and metrics would hide the others'; without one it builds the experiment
from the union of all runs' sessions and scalar tags.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from ..data.video_io import frames_to_uint8

# the metrics.jsonl keys whose last values are a run's final metrics (see final_metrics)
FINAL_PREFIX = "final/"


def _scalar(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().float().mean().item()
    return float(v)


# --------------------------------------------------------------------------- videos


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """uint8 ``[F, H, W, 3]`` -> an animated GIF that loops (PIL; each frame on its own adaptive 256-colour
    palette). Identical consecutive frames are merged into one longer frame (PIL does that; the clip plays the
    same)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [F, H, W, 3] with F >= 1, got {frames.dtype} {frames.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 / fps)),  # ms per frame; browsers slow down GIF delays under 20 ms
        loop=0,
    )
    return buf.getvalue()


def video_summary(tag: str, video: torch.Tensor | np.ndarray, fps: float = 8) -> Summary:
    """The image summary of ``SummaryWriter.add_video`` (an animated GIF) of one clip: float ``[F, 3, H, W]`` in
    ``[-1, 1]`` or uint8 ``[F, H, W, 3]``."""
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu()
        frames = video.numpy() if video.dtype == torch.uint8 else frames_to_uint8(video.float())
    else:
        frames = video if video.dtype == np.uint8 else frames_to_uint8(video)
    _, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps))
    return Summary(value=[Summary.Value(tag=tag, image=image)])


# --------------------------------------------------------------------------- hparams


def _flat(prefix: str, v: Any, out: dict[str, Any]) -> None:
    if isinstance(v, Mapping):
        for k, x in v.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), x, out)
    elif isinstance(v, (list, tuple)):
        if all(not isinstance(x, (Mapping, list, tuple)) for x in v):
            out[prefix] = ",".join(str(x) for x in v)
        else:
            for i, x in enumerate(v):
                _flat(f"{prefix}.{i}", x, out)
    elif isinstance(v, bool):
        out[prefix] = str(v).lower()  # tensorboard would show a bool as 1.0 / 0.0
    elif isinstance(v, (int, float, str)):
        out[prefix] = v
    # None: no value (tensorboard shows an empty cell)


# the config values of a run's hparams session: whole sections (the recipe) and single keys
HPARAM_SECTIONS = ("objective", "guidance", "reward.weights")
HPARAM_KEYS = (
    "experiment_name",
    "seed",
    "model.family",
    "model.path",
    "model.arch",
    "model.num_frames",
    "model.height",
    "model.width",
    "model.lora.enabled",
    "model.lora.rank",
    "data.kind",
    "data.urls",
    "data.precomputed",
    "train.max_steps",
    "train.micro_batch_size",
    "train.grad_accum",
    "train.lr",
    "train.weight_decay",
    "train.betas",
    "train.clip_grad",
    "train.precision",
    "train.eval_guidance",
)


def _get(cfg: Mapping, dotted: str) -> Any:
    v: Any = cfg
    for k in dotted.split("."):
        if not isinstance(v, Mapping) or k not in v:
            return None
        v = v[k]
    return v


def run_hparams(cfg: Any, world_size: int = 1) -> dict[str, Any]:
    """The run's main config values, flattened to dotted keys with number or string values (lists joined with
    commas, bools as ``true`` / ``false``, nulls left out): :data:`HPARAM_KEYS`, every key of the sections
    :data:`HPARAM_SECTIONS` (``reward.weights.<reward>``: the reward weights), the world size and the global
    batch (clips per optimizer step)."""
    if not isinstance(cfg, dict):  # an OmegaConf DictConfig (a Mapping whose lists are not lists)
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {}
    for key in HPARAM_KEYS:
        _flat(key, _get(cfg, key), out)
    for section in HPARAM_SECTIONS:
        _flat(section, _get(cfg, section), out)
    out["world_size"] = int(world_size)
    mb, ga = _get(cfg, "train.micro_batch_size"), _get(cfg, "train.grad_accum")
    if isinstance(mb, int) and isinstance(ga, int):
        out["global_batch"] = mb * ga * int(world_size)
    return out


def is_final_metric(key: str) -> bool:
    """The keys of metrics.jsonl whose last values :func:`final_metrics` reports: the losses (``loss``,
    ``loss_*``), the reward terms (``reward/*``) and the validation figures (``val/*``)."""
    return key == "loss" or key.startswith(("loss_", "reward/", "val/"))


def final_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The last finite value of each :func:`is_final_metric` key over metrics.jsonl rows (oldest first)."""
    out: dict[str, float] = {}
    for row in rows:
        for k, v in row.items():
            if is_final_metric(k) and isinstance(v, (int, float)) and math.isfinite(v):
                out[k] = float(v)
    return out


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (none when it does not exist); a line cut short by a kill is skipped."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- the logger


class MetricLogger:
    def __init__(self, output_dir, enabled: bool = True):
        self.enabled = enabled
        self.dir = Path(output_dir)
        self.tb = None
        self.closed = False
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.tb = SummaryWriter(str(self.dir / "tensorboard"))
            self.jsonl = open(self.dir / "metrics.jsonl", "a", buffering=1)

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    def log(self, step: int, metrics: dict):
        if not self.enabled:
            return
        row = {"step": step, "time": time.time()}
        for k, v in metrics.items():
            if isinstance(v, str):
                row[k] = v
                continue
            x = _scalar(v)
            row[k] = x if math.isfinite(x) else str(x)
            if math.isfinite(x):
                self.tb.add_scalar(k, x, step)
        self.jsonl.write(json.dumps(row) + "\n")

    def log_video(self, step: int, tag: str, video: torch.Tensor, fps: float = 8):
        """A clip ``[F, 3, H, W]`` in ``[-1, 1]`` -> an animated GIF under ``tag`` (tensorboard's images tab)."""
        if not self.enabled:
            return
        self.tb._get_file_writer().add_summary(video_summary(tag, video, fps), step)

    def log_text(self, step: int, tag: str, text: str):
        """Markdown text under ``tag`` (tensorboard's text tab)."""
        if self.enabled:
            self.tb.add_text(tag, text, step)

    def log_hparams(self, step: int, hparams: dict[str, Any], finished: bool = True) -> dict[str, float]:
        """The run's hparams session (module docstring): ``hparams`` (see :func:`run_hparams`) and the final
        metrics of metrics.jsonl, each as the scalar ``final/<key>`` at ``step``. ``finished`` also writes the
        session's end (status: success); a run stopped early (a signal) leaves it open, and its resumed run
        ends it. Tensorboard keeps the first session start of a run dir: a resumed run's hparams (the same
        config, the same run identity) do not replace it. Returns the final metrics. Nothing after
        :meth:`close` (a second ``train()`` of the same trainer, as ``t2vturbo.plan.measure`` runs)."""
        if not self.enabled or self.closed:
            return {}
        self.jsonl.flush()
        metrics = final_metrics(read_metrics(self.metrics_path))
        _, ssi, sei = hparams_summaries(hparams, {FINAL_PREFIX + k: v for k, v in metrics.items()})
        fw = self.tb._get_file_writer()
        fw.add_summary(ssi, step)
        for k, v in metrics.items():
            self.tb.add_scalar(FINAL_PREFIX + k, v, step)
        if finished:
            fw.add_summary(sei, step)
        self.tb.flush()
        return metrics

    def flush(self):
        """Write tensorboard's buffered events now (before the process may be killed, e.g. a requeue)."""
        if self.enabled:
            self.tb.flush()

    def close(self):
        if self.enabled:
            self.tb.flush()
            self.tb.close()
            self.jsonl.close()
        self.closed = True


def slug(text: str, max_len: int = 32) -> str:
    """``"A red circle, moving left!"`` -> ``"a-red-circle-moving-left"`` (lowercase ASCII letters, digits and
    dashes; cut at a word boundary within ``max_len`` where there is one)."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(s) > max_len:
        cut = s[: max_len + 1]
        s = cut[: cut.rfind("-")] if cut.rfind("-") > 0 else s[:max_len]
    return s.strip("-") or "prompt"
