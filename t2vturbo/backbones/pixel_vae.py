"""An exact, parameter-free "VAE" for tiny worlds: pixel-unshuffle by a factor f.

[3, H, W] in [-1, 1] -> [3 f^2, H/f, W/f]; decode is the exact inverse, so a teacher trained in this
latent space learns pixels directly. ``shift`` (a pixel level, e.g. the data mean) is subtracted before
the unshuffle and added back after the shuffle, so that with ``scaling_factor`` = 1 / std the latents have
zero mean and unit variance (the crowd teacher, docs/TOY_WORLDS.md). It mimics the diffusers VAE API used by the backbones
(``encode(x).latent_dist.mode()``, ``decode(z).sample``, ``config.scaling_factor``, ``save_pretrained``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


class _Dist:
    def __init__(self, z):
        self._z = z

    def mode(self):
        return self._z

    def sample(self, generator=None):
        return self._z


class PixelUnshuffleVAE(nn.Module):
    def __init__(self, factor: int = 4, scaling_factor: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.factor = int(factor)
        self.shift = float(shift)
        self.config = SimpleNamespace(
            scaling_factor=float(scaling_factor),
            factor=self.factor,
            latent_channels=3 * self.factor**2,
            shift=self.shift,
        )
        self.register_buffer("_dtype_probe", torch.zeros(()), persistent=False)

    @property
    def dtype(self):
        return self._dtype_probe.dtype

    def encode(self, x):
        return SimpleNamespace(latent_dist=_Dist(F.pixel_unshuffle(x - self.shift, self.factor)))

    def decode(self, z):
        return SimpleNamespace(sample=F.pixel_shuffle(z, self.factor) + self.shift)

    def save_pretrained(self, path):
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        cfg = {
            "_class_name": type(self).__name__,
            "factor": self.factor,
            "scaling_factor": self.config.scaling_factor,
            "shift": self.shift,
        }
        (p / "config.json").write_text(json.dumps(cfg, indent=2))

    @classmethod
    def from_pretrained(cls, path):
        cfg = json.loads((Path(path) / "config.json").read_text())
        return cls(
            factor=cfg["factor"], scaling_factor=cfg.get("scaling_factor", 1.0), shift=cfg.get("shift", 0.0)
        )
