"""t2vturbo: distil a few-step text-to-video student from a diffusion teacher."""

__version__ = "0.1.0"

from pathlib import Path as _Path

#: The Hydra configs (``conf/`` of a checkout is a link to it): package data, so an installed wheel has them.
CONF_DIR = _Path(__file__).resolve().parent / "conf"
#: Files shipped inside the package (the toy teacher): ``${t2vturbo.asset:toy_teacher}`` in a config.
ASSETS_DIR = _Path(__file__).resolve().parent / "assets"


def asset(name: str) -> str:
    """The path of the shipped asset ``name`` (a folder under t2vturbo/assets), wherever the package is installed."""
    p = ASSETS_DIR / str(name)
    if not p.exists():
        have = sorted(q.name for q in ASSETS_DIR.iterdir()) if ASSETS_DIR.is_dir() else []
        raise FileNotFoundError(f"t2vturbo ships no asset {name!r} (expected {p}; shipped: {have})")
    return str(p)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("t2vturbo.asset"):
        OmegaConf.register_new_resolver("t2vturbo.asset", asset)


_register_resolvers()
