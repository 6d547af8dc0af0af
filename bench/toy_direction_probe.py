"""Can the toy teacher's architecture bind a motion direction to its prompt?  (issue #3 diagnosis)

    python bench/toy_direction_probe.py [--steps 300] [--json OUT]

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

    bb = tiny_backbone(seed=seed, vae="pixel_unshuffle", block_out_channels=(48, 96), prediction_type="sample",
                       text_token_std=text_token_std)
    net = bb.teacher.train()
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    c, f, h, w = bb.latent_shape(8, 32, 32)
    ramp = (torch.arange(f, dtype=torch.float32) - (f - 1) / 2).div(4).reshape(1, 1, f, 1, 1).expand(1, c, f, h, w)
    targets = {"left": -ramp, "right": ramp, "still": torch.zeros_like(ramp)}
    with torch.no_grad():
        prompts = {"left": "a red circle moving left", "right": "a red circle moving right",
                   "still": "a red circle standing still"}
        enc = {k: bb.encode_text([prompts[k]]) for k in targets}
        emb_gap = float((enc["left"] - enc["right"]).pow(2).mean() / enc["left"].var())
    keys = list(targets)
    g = torch.Generator().manual_seed(seed)
    t999 = torch.full((15,), bb.num_train_timesteps - 1)
    t0 = time.perf_counter()
    for _ in range(steps):
        ks = [keys[i % 3] for i in range(15)] if balanced else [keys[int(j)] for j in torch.randint(0, 3, (15,), generator=g)]
        out = net(torch.randn(15, c, f, h, w, generator=g), t999, torch.cat([enc[k] for k in ks]))
        loss = (out - torch.cat([targets[k] for k in ks])).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        last = {k: float(net(torch.randn(8, c, f, h, w, generator=g), t999[:8], enc[k].expand(8, -1, -1))[:, :, -1].mean())
                for k in keys}
    return {"text_token_std": text_token_std, "balanced": balanced, "steps": steps, "final_loss": float(loss.detach()), "last_frame_mean": last,
            "prompt_embedding_gap_left_right": emb_gap, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = {"date": datetime.date.today().isoformat(), "runs": [run(None, a.steps), run(1.0, a.steps)]}
    for r in res["runs"]:
        lm = ", ".join(f"{k} {v:+.3f}" for k, v in r["last_frame_mean"].items())
        print(f"text_token_std={r['text_token_std']}: loss {r['final_loss']:.4f} after {r['steps']} steps; "
              f"last-frame mean {lm} (target -0.875 / +0.875 / 0); left/right embedding gap "
              f"{r['prompt_embedding_gap_left_right']:.4f}; {r['seconds']:.0f} s", flush=True)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
