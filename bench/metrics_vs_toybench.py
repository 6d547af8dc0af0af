"""Do the weight-free video metrics rank samplers like ToyBench does?

Generates the same toy prompts with the distilled student (4 steps) and the teacher (DDIM 50 and
4 steps, CFG), then scores every clip twice: with ToyBench's analytic toy metrics (dynamic degree
in px/frame, flicker) and with the generic weight-free metrics of ``t2vturbo.eval.metrics``
(optical-flow magnitude, VBench-style temporal flicker). Prints both and whether the orderings agree.

    python bench/metrics_vs_toybench.py --student outputs/toy --teacher t2vturbo/assets/toy_teacher [--prompts 20]
"""

from __future__ import annotations

import argparse
import json

import torch

from t2vturbo.backbones import load_backbone
from t2vturbo.eval.metrics import clip_metrics
from t2vturbo.eval.toy_metrics import aggregate, score_clip
from t2vturbo.eval.toybench import select_prompts
from t2vturbo.sample import load_student, sample_student, sample_teacher


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="outputs/toy")
    ap.add_argument("--teacher", default="t2vturbo/assets/toy_teacher")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--teacher-guidance", type=float, default=4.0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    prompts = select_prompts(args.prompts, 0)
    bb_s, net, meta = load_student(args.student)
    bb_t = load_backbone("unet3d", args.teacher)
    kw = dict(num_frames=meta["num_frames"], height=meta["height"], width=meta["width"], seed=0)
    runs = {
        "student-4": lambda: sample_student(
            bb_s,
            net,
            prompts,
            steps=4,
            guidance=meta.get("guidance", 4.0),
            num_ddim_timesteps=meta["num_ddim_timesteps"],
            **kw,
        ),
        "teacher-50": lambda: sample_teacher(bb_t, prompts, steps=50, guidance=args.teacher_guidance, **kw),
        "teacher-4": lambda: sample_teacher(bb_t, prompts, steps=4, guidance=args.teacher_guidance, **kw),
    }
    table = {}
    for name, fn in runs.items():
        with torch.no_grad():
            videos = fn().float()
        toy = aggregate([score_clip(v, p) for v, p in zip(videos, prompts)])
        gen = [clip_metrics(v) for v in videos]
        table[name] = {
            "toybench_dynamic": toy["dynamic_degree"],
            "toybench_flicker": toy["flicker"],
            "flow_magnitude": sum(m["flow_magnitude"] for m in gen) / len(gen),
            "temporal_flicker": sum(m["temporal_flicker"] for m in gen) / len(gen),
            "toybench_score": toy["score"],
        }
        print(name, json.dumps({k: round(v, 4) for k, v in table[name].items()}), flush=True)

    def order(key):
        return sorted(table, key=lambda n: table[n][key])

    agree_motion = order("toybench_dynamic") == order("flow_magnitude")
    agree_flicker = order("toybench_flicker") == order("temporal_flicker")
    print(
        "order by ToyBench dynamic:",
        order("toybench_dynamic"),
        "| by flow magnitude:",
        order("flow_magnitude"),
        "| agree:",
        agree_motion,
    )
    print(
        "order by ToyBench flicker:",
        order("toybench_flicker"),
        "| by temporal flicker:",
        order("temporal_flicker"),
        "| agree:",
        agree_flicker,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"table": table, "agree_motion": agree_motion, "agree_flicker": agree_flicker}, f, indent=2
            )


if __name__ == "__main__":
    main()
