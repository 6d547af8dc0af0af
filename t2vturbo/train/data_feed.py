"""The trainer's data: micro-batches at global sample positions, from a map-style dataset (the toy
world) or a stream of webdataset shards resumed at the saved position."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, IterableDataset

from ..data.mixture import MixtureSource, MixtureStream
from ..data.shards import ClipStream, collate_clips
from ..data.worlds import get_world


def build_dataset(cfg):
    d = cfg.data
    if d.kind == "toy":
        if cfg.model.height != cfg.model.width:
            raise ValueError("data.kind=toy renders square clips: set model.height == model.width")
        return get_world(d.world).dataset(
            num_samples=d.num_samples,
            num_frames=cfg.model.num_frames,
            size=cfg.model.height,
            seed=cfg.seed,
            textured=d.textured,
            directions=None if d.directions is None else list(d.directions),
        )
    if d.kind in ("shards", "mixture"):
        size = (cfg.model.height, cfg.model.width)  # resize to cover, centre crop (e.g. 320x512)

        def stream(urls, frame_stride, target_fps, salt=0):
            return ClipStream(
                urls,
                num_frames=cfg.model.num_frames,
                size=size,
                frame_stride=frame_stride,
                target_fps=target_fps,
                seed=cfg.seed + salt,
                shuffle_buffer=d.shuffle_buffer,
                resampled=d.resampled,
                max_skip_fraction=d.max_skip_fraction,
                loader_batch_size=cfg.train.micro_batch_size,
                max_pixels=d.max_pixels,
                max_duration_s=d.max_duration_s,
            )

        if d.kind == "shards":
            return stream(d.urls, d.frame_stride, d.target_fps)
        sources = []
        for i, s in enumerate(d.sources):
            own = (
                s.frame_stride is not None or s.target_fps is not None
            )  # else data.frame_stride / target_fps
            fs, fps = (s.frame_stride, s.target_fps) if own else (d.frame_stride, d.target_fps)
            sources.append(
                MixtureSource(
                    name=s.name,
                    stream=stream(s.urls, fs, fps, salt=1000 * (i + 1)),
                    weight=s.weight,
                    use_reward=s.use_reward,
                    use_motion_guide=s.use_motion_guide,
                    reward_caption_key=s.reward_caption_key,
                )
            )
        return MixtureStream(sources, seed=cfg.seed, loader_batch_size=cfg.train.micro_batch_size)
    raise ValueError(f"data.kind={d.kind!r}: available: toy, shards, mixture")


class EmptyStreamError(RuntimeError):
    """A finite stream produced no micro-batch in a whole epoch."""


class DataFeed:
    """``feed.batch(micro)``: the micro-batch number ``micro`` of this rank. Its ``positions`` (the global
    sample positions ``(micro * world + rank) * mb + i``) key every random draw of the step; map-style
    data is indexed by them, streams are read in order from the position saved in the checkpoint."""

    def __init__(self, cfg, rank: int, world: int):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.mb = int(cfg.train.micro_batch_size)
        self.dataset = build_dataset(cfg)
        self._stream = None

    def positions(self, micro: int) -> list[int]:
        base = micro * self.mb * self.world + self.rank * self.mb
        return list(range(base, base + self.mb))

    def _stream_batches(self, micro: int):
        self.dataset.load_state_dict({"epoch": 0, "samples_seen": micro * self.mb})
        loader = DataLoader(
            self.dataset,
            batch_size=self.mb,
            num_workers=self.cfg.data.num_workers,
            collate_fn=collate_clips,
            drop_last=True,
        )
        epoch = 0
        while True:
            n = 0
            for b in loader:
                n += 1
                yield b
            if n == 0:  # a finite stream that cannot fill one micro-batch would loop here for ever
                raise EmptyStreamError(
                    f"data: a whole pass over the (finite, data.resampled=false) shard list yielded no micro-batch "
                    f"of {self.mb} samples on rank {self.rank}: check data.urls ({self._urls()}) and the skipped "
                    f"samples ({self.stats().get('data_first_skips') or 'none recorded'})"
                )
            epoch += 1  # a finite (not resampled) stream: next epoch
            self.dataset.set_epoch(epoch)

    def _urls(self) -> str:
        d = self.cfg.data
        if d.kind == "mixture":
            return "; ".join(f"{s.name}: {s.urls}" for s in d.sources)
        return str(d.urls)

    def batch(self, micro: int) -> dict:
        positions = self.positions(micro)
        if not isinstance(self.dataset, IterableDataset):
            items = [self.dataset[p % len(self.dataset)] for p in positions]
            return {
                "video": torch.stack([it["video"] for it in items]),
                "caption": [it["caption"] for it in items],
                "positions": positions,
            }
        if self._stream is None:
            self._stream = self._stream_batches(micro)
        b = next(self._stream)
        meta = b["meta"]
        out = {
            "video": b["video"],
            "caption": b["caption"],
            "positions": positions,
            # per-sample flags (a mixture source's, AND the sample json's own; data/mixture.py)
            "use_reward": [bool(m.get("use_reward", True)) for m in meta],
            "use_motion_guide": [bool(m.get("use_motion_guide", True)) for m in meta],
            "reward_caption": [m.get("reward_caption") or c for m, c in zip(meta, b["caption"])],
        }
        if "pre" in b:  # precomputed shards (t2vturbo.precompute)
            out["pre"], out["meta"] = b["pre"], b["meta"]
        return out

    def stats(self) -> dict:
        """Skip counters of a stream (``data_skipped``, ``data_seen``, the first skips, draws per source)."""
        if not hasattr(self.dataset, "skip_stats") or self.cfg.data.num_workers != 0:
            return {}
        st = self.dataset.skip_stats()
        first = ", ".join(
            f"{r['url'].rsplit('/', 1)[-1]}#{r['key']}:{r['reason']}" for r in st.get("first", [])[:5]
        )
        out = {
            "data_skipped": st.get("skipped", 0),
            "data_seen": st.get("seen", 0),
            "data_first_skips": first,
        }
        for name, n in st.get("by_source", {}).items():
            out[f"data_drawn/{name}"] = n
        return out
