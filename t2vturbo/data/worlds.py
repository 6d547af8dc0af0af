"""The toy worlds by name: ``toy`` (one shape, :mod:`t2vturbo.data.toy`) and ``crowd`` (one to three
balls at random places and speeds, :mod:`t2vturbo.data.crowd`). Each names the same pieces -- its clip
dataset, caption grammar, held-out prompts, attribute sampler and renderer -- so the trainer's data
feed, the shard writer and ToyBench pick a world in one place. docs/TOY_WORLDS.md compares them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import crowd, toy

__all__ = ["WORLDS", "World", "get_world", "world_of_prompt", "world_of_teacher", "world_of_vocabulary"]


@dataclass(frozen=True)
class World:
    name: str
    dataset: type  # map-style clip dataset (num_samples, num_frames, size, seed, textured, directions)
    caption: Callable[[Any], str]
    parse_caption: Callable[[str], dict[str, Any]]
    held_out_prompts: Callable[[], list[str]]
    sample_attributes: Callable[..., Any]
    render_clip: Callable[..., Any]
    extra_words: tuple[str, ...] = ()  # tokenizer words beyond the toy vocabulary


WORLDS: dict[str, World] = {
    "toy": World(
        "toy",
        toy.ToyClipDataset,
        toy.caption,
        toy.parse_caption,
        toy.held_out_prompts,
        toy.sample_attributes,
        toy.render_clip,
    ),
    "crowd": World(
        "crowd",
        crowd.CrowdClipDataset,
        crowd.caption,
        crowd.parse_caption,
        crowd.held_out_prompts,
        crowd.sample_attributes,
        crowd.render_clip,
        crowd.CROWD_WORDS,
    ),
}


def get_world(name: str) -> World:
    try:
        return WORLDS[name]
    except KeyError:
        raise ValueError(f"unknown toy world {name!r}; expected one of {sorted(WORLDS)}") from None


def world_of_prompt(prompt: str) -> World:
    """The world whose caption grammar ``prompt`` follows (ValueError naming both grammars if none)."""
    for w in WORLDS.values():
        try:
            w.parse_caption(prompt)
            return w
        except ValueError:
            continue
    raise ValueError(
        f"{prompt!r} is not a toy-world caption: expected e.g. 'a red circle moving left' (toy) "
        "or 'two red balls moving left fast' (crowd)"
    )


def world_of_vocabulary(vocab) -> World:
    """The world whose extra caption words a tokenizer's vocabulary holds (every one of them), else ``toy``."""
    for w in WORLDS.values():
        if w.extra_words and all(x in vocab for x in w.extra_words):
            return w
    return WORLDS["toy"]


def world_of_teacher(path: str | Path | None, meta: dict[str, Any] | None = None) -> World:
    """The world a teacher (or a student export, ``meta``) was trained on: the export's ``world`` or its
    training config's ``data.world``, else the teacher folder's MANIFEST.json ``world``, else the world whose
    caption words its tokenizer knows (:func:`world_of_vocabulary`), else ``toy``."""
    meta = meta or {}
    name = meta.get("world") or ((meta.get("config") or {}).get("data") or {}).get("world")
    if name is None and path is not None and (Path(path) / "MANIFEST.json").is_file():
        name = json.loads((Path(path) / "MANIFEST.json").read_text()).get("world")
    if name is None and path is not None and (Path(path) / "tokenizer" / "tokenizer.json").is_file():
        vocab = (
            json.loads((Path(path) / "tokenizer" / "tokenizer.json").read_text())
            .get("model", {})
            .get("vocab", {})
        )
        name = world_of_vocabulary(vocab).name
    return get_world(name or "toy")
