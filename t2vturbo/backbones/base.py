"""The one interface every teacher family implements, and the student wrapper.

A backbone owns the frozen parts (text encoder, VAE, the teacher denoiser) and knows its noise
schedule and prediction type. Denoisers are plain ``nn.Module``s with
``forward(z_t [B,C,F,h,w], t [B] long, cond [B,L,D]) -> model output [B,C,F,h,w]``.

The student is a copy of the teacher denoiser wrapped in :class:`GuidedDenoiser`, which adds the
guidance-scale (w) and motion-strength (eta) embeddings to the timestep embedding:

    e_w = Linear_{256->C}(sinusoid(w*1000)),  e_eta = Linear_{256->C}(sinusoid(eta*1000))   (no bias)
    temb' = temb + Linear_{2C->C}([e_w, e_eta])                                           (zero init)

The last projection is zero-initialised, so at step 0 the student equals the teacher exactly.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from ..diffusion import scalar_embedding


@torch.no_grad()
def encode_frames(vae: nn.Module, video: torch.Tensor, scale: float, device) -> torch.Tensor:
    """Per-frame encode with a 2D VAE (posterior mode, so encoding is deterministic) times ``scale``:
    [B, F, 3, H, W] -> [B, C, F, h, w]."""
    b, f = video.shape[:2]
    x = video.reshape(b * f, *video.shape[2:]).to(device, vae.dtype)
    z = vae.encode(x).latent_dist.mode() * scale
    return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()


class GuidedDenoiser(nn.Module):
    """Student denoiser: ``forward(z_t, t, cond, w, eta) -> model output``.

    ``base`` is the denoiser (same call signature as the teacher), ``time_embedding`` the module
    of ``base`` whose output is the timestep embedding (a forward hook adds our term to it).
    """

    def __init__(self, base: nn.Module, time_embedding: nn.Module, time_embed_dim: int, embed_dim: int = 256):
        super().__init__()
        self.base = base
        self.embed_dim = embed_dim
        self.w_proj = nn.Linear(embed_dim, time_embed_dim, bias=False)
        self.eta_proj = nn.Linear(embed_dim, time_embed_dim, bias=False)
        self.fuse = nn.Linear(2 * time_embed_dim, time_embed_dim, bias=False)
        nn.init.zeros_(self.fuse.weight)
        self._extra: torch.Tensor | None = None
        time_embedding.register_forward_hook(self._add_extra)

    def _add_extra(self, module, inputs, output):
        if self._extra is None:
            return output
        return output + self._extra.to(output.dtype)

    def guidance_embedding(self, w: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        dtype = self.fuse.weight.dtype
        e_w = self.w_proj(scalar_embedding(w, self.embed_dim).to(self.fuse.weight.device, dtype))
        e_eta = self.eta_proj(scalar_embedding(eta, self.embed_dim).to(self.fuse.weight.device, dtype))
        return self.fuse(torch.cat([e_w, e_eta], dim=1))

    def forward(self, z_t, t, cond, w=None, eta=None):
        b = z_t.shape[0]
        w = torch.zeros(b) if w is None else torch.as_tensor(w, dtype=torch.float32).reshape(-1).expand(b)
        eta = (
            torch.zeros(b) if eta is None else torch.as_tensor(eta, dtype=torch.float32).reshape(-1).expand(b)
        )
        self._extra = self.guidance_embedding(w.float().cpu(), eta.float().cpu())
        try:
            return self.base(z_t, t, cond)
        finally:
            self._extra = None


class VideoBackbone(nn.Module, abc.ABC):
    """Interface of a teacher family (see module docstring).

    Attributes every implementation sets: ``prediction_type`` ('epsilon' | 'v_prediction' |
    'sample'), ``num_train_timesteps``, buffer ``alphas_cumprod`` [T] float32,
    ``latent_channels``, ``teacher`` (frozen denoiser module).
    """

    prediction_type: str
    num_train_timesteps: int
    latent_channels: int
    teacher: nn.Module

    @abc.abstractmethod
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompt embeddings [B, L, D] (no grad)."""

    @abc.abstractmethod
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """[B, F, 3, H, W] in [-1, 1] -> latents [B, C, F, h, w] (scaled)."""

    @abc.abstractmethod
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, F, h, w] -> [B, F, 3, H, W] in [-1, 1] (differentiable)."""

    @abc.abstractmethod
    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, F, h, w) of the latent for a clip of the given size."""

    @abc.abstractmethod
    def make_student(self) -> GuidedDenoiser:
        """A trainable copy of the teacher with w/eta embeddings (equal to the teacher at init)."""

    @abc.abstractmethod
    def trainable_teacher(self, clone: bool = False) -> nn.Module:
        """The teacher denoiser made trainable, or with ``clone`` a trainable copy (the teacher stays frozen)."""

    # ---- what the family registry and the student export ask of a family ---------------------------
    @classmethod
    def check_path(cls, model_cfg) -> None:
        """Raise FileNotFoundError (naming the path and the expected layout) if ``model_cfg.path`` is unusable."""

    @classmethod
    def from_model_config(cls, model_cfg, gradient_checkpointing: bool = False, dtype=torch.float32):
        """The backbone of ``cfg.model`` (its ``path``, or a tiny random one when ``path`` is null)."""
        raise NotImplementedError

    def export_kwargs(self, model_cfg) -> dict:
        """Keyword arguments that ``from_pretrained(teacher_path, **kwargs)`` needs to rebuild this teacher
        for a student export (beyond the path)."""
        return {}

    def diffusers_export_problem(self) -> str | None:
        """None when a student of this family can be written as a plain diffusers pipeline, else why not."""
        return f"no diffusers pipeline for {type(self).__name__} students"

    def null_cond(self, batch_size: int) -> torch.Tensor:
        """Embedding of the empty prompt, for classifier-free guidance."""
        return self.encode_text([""] * batch_size)
