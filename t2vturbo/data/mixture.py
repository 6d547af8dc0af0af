"""Weighted mixtures of shard sources, with per-source flags the loss reads.

T2V-Turbo-v2's best data recipe (VidGen-1M + WebVid-10M in equal parts, consistency distillation
on both, rewards only on the short-caption WebVid part) is one :class:`MixtureStream` of two
:class:`~t2vturbo.data.shards.ClipStream` sources::

    data:
      kind: mixture
      sources:
        - {name: vidgen, urls: ..., weight: 0.5, use_reward: false}
        - {name: webvid, urls: ..., weight: 0.5, use_reward: true}

Sampling. Every (rank, DataLoader worker) slot draws the source of its next sample from a
categorical distribution with probabilities ``weight / sum(weights)``, from a numpy generator
seeded by ``(seed, epoch, rank, worker)``; the sample itself is the next one of that source's own
stream in that slot (each source splits its shards over ranks and workers as a ClipStream does).
So the mixture is deterministic given the seed, and every source keeps its own shuffle buffer.

Flags. Each yielded item's ``meta`` gets ``source`` (the source's name), ``use_reward`` and
``use_motion_guide`` (the source's flag AND the sample's own json flag, default true), and, with
``reward_caption_key``, ``reward_caption`` (that json field, e.g. a short caption; the caption
when the field is missing or blank): the reward term scores the student against it, while the
consistency loss keeps the full caption.

Ending. With resampled sources (the default) the mixture is infinite. If a finite source runs
out, the mixture's epoch ends there (the trainer then starts the next epoch); weights are not
renormalised over the remaining sources, which would silently change the recipe.

Resume. ``load_state_dict({"epoch", "samples_seen"})`` works as for ClipStream (same worker
round-robin rotation and caveats): each slot replays its source draws for the samples it had
consumed and fast-forwards every source by its count, without decoding.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .shards import ClipStream, slot_share

__all__ = ["MixtureSource", "MixtureStream"]

_CHUNK = 256  # source draws generated at a time


@dataclass
class MixtureSource:
    name: str
    stream: ClipStream
    weight: float = 1.0
    use_reward: bool = True
    use_motion_guide: bool = True
    reward_caption_key: str | None = None


class MixtureStream(IterableDataset):
    """Weighted mixture of :class:`ClipStream` sources (see the module docstring)."""

    def __init__(
        self, sources: Sequence[MixtureSource], *, seed: int = 0, loader_batch_size: int = 1
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("a mixture needs at least one source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"mixture source names must be unique, got {names}")
        weights = np.array([float(s.weight) for s in sources], dtype=np.float64)
        if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"mixture weights must be >= 0 with a positive sum, got {dict(zip(names, weights))}"
            )
        ranks = {(s.stream.rank, s.stream.world_size) for s in sources}
        if len(ranks) != 1:
            raise ValueError(f"all mixture sources must have the same rank / world_size, got {ranks}")
        self.sources = list(sources)
        self.probs = weights / weights.sum()
        self.seed = int(seed)
        self.loader_batch_size = int(loader_batch_size)
        self.rank, self.world_size = next(iter(ranks))
        self.epoch = 0
        self.samples_seen = 0
        self._resume: tuple[int, int] | None = None
        self.drawn: Counter[str] = Counter()

    # ---- draws ---------------------------------------------------------------------------
    def source_draws(self, worker: int, num_workers: int) -> Iterator[int]:
        """The infinite sequence of source indices of slot (rank, ``worker``) in this epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, num_workers, 0x313C])
        while True:
            yield from rng.choice(len(self.sources), size=_CHUNK, p=self.probs).tolist()

    # ---- epoch / resume (same contract as ClipStream) --------------------------------------
    def set_epoch(self, epoch: int) -> None:
        epoch = int(epoch)
        if epoch != self.epoch:
            self.samples_seen = 0
        self.epoch = epoch
        for s in self.sources:
            s.stream.set_epoch(epoch)
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "seed": self.seed,
            "world_size": self.world_size,
            "sources": [s.name for s in self.sources],
            "weights": [float(s.weight) for s in self.sources],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state.get("samples_seen", 0))
        if n < 0:
            raise ValueError(f"samples_seen must be >= 0, got {n}")
        self.epoch = int(state.get("epoch", self.epoch))
        for s in self.sources:
            s.stream.set_epoch(self.epoch)
        self.samples_seen = n
        self._resume = (self.epoch, n) if n > 0 else None

    # ---- counters ------------------------------------------------------------------------
    def skip_stats(self) -> dict[str, Any]:
        """Sum of the sources' counters (this process) plus samples drawn per source."""
        per = [s.stream.skip_stats() for s in self.sources]
        out: dict[str, Any] = {
            k: sum(p[k] for p in per)
            for k in ("seen", "yielded", "fast_forwarded", "pyav_fallbacks", "skipped")
        }
        out["fraction"] = out["skipped"] / out["seen"] if out["seen"] else 0.0
        by_reason: Counter[str] = Counter()
        for p in per:
            by_reason.update(p["by_reason"])
        out["by_reason"] = dict(by_reason)
        out["first"] = [r for p in per for r in p["first"]][:10]
        out["by_source"] = {s.name: int(self.drawn[s.name]) for s in self.sources}
        return out

    # ---- iteration -----------------------------------------------------------------------
    def _tag(self, src: MixtureSource, item: dict[str, Any]) -> dict[str, Any]:
        meta = dict(item.get("meta") or {})
        meta["source"] = src.name
        meta["use_reward"] = bool(src.use_reward) and bool(meta.get("use_reward", True))
        meta["use_motion_guide"] = bool(src.use_motion_guide) and bool(meta.get("use_motion_guide", True))
        if src.reward_caption_key:
            alt = meta.get(src.reward_caption_key)
            meta["reward_caption"] = alt.strip() if isinstance(alt, str) and alt.strip() else item["caption"]
        return {**item, "meta": meta}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        to_skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            n = self._resume[1]
            worker = (worker + n // self.loader_batch_size) % num_workers  # as ClipStream._begin
            to_skip = slot_share(n, worker, num_workers, self.loader_batch_size)
            self.samples_seen = n
        else:
            self.samples_seen = 0
        self._resume = None
        self.drawn = Counter()

        draws = self.source_draws(worker, num_workers)
        skip_per_source = [0] * len(self.sources)
        for _ in range(to_skip):
            skip_per_source[next(draws)] += 1
        iters = []
        for src, k in zip(self.sources, skip_per_source):
            src.stream._reset_counters()
            src.stream._resume = None
            iters.append(src.stream._iter_slot(worker, num_workers, k, count_seen=False))
        for i in draws:
            src = self.sources[i]
            try:
                item = next(iters[i])
            except StopIteration:
                return  # a finite source ran out: the mixture's epoch ends (module docstring)
            self.drawn[src.name] += 1
            if info is None:
                self.samples_seen += 1
            yield self._tag(src, item)

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.name}:{p:.3g}" for s, p in zip(self.sources, self.probs))
        return f"MixtureStream({parts}; rank={self.rank}/{self.world_size}, epoch={self.epoch})"
