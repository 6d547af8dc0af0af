"""Hydra entry point: ``python -m t2vturbo.distill [experiment=NAME] [key=value ...]``.

Parses the config, validates it (unknown keys and missing weight paths fail at once), and hands it
to :class:`t2vturbo.train.trainer.Trainer`.

Multirun (``-m``, e.g. ``hydra/launcher=slurm``): each job trains into its own Hydra job dir
(``hydra.sweep.dir/hydra.sweep.subdir``) unless the job's overrides set ``output_dir`` explicitly.
Under Slurm (``srun`` or a submitit job) the torch.distributed variables are derived from the
task's ``SLURM_*`` variables when ``RANK`` is not set (see ``launch/slurm_env.sh``), and a
preemption notice (USR1/USR2) that arrives before the training loop is kept for it. TERM / INT before
the loop exit at once (``install_early_signal_handlers``).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from .config import ConfigError, validate


def install_early_signal_handlers():
    """Signals during start-up (model build, DeepSpeed init, checkpoint load: minutes at full size), before
    the trainer's loop: TERM / INT exit at once (status 128 + signum: no step is running, so there is no
    step to finish), and a USR1 / USR2 preemption notice is recorded and handed to the trainer, which stops
    (checkpoint, requeue) after its first step. Handlers that someone else installed (submitit's) are left
    in place. See :mod:`t2vturbo.train.preemption` (imported here without torch)."""
    from .train.preemption import install_signal_handlers

    install_signal_handlers(replace=False)


def _expand_counts(spec: str) -> list[int]:
    """Slurm's compressed tasks-per-node list: ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    out = []
    for item in spec.split(","):
        m = re.fullmatch(r"(\d+)\(x(\d+)\)", item.strip())
        out += [int(m.group(1))] * int(m.group(2)) if m else [int(item)]
    return out


def slurm_dist_env(env=os.environ) -> dict[str, str]:
    """RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE/MASTER_ADDR/MASTER_PORT of one task of an ``srun``
    step (the same derivation as ``launch/slurm_env.sh``); empty outside a step or when RANK is set."""
    if "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return {}
    # Inside an srun step the job defines the ranks: RANK/MASTER_* inherited from the submitting
    # shell are ignored (T2V_MASTER_ADDR / T2V_MASTER_PORT override on purpose).
    counts = _expand_counts(env.get("SLURM_STEP_TASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE", "1")))
    node = int(env.get("SLURM_NODEID", 0))
    out = {
        "RANK": env["SLURM_PROCID"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "WORLD_SIZE": env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")),
        "LOCAL_WORLD_SIZE": str(counts[node] if node < len(counts) else counts[0]),
        "MASTER_PORT": env.get("T2V_MASTER_PORT") or str(10000 + int(env.get("SLURM_JOB_ID", 0)) % 20000),
    }
    addr = env.get("T2V_MASTER_ADDR")
    nodes = env.get("SLURM_STEP_NODELIST", env.get("SLURM_JOB_NODELIST", ""))
    if not addr and nodes:
        try:
            r = subprocess.run(
                ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, timeout=60
            )
            addr = r.stdout.split()[0] if r.returncode == 0 and r.stdout.split() else None
        except (OSError, subprocess.TimeoutExpired):
            addr = None
    out["MASTER_ADDR"] = addr or "127.0.0.1"
    return out


def _multirun_output_dir(cfg: DictConfig) -> None:
    """In a multirun, train into the job's own dir unless its overrides name output_dir."""
    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    if any(re.match(r"^[+~]*output_dir=", o) for o in hc.overrides.task):
        return
    with open_dict(cfg):
        cfg.output_dir = hc.runtime.output_dir


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    install_early_signal_handlers()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _multirun_output_dir(cfg)
    try:
        vcfg = validate(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    # lazy: t2vturbo.backbones imports torch, diffusers and transformers (~5 s); --help and config
    # errors (above) stay fast
    from .backbones import check_paths

    try:
        check_paths(vcfg)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    os.environ.update(slurm_dist_env())
    # lazy: the trainer pulls in torch, deepspeed, diffusers, transformers and peft (see check_paths)
    from .train.trainer import Trainer

    trainer = Trainer(vcfg)
    trainer.train()
    return None


def cli() -> None:
    """The ``t2vturbo-distill`` console script (as ``python -m t2vturbo.distill``)."""
    install_early_signal_handlers()
    main()


if __name__ == "__main__":
    cli()
