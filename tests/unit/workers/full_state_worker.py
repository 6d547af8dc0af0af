"""One rank of a tiny DeepSpeed run for tests/unit/test_full_state.py (launched as N processes).

``python full_state_worker.py MODE DIR STAGE PRECISION`` with RANK/WORLD_SIZE/MASTER_* set:
  save    : 2 optimizer steps on the fixed global batches, then full_state.gather -> DIR/{model,optim}.safetensors
  resume  : a fresh engine, full_state.apply(DIR), gather again -> DIR/regathered-W.safetensors, then 1 step;
            an uninterrupted engine runs the same 3 steps; both results -> DIR/after-W.safetensors
"""

import json
import sys
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from t2vturbo.train import full_state
from t2vturbo.train.engine import init_distributed

GLOBAL_BATCH = 4


def model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    m.register_buffer("scale", torch.tensor([2.0]))
    m[0].bias.requires_grad_(False)  # a frozen parameter
    return m


def engine(stage: int, precision: str):
    m = model()
    world = dist.get_world_size()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    cfg = {
        "train_micro_batch_size_per_gpu": GLOBAL_BATCH // world,
        "gradient_accumulation_steps": 1,
        "train_batch_size": GLOBAL_BATCH,
        "zero_optimization": {"stage": stage},
        "gradient_clipping": 1.0,
        "steps_per_print": 10**9,
    }
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    eng, *_ = deepspeed.initialize(model=m, optimizer=opt, config=cfg)
    return eng


def step(eng, s: int):
    g = torch.Generator().manual_seed(100 + s)
    x = torch.randn(GLOBAL_BATCH, 5, generator=g)
    world, rank = dist.get_world_size(), dist.get_rank()
    n = GLOBAL_BATCH // world
    mine = x[rank * n : (rank + 1) * n]
    dtype = next(eng.module.parameters()).dtype
    out = eng(mine.to(dtype)).float() * eng.module.scale
    loss = (out - 1.0).pow(2).mean()
    eng.backward(loss)
    eng.step()


def flat(model_state, optim_state, meta):
    out = {f"model.{k}": v for k, v in model_state.items()}
    out.update({f"optim.{k}": v for k, v in optim_state.items()})
    out["meta.adam_step"] = torch.tensor([meta["adam_step"]])
    return out


def main():
    mode, d, stage, precision = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    init_distributed()  # the trainer's own: gloo, the per-venv torch-extension dir
    world = dist.get_world_size()
    if mode == "save":
        eng = engine(stage, precision)
        for s in range(2):
            step(eng, s)
        m, o, meta = full_state.gather(eng)
        if dist.get_rank() == 0:
            save_file(m, str(d / "model.safetensors"))
            save_file(o, str(d / "optim.safetensors"))
            (d / "meta.json").write_text(json.dumps(meta))
    elif mode == "resume":
        m = load_file(str(d / "model.safetensors"))
        o = load_file(str(d / "optim.safetensors"))
        meta = json.loads((d / "meta.json").read_text())
        eng = engine(stage, precision)
        full_state.apply(eng, m, o, meta)
        again = full_state.gather(eng)
        step(eng, 2)
        after = full_state.gather(eng)
        ref = engine(stage, precision)
        for s in range(3):
            step(ref, s)
        uninterrupted = full_state.gather(ref)
        if dist.get_rank() == 0:
            save_file(flat(*again), str(d / f"regathered-{world}.safetensors"))
            save_file(flat(*after), str(d / f"after-{world}.safetensors"))
            save_file(flat(*uninterrupted), str(d / f"uninterrupted-{world}.safetensors"))
            (d / f"meta-{world}.json").write_text(
                json.dumps({"resumed": after[2], "uninterrupted": uninterrupted[2]})
            )
    elif mode == "mismatch":
        m = load_file(str(d / "model.safetensors"))
        m["0.weight"] = torch.zeros(3, 3)
        eng = engine(stage, precision)
        try:
            full_state.apply(
                eng, m, {}, {"adam_step": 0.0, "global_steps": 0, "global_samples": 0, "skipped_steps": 0}
            )
        except full_state.StateMismatchError as e:
            (d / "mismatch.txt").write_text(str(e))
    dist.barrier()  # no rank tears down gloo while another still talks to it (a rank aborted in teardown)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
