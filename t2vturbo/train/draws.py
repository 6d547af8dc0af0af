"""Per-sample random draws of a training step, keyed by the sample's global position.

Randomness is drawn *per sample* from a generator seeded by ``(seed, global sample position)``, so a
run's numbers do not depend on how the global batch is split over ranks and micro-batches, and a
resumed run draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sample_generator(seed: int, position: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(position) * 7_919 + 12_345) % (2**63 - 1))
    return g


@dataclass
class Draws:
    """Per-sample random draws of one micro-batch (all on CPU)."""

    index: torch.Tensor  # [B] long: grid index n (CD) or timestep (diffusion)
    noise: torch.Tensor  # [B, C, F, h, w]
    w: torch.Tensor  # [B] guidance scale
    drop: torch.Tensor  # [B] bool: caption dropped (diffusion CFG training)


def draw(
    positions, latent_shape, seed: int, n_index: int, w_min: float, w_max: float, drop_p: float
) -> Draws:
    """Per position, in this order from its generator: index ~ U{0..n_index-1}, w ~ U[w_min, w_max],
    drop ~ Bernoulli(drop_p), noise ~ N(0, I) of ``latent_shape``."""
    idx, noise, w, drop = [], [], [], []
    for p in positions:
        g = sample_generator(seed, p)
        idx.append(torch.randint(0, n_index, (1,), generator=g))
        w.append(w_min + (w_max - w_min) * torch.rand(1, generator=g))
        drop.append(torch.rand(1, generator=g) < drop_p)
        noise.append(torch.randn(latent_shape, generator=g))
    return Draws(torch.cat(idx), torch.stack(noise), torch.cat(w), torch.cat(drop))
