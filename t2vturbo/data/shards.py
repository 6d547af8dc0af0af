"""Streaming reader for the project's standard webdataset shard layout.

Layout (one sample = all tar members sharing a key; keys contain no ``.``)::

    {key}.mp4                 H.264 (or anything FFmpeg/decord decodes) clip        -- required
    {key}.txt                 UTF-8 caption                                          -- required
    {key}.json                metadata dict; ``fps`` is used when present           -- optional ({} if absent)
    {key}.{name}.safetensors  extra tensors (e.g. cached latents), loaded with
                              ``safetensors.torch.load`` (never unpickled)          -- optional

:class:`ClipStream` yields one dict per usable sample::

    {"video": float32 [F, 3, size, size] in [-1, 1], "caption": str, "meta": dict (the json),
     "key": str, "url": str, **{name: dict[str, Tensor] for each {key}.{name}.safetensors}}

Work split (no resampling)
--------------------------
Every (rank, DataLoader worker) pair is a *slot*: ``slot = rank * num_workers + worker`` out of
``T = world_size * num_workers``.  The epoch's shard list (shuffled with a seed shared by all
ranks when ``shuffle_shards``) is partitioned among the slots: with ``N >= T`` shards, slot ``s``
reads shards ``s, s + T, ...``; with ``N < T`` shards, slot ``s`` reads shard ``s % N`` and keeps
every ``m``-th sample of it (``m`` = number of slots sharing that shard), so no slot idles.
Either way every sample is read by exactly one slot per epoch.  Slots may get unequal numbers of
samples (a DDP job must bound its steps per epoch, or use ``resampled=True``).  With
``resampled=True`` each slot draws shards with replacement from webdataset's
:class:`~webdataset.ResampledShards`, seeded by ``(seed, epoch, slot)``: an infinite stream.

Frame sampling
--------------
``num_frames`` frames are taken ``stride`` decoded frames apart, starting at frame 0 (or at a
seeded random start with ``random_start=True``).  ``stride = frame_stride`` if given, else with
``target_fps`` it is ``max(1, round(src_fps / target_fps))`` where ``src_fps`` is the json ``fps``
(falling back to the container's average fps); default stride 1.  Clips with fewer than
``(num_frames - 1) * stride + 1`` frames are skipped (``too_short``).  Frames are resized so they
cover ``size`` with the aspect ratio kept (the short side equals ``size`` for a square target), then
centre cropped to ``size x size``.  A clip larger than that covering size is shrunk to it by the
decoder itself (decord's / FFmpeg's scaler, or PyAV's for the clips decord cannot copy out), so no
full-size frame is ever materialised and only the crop is left; clips at or below the covering size
are decoded at their own size and resized with bilinear interpolation in torch.

Before any frame is decoded the container header is read (PyAV, with frame decoding disabled):
a clip whose frames have more than ``max_pixels`` pixels (``width * height``; default 4K UHD,
``4096 * 2160``) or that lasts longer than ``max_duration_s`` seconds (default 600; the video
stream's duration, else the container's, else frames / fps) is skipped as ``too_large``, so a small
crafted file declaring huge frames cannot run the reader out of memory (``None`` disables a limit).

Skipping
--------
Unusable samples never raise; they are skipped and counted by reason in ``stream.skipped``
(a :class:`collections.Counter`) and the first 10 are kept in ``stream.skip_log`` as
:class:`SkipRecord` ``(url, key, reason, detail)``.  Reasons: ``missing_video``,
``empty_video`` (zero bytes), ``decode_error`` (truncated / not a video, or a container header
without a frame size), ``too_short``, ``too_large`` (frame size above ``max_pixels`` or duration
above ``max_duration_s``, from the header),
``missing_caption`` (no or blank ``.txt``), ``bad_caption`` (not UTF-8), ``bad_json``,
``bad_safetensors``, ``shard_error`` (a shard that cannot be opened or whose tar stream is
corrupt; counted once per shard, with an empty key; the complete samples before the damage are
still read -- a shard cut exactly at a 512-byte tar block boundary looks like a clean end of file,
so only its cut sample shows up, as an incomplete sample).  These counters live in the process that iterates (each
DataLoader worker has its own) and are reset at the start of every ``__iter__``.  If more than
``max_skip_fraction`` of the samples seen so far were skipped, once at least
``min_samples_for_skip_check`` samples were seen, a :class:`RuntimeError` names the fraction, the
reasons and the first bad keys.

Determinism and resumption
--------------------------
Same ``urls`` / ``seed`` / ``epoch`` / ``rank`` / ``world_size`` / number of DataLoader workers
give the same sequence.  Call :meth:`ClipStream.set_epoch` every epoch (shard and buffer shuffles
and the resampling seed depend on it, like ``DistributedSampler``).

``state_dict()`` returns ``{"epoch", "samples_seen", ...}``; ``samples_seen`` counts the samples
this rank has consumed in the current epoch.  It is tracked automatically only when the stream is
iterated in-process (``num_workers=0``); with DataLoader workers the iteration happens in worker
copies, so pass the number of samples the rank consumed yourself, e.g.
``load_state_dict({"epoch": e, "samples_seen": micro_batches * batch_size})``.
``load_state_dict`` makes the next iteration of that epoch fast-forward: each slot skips its share
of ``samples_seen`` assuming the DataLoader's in-order round robin over workers in batches of
``loader_batch_size`` (``batch_size=None`` -> 1).  Skipped samples are *not* decoded: the
fast-forward applies every check that needs no frame decoding (missing / empty parts, caption,
json, safetensors header, container header + ``max_pixels`` / ``max_duration_s``, container open +
frame count) and counts a sample as consumed iff it passes them.  Limits:

* the resumed DataLoader starts its round robin at worker 0, so worker roles are rotated by
  ``(samples_seen // loader_batch_size) % num_workers`` to continue the saved order; this needs
  ``samples_seen`` to be a multiple of ``loader_batch_size`` (a partly consumed batch resumes
  with the right samples but regrouped);
* exact for ``resampled=True`` and ``num_workers <= 1``; with several workers and a finite epoch it
  is exact as long as the saved DataLoader had not yet dropped an exhausted worker before
  position ``samples_seen`` (after that the interleaving depends on per-worker lengths that are
  not known up front);
* a sample whose container opens but whose frames fail to decode is counted as consumed by the
  fast-forward although a normal pass skipped it: the resumed stream is then shifted by one sample
  per such file inside the skipped region;
* the fast-forward still reads (but does not decode) the skipped bytes, and the same
  ``world_size``, worker count, ``seed`` and ``shuffle_buffer`` must be used as before.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import zlib
from collections import Counter
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from safetensors.torch import load as st_load
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tar_file_expander

__all__ = [
    "SKIP_REASONS",
    "ClipStream",
    "SkipRecord",
    "collate_clips",
    "expand_shard_urls",
    "resize_center_crop",
]

log = logging.getLogger(__name__)

SKIP_REASONS: tuple[str, ...] = (
    "missing_video",
    "empty_video",
    "decode_error",
    "too_short",
    "too_large",
    "missing_caption",
    "bad_caption",
    "bad_json",
    "bad_safetensors",
    "shard_error",
)

#: Item keys produced by the reader itself (a ``{key}.{name}.safetensors`` with such a name is
#: returned under ``"{name}.safetensors"`` instead).
_RESERVED = frozenset({"video", "caption", "meta", "key", "url"})
_SKIP_LOG_LEN = 10
#: Default ``max_pixels``: 4K UHD (``4096 x 2160``) frames.
DEFAULT_MAX_PIXELS = 4096 * 2160
#: Default ``max_duration_s``: 10 minutes.
DEFAULT_MAX_DURATION_S = 600.0


class SkipRecord(NamedTuple):
    """One skipped sample: ``rec[:2] == (url, key)``."""

    url: str
    key: str
    reason: str
    detail: str


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- helpers


def expand_shard_urls(urls: str | Sequence[str]) -> list[str]:
    """Expand a shard spec to a list of URLs with webdataset's rules.

    A string is split on ``::`` and brace-expanded (``toy-{000000..000002}.tar``); a list /
    tuple has each element expanded the same way.  ``pipe:`` / ``file:`` / ``http(s):`` URLs
    are kept as they are (opened later by :func:`webdataset.gopen`).
    """
    if isinstance(urls, (str, bytes)) or hasattr(urls, "__fspath__"):
        items = [str(urls if not isinstance(urls, bytes) else urls.decode())]
    else:
        items = [str(u) for u in urls]
    out: list[str] = []
    for u in items:
        out.extend(expand_urls(u))
    return out


def slot_share(n: int, worker: int, num_workers: int, batch: int) -> int:
    """Samples of the ``n`` a rank consumed that came from DataLoader ``worker`` (the loader's
    in-order round robin over ``num_workers`` workers in batches of ``batch``)."""
    if num_workers <= 1:
        return n
    full, rest = divmod(n, batch)
    batches = max(0, -(-(full - worker) // num_workers))
    extra = rest if full % num_workers == worker else 0
    return batches * batch + extra


def _seed(*parts: int) -> int:
    """A 64-bit seed from non-negative-mapped integer parts (process independent)."""
    return int(np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(1, np.uint64)[0])


def _crc(s: str) -> int:
    return zlib.crc32(s.encode("utf-8", "surrogateescape"))


def _cover_size(h: int, w: int, th: int, tw: int) -> tuple[int, int, float]:
    """``(new_h, new_w, scale)``: the smallest ``h x w`` rescale (aspect ratio kept) that covers ``th x tw``.

    ``scale = max(th / h, tw / w)``; the new sides are ``max(target, round(side * scale))``, and the side
    that sets the scale is exactly its target (the rule of :func:`resize_center_crop`).
    """
    scale = max(th / h, tw / w)
    nh, nw = max(th, int(round(h * scale))), max(tw, int(round(w * scale)))
    if th / h >= tw / w:
        nh = th
    else:
        nw = tw
    return nh, nw, scale


def resize_center_crop(video: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``[F, 3, H, W]`` frames so they cover ``size``, then centre crop to exactly ``size``.

    ``size``: an int (square ``size x size``) or ``(height, width)``. The scale is the smallest that
    covers the target (``max(th / H, tw / W)``), so for a square target the short side becomes
    ``size``. Bilinear (``align_corners=False``, antialiased when shrinking); no resize when the
    frames already have the covering size. The new sides are ``max(target, round(side * scale))``;
    the crop offsets are ``(new - target) // 2``. Returns float32 in the input's value range.
    """
    if video.ndim != 4:
        raise ValueError(f"expected [F, C, H, W], got shape {tuple(video.shape)}")
    th, tw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    x = video.float()
    h, w = int(x.shape[-2]), int(x.shape[-1])
    nh, nw, scale = _cover_size(h, w, th, tw)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return x[:, :, top : top + th, left : left + tw].contiguous()


def collate_clips(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch ClipStream items: stacks ``video`` and safetensors entries, keeps lists otherwise.

    ``meta`` dicts may have different keys per sample, so they stay a list (the default
    ``collate_fn`` would fail on them).
    """
    out: dict[str, Any] = {"video": torch.stack([b["video"] for b in batch])}
    for k in ("caption", "meta", "key", "url"):
        out[k] = [b[k] for b in batch]
    extra = [k for k in batch[0] if k not in _RESERVED]
    for k in extra:
        out[k] = torch.utils.data.default_collate([b[k] for b in batch])
    return out


def _video_header(data: bytes) -> tuple[int, int, float | None]:
    """``(width, height, duration_s or None)`` of the first video stream, from the container header.

    Frame decoding is disabled (``skip_frame=all``), so even a clip declaring huge frames costs only its
    header parse (FFmpeg's stream probing would otherwise decode a frame). The duration is the video
    stream's, else the container's, else ``frames / average_rate``. Raises on an unreadable header.
    """
    with av.open(io.BytesIO(data), mode="r", options={"skip_frame": "all"}) as container:
        stream = container.streams.video[0]
        w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        elif stream.frames and stream.average_rate:
            duration = stream.frames / float(stream.average_rate)
    if w <= 0 or h <= 0:
        raise ValueError(f"no frame size in the container header ({w}x{h})")
    if duration is not None and not (math.isfinite(duration) and duration >= 0):
        duration = None
    return w, h, duration


def _safetensors_header_ok(data: bytes) -> bool:
    """Cheap structural check of a safetensors blob (header + byte count), no tensor copies."""
    if len(data) < 8:
        return False
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        return False
    try:
        header = json.loads(bytes(data[8 : 8 + n]))
    except ValueError:
        return False
    if not isinstance(header, dict):
        return False
    end = 0
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(spec["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            return False
    return 8 + n + end == len(data)


# --------------------------------------------------------------------------- the stream


class ClipStream(IterableDataset):
    """Iterable dataset over webdataset video shards (see the module docstring).

    Args:
        urls: shard list, a brace / ``::`` pattern string, or ``pipe:`` URLs.
        num_frames: frames per clip ``F``.
        size: output height = width (int), or ``(height, width)`` (resize to cover, centre crop).
        frame_stride: decoded-frame step between sampled frames (exclusive with ``target_fps``).
        target_fps: derive the stride from the clip fps: ``max(1, round(src_fps / target_fps))``.
        seed: seeds shard / buffer shuffles, resampling and random starts.
        shuffle_buffer: size of the per-slot sample shuffle buffer (0 = keep shard order).
        shuffle_shards: shuffle the shard list each epoch (default: ``shuffle_buffer > 0``).
        resampled: infinite stream of shards drawn with replacement (``ResampledShards``).
        rank, world_size: default to ``torch.distributed`` (if initialised when the stream is
            constructed), else 0 / 1.
        max_skip_fraction: raise once more than this fraction of seen samples was skipped
            (``None`` disables).
        min_samples_for_skip_check: samples to see before ``max_skip_fraction`` applies.
        random_start: start each clip at a seeded random frame instead of frame 0.
        loader_batch_size: the DataLoader ``batch_size`` (only used to fast-forward after
            :meth:`load_state_dict` with several workers).
        decode_threads: decord decoding threads per sample (0 = decord's default).
        max_pixels: skip (``too_large``) clips whose container header declares frames of more than
            this many pixels (``width * height``; default 4K UHD, ``4096 * 2160``; ``None`` disables).
        max_duration_s: skip (``too_large``) clips whose header says they last longer than this many
            seconds (default 600; ``None`` disables).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        num_frames: int,
        size: int | tuple[int, int],
        *,
        frame_stride: int | None = None,
        target_fps: float | None = None,
        seed: int = 0,
        shuffle_buffer: int = 0,
        shuffle_shards: bool | None = None,
        resampled: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        max_skip_fraction: float | None = 0.5,
        min_samples_for_skip_check: int = 20,
        random_start: bool = False,
        loader_batch_size: int = 1,
        decode_threads: int = 1,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    ) -> None:
        super().__init__()
        self.urls = expand_shard_urls(urls)
        if not self.urls:
            raise ValueError(f"no shards in {urls!r}")
        sizes = (size,) if isinstance(size, int) else tuple(size)
        if num_frames < 1 or len(sizes) not in (1, 2) or min(sizes) < 1:
            raise ValueError(
                f"num_frames and size (int or (height, width)) must be >= 1, got {num_frames}, {size}"
            )
        if frame_stride is not None and target_fps is not None:
            raise ValueError("pass frame_stride or target_fps, not both")
        if frame_stride is not None and int(frame_stride) < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        if target_fps is not None and not float(target_fps) > 0:
            raise ValueError(f"target_fps must be > 0, got {target_fps}")
        if shuffle_buffer < 0:
            raise ValueError("shuffle_buffer must be >= 0")
        if max_skip_fraction is not None and not 0.0 <= float(max_skip_fraction) <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1] or None, got {max_skip_fraction}")
        if loader_batch_size < 1:
            raise ValueError("loader_batch_size must be >= 1")
        if max_pixels is not None and int(max_pixels) < 1:
            raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels}")
        if max_duration_s is not None and not float(max_duration_s) > 0:
            raise ValueError(f"max_duration_s must be > 0 or None, got {max_duration_s}")
        if rank is None or world_size is None:
            d_rank, d_world = 0, 1
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                d_rank, d_world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            rank = d_rank if rank is None else rank
            world_size = d_world if world_size is None else world_size
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")

        self.num_frames = int(num_frames)
        self.size = int(size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.frame_stride = None if frame_stride is None else int(frame_stride)
        self.target_fps = None if target_fps is None else float(target_fps)
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.shuffle_shards = self.shuffle_buffer > 0 if shuffle_shards is None else bool(shuffle_shards)
        self.resampled = bool(resampled)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.max_skip_fraction = None if max_skip_fraction is None else float(max_skip_fraction)
        self.min_samples_for_skip_check = int(min_samples_for_skip_check)
        self.random_start = bool(random_start)
        self.loader_batch_size = int(loader_batch_size)
        self.decode_threads = int(decode_threads)
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self.max_duration_s = None if max_duration_s is None else float(max_duration_s)

        self.epoch = 0
        self.samples_seen = 0  # consumed this epoch (in-process iteration, or as loaded)
        self._resume: tuple[int, int] | None = None  # (epoch, samples_seen) to fast-forward
        self._reset_counters()

    # ---- bookkeeping ---------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self.skipped: Counter[str] = Counter()
        self.skip_log: list[SkipRecord] = []
        self.num_yielded = 0
        self.num_fast_forwarded = 0
        self.num_pyav_fallbacks = 0

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip_stats(self) -> dict[str, Any]:
        """Counters since this stream was created, over every iteration (epoch) in *this* process (a worker
        has its own)."""
        seen = self.num_yielded + self.num_fast_forwarded + self.num_skipped
        return {
            "seen": seen,
            "yielded": self.num_yielded,
            "fast_forwarded": self.num_fast_forwarded,
            "pyav_fallbacks": self.num_pyav_fallbacks,
            "skipped": self.num_skipped,
            "fraction": self.num_skipped / seen if seen else 0.0,
            "by_reason": dict(self.skipped),
            "first": [r._asdict() for r in self.skip_log],
        }

    def _record_skip(self, url: str, key: str, reason: str, detail: str, slot: tuple[int, int]) -> None:
        if self.skipped[reason] == 0:
            log.warning("ClipStream: skipping %s#%s (%s: %s)", url, key, reason, detail[:200])
        self.skipped[reason] += 1
        if len(self.skip_log) < _SKIP_LOG_LEN:
            self.skip_log.append(SkipRecord(url, key, reason, detail[:500]))
        if self.max_skip_fraction is None:
            return
        seen = self.num_yielded + self.num_fast_forwarded + self.num_skipped
        frac = self.num_skipped / seen
        if seen >= self.min_samples_for_skip_check and frac > self.max_skip_fraction:
            first = ", ".join(f"{r.url}#{r.key} ({r.reason})" for r in self.skip_log)
            raise RuntimeError(
                f"ClipStream: skipped {self.num_skipped} of {seen} samples ({frac:.1%}), more than "
                f"max_skip_fraction={self.max_skip_fraction:g} (rank {self.rank}, worker {slot[0]} of "
                f"{slot[1]}); reasons {dict(self.skipped)}; first bad samples: {first}"
            )

    # ---- epoch / resume ------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shuffles and resampling seeds depend on it)."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.samples_seen = 0
        self.epoch = epoch
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "samples_seen", ...}`` (see the module docstring for the worker caveat)."""
        return {
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "resampled": self.resampled,
            "shuffle_buffer": self.shuffle_buffer,
            "num_shards": len(self.urls),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration of ``state["epoch"]`` skips ``state["samples_seen"]`` samples."""
        n = int(state.get("samples_seen", 0))
        if n < 0:
            raise ValueError(f"samples_seen must be >= 0, got {n}")
        for k in ("seed", "world_size", "resampled", "shuffle_buffer", "num_shards"):
            mine = self.state_dict()[k]
            if k in state and state[k] != mine:
                log.warning(
                    "ClipStream.load_state_dict: %s differs (%r saved, %r now); the resumed "
                    "sequence will not continue the saved one",
                    k,
                    state[k],
                    mine,
                )
        self.epoch = int(state.get("epoch", self.epoch))
        self.samples_seen = n
        self._resume = (self.epoch, n) if n > 0 else None

    def _slot_skip(self, n: int, worker: int, num_workers: int) -> int:
        return slot_share(n, worker, num_workers, self.loader_batch_size)

    # ---- shard plan ----------------------------------------------------------------------
    def _shard_plan(self, slot: int, nslots: int) -> Iterator[tuple[str, int, int]]:
        """``(url, j, m)``: read ``url`` keeping sample ``i`` iff ``i % m == j``."""
        if self.resampled:
            shards = wds.ResampledShards(
                self.urls,
                seed=_seed(self.seed, self.epoch) % 2**31,
                worker_seed=lambda: slot,
                deterministic=True,
            )
            for d in shards:
                yield d["url"], 0, 1
            return
        urls = list(self.urls)
        if self.shuffle_shards:
            random.Random(_seed(self.seed, self.epoch, 0x5A4D)).shuffle(urls)
        n = len(urls)
        if n >= nslots:
            for u in urls[slot::nslots]:
                yield u, 0, 1
        else:
            yield urls[slot % n], slot // n, len(range(slot % n, nslots, n))

    def _raw_samples(self, slot: int, nslots: int, wk: tuple[int, int]) -> Iterator[dict[str, Any]]:
        consecutive_errors = 0
        for url, j, m in self._shard_plan(slot, nslots):
            errors: list[BaseException] = []

            def handler(exn: BaseException, errors=errors) -> bool:
                errors.append(exn)
                return True

            stream = None
            got_any = False
            try:
                stream = wds.gopen(url, "rb")
                files = tar_file_expander([{"url": url, "stream": stream}], handler=handler)
                for i, sample in enumerate(group_by_keys(files, handler=handler)):
                    got_any = True
                    if i % m == j:
                        yield sample
            except Exception as exn:  # opening / reading the shard failed
                errors.append(exn)
            finally:
                if stream is not None:
                    try:
                        stream.close()
                    except Exception as exn:  # e.g. a pipe: command exiting non-zero
                        errors.append(exn)
            if errors:  # one shard_error per unreadable shard, however many times tar reading failed
                more = f" (+{len(errors) - 1} more errors)" if len(errors) > 1 else ""
                self._record_skip(
                    url, "", "shard_error", f"{type(errors[0]).__name__}: {errors[0]}{more}", wk
                )
            consecutive_errors = 0 if got_any else consecutive_errors + (1 if errors else 0)
            if self.resampled and consecutive_errors > 2 * len(self.urls) + 10:
                raise RuntimeError(
                    f"ClipStream: {consecutive_errors} shards in a row could not be read; last {url!r}: "
                    f"{errors[-1] if errors else ''}"
                )

    def _shuffled(self, src: Iterable[dict[str, Any]], slot: int) -> Iterator[dict[str, Any]]:
        if self.shuffle_buffer <= 0:
            yield from src
            return
        rng = random.Random(_seed(self.seed, self.epoch, slot, 0xB0FF))
        buf: list[dict[str, Any]] = []
        for s in src:
            if len(buf) < self.shuffle_buffer:
                buf.append(s)
                continue
            i = rng.randrange(len(buf))
            out, buf[i] = buf[i], s
            yield out
        rng.shuffle(buf)
        yield from buf

    # ---- sample checks / decoding --------------------------------------------------------
    def _text_parts(self, s: dict[str, Any], *, full: bool) -> tuple[str, dict[str, Any], dict[str, Any]]:
        video = s.get("mp4")
        if video is None:
            raise _Skip(
                "missing_video", f"no .mp4 member (have {sorted(k for k in s if not k.startswith('__'))})"
            )
        if len(video) == 0:
            raise _Skip("empty_video", "zero-byte .mp4")
        txt = s.get("txt")
        if txt is None:
            raise _Skip("missing_caption", "no .txt member")
        try:
            cap = bytes(txt).decode("utf-8").strip()
        except UnicodeDecodeError as exn:
            raise _Skip("bad_caption", str(exn)) from None
        if not cap:
            raise _Skip("missing_caption", "blank .txt")
        meta: dict[str, Any] = {}
        if "json" in s:
            try:
                meta = json.loads(bytes(s["json"]).decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exn:
                raise _Skip("bad_json", str(exn)) from None
            if not isinstance(meta, dict):
                raise _Skip("bad_json", f"json is a {type(meta).__name__}, not an object")
        extra: dict[str, Any] = {}
        for k, v in s.items():
            if not k.endswith(".safetensors"):
                continue
            name = k[: -len(".safetensors")]
            if name in _RESERVED:
                name = k
            if not full:
                if not _safetensors_header_ok(bytes(v)):
                    raise _Skip("bad_safetensors", f"{k}: bad header")
                continue
            try:
                extra[name] = st_load(bytes(v))
            except Exception as exn:
                raise _Skip("bad_safetensors", f"{k}: {type(exn).__name__}: {exn}") from None
        return cap, meta, extra

    def _decode_size(self, data: bytes) -> tuple[int, int]:
        """Check the container header against ``max_pixels`` / ``max_duration_s`` and return the
        ``(height, width)`` to decode at: the size covering ``self.size`` when that shrinks the frames,
        else the header's own size (never upscaled in the decoder)."""
        try:
            w, h, duration = _video_header(data)
        except Exception as exn:
            raise _Skip("decode_error", f"header: {type(exn).__name__}: {str(exn)[:200]}") from None
        if self.max_pixels is not None and w * h > self.max_pixels:
            raise _Skip("too_large", f"{w}x{h} frames ({w * h} px) > max_pixels={self.max_pixels}")
        if self.max_duration_s is not None and duration is not None and duration > self.max_duration_s:
            raise _Skip("too_large", f"duration {duration:.1f} s > max_duration_s={self.max_duration_s:g}")
        th, tw = (self.size, self.size) if isinstance(self.size, int) else self.size
        nh, nw, scale = _cover_size(h, w, th, tw)
        return (nh, nw) if scale < 1 else (h, w)

    def _open_video(
        self, data: bytes, meta: dict[str, Any], key: str
    ) -> tuple[Any, list[int], tuple[int, int]]:
        """``(decord reader, frame indices, (height, width) the reader decodes to)``; raises ``_Skip``."""
        # optional: decord has no wheels for some platforms (aarch64, macOS arm64); only mp4 decoding needs it
        import decord

        dh, dw = self._decode_size(data)
        try:
            # decord scales inside its decoder (FFmpeg's scaler): frames come out at dh x dw, never at the
            # clip's full size. The header's own size is passed too when no shrink is needed (the same
            # frames as decord's default), so a header understating the coded size cannot blow up either.
            vr = decord.VideoReader(io.BytesIO(data), num_threads=self.decode_threads, width=dw, height=dh)
            n = len(vr)
        except Exception as exn:
            raise _Skip("decode_error", f"{type(exn).__name__}: {str(exn)[:200]}") from None
        stride = 1 if self.frame_stride is None else self.frame_stride
        if self.target_fps is not None:
            src_fps = meta.get("fps")
            try:
                src_fps = float(src_fps)
            except (TypeError, ValueError):
                src_fps = float("nan")
            if not (math.isfinite(src_fps) and src_fps > 0):
                try:
                    src_fps = float(vr.get_avg_fps())
                except Exception:
                    src_fps = float("nan")
            if not (math.isfinite(src_fps) and src_fps > 0):
                raise _Skip("decode_error", "no usable fps in json or container")
            stride = max(1, int(round(src_fps / self.target_fps)))
        span = (self.num_frames - 1) * stride + 1
        if n < span:
            raise _Skip("too_short", f"{n} frames < {span} needed ({self.num_frames} at stride {stride})")
        start = 0
        if self.random_start and n > span:
            rng = np.random.default_rng([_seed(self.seed), self.epoch, _crc(key)])
            start = int(rng.integers(0, n - span + 1))
        return vr, list(range(start, start + span, stride)), (dh, dw)

    def _decode(self, s: dict[str, Any]) -> dict[str, Any]:
        key, url = str(s.get("__key__", "")), str(s.get("__url__", ""))
        cap, meta, extra = self._text_parts(s, full=True)
        data = bytes(s["mp4"])
        vr, idx, (dh, dw) = self._open_video(data, meta, key)
        try:
            frames = vr.get_batch(idx).asnumpy()
        except Exception as exn:
            # decord 0.6 fails to copy out frames of some small widths (e.g. 8, 16, 24, 48 px:
            # "DECORDArrayCopyFromTo: The size must exactly match"); decode those with PyAV.
            why = f"decord: {type(exn).__name__}: {str(exn)[-160:]}"
            frames = self._decode_pyav(data, idx, (dh, dw), why)
        finally:
            del vr
        if frames.shape != (len(idx), dh, dw, 3):
            raise _Skip(
                "decode_error", f"decoded frames have shape {frames.shape}, not {(len(idx), dh, dw, 3)}"
            )
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        video = resize_center_crop(video, self.size).div_(127.5).sub_(1.0).clamp_(-1.0, 1.0)
        item: dict[str, Any] = {"video": video, "caption": cap, "meta": meta, "key": key, "url": url}
        item.update(extra)
        return item

    def _decode_pyav(self, data: bytes, idx: list[int], hw: tuple[int, int], why: str) -> np.ndarray:
        """Fallback decoder: frames ``idx`` (presentation order) as uint8 ``[len(idx), *hw, 3]`` (each
        frame is scaled to ``hw = (height, width)`` by FFmpeg's scaler as it is converted to RGB)."""
        want, last, got = set(idx), max(idx), {}
        try:
            with av.open(io.BytesIO(data), mode="r") as container:
                stream = container.streams.video[0]
                for i, frame in enumerate(container.decode(stream)):
                    if i in want:
                        got[i] = frame.to_ndarray(width=hw[1], height=hw[0], format="rgb24")
                    if i >= last:
                        break
        except Exception as exn:
            raise _Skip("decode_error", f"{why}; pyav: {type(exn).__name__}: {str(exn)[:160]}") from None
        if len(got) < len(want):
            raise _Skip("decode_error", f"{why}; pyav: decoded {len(got)} of the {len(want)} frames needed")
        frames = np.stack([got[i] for i in idx])
        if self.num_pyav_fallbacks == 0:
            log.info("ClipStream: decord could not decode a clip (%s); using PyAV for such clips", why)
        self.num_pyav_fallbacks += 1
        return frames

    def _cheap_ok(self, s: dict[str, Any]) -> None:
        """Every check that needs no frame decoding (used by the resume fast-forward)."""
        _, meta, _ = self._text_parts(s, full=False)
        self._open_video(bytes(s["mp4"]), meta, str(s.get("__key__", "")))

    # ---- iteration -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker, to_skip = self._begin(worker, num_workers)
        yield from self._iter_slot(worker, num_workers, to_skip, count_seen=info is None)

    def _begin(self, worker: int, num_workers: int) -> tuple[int, int]:
        """Start an iteration: ``(logical worker, samples this slot skips)`` after a resume. The counters go on
        across iterations (epochs): skips are accounted for the whole run, and ``max_skip_fraction`` sees them."""
        to_skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            n = self._resume[1]
            # The resumed DataLoader asks its worker 0 first, but the next batch of the saved run
            # came from worker (n // batch) % W: rotate the worker roles so the round robin
            # continues where it stopped (every per-worker quantity below uses the logical id).
            worker = (worker + n // self.loader_batch_size) % num_workers
            to_skip = self._slot_skip(n, worker, num_workers)
            self.samples_seen = n
        else:
            self.samples_seen = 0
        self._resume = None  # consumed (in this process)
        return worker, to_skip

    def _iter_slot(
        self, worker: int, num_workers: int, to_skip: int, count_seen: bool = True
    ) -> Iterator[dict[str, Any]]:
        """The samples of (this rank, logical ``worker``), the first ``to_skip`` usable ones
        fast-forwarded (checked without decoding, not yielded)."""
        slot, nslots = self.rank * num_workers + worker, self.world_size * num_workers
        wk = (worker, num_workers)
        yielded_before, skipped_before = self.num_yielded, self.num_skipped

        for s in self._shuffled(self._raw_samples(slot, nslots, wk), slot):
            key, url = str(s.get("__key__", "")), str(s.get("__url__", ""))
            if to_skip > 0:
                try:
                    self._cheap_ok(s)
                except _Skip as sk:
                    self._record_skip(url, key, sk.reason, sk.detail, wk)
                    continue
                to_skip -= 1
                self.num_fast_forwarded += 1
                continue
            try:
                item = self._decode(s)
            except _Skip as sk:
                self._record_skip(url, key, sk.reason, sk.detail, wk)
                continue
            self.num_yielded += 1
            if count_seen:
                self.samples_seen += 1
            yield item
        if self.num_yielded == yielded_before and self.num_skipped > skipped_before:
            log.warning(
                "ClipStream: rank %d worker %d yielded no samples this epoch (skips so far: %s)",
                self.rank,
                worker,
                dict(self.skipped),
            )

    def __repr__(self) -> str:
        return (
            f"ClipStream({len(self.urls)} shards, num_frames={self.num_frames}, size={self.size}, "
            f"rank={self.rank}/{self.world_size}, resampled={self.resampled}, "
            f"shuffle_buffer={self.shuffle_buffer}, epoch={self.epoch})"
        )
