"""The reward protocol and the torch-only preprocessing every reward shares.

A reward maps a batch of clips and their prompts to one score per clip::

    reward(frames, prompts) -> scores
    frames : float [B, F, 3, H, W] in [-1, 1]  (decoder output convention)
    prompts: list[str] of length B
    scores : float32 [B], differentiable w.r.t. ``frames``

Subclasses implement :meth:`Reward.score` (same signature); :meth:`Reward.forward`
validates the inputs, calls ``score`` and checks / casts the output, so every reward
fails the same way on a malformed batch.

Image rewards (``kind = "image"``) score every frame they are given and average over
frames; callers choose *which* frames with :func:`select_frames` (T2V-Turbo-v2 scores 2
random frames for the image rewards and 4 strided frames for the video reward).

Preprocessing is pure torch (no PIL / torchvision) so gradients flow from the score back
to the pixels: :func:`to_unit_range`, :func:`resize_center_crop`, :func:`normalize`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Reward",
    "frame_indices",
    "normalize",
    "require_files",
    "resize_center_crop",
    "select_frames",
    "to_unit_range",
]

#: OpenAI CLIP / open_clip image normalisation (also HPSv2, PickScore).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
#: ImageNet normalisation (ViCLIP, InternVideo2, VideoMAE, ...).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- base class


class Reward(nn.Module):
    """Base class of every reward: ``forward(frames [B,F,3,H,W] in [-1,1], prompts) -> [B]``.

    Class attributes (read by the registry and ``python -m t2vturbo.rewards list``):

    * ``name``: registry name (set by :func:`t2vturbo.rewards.registry.register`);
    * ``kind``: ``"image"`` (per-frame score, averaged over the frames passed) or
      ``"video"`` (one score from the whole clip);
    * ``expects``: human-readable description of the weights :meth:`from_pretrained`
      needs (folder layout, file names) or ``"no weights (analytic)"``.

    Subclasses implement :meth:`score`; learned rewards should call :meth:`freeze` after
    loading (eval mode, no parameter gradients: the gradient goes to the pixels only).
    """

    name: ClassVar[str] = "reward"
    kind: ClassVar[str] = "image"
    expects: ClassVar[str] = "unspecified"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> Reward:
        """Build the reward from local weights at ``path`` (see :attr:`expects`)."""
        raise NotImplementedError(
            f"{cls.__name__} ({cls.name!r}) does not implement from_pretrained(); it expects: {cls.expects}"
        )

    @classmethod
    def tiny(cls, **kwargs) -> Reward:
        """A randomly initialised tiny configuration of the same class, for tests."""
        raise NotImplementedError(f"{cls.__name__} ({cls.name!r}) does not implement tiny()")

    def freeze(self) -> Reward:
        """Eval mode and ``requires_grad_(False)`` on every parameter; returns ``self``."""
        self.eval()
        self.requires_grad_(False)
        return self

    # ------------------------------------------------------------------ scoring
    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Subclass hook: validated ``frames [B,F,3,H,W]`` in [-1, 1] -> scores ``[B]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement score(frames, prompts)")

    def forward(self, frames: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        prompts = self.check_inputs(frames, prompts)
        out = self.score(frames, prompts)
        if out.shape != (frames.shape[0],):
            raise RuntimeError(
                f"{type(self).__name__}.score returned shape {tuple(out.shape)}, expected ({frames.shape[0]},)"
            )
        return out.float()

    @staticmethod
    def check_inputs(frames: torch.Tensor, prompts: Sequence[str]) -> list[str]:
        """Validate the protocol's shapes; returns ``prompts`` as a list."""
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a tensor, got {type(frames).__name__}")
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be [B, F, 3, H, W], got {tuple(frames.shape)}")
        if not frames.is_floating_point():
            raise TypeError(f"frames must be floating point in [-1, 1], got {frames.dtype}")
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if len(prompts) != frames.shape[0]:
            raise ValueError(f"got {len(prompts)} prompts for a batch of {frames.shape[0]} clips")
        return prompts

    def extra_repr(self) -> str:
        return f"name={self.name!r}, kind={self.kind!r}"


# --------------------------------------------------------------------------- preprocessing


def to_unit_range(frames: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    """``[-1, 1] -> [0, 1]``.  ``clamp=True`` mirrors the reference (decode, then clamp);
    it zeroes the gradient of out-of-range pixels, so analytic rewards leave it off."""
    x = frames * 0.5 + 0.5
    return x.clamp(0.0, 1.0) if clamp else x


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def resize_center_crop(
    frames: torch.Tensor,
    size: int | Sequence[int],
    mode: str = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize so the image covers ``size`` then centre-crop to exactly ``size``.

    ``frames``: ``[..., C, H, W]``; ``size``: int (square) or ``(h, w)``.  For an int
    ``size`` this is torchvision's ``Resize(size)`` (short side -> ``size``, long side
    ``int(size * long / short)``) followed by ``CenterCrop(size)`` (offset
    ``round((L - size) / 2)``), the CLIP preprocessing.  ``F.interpolate`` with
    ``antialias=True`` (bilinear or bicubic; CLIP-family rewards pass
    ``mode="bicubic"``) is differentiable.  No resize happens when the scale is 1.
    """
    th, tw = _pair(size)
    *lead, c, h, w = frames.shape
    x = frames.reshape(-1, c, h, w)
    scale = max(th / h, tw / w)
    nh, nw = max(th, int(h * scale)), max(tw, int(w * scale))
    if (nh, nw) != (h, w):
        kw = {"antialias": antialias} if mode in ("bilinear", "bicubic") else {}
        align = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        x = F.interpolate(x, size=(nh, nw), mode=mode, **align, **kw)
    top = int(round((nh - th) / 2.0))
    left = int(round((nw - tw) / 2.0))
    x = x[:, :, top : top + th, left : left + tw]
    return x.reshape(*lead, c, th, tw)


def normalize(frames01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` over the channel axis (dim -3) of ``[..., C, H, W]`` in [0, 1]."""
    c = frames01.shape[-3]
    m = torch.as_tensor(mean, dtype=frames01.dtype, device=frames01.device).reshape(c, 1, 1)
    s = torch.as_tensor(std, dtype=frames01.dtype, device=frames01.device).reshape(c, 1, 1)
    return (frames01 - m) / s


# --------------------------------------------------------------------------- frame selection


def frame_indices(
    num_frames: int,
    n: int,
    mode: str = "random",
    generator: torch.Generator | None = None,
    jitter: bool = False,
) -> torch.Tensor:
    """Indices (sorted, int64, CPU) of ``n`` frames out of ``num_frames``.

    * ``"random"``: ``n`` distinct frames uniformly at random (``torch.randperm`` with
      ``generator``), sorted — the image-reward frames of T2V-Turbo.
    * ``"strided"``: stride ``s = num_frames // n``, indices ``o, o + s, ..., o + (n-1) s``
      with offset ``o = 0``, or ``o`` uniform in ``[0, s)`` when ``jitter=True`` (the
      video-reward frames of T2V-Turbo-v2).  16 frames, n = 4 -> ``0, 4, 8, 12``.

    ``n >= num_frames`` returns every frame.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if n >= num_frames:
        return torch.arange(num_frames)
    if mode == "random":
        return torch.randperm(num_frames, generator=generator)[:n].sort().values
    if mode == "strided":
        stride = num_frames // n
        offset = int(torch.randint(0, stride, (1,), generator=generator)) if jitter else 0
        return torch.arange(n) * stride + offset
    raise ValueError(f"unknown frame selection mode {mode!r}; expected 'random' or 'strided'")


def select_frames(
    frames: torch.Tensor,
    n: int,
    mode: str = "random",
    generator: torch.Generator | None = None,
    jitter: bool = False,
) -> torch.Tensor:
    """Pick ``n`` frames (the same ones for every clip) from ``[B, F, ...]`` -> ``[B, n, ...]``.

    See :func:`frame_indices` for ``mode`` / ``jitter``; differentiable (index_select).
    """
    idx = frame_indices(frames.shape[1], n, mode=mode, generator=generator, jitter=jitter)
    return frames.index_select(1, idx.to(frames.device))


# --------------------------------------------------------------------------- weights on disk


def require_files(
    path: str | os.PathLike,
    files: Sequence[str | Sequence[str]],
    layout_hint: str = "",
) -> list[Path]:
    """Check that the folder ``path`` holds every entry of ``files``; return their paths.

    An entry may be a tuple / list of alternatives (``("model.safetensors",
    "pytorch_model.bin")``): the first that exists is returned.  Raises
    :class:`FileNotFoundError` naming ``path``, the missing and the expected files, and
    ``layout_hint`` (say where the weights come from and how the folder should look).
    """
    root = Path(path).expanduser()
    alts = [(f,) if isinstance(f, str) else tuple(f) for f in files]
    expected = ", ".join(" | ".join(a) for a in alts)
    hint = f"\n{layout_hint}" if layout_hint else ""
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"weights folder {str(root)!r} {what}; expected files: {expected}{hint}")
    found: list[Path] = []
    missing: list[str] = []
    for a in alts:
        hit = next((root / f for f in a if (root / f).is_file()), None)
        if hit is None:
            missing.append(" | ".join(a))
        else:
            found.append(hit)
    if missing:
        raise FileNotFoundError(
            f"weights folder {str(root)!r} is missing: {', '.join(missing)}; expected files: {expected}{hint}"
        )
    return found
