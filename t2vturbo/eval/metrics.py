"""Weight-free video metrics: quick, VBench-flavoured checks that need no model downloads.

All functions take one clip, either uint8 ``[F, H, W, 3]`` or float ``[F, 3, H, W]`` in
``[-1, 1]`` (numpy or torch; see :func:`t2vturbo.eval.toy_metrics.to_uint8_clip`), and work at
any resolution.  :func:`clip_metrics` returns all of them in one dict; ``python -m
t2vturbo.eval.metrics FILE_OR_DIR ...`` prints them for video files (e.g. a folder written by
:mod:`t2vturbo.eval.vbench`).

Metrics
-------
``temporal_flicker``
    VBench's temporal-flickering formula: the mean absolute difference between consecutive
    uint8 frames (all pixels and channels), reported as ``(255 - MAD) / 255``.  1.0 for a static
    clip, 0.0 when every pixel jumps between 0 and 255 every frame.  (VBench applies it only to
    videos its RAFT static filter judged static; here it is computed on whatever clip is given,
    so motion lowers it too.)
``flow_magnitude`` / ``dynamic``
    A dynamic-degree proxy: OpenCV Farneback optical flow (grayscale, BT.601 luma) between
    consecutive frames instead of VBench's RAFT.  Per frame pair, the mean magnitude (px/frame)
    of the largest 5 % of flow vectors (VBench's ``get_score``); ``flow_magnitude`` is the mean
    over pairs, ``flow_magnitude_max`` the largest pair.  ``dynamic`` follows VBench's
    ``check_move``: a clip is dynamic when at least ``max(1, round(4 * F / 16))`` pairs exceed
    ``6.0 * min(H, W) / 256`` px (0.75 px at 32x32, 7.5 px at 320x512), i.e. the threshold scales
    with resolution as in VBench.  VBench first resamples videos to ~8 fps; feed 8 fps clips.
``motion_smoothness``
    A proxy for VBench's frame-interpolation (AMT) test: each inner frame ``t`` is predicted
    from frames ``t - 1`` and ``t + 1`` by *linear interpolation along the motion*: Farneback
    flow ``u`` from ``t - 1`` to ``t + 1``, resampled to the midpoint (3 fixed-point steps of
    ``u_mid(x) = u(x - u_mid(x) / 2)``), then ``pred = (I[t-1](x - u/2) + I[t+1](x + u/2)) / 2``.
    Reported like VBench: ``(255 - mean |pred - I[t]|) / 255`` averaged over inner frames
    (1.0 for fewer than 3 frames).  Constant-velocity motion scores ~0.99+; shuffled frames,
    jitter and flicker score lower (~0.95 and below).
``sharpness``
    Variance of the 4-neighbour Laplacian of each frame's luma (0..255 scale, interior pixels
    only), mean over frames (``sharpness_min``: the blurriest frame).  Higher is sharper; the
    value depends on resolution and content, so compare clips of the same size / prompts only.

The flow metrics need OpenCV (``opencv-python-headless``); flicker and sharpness are pure numpy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cli import prog
from ..data.video_io import read_video
from .toy_metrics import to_uint8_clip
from .vbench_constants import DYNAMIC_COUNT_PER_16_FRAMES, DYNAMIC_THRESHOLD_AT_256, DYNAMIC_TOP_FRACTION

__all__ = [
    "METRIC_KEYS",
    "clip_metrics",
    "dynamic_count_needed",
    "dynamic_degree",
    "dynamic_threshold",
    "farneback_params",
    "file_metrics",
    "flow_top_magnitudes",
    "luma",
    "main",
    "motion_smoothness",
    "optical_flow",
    "sharpness",
    "temporal_flicker",
    "to_uint8_clip",
]

#: Numeric keys of :func:`clip_metrics` averaged by the CLI.
METRIC_KEYS: tuple[str, ...] = (
    "temporal_flicker",
    "flow_magnitude",
    "flow_magnitude_max",
    "dynamic",
    "motion_smoothness",
    "sharpness",
    "sharpness_min",
)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY


def _cv2():
    try:
        # optional: only the flow metrics need OpenCV (flicker / sharpness are numpy); a failed import (none
        # installed, or a GUI opencv-python without libGL in place of the headless one) gets the hint below
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the optical-flow metrics need OpenCV: pip install opencv-python-headless") from e
    return cv2


def luma(clip: Any) -> np.ndarray:
    """Float32 ``[F, H, W]`` BT.601 luma in 0..255."""
    c = to_uint8_clip(clip)
    return c.astype(np.float32) @ _LUMA


def _gray_u8(clip: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(clip.astype(np.float32) @ _LUMA), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- flicker


def temporal_flicker(clip: Any) -> float:
    """VBench temporal flickering ``(255 - mean |x_t+1 - x_t|) / 255`` (1.0 for < 2 frames)."""
    c = to_uint8_clip(clip)
    if c.shape[0] < 2:
        return 1.0
    mad = np.mean([np.abs(b.astype(np.float32) - a.astype(np.float32)).mean() for a, b in zip(c[:-1], c[1:])])
    return float((255.0 - mad) / 255.0)


# --------------------------------------------------------------------------- optical flow


def farneback_params(height: int, width: int) -> dict[str, Any]:
    """Farneback settings for a frame size: pyramid down to >= ~8 px, 15 px windows (smaller below 32 px)."""
    m = int(min(height, width))
    levels = max(1, min(5, int(math.floor(math.log2(max(m, 8) / 8.0)))))
    winsize = 15 if m >= 32 else max(5, (m // 2) | 1)
    return dict(
        pyr_scale=0.5, levels=levels, winsize=winsize, iterations=3, poly_n=5, poly_sigma=1.1, flags=0
    )


def optical_flow(frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
    """Farneback flow ``[H, W, 2]`` (dx, dy in px) from uint8 gray ``frame_a`` to ``frame_b``.

    Identical frames get exactly zero flow (Farneback's own answer is ~0.005 px of round-off).
    """
    if np.array_equal(frame_a, frame_b):
        return np.zeros((*frame_a.shape[:2], 2), dtype=np.float32)
    cv2 = _cv2()
    p = farneback_params(*frame_a.shape[:2])
    return cv2.calcOpticalFlowFarneback(
        frame_a,
        frame_b,
        None,
        p["pyr_scale"],
        p["levels"],
        p["winsize"],
        p["iterations"],
        p["poly_n"],
        p["poly_sigma"],
        p["flags"],
    )


def _top_mean(flow: np.ndarray, fraction: float = DYNAMIC_TOP_FRACTION) -> float:
    r = np.hypot(flow[..., 0], flow[..., 1]).ravel()
    k = max(1, int(r.size * fraction))
    return float(np.partition(r, r.size - k)[r.size - k :].mean())


def flow_top_magnitudes(clip: Any, fraction: float = DYNAMIC_TOP_FRACTION) -> np.ndarray:
    """Per consecutive frame pair: mean magnitude (px) of the largest ``fraction`` of flow vectors."""
    g = _gray_u8(to_uint8_clip(clip))
    return np.array(
        [_top_mean(optical_flow(a, b), fraction) for a, b in zip(g[:-1], g[1:])], dtype=np.float64
    )


def dynamic_threshold(height: int, width: int) -> float:
    """VBench's per-pair motion threshold in px: ``6.0 * min(H, W) / 256``."""
    return DYNAMIC_THRESHOLD_AT_256 * min(height, width) / 256.0


def dynamic_count_needed(num_frames: int) -> int:
    """Pairs that must exceed the threshold: ``round(4 * F / 16)``, at least 1."""
    return max(1, int(round(DYNAMIC_COUNT_PER_16_FRAMES * num_frames / 16.0)))


def dynamic_degree(clip: Any) -> dict[str, Any]:
    """``{flow_magnitude, flow_magnitude_max, per_pair, dynamic, threshold, count_needed}``."""
    c = to_uint8_clip(clip)
    f, h, w = c.shape[:3]
    thr = dynamic_threshold(h, w)
    need = dynamic_count_needed(f)
    mags = flow_top_magnitudes(c) if f >= 2 else np.zeros(0)
    return {
        "flow_magnitude": float(mags.mean()) if mags.size else 0.0,
        "flow_magnitude_max": float(mags.max()) if mags.size else 0.0,
        "per_pair": [float(x) for x in mags],
        "dynamic": bool(int((mags > thr).sum()) >= need) if mags.size else False,
        "threshold": float(thr),
        "count_needed": int(need),
    }


# --------------------------------------------------------------------------- motion smoothness


def _interpolate_middle(a: np.ndarray, c: np.ndarray, ga: np.ndarray, gc: np.ndarray) -> np.ndarray:
    """Frame halfway between RGB ``a`` and ``c`` by linear motion along Farneback flow (float32)."""
    cv2 = _cv2()
    h, w = ga.shape
    flow = optical_flow(ga, gc)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mid = flow.copy()
    for _ in range(3):  # flow at the midpoint positions: u_mid(x) = u(x - u_mid(x) / 2)
        mid = cv2.remap(
            flow,
            xs - mid[..., 0] / 2,
            ys - mid[..., 1] / 2,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    hx, hy = mid[..., 0] / 2, mid[..., 1] / 2
    pa = cv2.remap(a.astype(np.float32), xs - hx, ys - hy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    pc = cv2.remap(c.astype(np.float32), xs + hx, ys + hy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return 0.5 * (pa + pc)


def motion_smoothness(clip: Any) -> float:
    """``(255 - mean |interp(t-1, t+1) - frame_t|) / 255`` over inner frames (see module doc)."""
    c = to_uint8_clip(clip)
    if c.shape[0] < 3:
        return 1.0
    g = _gray_u8(c)
    errs = [
        np.abs(_interpolate_middle(c[t - 1], c[t + 1], g[t - 1], g[t + 1]) - c[t].astype(np.float32)).mean()
        for t in range(1, c.shape[0] - 1)
    ]
    return float((255.0 - float(np.mean(errs))) / 255.0)


# --------------------------------------------------------------------------- sharpness


def sharpness(clip: Any) -> np.ndarray:
    """Per-frame variance of the 4-neighbour Laplacian of the luma (interior pixels), ``[F]``."""
    y = luma(clip)
    if y.shape[1] < 3 or y.shape[2] < 3:
        return np.zeros(y.shape[0], dtype=np.float64)
    lap = y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:] - 4.0 * y[:, 1:-1, 1:-1]
    return lap.reshape(lap.shape[0], -1).astype(np.float64).var(axis=1)


# --------------------------------------------------------------------------- all together


def clip_metrics(clip: Any) -> dict[str, Any]:
    """All weight-free metrics of one clip (keys: :data:`METRIC_KEYS` plus size / thresholds)."""
    c = to_uint8_clip(clip)
    f, h, w = c.shape[:3]
    dyn = dynamic_degree(c)
    sharp = sharpness(c)
    return {
        "temporal_flicker": temporal_flicker(c),
        "flow_magnitude": dyn["flow_magnitude"],
        "flow_magnitude_max": dyn["flow_magnitude_max"],
        "dynamic": dyn["dynamic"],
        "dynamic_threshold": dyn["threshold"],
        "dynamic_count_needed": dyn["count_needed"],
        "motion_smoothness": motion_smoothness(c),
        "sharpness": float(sharp.mean()) if sharp.size else 0.0,
        "sharpness_min": float(sharp.min()) if sharp.size else 0.0,
        "num_frames": int(f),
        "height": int(h),
        "width": int(w),
    }


def file_metrics(path: str | Path) -> dict[str, Any]:
    """:func:`clip_metrics` of a video file (decoded with :func:`t2vturbo.data.video_io.read_video`)."""
    frames = read_video(path)
    if frames.shape[0] == 0:
        raise ValueError(f"{path}: no frames decoded")
    return clip_metrics(frames)


def _mean_metrics(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    rows = list(rows)
    return {k: float(np.mean([float(r[k]) for r in rows])) for k in METRIC_KEYS} if rows else {}


def _expand(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(q for q in p.iterdir() if q.suffix.lower() == ".mp4") if p.is_dir() else [p]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog("t2vturbo.eval.metrics"), description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="video files or folders of .mp4 files")
    ap.add_argument("--json", help="write per-video results and their means here")
    args = ap.parse_args(argv)
    files = _expand(args.paths)
    if not files:
        print("no videos found", file=sys.stderr)
        return 2
    rows, failed = [], []
    for f in files:
        try:
            r = file_metrics(f)
        except Exception as e:  # noqa: BLE001 - report and continue
            failed.append({"file": str(f), "error": str(e)})
            continue
        rows.append({"file": str(f), **r})
        print(f"{f.name}: " + " ".join(f"{k}={float(r[k]):.4g}" for k in METRIC_KEYS), flush=True)
    mean = _mean_metrics(rows)
    if mean:
        print(f"MEAN over {len(rows)} videos: " + " ".join(f"{k}={v:.4g}" for k, v in mean.items()))
    for f in failed:
        print(f"FAILED {f['file']}: {f['error']}", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"mean": mean, "videos": rows, "failed": failed}, indent=2) + "\n"
        )
    return 0 if rows and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
