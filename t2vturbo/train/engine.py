"""Distributed setup and the DeepSpeed engine (one wrapper, no rewrite of the model)."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist

log = logging.getLogger("t2vturbo")


def extensions_dir() -> Path:
    """Where JIT-built torch extensions (DeepSpeed's CPU shm op) go: ``TORCH_EXTENSIONS_DIR`` if set, else
    ``<this environment>/torch_extensions``, so environments neither share nor rebuild each other's builds."""
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path(sys.prefix) / "torch_extensions")


def _open_paths() -> set[str]:
    """Every file some process of this machine holds open (Linux /proc; processes we may not read are skipped)."""
    held = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                try:
                    held.add(os.readlink(fd))
                except OSError:
                    continue
        except OSError:
            continue
    return held


def clear_stale_build_locks(root: Path) -> list[Path]:
    """Remove the ``lock`` files of torch's JIT builds under ``root`` that no live process holds (a builder
    keeps its lock file open until it is done; a build killed mid-way leaves the file, and every later build
    of that extension waits on it for ever). Returns the removed paths. Linux only (no /proc: nothing done)."""
    locks = list(Path(root).glob("*/lock"))
    if not locks or not Path("/proc/self/fd").exists():
        return []
    held = _open_paths()
    removed = []
    for lock in locks:
        if str(lock.resolve()) not in held:
            log.warning(
                "removing %s: a torch-extension build lock no live process holds (a build was killed "
                "mid-way); the extension is rebuilt",
                lock,
            )
            lock.unlink(missing_ok=True)
            removed.append(lock)
    return removed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int, int]:
    """Initialise torch.distributed from the usual env variables (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); a single process gets defaults. NCCL on GPU, gloo on CPU."""
    if not dist.is_initialized():
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
            # a single process needs no agreed port: never reuse one inherited from a parent process
            os.environ["MASTER_PORT"] = str(_free_port())
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        os.environ["TORCH_EXTENSIONS_DIR"] = str(extensions_dir())  # DeepSpeed builds its CPU comm op here
        clear_stale_build_locks(extensions_dir())
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    elif "OMP_NUM_THREADS" not in os.environ:
        # CPU ranks share the cores: oversubscribed OpenMP threads spin and slow tiny ops by 10x.
        local_world = int(
            os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", dist.get_world_size()))
        )
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    return dist.get_rank(), dist.get_world_size(), local_rank


def device_for(local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def build_ds_config(train_cfg, ds_overrides: dict, world_size: int) -> dict:
    cfg = {
        "train_micro_batch_size_per_gpu": int(train_cfg.micro_batch_size),
        "gradient_accumulation_steps": int(train_cfg.grad_accum),
        "train_batch_size": int(train_cfg.micro_batch_size * train_cfg.grad_accum * world_size),
        "gradient_clipping": float(train_cfg.clip_grad),
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_optimization": {"stage": 0},
    }
    if train_cfg.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    for k, v in (ds_overrides or {}).items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def initialize(module, train_cfg, ds_overrides: dict, world_size: int):
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params,
        lr=train_cfg.lr,
        betas=tuple(train_cfg.betas),
        weight_decay=train_cfg.weight_decay,
    )
    ds_config = build_ds_config(train_cfg, ds_overrides, world_size)
    engine, optimizer, _, _ = deepspeed.initialize(model=module, optimizer=opt, config=ds_config)
    return engine, optimizer, ds_config
