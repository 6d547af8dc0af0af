"""Name -> reward class registry.

Reward modules register their classes with ``@register("name")``.  Every public module
of the :mod:`t2vturbo.rewards` package is imported on demand (the first time a name is
missing, or by :func:`available`), so a new reward only needs a new file in the package.
A module that fails to import (missing optional dependency, half-written file) is
skipped; :func:`import_errors` says why, and ``python -m t2vturbo.rewards list`` shows it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from .base import Reward

__all__ = ["UnknownRewardError", "available", "build", "get", "import_errors", "register"]

_REGISTRY: dict[str, type[Reward]] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_DISCOVERED = False
# Package modules that hold no rewards (never imported by discovery).
_SKIP = {"base", "registry", "__main__"}


class UnknownRewardError(KeyError, ValueError):
    """Unknown reward name (catchable as KeyError or ValueError)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def register(name: str):
    """Class decorator: ``@register("toy_color") class ToyColorReward(Reward): ...``.

    Sets ``cls.name = name``.  Registering a different class under a taken name raises
    :class:`ValueError` (re-registering the same class, e.g. on module reload, is fine).
    """

    def deco(cls: type[Reward]) -> type[Reward]:
        if not (isinstance(cls, type) and issubclass(cls, Reward)):
            raise TypeError(f"@register({name!r}) expects a Reward subclass, got {cls!r}")
        if cls.kind not in ("image", "video"):
            raise ValueError(f"{cls.__name__}.kind must be 'image' or 'video', got {cls.kind!r}")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"reward name {name!r} already registered by {old.__module__}.{old.__qualname__}"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _discover() -> None:
    """Import every public module of the package once (registers their rewards)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    pkg_dir = os.path.dirname(os.path.abspath(__file__))
    pkg = __name__.rsplit(".", 1)[0]
    for info in sorted(pkgutil.iter_modules([pkg_dir]), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _SKIP:
            continue
        try:
            importlib.import_module(f"{pkg}.{info.name}")
        except Exception as e:  # noqa: BLE001 - one broken module must not hide the others
            _IMPORT_ERRORS[info.name] = f"{type(e).__name__}: {e}"


def available() -> dict[str, type[Reward]]:
    """All registered rewards, ``{name: class}`` sorted by name (imports the package's modules)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def import_errors() -> dict[str, str]:
    """``{module: error}`` for package modules that failed to import during discovery."""
    _discover()
    return dict(_IMPORT_ERRORS)


def get(name: str) -> type[Reward]:
    """The class registered as ``name``; :class:`UnknownRewardError` lists the known names."""
    if name not in _REGISTRY:
        _discover()
    if name not in _REGISTRY:
        msg = f"unknown reward {name!r}; available: {', '.join(sorted(_REGISTRY)) or '(none)'}"
        if _IMPORT_ERRORS:
            msg += "; modules that failed to import: " + ", ".join(
                f"{m} ({err})" for m, err in sorted(_IMPORT_ERRORS.items())
            )
        raise UnknownRewardError(msg)
    return _REGISTRY[name]


def build(name: str, *, pretrained: str | os.PathLike | None = None, tiny: bool = False, **kwargs) -> Reward:
    """Instantiate reward ``name``.

    ``pretrained=PATH`` -> ``cls.from_pretrained(PATH, **kwargs)``; ``tiny=True`` ->
    ``cls.tiny(**kwargs)``; otherwise ``cls(**kwargs)``.
    """
    cls = get(name)
    if pretrained is not None and tiny:
        raise ValueError("pass either pretrained=PATH or tiny=True, not both")
    if pretrained is not None:
        return cls.from_pretrained(pretrained, **kwargs)
    if tiny:
        return cls.tiny(**kwargs)
    return cls(**kwargs)
