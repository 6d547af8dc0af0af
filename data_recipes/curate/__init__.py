"""Data curation: raw videos -> scene cuts -> clips -> scores -> filters -> dedup -> captions -> shards.

    python -m data_recipes.curate input=/raw/videos output=/data/shards [curate_recipe=default] [key=value ...]
    python -m data_recipes.curate -m chunk.index=0,1,2,3 chunk.count=4 input=... output=... hydra/launcher=slurm

The config is ``conf/curate.yaml`` with a recipe from ``conf/curate_recipe/`` (schema:
:mod:`data_recipes.curate.config`); docs/DATA.md ("Curation") documents the stages, every key, the
outputs, restarts and scale-out.  From Python::

    from data_recipes.curate import load_config, run
    summary = run(load_config(["input=/raw", "output=/shards", "curate_recipe=toy"]))
"""

from __future__ import annotations

from typing import Any, Sequence

from t2vturbo import CONF_DIR as T2VTURBO_CONF_DIR

from .config import ConfigError, CurateConfig, RecipeConfig, validate

__all__ = ["CONF_DIR", "ConfigError", "CurateConfig", "RecipeConfig", "load_config", "run", "validate"]

#: The repository's Hydra config tree (``conf/curate.yaml`` lives there).
CONF_DIR = T2VTURBO_CONF_DIR  # the package's configs (t2vturbo/conf)


def load_config(overrides: Sequence[str] = (), *, check_paths: bool = True):
    """Compose ``conf/curate.yaml`` with Hydra ``overrides`` and validate it (:class:`ConfigError`)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="curate"):
        cfg = compose(config_name="curate", overrides=list(overrides))
    return validate(cfg, check_paths=check_paths)


def run(cfg, command: str | None = None) -> dict[str, Any]:
    """Run the pipeline for ``cfg.chunk`` (see :class:`data_recipes.curate.pipeline.Curation`)."""
    from .pipeline import run as _run

    return _run(cfg, command)
