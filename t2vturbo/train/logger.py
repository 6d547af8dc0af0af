"""Metrics to tensorboard, ``metrics.jsonl`` and the console (rank 0 only)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter


def _scalar(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().float().mean().item()
    return float(v)


class MetricLogger:
    def __init__(self, output_dir, enabled: bool = True):
        self.enabled = enabled
        self.dir = Path(output_dir)
        self.tb = None
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.tb = SummaryWriter(str(self.dir / "tensorboard"))
            self.jsonl = open(self.dir / "metrics.jsonl", "a", buffering=1)

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

    def log_video(self, step: int, tag: str, video: torch.Tensor):
        """video [F, 3, H, W] in [-1, 1] -> a frame strip image in tensorboard."""
        if not self.enabled:
            return
        strip = torch.cat(list(video.clamp(-1, 1)), dim=-1)  # [3, H, F*W]
        self.tb.add_image(tag, (strip + 1) / 2, step)

    def flush(self):
        """Write tensorboard's buffered events now (before the process may be killed, e.g. a requeue)."""
        if self.enabled:
            self.tb.flush()

    def close(self):
        if self.enabled:
            self.tb.flush()
            self.tb.close()
            self.jsonl.close()
