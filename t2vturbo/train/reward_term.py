"""The reward term of the loss: ``L = L_cd - sum_i beta_i R_i(decode(x_hat0), prompts)``.

Rewards are computed on the student's one-step prediction x_hat0 (the consistency function's
output, a clean latent). Only the frames a reward needs are decoded, through the (frozen,
differentiable) VAE, optionally under activation checkpointing:
- image rewards: ``image_frames`` frames per clip (random or strided), the reward averaged over them;
- video rewards: ``video_frames`` strided frames per clip (all frames when null).
Frame choices are drawn per sample from ``(seed, sample position)``, so they do not depend on the
number of ranks. Samples can be excluded (``only_flagged``: the batch's ``use_reward`` flags),
and image / video rewards can run on different ranks (``image_ranks`` / ``video_ranks``), as
T2V-Turbo-v2 splits them. Every reward's raw mean value is logged as ``reward/NAME``.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from ..rewards import registry


def _pick(num_frames: int, n: int | None, mode: str, g: torch.Generator) -> torch.Tensor:
    if n is None or n >= num_frames:
        return torch.arange(num_frames)
    if mode == "strided":
        stride = num_frames // n
        return torch.arange(n) * stride
    return torch.randperm(num_frames, generator=g)[:n].sort().values


class RewardTerm:
    def __init__(self, cfg, backbone, seed: int, rank: int = 0, world: int = 1, device="cpu"):
        self.cfg = cfg
        self.bb = backbone
        self.seed = seed
        self.rewards = {}
        self.betas = {}
        for name, beta in cfg.weights.items():
            if float(beta) == 0.0:
                continue
            path = cfg.paths.get(name)
            kw = dict(cfg.kwargs.get(name, {}))
            # reward.paths.NAME=tiny: the reward's tiny random config (smoke tests and benchmarks only)
            r = (
                registry.build(name, tiny=True, **kw)
                if path == "tiny"
                else registry.build(name, pretrained=path, **kw)
            )
            self.rewards[name] = r.freeze().to(device)
            self.betas[name] = float(beta)
        self.run_image = cfg.image_ranks is None or rank in cfg.image_ranks
        self.run_video = cfg.video_ranks is None or rank in cfg.video_ranks

    @property
    def active(self) -> bool:
        return bool(self.rewards)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.cfg.decode_checkpointing and torch.is_grad_enabled():
            return checkpoint(self.bb.decode_latents, z, use_reentrant=False)
        return self.bb.decode_latents(z)

    def _frames(self, x0: torch.Tensor, positions, n: int | None, mode: str, salt: int) -> torch.Tensor:
        """Decode the chosen frames of each clip: x0 [B,C,F,h,w] -> [B,n,3,H,W]."""
        num_frames = x0.shape[2]
        picks = []
        for p in positions:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + int(p) * 7_919 + salt) % (2**63 - 1))
            picks.append(_pick(num_frames, n, mode, g))
        z = torch.stack([x0[b, :, idx.to(x0.device)] for b, idx in enumerate(picks)])
        return self._decode(z)

    def __call__(self, x0: torch.Tensor, prompts, positions, use_reward=None):
        """Returns ``(-sum_i beta_i mean_b R_i, logs)`` over the selected samples."""
        logs = {}
        zero = x0.sum() * 0.0
        if not self.active:
            return zero, logs
        keep = torch.ones(len(prompts), dtype=torch.bool)
        if self.cfg.only_flagged and use_reward is not None:
            keep = torch.as_tensor(use_reward, dtype=torch.bool)
        if not keep.any():
            return zero, logs
        idx = keep.nonzero().flatten()
        x0 = x0[idx.to(x0.device)]
        prompts = [prompts[i] for i in idx.tolist()]
        positions = [positions[i] for i in idx.tolist()]
        total = zero
        frames = {}
        for name, r in self.rewards.items():
            if r.kind == "image" and not self.run_image or r.kind == "video" and not self.run_video:
                continue
            if r.kind == "image":
                if "image" not in frames:
                    frames["image"] = self._frames(
                        x0, positions, self.cfg.image_frames, self.cfg.frame_mode, 1
                    )
                f = frames["image"]
                b, n = f.shape[:2]
                # an image reward scores each frame on its own; average over the chosen frames
                vals = (
                    r(f.reshape(b * n, 1, *f.shape[2:]), [p for p in prompts for _ in range(n)])
                    .reshape(b, n)
                    .mean(1)
                )
            else:
                if "video" not in frames:
                    frames["video"] = self._frames(x0, positions, self.cfg.video_frames, "strided", 2)
                vals = r(frames["video"], prompts)
            logs[f"reward/{name}"] = vals.detach().mean()
            total = total - self.betas[name] * vals.mean()
        logs["loss_reward"] = total.detach()
        return total, logs
