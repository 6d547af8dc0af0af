"""Component tests: toy shard writer (data_recipes.toy_world) + shard reader (t2vturbo.data.shards)."""

from __future__ import annotations

import itertools
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from data_recipes.toy_world import clip_sample, main, write_toy_shards
from t2vturbo.data.shards import ClipStream, collate_clips, resize_center_crop
from t2vturbo.data.toy import ToyAttributes, ToyClipDataset, caption, parse_caption, render_clip
from t2vturbo.data.video_io import frames_to_uint8, write_video

torch.set_num_threads(1)

N, SHARD, F, S = 24, 8, 8, 32
KEYS = [f"{i:08d}" for i in range(N)]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_shards")
    paths = write_toy_shards(out, N, SHARD, frames=F, size=S, seed=0, textured_fraction=0.3, fps=8)
    return out, paths


def _keys(items):
    return [it["key"] for it in items]


def _mp4(frames: np.ndarray, tmp: Path, fps: float = 8) -> bytes:
    p = tmp / "clip.mp4"
    write_video(p, frames, fps=fps)
    data = p.read_bytes()
    p.unlink()
    return data


def _write_tar(path: Path, samples) -> str:
    with open(path, "wb") as f:
        w = wds.TarWriter(f, encoder=False, mtime=0.0)
        for s in samples:
            w.write(s)
        w.close()
    return str(path)


def _attrs_from_meta(meta) -> ToyAttributes:
    a = meta["attributes"]
    return ToyAttributes(
        a["color"], a["shape"], a["direction"], a["speed"], a["size"], (a["start_x"], a["start_y"])
    )


# --------------------------------------------------------------------------- writer


def test_writer_layout_index_and_idempotence(toy):
    out, paths = toy
    assert [Path(p).name for p in paths] == ["toy-000000.tar", "toy-000001.tar", "toy-000002.tar"]
    idx = json.loads((out / "index.json").read_text())
    assert idx["count"] == N and idx["seed"] == 0
    assert idx["shards"] == [Path(p).name for p in paths]
    assert idx["urls"] == "toy-{000000..000002}.tar"
    assert idx["command"].startswith("python -m data_recipes.toy_world --out ")
    assert "--num-clips 24 --shard-size 8" in idx["command"]
    assert [s["count"] for s in idx["shard_info"]] == [8, 8, 8]
    with tarfile.open(paths[0]) as tf:
        names = tf.getnames()
    assert names[:3] == ["00000000.json", "00000000.mp4", "00000000.txt"] and len(names) == 3 * SHARD
    meta = json.loads(tarfile.open(paths[0]).extractfile("00000000.json").read())
    assert meta["fps"] == 8 and meta["num_frames"] == F and meta["size"] == S and meta["source"] == "toy"
    assert set(meta["attributes"]) == {"color", "shape", "direction", "speed", "size", "start_x", "start_y"}
    # Attributes are the ToyClipDataset(seed) ones.
    attrs, bg_seed = ToyClipDataset(num_samples=N, num_frames=F, size=S, seed=0).attributes(0)
    assert meta["attributes"] == attrs.to_dict() and meta["bg_seed"] == bg_seed

    # Idempotent: same arguments -> nothing rewritten.
    mtimes = [os.stat(p).st_mtime_ns for p in paths]
    assert write_toy_shards(out, N, SHARD, frames=F, size=S, seed=0, textured_fraction=0.3, fps=8) == paths
    assert [os.stat(p).st_mtime_ns for p in paths] == mtimes


def test_writer_deterministic_cli_and_regenerates_on_new_args(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pa = write_toy_shards(a, 4, 2, frames=F, size=S, seed=5, textured_fraction=0.5, fps=8)
    assert main(["--out", str(b), "--num-clips", "4", "--shard-size", "2", "--frames", "8", "--size", "32",
                 "--seed", "5", "--textured-fraction", "0.5", "--fps", "8"]) == 0  # fmt: skip
    pb = sorted(str(p) for p in b.glob("toy-*.tar"))
    assert [Path(p).name for p in pa] == [Path(p).name for p in pb]
    for x, y in zip(pa, pb):
        with tarfile.open(x) as tx, tarfile.open(y) as ty:
            assert tx.getnames() == ty.getnames()
            for n in tx.getnames():
                if not n.endswith(".mp4"):
                    assert tx.extractfile(n).read() == ty.extractfile(n).read(), n
    va = [it["video"] for it in ClipStream(pa, F, S)]
    vb = [it["video"] for it in ClipStream(pb, F, S)]
    assert len(va) == 4 and all(torch.equal(u, v) for u, v in zip(va, vb))
    # New arguments -> regenerated; the stale shard of the old run is removed.
    pc = write_toy_shards(a, 3, 3, frames=F, size=S, seed=5, textured_fraction=0.5, fps=8)
    assert [Path(p).name for p in pc] == ["toy-000000.tar"]
    assert sorted(p.name for p in a.glob("toy-*.tar")) == ["toy-000000.tar"]
    assert json.loads((a / "index.json").read_text())["count"] == 3


# --------------------------------------------------------------------------- reading


def test_read_all_matches_render_clip(toy):
    out, paths = toy
    stream = ClipStream(paths, F, S)
    items = list(stream)
    assert _keys(items) == KEYS
    assert stream.skip_stats()["skipped"] == 0
    errs = []
    for it in items:
        assert it["video"].dtype == torch.float32 and it["video"].shape == (F, 3, S, S)
        assert it["video"].min() >= -1 and it["video"].max() <= 1
        assert it["url"] in paths
        meta = it["meta"]
        assert parse_caption(it["caption"]) == {
            k: meta["attributes"][k] for k in ("color", "shape", "direction")
        }
        attrs = _attrs_from_meta(meta)
        assert it["caption"] == caption(attrs)
        ref = render_clip(attrs, F, S, textured=meta["textured"], seed=meta["bg_seed"])
        err = np.abs(frames_to_uint8(it["video"]).astype(np.int16) - ref.astype(np.int16))
        errs.append(err)
    err = np.stack(errs)
    # Lossless H.264 in yuv444p: only the RGB<->YCbCr round-off remains.
    assert err.mean() < 1.0 and err.max() <= 3, (err.mean(), err.max())
    assert any(it["meta"]["textured"] for it in items) and not all(it["meta"]["textured"] for it in items)


def test_ranks_and_workers_cover_every_key_once(toy):
    out, paths = toy
    per_rank = []
    for r in range(2):
        ds = ClipStream(paths, F, S, rank=r, world_size=2)
        # spawned workers: a fork of a process with other threads (a pytest-xdist worker's) can deadlock the child
        dl = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn", timeout=300)
        per_rank.append([it["key"] for it in dl])
    allk = per_rank[0] + per_rank[1]
    assert sorted(allk) == KEYS and len(set(allk)) == N  # no duplicates, nothing missing
    assert all(len(k) > 0 for k in per_rank)


def test_brace_pattern_and_pipe_url(toy):
    out, _ = toy
    items = list(ClipStream(str(out / "toy-{000000..000001}.tar"), F, S))
    assert _keys(items) == KEYS[:16]
    piped = list(ClipStream(f"pipe:cat {out / 'toy-000002.tar'}", F, S))
    assert _keys(piped) == KEYS[16:]


def test_shuffle_determinism_and_resampling(toy):
    out, paths = toy
    plain = _keys(ClipStream(paths, F, S))
    a = _keys(ClipStream(paths, F, S, shuffle_buffer=6, seed=1))
    b = _keys(ClipStream(paths, F, S, shuffle_buffer=6, seed=1))
    c = _keys(ClipStream(paths, F, S, shuffle_buffer=6, seed=2))
    assert a == b  # same seed -> same sequence
    assert a != plain and a != c
    assert sorted(a) == sorted(c) == KEYS
    ds = ClipStream(paths, F, S, shuffle_buffer=6, seed=1)
    ds.set_epoch(1)
    assert _keys(ds) != a and sorted(_keys(ds)) == KEYS

    def take(seed, n=40):
        return _keys(itertools.islice(ClipStream(paths, F, S, resampled=True, seed=seed), n))

    r1 = take(0)
    assert len(r1) == 40 > N and set(r1) <= set(KEYS)
    assert take(0) == r1 and take(3) != r1


# --------------------------------------------------------------------------- corrupt data


def _corrupt_shard(tmp: Path):
    good = [clip_sample(100 + i, F, S, seed=0, textured_fraction=0.3, fps=8) for i in range(6)]
    base = good[0]
    mp4 = base["mp4"]
    two = render_clip(_attrs_from_meta(json.loads(base["json"])), 2, S)
    bad = {
        "bzero": dict(base, __key__="bzero", mp4=b""),
        "btrunc": dict(base, __key__="btrunc", mp4=mp4[: len(mp4) // 2]),
        "brandom": dict(base, __key__="brandom", mp4=np.random.default_rng(0).bytes(len(mp4))),
        "bnotxt": {k: v for k, v in dict(base, __key__="bnotxt").items() if k != "txt"},
        "bshort": dict(base, __key__="bshort", mp4=_mp4(two, tmp)),
        "bjson": dict(base, __key__="bjson", json=b"{not json"),
    }
    reasons = {"bzero": "empty_video", "btrunc": "decode_error", "brandom": "decode_error",
               "bnotxt": "missing_caption", "bshort": "too_short", "bjson": "bad_json"}  # fmt: skip
    order = [good[0], bad["bzero"], good[1], bad["btrunc"], bad["brandom"], good[2], bad["bnotxt"],
             good[3], bad["bshort"], good[4], bad["bjson"], good[5]]  # fmt: skip
    path = _write_tar(tmp / "corrupt-000000.tar", order)
    return path, [g["__key__"] for g in good], [s["__key__"] for s in order], reasons


def test_corrupt_samples_are_skipped_and_counted(tmp_path):
    path, good, order, reasons = _corrupt_shard(tmp_path)
    stream = ClipStream(path, F, S)
    items = list(stream)
    assert _keys(items) == good
    assert stream.skipped == Counter(reasons.values())
    bad_order = [k for k in order if k in reasons]
    assert [r[:2] for r in stream.skip_log] == [(path, k) for k in bad_order]
    assert [r.reason for r in stream.skip_log] == [reasons[k] for k in bad_order]
    st = stream.skip_stats()
    assert st["yielded"] == 6 and st["skipped"] == 6 and st["seen"] == 12 and st["fraction"] == 0.5


def test_max_skip_fraction_raises(tmp_path):
    good = [clip_sample(200 + i, F, S, seed=0, textured_fraction=0.0, fps=8) for i in range(8)]
    zeros = [dict(good[0], __key__=f"z{i:03d}", mp4=b"") for i in range(16)]
    path = _write_tar(tmp_path / "mostlybad.tar", good + zeros)
    with pytest.raises(RuntimeError, match=r"max_skip_fraction=0.5") as ei:
        list(ClipStream(path, F, S, max_skip_fraction=0.5))
    msg = str(ei.value)
    assert "12 of 20 samples (60.0%)" in msg and "z000" in msg and "empty_video" in msg
    # Disabled -> every good sample is read, the bad ones counted.
    s = ClipStream(path, F, S, max_skip_fraction=None)
    assert len(list(s)) == 8 and s.skipped == Counter(empty_video=16)


def test_unreadable_shards_are_counted(toy, tmp_path):
    out, paths = toy
    data = Path(paths[0]).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])  # not on a tar block boundary
    stream = ClipStream([str(tmp_path / "missing.tar"), str(cut), paths[1]], F, S)
    keys = _keys(stream)
    assert keys[-8:] == KEYS[8:16] and keys[:-8] == KEYS[: len(keys) - 8] and len(keys) >= 8 + 2
    assert stream.skipped["shard_error"] == 2
    assert stream.skip_log[0][:3] == (str(tmp_path / "missing.tar"), "", "shard_error")


def test_argument_validation(toy):
    _, paths = toy
    with pytest.raises(ValueError, match="not both"):
        ClipStream(paths, F, S, frame_stride=2, target_fps=4)
    with pytest.raises(ValueError, match="rank"):
        ClipStream(paths, F, S, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no shards"):
        ClipStream([], F, S)


# --------------------------------------------------------------------------- resume


def test_resume_in_process_including_corrupt_region(toy, tmp_path):
    out, paths = toy
    cpath, *_ = _corrupt_shard(tmp_path)
    urls = [cpath, *paths[:2]]
    # Corrupt shard first (no shard shuffle): the fast-forward has to pass over its bad samples.
    kw = dict(shuffle_buffer=5, shuffle_shards=False, seed=7)
    full = _keys(ClipStream(urls, F, S, **kw))
    assert len(full) == 6 + 16 and full != sorted(full)
    s = ClipStream(urls, F, S, **kw)
    it = iter(s)
    head = [next(it)["key"] for _ in range(9)]
    state = s.state_dict()
    assert state["samples_seen"] == 9 and state["epoch"] == 0 and head == full[:9]

    s2 = ClipStream(urls, F, S, **kw)
    s2.load_state_dict(state)
    decoded = []
    real_decode = s2._decode

    def spy(sample):
        decoded.append(sample["__key__"])
        return real_decode(sample)

    s2._decode = spy
    it2 = iter(s2)
    first = next(it2)["key"]
    assert s2.num_skipped > 0  # bad samples were met (and classified) during the fast-forward
    rest = [first] + _keys(it2)
    assert rest == full[9:]
    assert not set(decoded) & set(head)  # fast-forwarded samples were never decoded
    st = s2.skip_stats()
    assert st["fast_forwarded"] == 9 and st["yielded"] == len(full) - 9 and st["skipped"] == 6
    # A new epoch ignores the stale offset.
    s3 = ClipStream(urls, F, S, **kw)
    s3.load_state_dict(state)
    s3.set_epoch(1)
    assert len(_keys(s3)) == len(full)


def test_resume_with_dataloader_workers(toy):
    out, paths = toy

    def run(state=None, batch_size=2):
        ds = ClipStream(paths, F, S, loader_batch_size=batch_size)
        if state is not None:
            ds.load_state_dict(state)
        dl = DataLoader(ds, batch_size=batch_size, num_workers=2, collate_fn=collate_clips)
        return [k for b in dl for k in b["key"]]

    full = run()
    assert sorted(full) == KEYS
    # 3 shards over 2 workers: 16 + 8 samples; 6 / 2 = 3 batches consumed (odd: the resumed
    # DataLoader must continue with the other worker), 4 = even, 18 = all of worker 1's samples consumed.
    for n in (6, 4, 18):
        assert run({"epoch": 0, "samples_seen": n}) == full[n:], n


# --------------------------------------------------------------------------- frames / geometry / extras


def test_resize_center_crop_known_pattern(tmp_path):
    h, w = 40, 56
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (0, 200, 0)  # TL green
    img[: h // 2, w // 2 :] = (200, 200, 0)  # TR yellow
    img[h // 2 :, : w // 2] = (0, 0, 200)  # BL blue
    img[h // 2 :, w // 2 :] = (0, 200, 200)  # BR cyan
    img[:, :6] = img[:, -6:] = (255, 0, 0)  # red side bands: outside the centre crop
    clip = np.repeat(img[None], 2, axis=0)
    sample = {"__key__": "rect", "mp4": _mp4(clip, tmp_path), "txt": b"a rectangle", "json": b'{"fps": 8}'}
    items = list(ClipStream(_write_tar(tmp_path / "rect.tar", [sample]), 2, 32))
    assert len(items) == 1
    out = frames_to_uint8(items[0]["video"]).astype(np.int16)  # [2, 32, 32, 3]
    assert out.shape == (2, 32, 32, 3)
    # 40x56 -> 32x45 (bilinear, antialiased) -> centre crop columns 6..37; the quadrant corner lands at
    # (15.5, ~16.4) and the red bands (original columns < 6 and >= 50) are cut away.
    for rows, cols, rgb in [
        (slice(0, 14), slice(0, 14), (0, 200, 0)),
        (slice(0, 14), slice(19, 32), (200, 200, 0)),
        (slice(18, 32), slice(0, 14), (0, 0, 200)),
        (slice(18, 32), slice(19, 32), (0, 200, 200)),
    ]:
        region = out[:, rows, cols]
        assert np.abs(region - np.asarray(rgb)).max() <= 3, (rows, cols, region.mean(axis=(0, 1, 2)))
    assert not np.any((out[..., 0] > 100) & (out[..., 1] < 100)), "red side band leaked into the crop"

    # Exact crop when the short side already matches: 32x48 -> columns 8..39.
    x = torch.arange(48, dtype=torch.float32).view(1, 1, 1, 48).expand(1, 3, 32, 48)
    y = resize_center_crop(x, 32)
    assert y.shape == (1, 3, 32, 32) and torch.equal(y[0, 0, 0], torch.arange(8, 40, dtype=torch.float32))


def test_frame_stride_and_target_fps(tmp_path):
    levels = 10 + 15 * np.arange(16)
    clip = np.broadcast_to(levels[:, None, None, None], (16, 16, 16, 3)).astype(np.uint8)
    sample = {"__key__": "ramp", "mp4": _mp4(clip, tmp_path, fps=16), "txt": b"ramp", "json": b'{"fps": 16}'}
    path = _write_tar(tmp_path / "ramp.tar", [sample])

    def frame_levels(**kw):
        items = list(ClipStream(path, 4, 16, **kw))
        assert len(items) == 1
        return frames_to_uint8(items[0]["video"]).astype(np.int16).mean(axis=(1, 2, 3))

    np.testing.assert_allclose(frame_levels(), levels[:4], atol=2)
    np.testing.assert_allclose(frame_levels(target_fps=8), levels[[0, 2, 4, 6]], atol=2)
    np.testing.assert_allclose(frame_levels(frame_stride=5), levels[[0, 5, 10, 15]], atol=2)
    s = ClipStream(path, 8, 16, target_fps=4)  # stride 4 -> needs 29 frames
    assert list(s) == [] and s.skipped == Counter(too_short=1)


def test_safetensors_extras_loaded_without_pickle(tmp_path):
    from safetensors.torch import save

    z = torch.arange(12, dtype=torch.float32).view(3, 4)
    good = clip_sample(300, F, S, seed=0, textured_fraction=0.0, fps=8)
    ok = dict(good, **{"latent.safetensors": save({"z": z})})
    bad = dict(good, __key__="badst", **{"latent.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{not}"})
    stream = ClipStream(_write_tar(tmp_path / "st.tar", [ok, bad]), F, S)
    items = list(stream)
    assert _keys(items) == [good["__key__"]] and torch.equal(items[0]["latent"]["z"], z)
    assert stream.skipped == Counter(bad_safetensors=1)
    batch = collate_clips(items)
    assert batch["video"].shape == (1, F, 3, S, S) and batch["latent"]["z"].shape == (1, 3, 4)


def test_non_square_resize_center_crop_and_stream(toy):
    import torch.nn.functional as F_

    x = torch.arange(2 * 3 * 40 * 60, dtype=torch.float32).reshape(2, 3, 40, 60)
    # (20, 20): scale max(0.5, 0.333) = 0.5 -> 20 x 30, columns 5..25
    ref = F_.interpolate(x, size=(20, 30), mode="bilinear", align_corners=False, antialias=True)[..., :, 5:25]
    torch.testing.assert_close(resize_center_crop(x, (20, 20)), ref)
    torch.testing.assert_close(resize_center_crop(x, 20), ref)
    # (20, 40): scale max(0.5, 0.667) -> 27 x 40 (rounded), rows 3..23
    ref = F_.interpolate(x, size=(27, 40), mode="bilinear", align_corners=False, antialias=True)[..., 3:23, :]
    torch.testing.assert_close(resize_center_crop(x, (20, 40)), ref)
    # the stream delivers (height, width) clips, e.g. a 320x512-style aspect from square toy clips
    _, paths = toy
    item = next(iter(ClipStream(paths[:1], F, (16, 24))))
    assert tuple(item["video"].shape) == (F, 3, 16, 24)
    with pytest.raises(ValueError, match="height, width"):
        ClipStream(paths[:1], F, (16, 0))


def test_skips_are_counted_over_epochs_not_per_epoch(tmp_path):
    """A finite stream read for two epochs counts its bad samples twice (the counters used to restart with
    every epoch, so the trainer logged too few skips and max_skip_fraction never saw a persistent problem)."""
    path, good, order, reasons = _corrupt_shard(tmp_path)
    stream = ClipStream(path, F, S, resampled=False, max_skip_fraction=None)
    assert len(list(stream)) == len(good)
    stream.set_epoch(1)
    assert len(list(stream)) == len(good)
    st = stream.skip_stats()
    assert st["skipped"] == 2 * len(reasons) and st["yielded"] == 2 * len(good)
    assert stream.skipped == Counter({r: 2 * n for r, n in Counter(reasons.values()).items()})
    # half the samples are bad: too few to check in one epoch (12 < 20 seen), caught in the second
    strict = ClipStream(path, F, S, resampled=False, max_skip_fraction=0.4)
    assert len(list(strict)) == len(good)
    strict.set_epoch(1)
    with pytest.raises(RuntimeError, match="more than max_skip_fraction=0.4"):
        list(strict)


# --------------------------------------------------------------------------- oversized clips


def _flat_mp4(n: int, h: int, w: int, tmp: Path, fps: float = 8, value: int = 128) -> bytes:
    """A cheap lossy clip of ``n`` flat frames (crf 51: a few KB whatever the frame size)."""
    p = tmp / "flat.mp4"
    write_video(p, np.full((n, h, w, 3), value, np.uint8), fps=fps, crf=51)
    data = p.read_bytes()
    p.unlink()
    return data


def test_oversized_clip_is_skipped_as_too_large(tmp_path):
    good = [clip_sample(400 + i, F, S, seed=0, textured_fraction=0.0, fps=8) for i in range(3)]
    big = dict(good[0], __key__="big", mp4=_flat_mp4(F, 1024, 1024, tmp_path))
    path = _write_tar(tmp_path / "big.tar", [good[0], big, good[1], good[2]])
    keys = [g["__key__"] for g in good]
    stream = ClipStream(path, F, S, max_pixels=512 * 512)
    assert _keys(stream) == keys
    assert stream.skipped == Counter(too_large=1)
    assert stream.skip_log[0][:3] == (path, "big", "too_large") and "1024x1024" in stream.skip_log[0].detail
    # The limit is a setting: without it the clip is read (shrunk to the output size).
    items = list(ClipStream(path, F, S, max_pixels=None))
    assert _keys(items) == [keys[0], "big", *keys[1:]] and items[1]["video"].shape == (F, 3, S, S)
    # The resume fast-forward applies the same check (else it would count the big clip as consumed).
    full = _keys(ClipStream(path, F, S, max_pixels=512 * 512))
    resumed = ClipStream(path, F, S, max_pixels=512 * 512)
    resumed.load_state_dict({"epoch": 0, "samples_seen": 2})
    assert _keys(resumed) == full[2:] == keys[2:]
    assert resumed.skipped == Counter(too_large=1) and resumed.skip_stats()["fast_forwarded"] == 2
    with pytest.raises(ValueError, match="max_pixels"):
        ClipStream(path, F, S, max_pixels=0)
    with pytest.raises(ValueError, match="max_duration_s"):
        ClipStream(path, F, S, max_duration_s=0)


def test_default_limit_rejects_a_huge_frame_header(tmp_path):
    # 4000 x 4000 frames in a ~6 KB file: decoded at full size and converted to float32 this took ~250 MB a
    # frame; the header check rejects it without decoding a frame.
    good = clip_sample(410, 2, S, seed=0, textured_fraction=0.0, fps=8)
    huge = dict(good, __key__="huge", mp4=_flat_mp4(2, 4000, 4000, tmp_path, value=0))
    assert len(huge["mp4"]) < 64_000
    path = _write_tar(tmp_path / "huge.tar", [huge, good])
    stream = ClipStream(path, 2, S)
    assert _keys(stream) == [good["__key__"]]
    assert stream.skipped == Counter(too_large=1) and "4000x4000" in stream.skip_log[0].detail


def test_clip_longer_than_max_duration_s_is_skipped(tmp_path):
    good = [clip_sample(420 + i, F, S, seed=0, textured_fraction=0.0, fps=8) for i in range(2)]  # 1 s each
    long = dict(good[0], __key__="long", mp4=_flat_mp4(40, S, S, tmp_path, fps=8))  # 5 s
    path = _write_tar(tmp_path / "long.tar", [good[0], long, good[1]])
    stream = ClipStream(path, F, S, max_duration_s=2.0)
    assert _keys(stream) == [g["__key__"] for g in good]
    assert stream.skipped == Counter(too_large=1) and "max_duration_s" in stream.skip_log[0].detail
    assert _keys(ClipStream(path, F, S, max_duration_s=10.0)) == [
        good[0]["__key__"],
        "long",
        good[1]["__key__"],
    ]
    assert len(_keys(ClipStream(path, F, S, max_duration_s=None))) == 3


def test_large_clip_is_decoded_at_the_covering_size(tmp_path, monkeypatch):
    import t2vturbo.data.shards as shards

    h, w = 480, 640
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (0, 200, 0)
    img[: h // 2, w // 2 :] = (200, 200, 0)
    img[h // 2 :, : w // 2] = (0, 0, 200)
    img[h // 2 :, w // 2 :] = (0, 200, 200)
    clip = np.repeat(img[None], 2, axis=0)
    sample = {"__key__": "vga", "mp4": _mp4(clip, tmp_path), "txt": b"quadrants", "json": b'{"fps": 8}'}
    path = _write_tar(tmp_path / "vga.tar", [sample])
    seen = []
    real = shards.resize_center_crop

    def spy(video, size):
        seen.append(tuple(video.shape))
        return real(video, size)

    monkeypatch.setattr(shards, "resize_center_crop", spy)
    # (32, 32): covering size 32 x round(640 * 32 / 480) = 32 x 43 (decord scales);
    # (16, 24): scale max(16/480, 24/640) -> 18 x 24 (a width decord cannot copy out: PyAV scales).
    for size, cover, fallbacks in [((32, 32), (32, 43), 0), ((16, 24), (18, 24), 1)]:
        seen.clear()
        stream = ClipStream(path, 2, size)
        items = list(stream)
        assert len(items) == 1 and seen == [(2, 3, *cover)], (size, seen)
        assert stream.skip_stats()["pyav_fallbacks"] == fallbacks
        # the decoder's shrink matches the torch resize of the full frames, up to the quadrant edges
        ref = real(torch.from_numpy(clip).permute(0, 3, 1, 2), size)
        out = frames_to_uint8(items[0]["video"]).astype(np.int16)
        err = np.abs(out - frames_to_uint8(ref / 127.5 - 1).astype(np.int16))
        assert err.mean() < 1.5 and err.max() <= 16, (size, err.mean(), err.max())
