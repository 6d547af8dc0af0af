"""Component tests for t2vturbo.data.video_io (H.264 mp4 write / read)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from t2vturbo.data.toy import ToyClipDataset, render_clip, sample_attributes
from t2vturbo.data.video_io import frames_to_uint8, read_video, write_video

F, S = 8, 32


def _clip(i: int = 0, textured: bool = True) -> np.ndarray:
    rng = np.random.default_rng([42, i])
    return render_clip(sample_attributes(rng, S, F), F, S, textured=textured, seed=i)


def _abs_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


# --------------------------------------------------------------------------- frames_to_uint8


def test_frames_to_uint8_values_and_layout():
    x = torch.tensor([-1.0, 0.0, 1.0, -3.0, 3.0, -0.5]).view(1, 1, 6).expand(1, 3, 1, 6)
    out = frames_to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 6, 3)
    assert out[0, 0, :, 0].tolist() == [0, 128, 255, 0, 255, 64]
    # [F, 3, H, W] -> [F, H, W, 3], channel order kept.
    y = torch.zeros(2, 3, 4, 5)
    y[:, 0] = 1.0
    u = frames_to_uint8(y)
    assert u.shape == (2, 4, 5, 3)
    assert np.all(u[..., 0] == 255) and np.all(u[..., 1] == 128)
    # numpy float input works too.
    np.testing.assert_array_equal(frames_to_uint8(y.numpy()), u)


def test_frames_to_uint8_inverts_dataset_normalisation():
    levels = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    u8 = np.repeat(levels, 3, axis=1)  # [1, 3, 16, 16]
    x = torch.from_numpy(u8).float() / 127.5 - 1.0
    np.testing.assert_array_equal(frames_to_uint8(x), np.moveaxis(u8, 1, -1))


def test_frames_to_uint8_rejects_bad_shape():
    with pytest.raises(ValueError):
        frames_to_uint8(torch.zeros(2, 4, 8, 8))


# --------------------------------------------------------------------------- write / read


@pytest.mark.parametrize("textured", [False, True])
def test_round_trip_lossless_default(tmp_path: Path, textured: bool):
    """Default crf=0 + yuv444p: only RGB<->YCbCr (BT.601, limited range) round-off remains.

    Lossless x264 reproduces the 8-bit YCbCr planes exactly; converting RGB to
    limited-range YCbCr (219 / 224 codes instead of 256) and back rounds each
    component by <= 0.5 code, which the inverse matrix amplifies to at most
    ~2-3 uint8 levels on a single channel, and on average well below one level.
    So we require max |err| <= 4 levels and MAE < 1 level (= 2/255 in [-1, 1]
    units); measured: max 1, MAE ~0.01 (plain) / ~0.4 (textured).
    """
    clip = _clip(0, textured)
    path = write_video(tmp_path / "sub" / "clip.mp4", clip, fps=8)
    assert isinstance(path, Path) and path.exists() and path.stat().st_size > 0
    out = read_video(path)
    assert out.shape == (F, S, S, 3) and out.dtype == np.uint8
    err = _abs_err(out, clip)
    assert err.max() <= 4
    assert err.mean() < 1.0


def test_round_trip_float_tensor_input(tmp_path: Path):
    item = ToyClipDataset(num_samples=4, seed=3, textured=True)[2]
    path = write_video(tmp_path / "t.mp4", item["video"])
    out = read_video(path)
    ref = frames_to_uint8(item["video"])
    assert out.shape == ref.shape == (F, S, S, 3)
    assert _abs_err(out, ref).mean() < 1.0


def test_round_trip_playable_yuv420p(tmp_path: Path):
    """crf=17 on even sizes picks yuv420p (browser playable): lossy but close.

    4:2:0 subsampling shares one chroma sample per 2x2 block, so pixels on a
    coloured shape's edge get a blend of shape and background chroma (errors up
    to ~100 levels there), and crf 17 adds small quantisation noise everywhere.
    At 32x32 edge pixels are <~15% of the frame, so the MAE stays a few levels
    (measured <= ~4); we bound it by 8 levels (~3% of the range) and also check
    the shape interior keeps its colour via the per-frame mean.
    """
    for i in range(3):
        clip = _clip(i, textured=True)
        path = write_video(tmp_path / f"p{i}.mp4", clip, crf=17)
        with av.open(str(path)) as c:
            assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        out = read_video(path)
        assert out.shape == clip.shape
        assert _abs_err(out, clip).mean() < 8.0
        np.testing.assert_allclose(out.mean(axis=(1, 2)), clip.mean(axis=(1, 2)), atol=4.0)


def test_file_is_standard_h264_mp4(tmp_path: Path):
    clip = _clip(1)
    path = write_video(tmp_path / "h.mp4", clip, fps=8)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert c.format.name.startswith("mov,mp4")
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (S, S)
        assert float(stream.average_rate) == pytest.approx(8.0)
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])
    # An independent decoder (PyAV) agrees with read_video.
    assert decoded.shape == (F, S, S, 3)
    assert _abs_err(decoded, read_video(path)).max() <= 2


def test_odd_size_written_exactly(tmp_path: Path):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(3, 33, 31, 3), dtype=np.uint8)
    out = read_video(write_video(tmp_path / "odd.mp4", clip, crf=17))  # falls back to yuv444p
    assert out.shape == clip.shape
    with pytest.raises(ValueError):
        write_video(tmp_path / "odd420.mp4", clip, pixel_format="yuv420p")


def test_write_video_rejects_bad_input(tmp_path: Path):
    with pytest.raises(ValueError):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError):
        write_video(tmp_path / "b.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        write_video(tmp_path / "c.mp4", torch.zeros(2, 3, 8, 8), crf=60)
