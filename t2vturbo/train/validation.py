"""Validation during training: sample the student at a few step counts, write the videos, and log the
weight-free clip metrics that make a collapse visible early (static, solid or blurry clips)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.video_io import write_video
from ..eval.metrics import clip_metrics
from ..sample import sample_student
from .logger import slug

METRICS = ("temporal_flicker", "flow_magnitude", "dynamic", "motion_smoothness", "sharpness")
FPS = 8  # of the validation clips: the .mp4 files and tensorboard's GIFs


def prompt_tag(index: int, prompt: str) -> str:
    """Tensorboard's tag prefix of a validation prompt: ``validation/<index>_<slug>``; its clips are
    ``<prefix>/<steps>steps``, its text ``<prefix>/prompt``."""
    return f"validation/{index:02d}_{slug(prompt)}"


class Validator:
    """``validator(step, net)``: samples ``data.validation_prompts`` with ``net`` (a student) at each of
    ``train.eval_steps`` at guidance ``train.eval_guidance`` (default: the middle of the w range). Rank 0 writes
    ``OUTPUT_DIR/samples/step-<step>/<steps>steps_<i>.mp4``, and to tensorboard each clip as a GIF under
    ``validation/<i>_<prompt slug>/<steps>steps`` beside the prompt's text (``.../prompt``) and the clip metrics
    (mean over the prompts) as ``val/<steps>steps/<metric>``."""

    def __init__(self, cfg, bb, logger, out: Path, rank: int = 0):
        self.cfg, self.bb, self.logger, self.out, self.rank = cfg, bb, logger, Path(out), rank
        o = cfg.objective
        g = cfg.train.eval_guidance
        self.guidance = g if g is not None else (o.w_min + o.w_max) / 2

    @torch.no_grad()
    def __call__(self, step: int, net) -> None:
        cfg, m, o = self.cfg, self.cfg.model, self.cfg.objective
        was_training = net.training
        net.eval()
        prompts = list(cfg.data.validation_prompts)
        steps_list = list(cfg.train.eval_steps)
        if self.rank == 0:
            for i, p in enumerate(prompts):
                self.logger.log_text(
                    step,
                    f"{prompt_tag(i, p)}/prompt",
                    f"{p}\n\n(prompt {i}: {', '.join(map(str, steps_list))} steps, w={self.guidance:g}, seed 0)",
                )
        for steps in steps_list:
            video = sample_student(
                self.bb,
                net,
                prompts,
                steps=steps,
                num_ddim_timesteps=o.num_ddim_timesteps,
                guidance=self.guidance,
                num_frames=m.num_frames,
                height=m.height,
                width=m.width,
                seed=0,
                sigma_data=o.sigma_data,
                timestep_scaling=o.timestep_scaling,
            )
            if self.rank != 0:
                continue
            d = self.out / "samples" / f"step-{step:08d}"
            d.mkdir(parents=True, exist_ok=True)
            agg: dict[str, float] = {}
            for i, v in enumerate(video):
                v = v.float().cpu()
                # yuv420p H.264 at crf 18: plays in browsers and QuickTime (the sample CLI's default)
                write_video(d / f"{steps}steps_{i}.mp4", v, fps=FPS, crf=18, pad_odd=True)
                self.logger.log_video(step, f"{prompt_tag(i, prompts[i])}/{steps}steps", v, fps=FPS)
                mets = clip_metrics(v)
                for k in METRICS:
                    agg[k] = agg.get(k, 0.0) + float(mets[k]) / len(video)
            self.logger.log(step, {f"val/{steps}steps/{k}": x for k, x in agg.items()})
        net.train(was_training)
