"""Whether and how a run resumes from its output dir: decided before any engine is built.

``train.resume``:

* ``auto`` (default): resume from the newest checkpoint when its *identity* equals this run's, refuse with
  the differing keys when it does not;
* ``force``: resume although the identity differs (the checkpoint must still fit the model);
* ``never``: start from step 0; the old ``checkpoints/``, ``metrics.jsonl`` and ``tensorboard/`` move to
  ``OUTPUT_DIR/replaced-<time>/`` (nothing is deleted).

The identity is what makes a checkpoint's state and data position mean something: the model (``model.*``),
what is trained and how (``objective.*``), the data and its order (``data.*`` but the validation prompts),
``seed`` and the global batch (clips per optimizer step). Everything else may change on a rerun (learning
rate, steps, checkpoint and log cadence, rewards and guidance weights, precision, ZeRO stage, number of ranks).

Another number of ranks keeps the global batch: ``train.grad_accum`` is set to
``global batch / (micro_batch_size * ranks)`` (it must divide), and the data position (a global sample count)
is cut into per-rank micro-batches of the new world.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch.distributed as dist
from omegaconf import OmegaConf, open_dict

from . import checkpoint as ckpt

log = logging.getLogger("t2vturbo")

IDENTITY_GROUPS = ("model", "objective", "data")
NOT_IDENTITY = ("data.validation_prompts", "model.attention", "model.arch")  # a kernel; a plan-only key


class ResumeConfigError(RuntimeError):
    """The newest checkpoint belongs to another configuration (``train.resume=auto``), or cannot keep its
    global batch on this number of ranks."""


def _flat(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def global_batch(cfg, world: int) -> int:
    return int(cfg.train.micro_batch_size) * int(cfg.train.grad_accum) * int(world)


def identity(cfg, world: int) -> dict:
    """The keys a checkpoint must agree on (dotted names -> plain values)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    out = {k: v for g in IDENTITY_GROUPS for k, v in _flat(c[g], g + ".").items()}
    for k in NOT_IDENTITY:
        out.pop(k, None)
    out["seed"] = c["seed"]
    out["global_batch"] = global_batch(cfg, world)
    return out


def differences(saved: dict, now: dict) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [
        f"{k}: {saved.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}"
        for k in keys
        if saved.get(k) != now.get(k)
    ]


def _replace_old_run(out: Path, rank: int) -> None:
    if rank == 0:
        dest = out / time.strftime("replaced-%Y%m%d-%H%M%S")
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("checkpoints", "metrics.jsonl", "tensorboard"):
            if (out / name).exists():
                shutil.move(str(out / name), str(dest / name))
        log.warning(
            "train.resume=never: the previous run's checkpoints, metrics and tensorboard events moved to %s",
            dest,
        )
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def plan(cfg, out: Path, rank: int, world: int) -> dict | None:
    """The trainer state to resume from (None: start at step 0), after checking it against ``cfg``. On another
    number of ranks, sets ``cfg.train.grad_accum`` so that the global batch is the checkpoint's and adds
    ``micro`` (this world's per-rank micro-batch count at the saved data position)."""
    mode = cfg.train.resume
    ckpt_dir = out / "checkpoints"
    state = ckpt.read_state(ckpt_dir) if ckpt_dir.exists() else None
    if state is None:
        return None
    if mode == "never":
        _replace_old_run(out, rank)
        return None
    where = ckpt_dir / state["tag"]
    saved_world = int(state.get("world_size", world))
    mb = int(cfg.train.micro_batch_size)
    saved_batch = int(state["global_batch"])
    if saved_world != world and saved_batch != global_batch(cfg, world):
        # keep the global batch on the new number of ranks: more (fewer) micro-batches per step
        accum = saved_batch / (mb * world)
        if accum != int(accum) or accum < 1:
            raise ResumeConfigError(
                f"checkpoint {where} was trained with a global batch of {saved_batch} clips on {saved_world} ranks; "
                f"with {world} ranks and train.micro_batch_size={mb} no whole train.grad_accum keeps it "
                f"({saved_batch} / ({mb} x {world}) = {accum:g}). Set train.micro_batch_size so that "
                f"micro_batch_size x {world} divides {saved_batch}, or train.resume=never to start over."
            )
        with open_dict(cfg):
            cfg.train.grad_accum = int(accum)
        if rank == 0:
            log.warning(
                "resuming a %d-rank checkpoint on %d ranks: train.grad_accum=%d keeps its global batch of %d clips",
                saved_world,
                world,
                int(accum),
                saved_batch,
            )
    saved_identity = state.get("identity")
    if saved_identity is not None:
        diff = differences(saved_identity, identity(cfg, world))
        if diff and mode == "auto":
            raise ResumeConfigError(
                f"{out} holds a checkpoint ({where}, step {state['step']}) of another configuration:\n  "
                + "\n  ".join(diff)
                + f"\nRerun with the saved values ({where / 'config.yaml'}), or train.resume=force to resume anyway (the checkpoint "
                "must fit the model), or train.resume=never to start from step 0 (the old checkpoints are kept "
                "under OUTPUT_DIR/replaced-<time>/), or another output_dir."
            )
        if diff and rank == 0:
            log.warning("train.resume=force: resuming %s although %s", where, "; ".join(diff))
    samples = int(state["samples"])
    state["micro"] = -(
        -samples // (mb * world)
    )  # whole micro-batches of this world (a partial one is skipped)
    state["same_world"] = saved_world == world
    return state
