"""Tensorboard output of a run, read back with tensorboard's own event reader: validation clips as animated GIFs
beside their prompts, and the hparams session (config values, final metrics) at the end of a run."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageSequence
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata

from t2vturbo.config import validate
from t2vturbo.data.video_io import frames_to_uint8
from t2vturbo.train.logger import MetricLogger, final_metrics, run_hparams, slug
from t2vturbo.train.validation import Validator, prompt_tag


def _events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0, "scalars": 0}
    )
    acc.Reload()
    return acc


def _gif_frames(encoded: bytes) -> list[np.ndarray]:
    im = Image.open(io.BytesIO(encoded))
    assert im.format == "GIF" and im.is_animated == (im.n_frames > 1)
    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]


def _text(acc: EventAccumulator, tag: str) -> list[str]:
    return [
        t.tensor_proto.string_val[0].decode() for t in acc.Tensors(tag + "/text_summary")
    ]  # add_text's tag


def _clip(f=6, h=24, w=40, seed=0) -> torch.Tensor:
    """A moving colour gradient plus noise, [F, 3, H, W] in [-1, 1]: every frame differs from the last."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    frames = [torch.stack([torch.sin(3 * x + 0.7 * t), torch.cos(2 * y - 0.5 * t), x * y]) for t in range(f)]
    return (torch.stack(frames) * 0.9 + 0.1 * torch.rand(f, 3, h, w, generator=g) * 2 - 0.1).clamp(-1, 1)


def test_video_is_an_animated_gif_of_the_clip(tmp_path):
    clip, small = _clip(), _clip(h=12, w=20, seed=1)
    logger = MetricLogger(tmp_path)
    logger.log_video(7, "validation/00_a-clip/4steps", clip, fps=5)
    logger.log_text(7, "validation/00_a-clip/prompt", "a clip")
    logger.log_video(8, "validation/01_small/1steps", small)
    logger.close()
    acc = _events(tmp_path)
    assert sorted(acc.Tags()["images"]) == ["validation/00_a-clip/4steps", "validation/01_small/1steps"]
    (ev,) = acc.Images("validation/00_a-clip/4steps")
    assert (ev.step, ev.width, ev.height) == (7, 40, 24)
    frames = _gif_frames(ev.encoded_image_string)
    want = frames_to_uint8(clip)  # [F, H, W, 3]: the clip as write_video stores it
    assert len(frames) == 6 and all(f.shape == (24, 40, 3) for f in frames)
    assert len(np.unique(want[0].reshape(-1, 3), axis=0)) > 256  # more colours than a GIF palette holds
    err = np.abs(np.stack(frames).astype(int) - want.astype(int))
    # an adaptive 256-colour palette per frame: a few levels off on average (measured 6.2), never far
    assert err.mean() < 8.0 and np.percentile(err, 99) < 32, (err.mean(), np.percentile(err, 99))
    # ... and the frames are in order: each is far nearer its own input frame than the next one (~31 levels)
    for i in range(5):
        assert np.abs(frames[i].astype(int) - want[i + 1].astype(int)).mean() > 3 * err[i].mean()
    gif = Image.open(io.BytesIO(ev.encoded_image_string))
    assert gif.info["duration"] == 200 and gif.info["loop"] == 0  # 5 fps, loops forever
    assert _text(acc, "validation/00_a-clip/prompt") == ["a clip"]
    # 12 x 20 = 240 pixels: at most 256 colours a frame, the palette holds them all and the GIF is lossless
    (ev,) = acc.Images("validation/01_small/1steps")
    assert (ev.step, ev.width, ev.height) == (8, 20, 12)
    frames = _gif_frames(ev.encoded_image_string)
    np.testing.assert_array_equal(np.stack(frames), frames_to_uint8(small))
    assert (
        Image.open(io.BytesIO(ev.encoded_image_string)).info["duration"] == 120
    )  # 8 fps (the default): 125 ms, in 1/100 s


def test_validator_tags_clips_by_prompt_and_writes_the_prompts(tiny_dirs, tmp_path):
    from t2vturbo.sample import load_student

    _, export = tiny_dirs
    bb, net, _ = load_student(export.parent)
    prompts = ["a red circle moving left", "A blue square, moving up!"]
    cfg = OmegaConf.create(
        {
            "model": {"num_frames": 4, "height": 16, "width": 16},
            "objective": {"num_ddim_timesteps": 50, "w_min": 2.0, "w_max": 6.0, "sigma_data": 0.5},
            "train": {"eval_guidance": None, "eval_steps": [1, 2]},
            "data": {"validation_prompts": prompts},
        }
    )
    cfg.objective.timestep_scaling = 10.0
    logger = MetricLogger(tmp_path)
    Validator(cfg, bb, logger, tmp_path, rank=0)(3, net)
    logger.close()
    acc = _events(tmp_path)
    assert prompt_tag(1, prompts[1]) == "validation/01_a-blue-square-moving-up"
    want = sorted(f"{prompt_tag(i, p)}/{s}steps" for i, p in enumerate(prompts) for s in (1, 2))
    assert sorted(acc.Tags()["images"]) == want
    for i, p in enumerate(prompts):
        (text,) = _text(acc, f"{prompt_tag(i, p)}/prompt")
        assert text.startswith(p + "\n") and "1, 2 steps, w=4," in text
        for s in (1, 2):  # the GIF holds the clip of the .mp4 beside it
            (ev,) = acc.Images(f"{prompt_tag(i, p)}/{s}steps")
            frames = _gif_frames(ev.encoded_image_string)
            assert ev.step == 3 and len(frames) >= 1 and frames[0].shape == (16, 16, 3)
    assert sorted(p.name for p in (tmp_path / "samples" / "step-00000003").iterdir()) == [
        f"{s}steps_{i}.mp4" for s in (1, 2) for i in range(2)
    ]
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"val/1steps/sharpness", "val/2steps/dynamic"} <= set(rows[-2]) | set(rows[-1])


def test_slug():
    assert slug("A red circle, moving left!") == "a-red-circle-moving-left"
    assert slug("a very long prompt with many many words that goes on") == "a-very-long-prompt-with-many"
    assert slug("x" * 40) == "x" * 32 and slug("?!") == "prompt"


def _hparams_plugin_data(acc: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    """tag -> the hparams plugin's data, as tensorboard's hparams plugin reads it."""
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(c) for tag, c in content.items()}


def _value(v):
    return v.number_value if v.WhichOneof("kind") == "number_value" else v.string_value


ROWS = [
    {"step": 10, "loss_cd": 0.5, "loss": 0.5, "lr": 1e-4, "grad_norm": 2.0},
    {"step": 20, "loss_cd": 0.25, "loss": 0.25, "lr": 1e-4, "reward/toy_color": 0.75},
    {"step": 20, "val/4steps/sharpness": 12.5, "val/4steps/dynamic": 1.0},
    {"step": 30, "loss_cd": "nan", "loss": 0.125, "event": "nonfinite_loss"},
]


def test_final_metrics_are_the_last_finite_losses_rewards_and_validation_figures():
    assert final_metrics(ROWS) == {
        "loss_cd": 0.25,
        "loss": 0.125,
        "reward/toy_color": 0.75,
        "val/4steps/sharpness": 12.5,
        "val/4steps/dynamic": 1.0,
    }


@pytest.mark.parametrize("finished", [True, False])
def test_hparams_session_in_the_runs_own_event_dir(tmp_path, finished):
    cfg = validate(
        {
            "train": {"lr": 3e-4, "grad_accum": 2, "max_steps": 30},
            "reward": {"weights": {"toy_color": 0.5}},
            "objective": {"w_min": 3.0, "w_max": 9.0},
        }
    )
    logger = MetricLogger(tmp_path)
    for r in ROWS:
        logger.log(r["step"], {k: float(v) if k != "event" else v for k, v in r.items() if k != "step"})
    logger.log_hparams(30, run_hparams(cfg, world_size=4), finished=finished)
    logger.close()
    logger.log_hparams(30, {"x": 1})  # closed: nothing (plan.measure's second train())
    # one tensorboard run: the session is the run of the loss curves, not a timestamped subdir
    assert [p.is_file() for p in (tmp_path / "tensorboard").iterdir()] == [True]
    acc = _events(tmp_path)
    data = _hparams_plugin_data(acc)
    # no Experiment summary (tensorboard builds it from every run's sessions); the session's end only when finished
    assert set(data) == {hp_metadata.SESSION_START_INFO_TAG} | (
        {hp_metadata.SESSION_END_INFO_TAG} if finished else set()
    )
    if finished:
        assert data[hp_metadata.SESSION_END_INFO_TAG].session_end_info.status == api_pb2.STATUS_SUCCESS
    got = {
        k: _value(v) for k, v in data[hp_metadata.SESSION_START_INFO_TAG].session_start_info.hparams.items()
    }
    assert got["train.lr"] == pytest.approx(3e-4) and got["train.max_steps"] == 30
    assert got["global_batch"] == 4 * 2 * 4 and got["world_size"] == 4
    assert got["objective.name"] == "consistency_distillation" and got["model.family"] == "unet3d"
    assert (got["objective.w_min"], got["objective.w_max"], got["reward.weights.toy_color"]) == (
        3.0,
        9.0,
        0.5,
    )
    assert (
        got["train.betas"] == "0.9,0.999"
        and got["data.kind"] == "toy"
        and got["model.lora.enabled"] == "false"
    )
    assert got == run_hparams(cfg, world_size=4)
    final = {t[len("final/") :]: acc.Scalars(t) for t in acc.Tags()["scalars"] if t.startswith("final/")}
    assert {k: (e.step, e.value) for k, (e,) in final.items()} == {
        k: (30, pytest.approx(v)) for k, v in final_metrics(ROWS).items()
    }
