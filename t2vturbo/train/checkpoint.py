"""Atomic, resumable checkpoints that any number of ranks can resume, and that hold no pickle.

Layout of ``OUTPUT_DIR/checkpoints``::

    step-00000100/
        model.safetensors     the trained module: every parameter (trained ones as fp32 masters) and buffer
        optimizer.safetensors AdamW moments of each trained parameter (``exp_avg.NAME``, ``exp_avg_sq.NAME``)
        trainer_state.json    step, data position, world size, global batch, the run's identity config,
                              the optimizer's step count and DeepSpeed's counters
        ema.safetensors       EMA weights (when the target is an EMA network)
        rng_rank{r}.json      per-rank RNG states
    latest                    name of the newest *complete* checkpoint

The model and optimizer are whole tensors (:mod:`.full_state`), not DeepSpeed's per-rank partitions: a run
saved on N ranks under any ZeRO stage resumes on M ranks under any stage. DeepSpeed's own checkpoint files
(pickles, which ``torch.load`` would execute) are neither written nor read: an output dir lives on shared
storage, and nothing in it is unpickled.

A checkpoint is written into ``.tmp-step-N`` and renamed when every rank has finished; ``latest`` is
replaced with ``os.replace``. A crash mid-write leaves the previous checkpoint and ``latest`` intact.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import full_state


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def rng_state() -> dict:
    st = {
        "python": repr(random.getstate()),
        "numpy": [
            str(x) if i == 0 else (x.tolist() if hasattr(x, "tolist") else x)
            for i, x in enumerate(np.random.get_state())
        ],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        st["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return st


def set_rng_state(st: dict):
    random.setstate(ast.literal_eval(st["python"]))
    np_state = st["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(torch.tensor(st["torch"], dtype=torch.uint8))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in st["cuda"]])


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def latest_tag(ckpt_dir: str | os.PathLike) -> str | None:
    f = Path(ckpt_dir) / "latest"
    if not f.exists():
        return None
    tag = f.read_text().strip()
    if not re.fullmatch(r"step-\d{8}", tag):  # used as a path below: never let the file point elsewhere
        raise RuntimeError(
            f"{f} names {tag[:80]!r}, not a checkpoint of this folder (expected step-NNNNNNNN)"
        )
    if not (Path(ckpt_dir) / tag / "trainer_state.json").exists():
        raise RuntimeError(
            f"checkpoint {Path(ckpt_dir) / tag} named by {f} is incomplete (no trainer_state.json)"
        )
    return tag


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (typically a full disk); the previous checkpoint is intact."""


def _any_rank(flag: bool) -> bool:
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":  # NCCL reduces GPU tensors only
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0.5)


def _write_failed(ckpt_dir: Path, tmp: Path, tag: str, err: BaseException | None) -> CheckpointWriteError:
    try:
        free = f"{shutil.disk_usage(ckpt_dir).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    try:
        prev = latest_tag(ckpt_dir)
    except RuntimeError:
        prev = None
    what = f"{type(err).__name__}: {err}" if err is not None else "on another rank"
    return CheckpointWriteError(
        f"writing checkpoint {tag} into {ckpt_dir} failed ({what}); {free} there: a full disk is the usual cause. "
        f"The previous checkpoint ({ckpt_dir / prev if prev else 'none'}) is intact; the partial {tmp.name} was "
        "removed. Free some space (or set train.keep_checkpoints lower) and rerun: the run resumes from it."
    )


def save(engine, ckpt_dir, step: int, state: dict, ema=None, keep: int = 2, config_yaml: str | None = None):
    """Collective: every rank calls it. A failed write (e.g. a full disk) on any rank removes the partial
    ``.tmp-step-N`` and raises :class:`CheckpointWriteError` on every rank; ``latest`` still names the
    previous checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    tag = tag_for(step)
    tmp_tag = ".tmp-" + tag
    rank = _rank()
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(ckpt_dir / tmp_tag, ignore_errors=True)
    _barrier()
    d = ckpt_dir / tmp_tag
    model, optim, meta = full_state.gather(engine)  # collective; the tensors on rank 0 only
    err = None
    try:
        if rank == 0:
            d.mkdir(parents=True, exist_ok=True)
        _barrier()
        (d / f"rng_rank{rank}.json").write_text(json.dumps(rng_state()))
        if rank == 0:
            save_file(model, str(d / "model.safetensors"))
            save_file(optim, str(d / "optimizer.safetensors"))
            state = {**state, "optimizer": meta}
            if ema is not None:
                save_file(
                    {k: v.detach().contiguous().cpu() for k, v in ema.state_dict().items()},
                    str(d / "ema.safetensors"),
                )
            if config_yaml is not None:  # the run's config, for a reader (resume compares state["identity"])
                (d / "config.yaml").write_text(config_yaml)
            (d / "trainer_state.json").write_text(json.dumps(state, indent=2))
    except (OSError, RuntimeError) as e:  # a full disk: OSError, or a RuntimeError from the writer
        err = e
    del model, optim
    if _any_rank(err is not None):
        if rank == 0:
            shutil.rmtree(d, ignore_errors=True)
        _barrier()
        raise _write_failed(ckpt_dir, d, tag, err) from err
    if rank == 0:
        final = ckpt_dir / tag
        shutil.rmtree(final, ignore_errors=True)
        os.replace(d, final)
        tmp_latest = ckpt_dir / ".latest.tmp"
        tmp_latest.write_text(tag)
        os.replace(tmp_latest, ckpt_dir / "latest")
        prune(ckpt_dir, keep)
    _barrier()
    return ckpt_dir / tag


def prune(ckpt_dir: Path, keep: int):
    if keep <= 0:
        return
    tags = sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in tags[:-keep]:
        shutil.rmtree(ckpt_dir / old, ignore_errors=True)


def read_state(ckpt_dir) -> dict | None:
    """The trainer state of the newest complete checkpoint (``tag`` added), or None: JSON only, before any
    engine exists (the resume plan needs it to build the engine)."""
    tag = latest_tag(ckpt_dir)
    if tag is None:
        return None
    d = Path(ckpt_dir) / tag
    if not (d / "model.safetensors").exists():
        old = [p.name for p in d.iterdir() if p.suffix == ".pt"][:3]
        raise RuntimeError(
            f"checkpoint {d} has no model.safetensors"
            + (
                f" (it holds {', '.join(old)}: DeepSpeed's pickle files, written by t2vturbo before checkpoints "
                "became safetensors; they are never unpickled). Start a new output_dir, or resume it with the "
                "t2vturbo version that wrote it."
                if old
                else ""
            )
        )
    state = json.loads((d / "trainer_state.json").read_text())
    state["tag"] = tag
    return state


class _Tensors:
    """A safetensors file read one tensor at a time (every rank reads the whole model: never all at once)."""

    def __init__(self, path: Path):
        self._f = safe_open(str(path), framework="pt")
        self._keys = set(self._f.keys())

    def keys(self):
        return self._keys

    def __contains__(self, k):
        return k in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def shape_of(self, k) -> tuple:
        return tuple(self._f.get_slice(k).get_shape())

    def __getitem__(self, k):
        return self._f.get_tensor(k)


def load(engine, ckpt_dir, ema=None, state: dict | None = None, restore_rng: bool = True) -> dict | None:
    """Load the newest complete checkpoint (or the one ``state`` came from, :func:`read_state`) into
    engine/EMA/RNG, whatever the number of ranks and ZeRO stage that wrote it; returns its trainer state or
    None. Collective. A checkpoint that does not fit the module raises
    :class:`~.full_state.StateMismatchError` naming the tensors, before anything is changed."""
    state = read_state(ckpt_dir) if state is None else state
    if state is None:
        return None
    d = Path(ckpt_dir) / state["tag"]
    full_state.apply(
        engine, _Tensors(d / "model.safetensors"), _Tensors(d / "optimizer.safetensors"), state["optimizer"]
    )
    if ema is not None:
        ema.load_state_dict(load_file(str(d / "ema.safetensors")))
    rng_file = d / f"rng_rank{_rank()}.json"
    if restore_rng and rng_file.exists():
        set_rng_state(json.loads(rng_file.read_text()))
    return state
