"""Scene cuts (PySceneDetect ContentDetector) and their split into clips of bounded length."""

from __future__ import annotations

import math

__all__ = ["detect_scenes", "split_scene"]


def _frame_num(tc) -> int:
    n = getattr(tc, "frame_num", None)  # scenedetect >= 0.7
    return int(n if n is not None else tc.get_frames())


def detect_scenes(
    path: str, fps: float, threshold: float, min_scene_len: float, backend: str
) -> list[tuple[int, int]]:
    """Scenes of ``path`` as ``[(start_frame, end_frame), ...]`` (end exclusive), covering the video.

    ``min_scene_len`` is in seconds (converted to frames at ``fps``).  A video without cuts is
    one scene.
    """
    from scenedetect import ContentDetector, SceneManager, open_video

    det = ContentDetector(threshold=float(threshold), min_scene_len=max(1, int(round(min_scene_len * fps))))
    # What scenedetect.detect() does, but keeping FFmpeg quiet: its PyAV backend otherwise
    # re-enables FFmpeg's default log callback for the whole process.
    kwargs = {"suppress_output": True} if backend == "pyav" else {}
    video = open_video(str(path), backend=backend, **kwargs)
    manager = SceneManager()
    manager.add_detector(det)
    manager.detect_scenes(video, show_progress=False)
    scenes = manager.get_scene_list(start_in_scene=True)
    return [(_frame_num(a), _frame_num(b)) for a, b in scenes if _frame_num(b) > _frame_num(a)]


def split_scene(
    start: int, end: int, fps: float, min_seconds: float, max_seconds: float
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Split scene ``[start, end)`` into consecutive pieces of at most ``max_seconds``.

    Every piece but the last is exactly ``floor(max_seconds * fps)`` frames; pieces shorter than
    ``ceil(min_seconds * fps)`` frames are dropped.  Returns ``(kept, dropped)`` frame ranges.
    """
    max_len = max(1, int(math.floor(max_seconds * fps + 1e-6)))
    min_len = max(1, int(math.ceil(min_seconds * fps - 1e-6)))
    kept: list[tuple[int, int]] = []
    dropped: list[tuple[int, int]] = []
    s = start
    while s < end:
        e = min(end, s + max_len)
        (kept if e - s >= min_len else dropped).append((s, e))
        s = e
    return kept, dropped
