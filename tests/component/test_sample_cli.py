"""Component tests for the sampling CLI (t2vturbo.sample) on a fake export folder (no training).

The export folder is what ``Trainer.export()`` writes: ``student.safetensors`` (the student's
state dict) and ``t2vturbo_student.json`` (family, teacher_path, schedule / sampler settings,
clip size); the teacher is a tiny random model in the diffusers layout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from t2vturbo.backbones.unet3d import UNet3DBackbone, write_tiny_model_dir
from t2vturbo.diffusion import to_x0_eps
from t2vturbo.sample import (
    STUDENT_FILE,
    STUDENT_META,
    find_latest_export,
    load_student,
    main,
    sample_student,
)

F, H, W = 8, 32, 32
PROMPTS = ["a red circle moving left", "a blue square moving up"]

try:
    from t2vturbo.data.video_io import read_video
except ImportError:  # pragma: no cover - fallback if the module is absent

    def read_video(path):
        import imageio.v3 as iio

        return np.stack(list(iio.imiter(str(path))))


def _write_export(export_dir: Path, teacher_path: Path, bb: UNet3DBackbone) -> Path:
    torch.manual_seed(123)
    net = bb.make_student()  # the w / eta projections are random (the official init): both change the output
    export_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous().float() for k, v in net.state_dict().items()}, str(export_dir / STUDENT_FILE)
    )
    meta = {
        "family": "unet3d",
        "teacher_path": str(teacher_path.resolve()),
        "prediction_type": bb.prediction_type,
        "num_ddim_timesteps": 200,
        "sigma_data": 0.5,
        "timestep_scaling": 10.0,
        "num_frames": F,
        "height": H,
        "width": W,
    }
    (export_dir / STUDENT_META).write_text(json.dumps(meta, indent=2))
    return export_dir


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """(run_dir, export_dir, teacher_dir): run_dir/export holds a student exported from a tiny teacher."""
    root = tmp_path_factory.mktemp("sample_cli")
    teacher = write_tiny_model_dir(root / "teacher", vae="pixel_unshuffle")
    bb = UNet3DBackbone.from_pretrained(teacher)
    run_dir = root / "run"
    export_dir = _write_export(run_dir / "export", teacher, bb)
    return run_dir, export_dir, teacher


@pytest.fixture(scope="module")
def loaded(export):
    bb, net, meta = load_student(export[1])
    return bb, net, meta


# --------------------------------------------------------------------------------------------- CLI
def _printed_paths(capsys) -> list[Path]:
    out = capsys.readouterr().out
    return [Path(ln) for ln in out.splitlines() if ln.strip()]


def _check_videos(paths: list[Path], n: int):
    assert len(paths) == n
    for p in paths:
        assert p.suffix == ".mp4" and p.is_file(), p
        v = read_video(p)
        assert v.shape == (F, H, W, 3), (p, v.shape)
        assert v.dtype == np.uint8


def test_main_student_writes_decodable_mp4s(export, tmp_path, capsys):
    run_dir = export[0]
    out = tmp_path / "samples"
    rc = main(
        [
            "--checkpoint",
            str(run_dir),
            "--prompt",
            PROMPTS[0],
            "--prompt",
            PROMPTS[1],
            "--steps",
            "4",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    paths = _printed_paths(capsys)
    _check_videos(paths, 2)
    assert all(p.parent == out for p in paths)
    assert all("student_4steps" in p.name for p in paths)
    assert paths[0].name.startswith("000_") and paths[1].name.startswith("001_")


def test_main_teacher(export, tmp_path, capsys):
    run_dir, export_dir = export[:2]
    out = tmp_path / "samples"
    # the export folder itself is accepted as well as the run's output dir
    rc = main(
        [
            "--checkpoint",
            str(export_dir),
            "--prompt",
            PROMPTS[0],
            "--teacher",
            "--steps",
            "3",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    paths = _printed_paths(capsys)
    _check_videos(paths, 1)
    assert "teacher_3steps" in paths[0].name


def test_main_teacher_folder_directly(export, tmp_path, capsys):
    teacher_dir = export[2]
    rc = main(
        [
            "--checkpoint",
            str(teacher_dir),
            "--teacher",
            "--prompt",
            PROMPTS[1],
            "--steps",
            "2",
            "--out",
            str(tmp_path / "s"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    paths = _printed_paths(capsys)
    _check_videos(paths, 1)
    assert "teacher_2steps" in paths[0].name


def test_main_size_overrides(export, tmp_path, capsys):
    rc = main(
        [
            "--checkpoint",
            str(export[0]),
            "--prompt",
            PROMPTS[0],
            "--steps",
            "1",
            "--num-frames",
            "4",
            "--height",
            "16",
            "--width",
            "16",
            "--out",
            str(tmp_path / "s"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    paths = _printed_paths(capsys)
    assert len(paths) == 1
    assert read_video(paths[0]).shape == (4, 16, 16, 3)


def test_main_prompts_file(export, tmp_path, capsys):
    run_dir = export[0]
    pf = tmp_path / "prompts.txt"
    pf.write_text(f"{PROMPTS[0]}\n\n{PROMPTS[1]}\n")
    rc = main(
        [
            "--checkpoint",
            str(run_dir),
            "--prompts-file",
            str(pf),
            "--steps",
            "1",
            "--out",
            str(tmp_path / "s"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    _check_videos(_printed_paths(capsys), 2)


def test_checkpoint_without_meta_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "not_an_export"
    empty.mkdir()
    rc = main(
        ["--checkpoint", str(empty), "--prompt", PROMPTS[0], "--out", str(tmp_path / "s"), "--device", "cpu"]
    )
    assert rc == 2
    msg = capsys.readouterr().err
    assert STUDENT_META in msg and STUDENT_FILE in msg and str(empty) in msg


def test_no_prompt_is_an_argparse_error(export, tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--checkpoint", str(export[0]), "--out", str(tmp_path / "s")])
    assert ei.value.code == 2
    assert "--prompt" in capsys.readouterr().err


def test_default_checkpoint_missing_tells_to_run_make_distill(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no outputs/ here
    rc = main(["--prompt", PROMPTS[0]])
    assert rc == 2
    assert "make distill" in capsys.readouterr().err
    assert not (tmp_path / "samples").exists()


# --------------------------------------------------------------------------------------------- find_latest_export
def _touch_export(d: Path, mtime: float) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    meta = d / STUDENT_META
    meta.write_text("{}")
    os.utime(meta, (mtime, mtime))
    return d


def test_find_latest_export_picks_newest_by_mtime(tmp_path, monkeypatch):
    now = time.time()
    old = _touch_export(tmp_path / "outputs" / "a" / "export", now - 100)
    new = _touch_export(tmp_path / "outputs" / "b" / "export", now - 10)
    _touch_export(tmp_path / "outputs" / "c" / "deeper" / "export", now - 50)
    assert find_latest_export(tmp_path / "outputs") == new
    monkeypatch.chdir(tmp_path)
    assert find_latest_export() == Path("outputs") / "b" / "export"
    os.utime(old / STUDENT_META, (now, now))
    assert find_latest_export(tmp_path / "outputs") == old
    assert find_latest_export(tmp_path / "nothing_here") is None


def test_find_latest_export_every_lists_all_newest_first(tmp_path):
    now = time.time()
    a = _touch_export(tmp_path / "a" / "export", now - 100)
    b = _touch_export(tmp_path / "b" / "export", now - 10)
    assert find_latest_export(tmp_path, every=True) == [b, a]
    assert find_latest_export(tmp_path / "none", every=True) == []


def _copy_export(src: Path, dst: Path, step=None) -> Path:
    dst.mkdir(parents=True)
    (dst / STUDENT_FILE).write_bytes((src / STUDENT_FILE).read_bytes())
    meta = json.loads((src / STUDENT_META).read_text())
    if step is not None:
        meta["step"] = step
    (dst / STUDENT_META).write_text(json.dumps(meta))
    return dst


def test_default_checkpoint_uses_the_only_export_and_says_which(export, tmp_path, monkeypatch, capsys):
    only = _copy_export(export[1], tmp_path / "outputs" / "run1" / "export", step=40)
    monkeypatch.chdir(tmp_path)
    rc = main(["--prompt", PROMPTS[0], "--steps", "1", "--device", "cpu"])
    assert rc == 0
    cap = capsys.readouterr()
    paths = [Path(ln) for ln in cap.out.splitlines() if ln.strip()]
    assert len(paths) == 1 and (tmp_path / paths[0]).is_file()
    assert f"using the only student export under outputs/, {only.relative_to(tmp_path)} (step 40)" in cap.err


@pytest.mark.parametrize("teacher", [False, True])
def test_default_checkpoint_refuses_several_exports(export, tmp_path, monkeypatch, capsys, teacher):
    """Several exports under outputs/ and no --checkpoint: exit 2 before loading anything, listing each
    export (path, step, time written, newest first) and asking for --checkpoint."""
    from t2vturbo.student_export import StudentExport

    now = time.time()
    old = _touch_export(tmp_path / "outputs" / "old" / "export", now - 3600)
    new = _copy_export(export[1], tmp_path / "outputs" / "new" / "export", step=120)
    os.utime(new / STUDENT_META, (now, now))

    def no_load(*a, **k):
        raise AssertionError("weights were read although the export is ambiguous")

    monkeypatch.setattr(StudentExport, "load", no_load)
    monkeypatch.setattr(StudentExport, "load_teacher", no_load)
    monkeypatch.chdir(tmp_path)
    rc = main(
        ["--prompt", PROMPTS[0], "--steps", "1", "--device", "cpu", *(["--teacher"] if teacher else [])]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "2 student exports under outputs/" in err and "--checkpoint" in err
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    lines = err.splitlines()
    i_new = next(i for i, ln in enumerate(lines) if str(new.relative_to(tmp_path)) in ln)
    i_old = next(i for i, ln in enumerate(lines) if str(old.relative_to(tmp_path)) in ln)
    assert i_new < i_old  # newest first
    assert "step 120" in lines[i_new] and stamp in lines[i_new]
    assert "step ?" in lines[i_old]
    assert not (tmp_path / "samples").exists()


# --------------------------------------------------------------------------------------------- --device
@pytest.mark.parametrize(
    "device,cuda_ok,count,msg",
    [
        (
            "cuda",
            False,
            0,
            "--device cuda: torch.cuda.is_available() is False (this torch is {v}, built without CUDA)",
        ),
        ("cuda:0", False, 0, "--device cuda:0: torch.cuda.is_available() is False"),
        ("cuda:3", True, 1, "--device cuda:3: CUDA device index 3 out of range (visible: cuda:0 .. cuda:0)"),
        ("gpu", True, 1, "--device gpu: not a torch device string (use cpu, cuda or cuda:N)"),
        ("meta", True, 1, "--device meta: device type 'meta' is not supported"),
    ],
)
def test_bad_device_is_a_clear_error_before_loading(
    export, tmp_path, monkeypatch, capsys, device, cuda_ok, count, msg
):
    from t2vturbo.student_export import StudentExport

    def no_resolve(*a, **k):
        raise AssertionError("the checkpoint was read before --device was checked")

    monkeypatch.setattr(StudentExport, "resolve", no_resolve)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_ok)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.version, "cuda", None)
    rc = main(
        ["--checkpoint", str(export[0]), "--prompt", PROMPTS[0], "--device", device, "--out", str(tmp_path)]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg.format(v=torch.__version__) in err
    assert "Traceback" not in err and "AssertionError" not in err


def test_check_device_cuda_build_without_gpu(monkeypatch):
    from t2vturbo.sample import check_device

    assert check_device("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    assert "built with CUDA 12.4, but no usable GPU / driver is visible" in check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") is None and check_device("cuda") is None


# --------------------------------------------------------------------------------------------- --crf / files
def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _luma(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_crf_default_playable_yuv420p_and_crf0_lossless(export, loaded, tmp_path, capsys):
    """Default: H.264 High profile yuv420p (browser / QuickTime playable) close to the sampled frames;
    --crf 0: lossless yuv444p equal to them up to the RGB <-> YCbCr round-off; file size falls with crf. The
    reference frames are sample_student with the CLI's documented per-prompt seed (prompt_seeds)."""
    import av

    from t2vturbo.data.video_io import frames_to_uint8
    from t2vturbo.sample import prompt_seeds

    bb, net, _ = loaded
    with torch.no_grad():
        ref = frames_to_uint8(
            sample_student(
                bb, net, PROMPTS[:1], steps=1, num_frames=F, height=H, width=W, seed=prompt_seeds(PROMPTS[:1])
            )[0]
        )
    base = ["--checkpoint", str(export[1]), "--prompt", PROMPTS[0], "--steps", "1", "--device", "cpu"]
    files = {}
    for crf in (None, 0, 40):
        out = tmp_path / f"crf{crf}"
        assert main([*base, "--out", str(out), *(["--crf", str(crf)] if crf is not None else [])]) == 0
        (files[crf],) = out.glob("*.mp4")
    capsys.readouterr()
    for crf, fmt, profile in ((None, "yuv420p", "High"), (0, "yuv444p", "High 4:4:4 Predictive")):
        with av.open(str(files[crf])) as c:
            cc = c.streams.video[0].codec_context
            assert (cc.name, cc.pix_fmt, cc.profile, cc.width, cc.height) == ("h264", fmt, profile, W, H)
    lossless = read_video(files[0])
    assert np.abs(lossless.astype(np.int16) - ref.astype(np.int16)).max() <= 4
    # the random student's frames are per-pixel colour noise, whose chroma 4:2:0 cannot hold (RGB PSNR ~8.5 dB);
    # its luma is kept (measured 28.2 dB at crf 18). Real content: test_video_io (RGB PSNR ~30 dB at 32x32).
    assert _psnr(_luma(read_video(files[None])), _luma(ref)) > 24.0
    sizes = [files[c].stat().st_size for c in (0, None, 40)]
    assert sizes[0] > sizes[1] > sizes[2], sizes


def test_odd_size_is_padded_for_yuv420p_and_exact_with_crf0(export, tmp_path, monkeypatch, capsys):
    """An odd clip size (no latent model here gives one: the sampler is faked) is written as yuv420p padded by
    one repeated row / column, with a note on stderr; --crf 0 writes it exactly (yuv444p)."""
    import av

    import t2vturbo.sample as sample_mod

    def fake(bb, net, prompts, num_frames=F, height=H, width=W, **kw):
        ramp = torch.linspace(-1, 1, height)[:, None] * torch.linspace(-1, 1, width)[None, :]
        return ramp.expand(len(prompts), num_frames, 3, height, width).clone()

    monkeypatch.setattr(sample_mod, "sample_student", fake)
    base = ["--checkpoint", str(export[1]), "--prompt", PROMPTS[0], "--device", "cpu"]
    base += ["--num-frames", "2", "--height", "33", "--width", "31"]
    assert main([*base, "--out", str(tmp_path / "a"), "--crf", "0"]) == 0
    assert "padded" not in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    assert "33x31 is odd; yuv420p videos are padded to 34x32" in capsys.readouterr().err
    (exact,) = (tmp_path / "a").glob("*.mp4")
    (padded,) = (tmp_path / "b").glob("*.mp4")
    for f, fmt, shape in ((exact, "yuv444p", (2, 33, 31, 3)), (padded, "yuv420p", (2, 34, 32, 3))):
        with av.open(str(f)) as c:
            assert c.streams.video[0].codec_context.pix_fmt == fmt
        assert read_video(f).shape == shape
    a, b = read_video(exact).astype(np.int16), read_video(padded).astype(np.int16)
    assert np.abs(b[:, :33, :31] - a).mean() < 3.0
    assert np.abs(b[:, 33, :31] - a[:, 32]).mean() < 3.0 and np.abs(b[:, :33, 31] - a[:, :, 30]).mean() < 3.0


# --------------------------------------------------------------------------------------------- entry point
@pytest.mark.parametrize(
    "argv0,prog",
    [
        ("/venv/bin/t2vturbo-sample", "t2vturbo-sample"),
        ("/x/t2vturbo/sample.py", "python -m t2vturbo.sample"),
    ],
)
def test_prog_name_follows_the_console_script(monkeypatch, capsys, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog} ") and "--batch-size" in out and "--crf" in out


def test_cli_exits_with_mains_code(monkeypatch, capsys):
    from t2vturbo.sample import cli

    monkeypatch.setattr(sys, "argv", ["t2vturbo-sample", "--prompt", "x", "--device", "gpu"])
    with pytest.raises(SystemExit) as ei:
        cli()
    assert ei.value.code == 2
    assert "--device gpu" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- sampler
def test_load_student_roundtrip(export, loaded):
    bb, net, meta = loaded
    assert meta["num_frames"] == F and meta["family"] == "unet3d"
    assert not net.training
    assert bb.latent_shape(F, H, W) == (48, F, H // 4, W // 4)
    from safetensors.torch import load_file

    saved = load_file(str(export[1] / STUDENT_FILE))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)


def test_same_seed_same_latents_different_seed_differs(loaded):
    bb, net, meta = loaded
    kw = dict(steps=4, num_frames=F, height=H, width=W, decode=False)
    a = sample_student(bb, net, PROMPTS, seed=7, **kw)
    b = sample_student(bb, net, PROMPTS, seed=7, **kw)
    c = sample_student(bb, net, PROMPTS, seed=8, **kw)
    assert a.shape == (2, *bb.latent_shape(F, H, W))
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3


def test_decode_matches_decoding_the_latents(loaded):
    bb, net, _ = loaded
    kw = dict(steps=2, num_frames=F, height=H, width=W, seed=3)
    z = sample_student(bb, net, PROMPTS[:1], decode=False, **kw)
    v = sample_student(bb, net, PROMPTS[:1], decode=True, **kw)
    assert v.shape == (1, F, 3, H, W)
    torch.testing.assert_close(v, bb.decode_latents(z), rtol=0, atol=0)


@pytest.mark.parametrize("guidance,eta", [(7.5, 0.0), (2.0, 0.3)])
def test_one_step_equals_boundary_form_by_hand(loaded, guidance, eta):
    """steps=1: x0 = c_skip(999) z + c_out(999) x0_pred(student(z, 999)) with z the seeded noise."""
    bb, net, meta = loaded
    seed, sd, s = 11, meta["sigma_data"], meta["timestep_scaling"]
    got = sample_student(
        bb,
        net,
        PROMPTS,
        steps=1,
        num_ddim_timesteps=meta["num_ddim_timesteps"],
        guidance=guidance,
        eta=eta,
        num_frames=F,
        height=H,
        width=W,
        seed=seed,
        sigma_data=sd,
        timestep_scaling=s,
        decode=False,
    )

    shape = (2, *bb.latent_shape(F, H, W))
    z = torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(seed))
    t = torch.full((2,), 999, dtype=torch.long)
    with torch.no_grad():
        cond = bb.encode_text(PROMPTS)
        out = net(z, t, cond, torch.full((2,), guidance), torch.full((2,), eta))
    x0_pred, _ = to_x0_eps(out, z, t, bb.alphas_cumprod, bb.prediction_type)
    st = s * 999.0
    c_skip = sd**2 / (st**2 + sd**2)
    c_out = st / (st**2 + sd**2) ** 0.5
    want = c_skip * z + c_out * x0_pred
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # and w and eta are really used (random projections, no perturbation needed)
    with torch.no_grad():
        out_w0 = net(z, t, cond, torch.zeros(2), torch.full((2,), eta))
        out_eta = net(z, t, cond, torch.full((2,), guidance), torch.full((2,), eta + 0.5))
    assert (out - out_w0).abs().max() > 1e-4
    assert (out - out_eta).abs().max() > 1e-4


class _Recorder(torch.nn.Module):
    """The student, recording the (timestep, eta) of every call."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, z, t, cond, w, eta):
        self.calls.append((t.tolist(), torch.as_tensor(eta).tolist()))
        return self.net(z, t, cond, w, eta)


@pytest.mark.parametrize(
    "percentage,guided",
    [(0.5, [True, True, False, False]), (0.3, [True, True, False, False]), (1.0, [True] * 4), (None, None)],
)
def test_eta_only_at_the_steps_of_the_official_schedule(loaded, percentage, guided):
    """eta at t >= 1000 (1 - percentage), 0 below (as the official pipelines): on the 200-grid's 4 steps
    [999, 749, 499, 249], 0.5 and 0.3 give [eta, eta, 0, 0], 1.0 eta everywhere; the default is 0.5."""
    bb, net, _ = loaded
    rec, eta = _Recorder(net), 0.05
    kw = {} if percentage is None else {"motion_percentage": percentage}
    sample_student(bb, rec, PROMPTS, steps=4, eta=eta, num_frames=4, height=16, width=16, decode=False, **kw)
    guided = guided or [True, True, False, False]
    assert [c[0] for c in rec.calls] == [[t] * 2 for t in (999, 749, 499, 249)]
    want = [[eta if g else 0.0] * 2 for g in guided]
    assert [c[1] for c in rec.calls] == [pytest.approx(x, rel=1e-6) for x in want]


def test_motion_percentage_from_the_export_and_the_cli(export, tmp_path, monkeypatch, capsys):
    """The sampler gets the export's motion_percentage (0.5 for an export without one) unless
    --motion-percentage is given; outside [0, 1] it is an argparse error."""
    import t2vturbo.sample as sample_mod
    from t2vturbo.student_export import StudentExport

    got = []

    def fake(bb, net, prompts, motion_percentage=None, eta=None, num_frames=F, height=H, width=W, **kw):
        got.append((motion_percentage, eta))
        return torch.zeros(len(prompts), num_frames, 3, height, width)

    monkeypatch.setattr(sample_mod, "sample_student", fake)
    args = [
        "--checkpoint",
        str(export[1]),
        "--prompt",
        PROMPTS[0],
        "--out",
        str(tmp_path / "s"),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert main([*args, "--motion-percentage", "0.3"]) == 0
    assert got == [(0.5, 0.0), (0.3, 0.0)]
    assert StudentExport(meta={"motion_percentage": 0.8}).sampling_kwargs()[1]["motion_percentage"] == 0.8
    capsys.readouterr()
    with pytest.raises(SystemExit) as ei:
        main([*args, "--motion-percentage", "1.5"])
    assert ei.value.code == 2 and "--motion-percentage must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("steps", ["0", "1000"])
def test_student_steps_out_of_range_fail_before_loading(export, tmp_path, capsys, monkeypatch, steps):
    """--steps outside [1, N] (N: the student's grid) is an argparse error, and no weights are read."""
    from t2vturbo.student_export import StudentExport

    def no_load(self, device="cpu"):
        raise AssertionError("the student was loaded before --steps was checked")

    monkeypatch.setattr(StudentExport, "load", no_load)
    with pytest.raises(SystemExit) as ei:
        main(
            [
                "--checkpoint",
                str(export[0]),
                "--prompt",
                PROMPTS[0],
                "--steps",
                steps,
                "--out",
                str(tmp_path / "s"),
            ]
        )
    assert ei.value.code == 2
    assert "--steps must be" in capsys.readouterr().err


def test_empty_prompt_is_an_argparse_error(export, tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--checkpoint", str(export[0]), "--prompt", " ", "--out", str(tmp_path / "s")])
    assert ei.value.code == 2
    assert "--prompt must not be empty" in capsys.readouterr().err
