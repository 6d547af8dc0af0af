"""Hydra entry point: ``python -m t2vturbo.distill [experiment=NAME] [key=value ...]``.

Parses the config, validates it (unknown keys and missing weight paths fail at once), and hands it
to :class:`t2vturbo.train.trainer.Trainer`.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from .config import ConfigError, validate


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        vcfg = validate(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    from .train.build import check_paths

    try:
        check_paths(vcfg)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from .train.trainer import Trainer

    trainer = Trainer(vcfg)
    trainer.train()
    return None


if __name__ == "__main__":
    main()
