"""The one interface every teacher family implements, and the student wrapper.

A backbone owns the frozen parts (text encoder, VAE, the teacher denoiser) and knows its noise
schedule and prediction type. Denoisers are plain ``nn.Module``s with
``forward(z_t [B,C,F,h,w], t [B] long, cond [B,L,D], timestep_cond=None, motion_cond=None)
-> model output [B,C,F,h,w]``; the last two only for a student.

The student is a copy of the teacher denoiser with T2V-Turbo's conditioning added, wrapped in
:class:`GuidedDenoiser`. The guidance scale w and the motion strength eta are embedded
(``scalar_embedding``: sinusoid of value*1000, 256 wide) and projected onto the timestep
*sinusoid*, before the time-embedding MLP, as the official T2V-Turbo UNet and diffusers'
``TimestepEmbedding(cond_proj_dim=...)`` place it:

    c = time_cond_proj(e_w)                                               (eta absent)
    c = combine_proj([time_cond_proj(e_w), motion_cond_proj(e_eta)])      (eta given)
    temb = time_mlp(sinusoid(t) + c)

All three are ``Linear`` without bias and with PyTorch's default (random) init, as the official
code. Where each family keeps them: VideoCrafter2 the official names on its UNet
(``VC2UNet.add_guidance_conditioning``); UNet3D diffusers' own ``time_embedding.cond_proj``
(``time_cond_proj_dim``, ``timestep_cond``) and Wan the same on its time embedder, eta in both through
:class:`DiffusersTimeCondition`.
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

    ``base`` is the family's student denoiser (the teacher's module with the conditioning projections
    added); this wrapper embeds w and eta and passes them as ``timestep_cond`` / ``motion_cond``. ``w``
    None is w = 0; ``eta`` None leaves ``motion_cond`` out (the official forward then skips
    ``combine_proj``), as does a student built without motion conditioning (``motion=False``).
    """

    def __init__(self, base: nn.Module, embed_dim: int = 256, motion: bool = True):
        super().__init__()
        self.base = base
        self.embed_dim = embed_dim
        self.motion = motion

    def embeddings(self, w, eta, batch: int, device=None):
        """``(e_w, e_eta | None)`` [B, embed_dim] float32 of per-sample (or scalar) w and eta."""
        w = torch.zeros(batch) if w is None else torch.as_tensor(w, dtype=torch.float32).reshape(-1)
        e_w = scalar_embedding(w.float().cpu().expand(batch), self.embed_dim).to(device)
        if eta is None or not self.motion:
            return e_w, None
        eta = torch.as_tensor(eta, dtype=torch.float32).reshape(-1)
        return e_w, scalar_embedding(eta.float().cpu().expand(batch), self.embed_dim).to(device)

    def forward(self, z_t, t, cond, w=None, eta=None):
        e_w, e_eta = self.embeddings(w, eta, z_t.shape[0], z_t.device)
        return self.base(z_t, t, cond, timestep_cond=e_w, motion_cond=e_eta)


class DiffusersTimeCondition(nn.Module):
    """Base of the denoisers around a diffusers model whose time MLP is a ``TimestepEmbedding``
    (UNet3D's ``time_embedding``, Wan's ``condition_embedder.time_embedder``).

    :meth:`add_guidance_conditioning` gives that embedding diffusers' own ``cond_proj`` (w: ``sample +
    cond_proj(timestep_cond)`` before ``linear_1``, registered after ``linear_1`` as diffusers does, and
    ``time_cond_proj_dim`` in the model's config) and, with motion, ``motion_cond_proj`` / ``combine_proj``
    on the model: the smallest extension of diffusers' form that is T2V-Turbo's, ``c =
    combine_proj([cond_proj(e_w), motion_cond_proj(e_eta)])`` (a forward hook on ``cond_proj``, active only
    while a ``motion_cond`` is passed). ``_run(model_call, timestep_cond, motion_cond)`` runs the model with
    them; families whose model forwards no ``timestep_cond`` (Wan) set ``inject_condition`` and the
    condition reaches the embedding through a forward pre-hook."""

    inject_condition = False

    def _setup_condition(self, model: nn.Module, embedding: nn.Module) -> None:
        self._model_ref = [model]  # not a submodule twice
        self._embedding_name = next(n for n, m in model.named_modules() if m is embedding)
        self._motion_cond: torch.Tensor | None = None
        self._timestep_cond: torch.Tensor | None = None
        if getattr(embedding, "cond_proj", None) is not None:
            self._hook_projection(embedding)

    @property
    def time_embedding(self) -> nn.Module:
        return self._model_ref[0].get_submodule(self._embedding_name)

    def _hook_projection(self, embedding: nn.Module) -> None:
        embedding.cond_proj.register_forward_hook(self._combine)
        if self.inject_condition:
            embedding.register_forward_pre_hook(self._inject, with_kwargs=True)

    def add_guidance_conditioning(self, embed_dim: int = 256, motion: bool = True) -> None:
        model, emb = self._model_ref[0], self.time_embedding
        if getattr(emb, "cond_proj", None) is not None:
            raise ValueError("this model already has a cond_proj (a student)")
        ref = emb.linear_1.weight
        proj = nn.Linear(embed_dim, emb.linear_1.in_features, bias=False).to(ref.device, ref.dtype)
        order = {}
        for name, mod in emb._modules.items():
            if name != "cond_proj":
                order[name] = mod
            if name == "linear_1":
                order["cond_proj"] = proj
        emb.__dict__.pop("cond_proj", None)
        emb._modules.clear()
        emb._modules.update(order)
        if hasattr(model, "register_to_config") and "time_cond_proj_dim" in getattr(model, "config", {}):
            model.register_to_config(time_cond_proj_dim=embed_dim)
        if motion:
            c = emb.linear_1.in_features
            model.motion_cond_proj = nn.Linear(embed_dim, c, bias=False).to(ref.device, ref.dtype)
            model.combine_proj = nn.Linear(2 * c, c, bias=False).to(ref.device, ref.dtype)
        self._hook_projection(emb)

    def _combine(self, module, inputs, output):
        if self._motion_cond is None:
            return output
        model = self._model_ref[0]
        if getattr(model, "motion_cond_proj", None) is None:
            raise ValueError("this student has no motion_cond_proj: it takes no motion_cond")
        e = self._motion_cond.to(output.device, model.motion_cond_proj.weight.dtype)
        return model.combine_proj(torch.cat([output, model.motion_cond_proj(e)], dim=1))

    def _inject(self, module, args, kwargs):
        if self._timestep_cond is None:
            return None
        return args, {**kwargs, "condition": self._timestep_cond}

    def _run(self, call, timestep_cond, motion_cond):
        """``call(timestep_cond)`` with ``motion_cond`` available to the hook."""
        if motion_cond is not None and timestep_cond is None:
            raise ValueError("motion_cond needs timestep_cond")
        if timestep_cond is not None:
            if getattr(self.time_embedding, "cond_proj", None) is None:
                raise ValueError("this model has no cond_proj (a teacher): it takes no timestep_cond")
            timestep_cond = timestep_cond.to(self.time_embedding.cond_proj.weight.dtype)
        self._motion_cond = motion_cond
        self._timestep_cond = timestep_cond if self.inject_condition else None
        try:
            return call(None if self.inject_condition else timestep_cond)
        finally:
            self._motion_cond = self._timestep_cond = None


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
        """A trainable copy of the teacher with the w / eta projections of T2V-Turbo (random init)."""

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
