"""Minimal H.264 mp4 writing / reading for (tiny) generated clips.

Backend: the ffmpeg binary shipped with ``imageio-ffmpeg`` (always built with
libx264), driven through ``imageio_ffmpeg.write_frames`` / ``read_frames``.

Size handling: clips are written at *exactly* the given ``H x W`` (no
upscaling): we pass ``macro_block_size=1`` so imageio never rescales.
H.264 itself only needs even dimensions for chroma-subsampled formats, so:

* ``crf == 0`` (default, lossless): pixel format ``yuv444p``.  x264 lossless
  already requires the High 4:4:4 Predictive profile, so nothing is lost in
  player compatibility by also keeping full-resolution chroma, and at 32x32
  chroma subsampling would otherwise dominate the error at every colour edge.
  The only residual error is the RGB <-> YCbCr (BT.601, limited range)
  round-off, about 1-2 uint8 levels per channel.  Such files are for
  pipelines (exact data), not for people: browsers and QuickTime do not play
  High 4:4:4.
* ``crf > 0``: pixel format ``yuv420p`` (browser / QuickTime playable) when
  ``H`` and ``W`` are even; odd sizes fall back to ``yuv444p``, or, with
  ``pad_odd=True``, stay ``yuv420p`` with the last row / column repeated
  once to reach even sizes (the file is then up to one pixel taller / wider).

Pass ``pixel_format=`` to override (``pad_odd`` applies to any 4:2:0 / 4:2:2
format).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import imageio_ffmpeg
import numpy as np
import torch

__all__ = ["frames_to_uint8", "read_video", "write_video"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def frames_to_uint8(frames: ArrayLike) -> np.ndarray:
    """Float ``[..., 3, H, W]`` in ``[-1, 1]`` (torch or numpy) -> uint8 ``[..., H, W, 3]``.

    Values are clamped to ``[-1, 1]`` and mapped with ``round((x + 1) * 127.5)``,
    the exact inverse of the ``x / 127.5 - 1`` normalisation used by the
    datasets (so a uint8 -> float -> uint8 round trip is lossless).
    """
    if isinstance(frames, torch.Tensor):
        x = frames.detach().to(device="cpu", dtype=torch.float32).numpy()
    else:
        x = np.asarray(frames, dtype=np.float32)
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected [..., 3, H, W] frames, got shape {tuple(x.shape)}")
    x = np.clip(x, -1.0, 1.0)
    x = np.rint((x + 1.0) * 127.5).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(x, -3, -1))


def _as_uint8_video(frames: ArrayLike) -> np.ndarray:
    """Accept uint8 ``[F, H, W, 3]`` (numpy or torch) or float ``[F, 3, H, W]`` in ``[-1, 1]``."""
    if isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8:
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
        video = frames
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be [F, H, W, 3], got shape {video.shape}")
    else:
        video = frames_to_uint8(frames)
        if video.ndim != 4:
            raise ValueError(f"float frames must be [F, 3, H, W], got shape {tuple(frames.shape)}")
    if video.shape[0] < 1:
        raise ValueError("cannot write a video with zero frames")
    return np.ascontiguousarray(video)


def write_video(
    path: Union[str, os.PathLike],
    frames: ArrayLike,
    fps: float = 8,
    *,
    crf: int = 0,
    pixel_format: str | None = None,
    pad_odd: bool = False,
) -> Path:
    """Write ``frames`` to an H.264 ``.mp4`` at their ``H x W`` (see ``pad_odd``); returns the path.

    ``frames`` is uint8 ``[F, H, W, 3]`` (numpy or torch) or a float tensor /
    array ``[F, 3, H, W]`` in ``[-1, 1]``.  ``crf`` is the x264 constant rate
    factor (0 = lossless, 17-23 = visually good and small).  See the module
    docstring for the pixel-format choice and ``pad_odd``.  Parent directories
    are created.
    """
    video = _as_uint8_video(frames)
    _, h, w, _ = video.shape
    if isinstance(crf, bool) or int(crf) != crf or not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be an integer in [0, 51], got {crf!r}")
    crf = int(crf)
    if pixel_format is None:
        pixel_format = "yuv420p" if crf > 0 and (not (h % 2 or w % 2) or pad_odd) else "yuv444p"
    # chroma subsampling: 4:2:0 halves both sizes, 4:2:2 the width only
    sub_h = pixel_format.startswith(("yuv420", "yuvj420", "nv12", "nv21"))
    sub_w = sub_h or pixel_format.startswith(("yuv422", "yuvj422"))
    pad_h, pad_w = int(sub_h and h % 2 == 1), int(sub_w and w % 2 == 1)
    if pad_h or pad_w:
        if not pad_odd:
            raise ValueError(
                f"{pixel_format} needs an even {'height and width' if sub_h else 'width'}, got {h}x{w} "
                "(pass pad_odd=True to repeat the last row / column once, or use yuv444p)"
            )
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        _, h, w, _ = video.shape

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (w, h),
        pix_fmt_in="rgb24",
        pix_fmt_out=pixel_format,
        fps=fps,
        quality=None,  # we pass -crf ourselves
        codec="libx264",
        macro_block_size=1,  # never let imageio rescale: keep the exact size
        ffmpeg_log_level="error",
        output_params=["-crf", str(int(crf)), "-preset", "medium"],
    )
    writer.send(None)  # start the ffmpeg process
    try:
        for frame in video:
            writer.send(frame)
    finally:
        writer.close()
    return path


def read_video(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decode a video file to uint8 ``[F, H, W, 3]`` RGB."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
        w, h = meta["size"]
        frames = [np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3) for buf in reader]
    finally:
        reader.close()
    if not frames:
        return np.zeros((0, h, w, 3), dtype=np.uint8)
    return np.stack(frames)
