"""Hydra entry point: ``python -m data_recipes.curate input=DIR_OR_LIST output=DIR [key=value ...]``.

Validates the config first (unknown keys, bad values and missing weight paths exit with status 2
and a message naming the key), then runs the chunk ``chunk.index`` of ``chunk.count``.  With ``-m``
every sweep point is one job (e.g. ``-m chunk.index=0,1,2,3 chunk.count=4 hydra/launcher=slurm``:
a Slurm array through submitit).
"""

from __future__ import annotations

import logging
import shlex
import sys

import hydra
from omegaconf import DictConfig

from .config import ConfigError, validate


def _command() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return shlex.join(["python", "-m", "data_recipes.curate", *HydraConfig.get().overrides.task])


@hydra.main(version_base="1.3", config_path="pkg://t2vturbo.conf", config_name="curate")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)  # one "Detecting scenes..." per video
    try:
        vcfg = validate(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    from .pipeline import run

    run(vcfg, command=_command())


if __name__ == "__main__":
    main()
