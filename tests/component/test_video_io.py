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


# --------------------------------------------------------------------------- crf / playable output


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_crf18_is_playable_h264_close_to_the_input(tmp_path: Path):
    """crf 18 on even sizes: H.264 High profile (not High 4:4:4 Predictive, which browsers / QuickTime
    refuse), yuv420p; PSNR > 27 dB on textured 32x32 toy clips (measured 29.8-31.5 dB: at this size the
    4:2:0 chroma at shape edges dominates the error)."""
    for i in range(3):
        clip = _clip(i, textured=True)
        path = write_video(tmp_path / f"c{i}.mp4", clip, crf=18)
        with av.open(str(path)) as c:
            cc = c.streams.video[0].codec_context
            assert (cc.name, cc.pix_fmt, cc.profile) == ("h264", "yuv420p", "High")
        assert _psnr(read_video(path), clip) > 27.0
    with av.open(str(write_video(tmp_path / "l.mp4", clip, crf=0))) as c:
        assert c.streams.video[0].codec_context.profile == "High 4:4:4 Predictive"


def test_file_size_falls_with_crf(tmp_path: Path):
    """Measured on this clip: 3612, 3092, 2395, 1926, 1794 bytes; the PSNR falls too (52, 30, 30, 29, 26 dB)."""
    clip = _clip(0, textured=True)
    sizes, psnrs = [], []
    for crf in (0, 10, 18, 28, 40):
        path = write_video(tmp_path / f"q{crf}.mp4", clip, crf=crf)
        sizes.append(path.stat().st_size)
        psnrs.append(_psnr(read_video(path), clip))
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    assert (
        psnrs[0] > 45 and all(a >= b - 0.5 for a, b in zip(psnrs, psnrs[1:])) and psnrs[1] > psnrs[-1] + 2
    ), psnrs


def test_pad_odd_keeps_yuv420p_by_repeating_the_edge(tmp_path: Path):
    clip = _clip(1, textured=True)[:, :31, :29]
    path = write_video(tmp_path / "o.mp4", clip, crf=18, pad_odd=True)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    out = read_video(path)
    assert out.shape == (F, 32, 30, 3)
    assert _psnr(out[:, :31, :29], clip) > 27.0
    # the added row / column repeat the last ones (up to the coding error)
    assert _abs_err(out[:, 31, :29], clip[:, 30]).mean() < 4.0
    assert _abs_err(out[:, :31, 29], clip[:, :, 28]).mean() < 4.0
    # 4:2:2 halves the width only: an odd height is written as is, an odd width is refused without pad_odd
    rng = np.random.default_rng(1)
    tall = rng.integers(0, 256, size=(2, 33, 32, 3), dtype=np.uint8)
    assert (
        read_video(write_video(tmp_path / "t.mp4", tall, crf=10, pixel_format="yuv422p")).shape == tall.shape
    )
    with pytest.raises(ValueError, match="yuv422p needs an even width, got 33x31"):
        write_video(tmp_path / "w.mp4", tall[:, :, :31], crf=10, pixel_format="yuv422p")


@pytest.mark.parametrize("crf", [-1, 52, 18.5, True, "18"])
def test_write_video_rejects_bad_crf(tmp_path: Path, crf):
    with pytest.raises(ValueError, match=r"crf must be an integer in \[0, 51\]"):
        write_video(tmp_path / "x.mp4", np.zeros((1, 8, 8, 3), np.uint8), crf=crf)
