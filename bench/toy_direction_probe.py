"""Can the toy teacher's architecture bind a motion direction to its prompt?  (issue #3 diagnosis)

    python bench/toy_direction_probe.py [--steps 300] [--json OUT]
    python bench/toy_direction_probe.py --drift RUN_DIR     # a toy-teacher run: its latest checkpoint

A fresh toy-size UNet3DConditionModel (``block_out_channels [48, 96]``, x0-prediction, pixel-unshuffle
latent 48 x 8 x 8 x 8) is trained at t = 999 (pure noise in, conditional mean out) on three prompts
whose targets are a frame ramp r_k = (k - 3.5) / 4 on every latent element:

    "a red circle moving left"  -> -r      "a red circle moving right" -> +r      "a red circle standing still" -> 0

This is the structure of the real toy data at high noise: the mean clip of "moving left" drifts left,
"moving right" drifts right, and the mean over directions does not move.  The run is done twice,
side by side with the same seed, once with the frozen random text encoder at CLIP's initialisation and
once with ``text_token_std=1`` (token embeddings redrawn from N(0, 1)).  Reported: the final loss
(0.219 = predicting 0 everywhere) and the model's last-frame mean per prompt (target -0.875 / +0.875 / 0).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch


def run(text_token_std: float | None, steps: int, seed: int = 0, balanced: bool = True) -> dict:
    from t2vturbo.backbones import tiny_backbone

    bb = tiny_backbone(
        seed=seed,
        vae="pixel_unshuffle",
        block_out_channels=(48, 96),
        prediction_type="sample",
        text_token_std=text_token_std,
    )
    net = bb.teacher.train()
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    c, f, h, w = bb.latent_shape(8, 32, 32)
    ramp = (
        (torch.arange(f, dtype=torch.float32) - (f - 1) / 2)
        .div(4)
        .reshape(1, 1, f, 1, 1)
        .expand(1, c, f, h, w)
    )
    targets = {"left": -ramp, "right": ramp, "still": torch.zeros_like(ramp)}
    with torch.no_grad():
        prompts = {
            "left": "a red circle moving left",
            "right": "a red circle moving right",
            "still": "a red circle standing still",
        }
        enc = {k: bb.encode_text([prompts[k]]) for k in targets}
        emb_gap = float((enc["left"] - enc["right"]).pow(2).mean() / enc["left"].var())
    keys = list(targets)
    g = torch.Generator().manual_seed(seed)
    t999 = torch.full((15,), bb.num_train_timesteps - 1)
    t0 = time.perf_counter()
    for _ in range(steps):
        ks = (
            [keys[i % 3] for i in range(15)]
            if balanced
            else [keys[int(j)] for j in torch.randint(0, 3, (15,), generator=g)]
        )
        out = net(torch.randn(15, c, f, h, w, generator=g), t999, torch.cat([enc[k] for k in ks]))
        loss = (out - torch.cat([targets[k] for k in ks])).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        last = {
            k: float(
                net(torch.randn(8, c, f, h, w, generator=g), t999[:8], enc[k].expand(8, -1, -1))[
                    :, :, -1
                ].mean()
            )
            for k in keys
        }
    return {
        "text_token_std": text_token_std,
        "balanced": balanced,
        "steps": steps,
        "final_loss": float(loss.detach()),
        "last_frame_mean": last,
        "prompt_embedding_gap_left_right": emb_gap,
        "seconds": time.perf_counter() - t0,
    }


def module_state(ckpt: Path) -> dict[str, torch.Tensor]:
    """The trained module's state dict in a checkpoint dir: ``model.safetensors`` (t2vturbo's own layout),
    or ``mp_rank_00_model_states.pt`` (the DeepSpeed layout of older runs), read with
    ``torch.load(weights_only=True)``: tensors and plain containers only, no code from the file runs."""
    if (ckpt / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(ckpt / "model.safetensors"))
    return torch.load(ckpt / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)["module"]


def drift(run_dir: str) -> list[dict]:
    """Per prompt, the last-minus-first-frame drift (px) of the centroid of the teacher's mean t = 999
    output (decoded, over 16 noises) for a toy-teacher run directory (``.hydra/config.yaml`` +
    ``checkpoints/latest``).  The data's own mean clip drifts ~14.5 px along the prompt's direction."""
    from omegaconf import OmegaConf

    from t2vturbo.backbones import build_backbone

    run = Path(run_dir)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    tag = (run / "checkpoints" / "latest").read_text().strip()
    state = module_state(run / "checkpoints" / tag)
    bb = build_backbone(cfg.model)
    bb.teacher.load_state_dict(state)
    net = bb.teacher.eval()
    c, f, h, w = bb.latent_shape(cfg.model.num_frames, cfg.model.height, cfg.model.width)
    t999 = torch.full((16,), bb.num_train_timesteps - 1)
    out = []
    for prompt in [
        "a red circle moving left",
        "a red circle moving right",
        "a red circle moving up",
        "a red circle moving down",
        "a red circle standing still",
    ]:
        z = torch.randn(16, c, f, h, w, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            v = bb.decode_latents(net(z, t999, bb.encode_text([prompt] * 16)).mean(0, keepdim=True))[0]
        wgt = (v - v.flatten(2).median(-1).values[..., None, None]).abs().sum(1)  # [F, H, W]
        xs = torch.arange(v.shape[-1], dtype=torch.float32)
        ys = torch.arange(v.shape[-2], dtype=torch.float32)
        cx = (wgt.sum(1) * xs).sum(-1) / wgt.sum((1, 2))
        cy = (wgt.sum(2) * ys).sum(-1) / wgt.sum((1, 2))
        out.append(
            {"checkpoint": tag, "prompt": prompt, "dx": float(cx[-1] - cx[0]), "dy": float(cy[-1] - cy[0])}
        )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--drift", default=None, metavar="RUN_DIR", help="report a toy-teacher run's t=999 drift instead"
    )
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.drift:
        for r in drift(a.drift):
            print(
                f"{r['checkpoint']} {r['prompt']!r}: drift x {r['dx']:+.1f} px, y {r['dy']:+.1f} px",
                flush=True,
            )
        return 0
    res = {"date": datetime.date.today().isoformat(), "runs": [run(None, a.steps), run(1.0, a.steps)]}
    for r in res["runs"]:
        lm = ", ".join(f"{k} {v:+.3f}" for k, v in r["last_frame_mean"].items())
        print(
            f"text_token_std={r['text_token_std']}: loss {r['final_loss']:.4f} after {r['steps']} steps; "
            f"last-frame mean {lm} (target -0.875 / +0.875 / 0); left/right embedding gap "
            f"{r['prompt_embedding_gap_left_right']:.4f}; {r['seconds']:.0f} s",
            flush=True,
        )
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
