"""Video I/O for curation (PyAV): probing, one-pass frame decoding, streaming clip encoding.

Frame indices are decode-order counts from the start of the first video stream (0-based), the same
numbering PySceneDetect's backends use, so scene boundaries index frames directly.  Decoding never
seeks: :func:`iter_frames` decodes from the start and stops after the last frame asked for (one
pass per video serves every clip of that video).
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any, Iterable, Iterator

import av
import cv2
import numpy as np

__all__ = ["ClipEncoder", "iter_frames", "output_size", "probe", "spread"]


def spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` evenly spaced indices in ``[0, n)``: the centres of ``k`` equal bins."""
    if n <= 0 or k <= 0:
        return []
    k = min(n, k)
    return [int((2 * i + 1) * n // (2 * k)) for i in range(k)]


def probe(path: str) -> dict[str, Any]:
    """Container facts of the first video stream: fps, frame count (may be estimated), size, duration."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise ValueError("no video stream")
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate or s.base_rate
        if not rate or float(rate) <= 0:
            raise ValueError("no frame rate")
        fps = Fraction(rate).limit_denominator(1_000_000)
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif c.duration is not None:
            duration = c.duration / 1_000_000
        frames = int(s.frames or 0) or (int(round(duration * float(fps))) if duration else 0)
        width, height = int(s.codec_context.width), int(s.codec_context.height)
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    return {
        "fps": float(fps),
        "fps_fraction": f"{fps.numerator}/{fps.denominator}",
        "num_frames": frames,
        "width": width,
        "height": height,
        "duration": duration,
    }


def iter_frames(path: str, needed: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, rgb uint8 [H, W, 3])`` for every needed frame index, ascending, in one pass.

    Indices past the end of the video are silently missing (the caller checks what it got).
    """
    want = sorted(set(int(i) for i in needed))
    if not want:
        return
    j = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, frame in enumerate(c.decode(s)):
            if i == want[j]:
                yield i, frame.to_ndarray(format="rgb24")
                j += 1
                if j == len(want):
                    return


def output_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """``(w, h)`` of an encoded clip: short side at most ``max_short_side`` (aspect kept, never
    upscaled), both rounded down to even numbers (yuv420p)."""
    scale = 1.0 if max_short_side is None else min(1.0, max_short_side / min(width, height))
    return max(2, 2 * int(width * scale / 2 + 1e-6)), max(2, 2 * int(height * scale / 2 + 1e-6))


class ClipEncoder:
    """Streams RGB frames into an in-memory H.264 mp4 (x264, yuv420p) of size ``out_size``."""

    def __init__(self, fps: str | float, out_size: tuple[int, int], crf: int = 18, preset: str = "medium"):
        self.size = out_size
        self.num_frames = 0
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1_000_000) if not isinstance(fps, str) else Fraction(fps)
        self._st = self._out.add_stream(
            "libx264", rate=rate, options={"crf": str(int(crf)), "preset": preset}
        )
        self._st.width, self._st.height = out_size
        self._st.pix_fmt = "yuv420p"

    def add(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if (w, h) != self.size:
            interp = cv2.INTER_AREA if w * h > self.size[0] * self.size[1] else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, self.size, interpolation=interp)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for pkt in self._st.encode(frame):
            self._out.mux(pkt)
        self.num_frames += 1

    def finish(self) -> bytes:
        for pkt in self._st.encode():
            self._out.mux(pkt)
        self._out.close()
        return self._buf.getvalue()

    def abort(self) -> None:
        try:
            self._out.close()
        except Exception:
            pass
