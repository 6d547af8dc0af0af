"""Component tests for the transformers-backed rewards: xclip, vader_objects, vader_action, vjepa_consistency.

Every model is a tiny randomly initialised config of the real transformers class (no weights
are downloaded).  Random weights make rankings meaningless, so the tests check the protocol
(shape, dtype, finiteness, gradient, determinism), exact agreement with the models' own
forward passes / post-processing where the math allows, prompt (in)dependence, loading
round-trips and error messages.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from t2vturbo.rewards import available, build
from t2vturbo.rewards.vader import (
    VaderActionReward,
    VaderObjectReward,
    VJEPAConsistencyReward,
    future_mask,
    match_action,
    random_mask,
    tube_mask,
)
from t2vturbo.rewards.xclip import XCLIPReward, resample_frames, uniform_frame_indices

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
NAMES = {"xclip": "video", "vader_objects": "image", "vader_action": "video", "vjepa_consistency": "video"}
#: constructor arguments that tiny() sets and from_pretrained() must be given again
LOAD_KW = {"vader_objects": {"shortest_edge": 32}, "vjepa_consistency": {"num_frames": 4}}
PROMPTS = ["a man playing guitar on stage", "a woman jogging in the park"]

_TINY: dict[str, object] = {}


def tiny(name: str):
    """One tiny reward per name for the module (they are frozen, so sharing is safe)."""
    if name not in _TINY:
        _TINY[name] = build(name, tiny=True)
    return _TINY[name]


def clip(b=2, f=6, h=24, w=40, seed=0, requires_grad=False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, f, 3, h, w, generator=g) * 2 - 1
    return x.requires_grad_(requires_grad)


def save(reward, folder: Path) -> Path:
    reward.model.save_pretrained(folder)
    if isinstance(reward, XCLIPReward):
        reward.tokenizer.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- common protocol


def test_listed_with_kind_by_cli():
    out = subprocess.run(
        [sys.executable, "-m", "t2vturbo.rewards", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[1:] if line.strip()}
    for name, kind in NAMES.items():
        assert rows.get(name) == kind, (name, out.stdout)
    assert "rewards.xclip failed" not in out.stderr and "rewards.vader failed" not in out.stderr, out.stderr


@pytest.mark.parametrize("name", NAMES)
def test_registry_kind_and_expects(name):
    cls = available()[name]
    assert cls.kind == NAMES[name]
    assert "config.json" in cls.expects and "model.safetensors" in cls.expects


@pytest.mark.parametrize("name", NAMES)
def test_shape_finite_deterministic_and_gradient(name):
    reward = tiny(name)
    x = clip(requires_grad=True)
    r = reward(x, PROMPTS)
    assert r.shape == (2,) and r.dtype == torch.float32 and torch.isfinite(r).all()
    assert torch.equal(r.detach(), reward(x.detach(), PROMPTS))  # deterministic
    r.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in reward.parameters())  # frozen: the gradient goes to the pixels


@pytest.mark.parametrize("name", NAMES)
def test_from_pretrained_round_trip(name, tmp_path):
    reward = tiny(name)
    loaded = build(name, pretrained=save(reward, tmp_path / name), **LOAD_KW.get(name, {}))
    assert type(loaded) is type(reward)
    x = clip(seed=3)
    assert torch.equal(loaded(x, PROMPTS), reward(x, PROMPTS))


@pytest.mark.parametrize("name", NAMES)
def test_missing_folder_names_path_and_files(name, tmp_path):
    missing = tmp_path / "no_such_weights"
    with pytest.raises(FileNotFoundError) as e:
        build(name, pretrained=missing)
    msg = str(e.value)
    assert str(missing) in msg and "config.json" in msg and "model.safetensors | pytorch_model.bin" in msg


@pytest.mark.parametrize("name", NAMES)
def test_missing_weight_file_names_it(name, tmp_path):
    folder = save(tiny(name), tmp_path / name)
    for f in folder.glob("model*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: model\.safetensors \| pytorch_model\.bin") as e:
        build(name, pretrained=folder)
    assert str(folder) in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_build_without_weights_says_which_key_to_set(name):
    with pytest.raises(ValueError) as e:
        build(name)
    msg = str(e.value)
    assert f"reward.paths.{name}=DIR" in msg and "config.json" in msg and "tiny=True" in msg


@pytest.mark.parametrize("name", NAMES)
def test_clamp_stops_gradient_of_out_of_range_pixels(name):
    reward = tiny(name)
    assert reward.clamp  # default, as VADER clamps the decoded frames
    x = clip(b=2, f=3, seed=5)
    x[..., :4, :] = 1.5  # the top rows are out of range
    x.requires_grad_(True)
    reward(x, PROMPTS).sum().backward()
    assert (x.grad[..., :4, :] == 0).all() and x.grad[..., 4:, :].abs().sum() > 0


def test_uniform_frame_indices():
    assert uniform_frame_indices(16, 8).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    assert uniform_frame_indices(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert uniform_frame_indices(6, 4).tolist() == [0, 1, 3, 4]
    x = torch.arange(6.0).reshape(1, 6, 1, 1, 1)
    assert resample_frames(x, 4).flatten().tolist() == [0.0, 1.0, 3.0, 4.0]


# --------------------------------------------------------------------------- xclip


def test_xclip_equals_model_forward_diagonal():
    reward = tiny("xclip")
    x = clip(b=3, seed=1)
    prompts = ["a dog running", "a red car", "two people dancing"]
    r = reward(x, prompts)
    with torch.no_grad():
        out = reward.model(pixel_values=reward.preprocess(x), **reward.tokenize(prompts, "cpu"))
    expected = out.logits_per_video.diagonal() / reward.model.logit_scale.exp()
    torch.testing.assert_close(r, expected, atol=1e-6, rtol=1e-5)
    assert reward.preprocess(x).shape == (3, 4, 3, 32, 32)  # vision_config.num_frames, image_size


def test_xclip_unconditioned_is_two_tower_cosine():
    base = tiny("xclip")
    reward = XCLIPReward(base.model, base.tokenizer, prompt_conditioned=False)
    x = clip(seed=2)
    with torch.no_grad():
        v = base.model.get_video_features(pixel_values=base.preprocess(x)).pooler_output
        t = base.model.get_text_features(**base.tokenize(PROMPTS, "cpu")).pooler_output
    torch.testing.assert_close(reward(x, PROMPTS), F.cosine_similarity(v, t, dim=-1), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(reward(x, PROMPTS), base(x, PROMPTS))  # the prompt generator matters


def test_xclip_depends_on_prompt_and_is_bounded():
    reward = tiny("xclip")
    x = clip(b=1, seed=4).expand(3, -1, -1, -1, -1)
    r = reward(x, ["a cat", "a man playing guitar", "snow falling on a quiet street"])
    assert len(set(r.tolist())) == 3 and (r.abs() <= 1 + 1e-6).all()


def test_xclip_missing_tokenizer_is_named(tmp_path):
    folder = tmp_path / "xclip"
    tiny("xclip").model.save_pretrained(folder)  # no tokenizer files
    with pytest.raises(FileNotFoundError, match="tokenizer.json | vocab.json") as e:
        build("xclip", pretrained=folder)
    assert str(folder) in str(e.value)


# --------------------------------------------------------------------------- vader_objects


def test_vader_objects_matches_yolos_post_processing():
    """VADER's loss: mean over post_process_object_detection(threshold=0.2) scores of the target label."""
    from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil

    reward = tiny("vader_objects")
    x = clip(b=2, f=3, seed=5)
    with torch.no_grad():
        outputs = reward.model(pixel_values=reward.preprocess(x))
    results = YolosImageProcessorPil().post_process_object_detection(outputs, threshold=0.2)
    per_image = []
    for res in results:
        s = res["scores"][res["labels"] == reward.target_id]
        per_image.append(s.mean() if len(s) else torch.tensor(0.0))
    expected = 1 - torch.stack(per_image).reshape(2, 3).mean(1)
    assert any(len(res["scores"][res["labels"] == reward.target_id]) for res in results)  # a non-trivial case
    torch.testing.assert_close(reward(x, PROMPTS), expected, atol=1e-6, rtol=1e-5)


def test_vader_objects_gradient_through_detections_and_max_reduction():
    reward = tiny("vader_objects")
    x = clip(b=2, f=3, seed=5, requires_grad=True)
    reward(x, PROMPTS).sum().backward()
    assert x.grad.abs().sum() > 0
    dense = VaderObjectReward(reward.model, target="book", reduction="max", shortest_edge=32)
    p = dense.target_probs(x.detach())
    torch.testing.assert_close(dense(x.detach(), PROMPTS), 1 - p[..., dense.target_id].amax(-1).mean(1))


def test_vader_objects_depends_on_target_not_prompt():
    reward = tiny("vader_objects")
    x = clip(b=1, f=3, seed=6).expand(2, -1, -1, -1, -1)
    r = reward(x, ["a library full of books", "an empty field"])
    assert r[0] == r[1]  # the prompt is not read (VADER's target comes from the config)
    dog = VaderObjectReward(reward.model, target="dog", shortest_edge=32)
    assert not torch.equal(dog(x, PROMPTS), r) and dog.target_id == 2
    assert VaderObjectReward(reward.model, target="Book", shortest_edge=32).target_id == 1  # case-insensitive
    with pytest.raises(ValueError, match="not a class of the detector.*book, cat, dog, person"):
        VaderObjectReward(reward.model, target="unicorn")


def test_vader_objects_resizes_short_side():
    reward = VaderObjectReward(tiny("vader_objects").model, shortest_edge=48)
    assert reward.preprocess(clip(h=24, w=40)).shape == (12, 3, 48, 80)


# --------------------------------------------------------------------------- vader_action

LABELS = {
    0: "playing guitar",
    1: "playing piano",
    2: "riding scooter",
    3: "skiing (not slalom or crosscountry)",
    4: "jogging",
}


def test_match_action_rules():
    assert match_action("Playing guitar", LABELS) == 0  # the prompt is a label
    assert match_action("A man is playing piano, slowly.", LABELS) == 1  # label phrase in the prompt
    assert match_action("a kid skiing down a hill", LABELS) == 3  # head of a parenthesised label
    labels = {**LABELS, 5: "guitar"}
    assert match_action("someone playing guitar", labels) == 0  # the longest label wins
    assert match_action("a guitarist on stage", LABELS, aliases={"guitarist": "playing guitar"}) == 0
    assert match_action("a cat sleeping", LABELS, default_label="jogging") == 4
    assert match_action("a man jogging", LABELS, default_label="playing piano") == 4  # labels before default
    with pytest.raises(ValueError, match="no action class found in prompt 'a cat sleeping'"):
        match_action("a cat sleeping", LABELS)
    assert match_action("pianos everywhere", {0: "piano"}, default_label="piano") == 0
    with pytest.raises(ValueError):
        match_action("pianos everywhere", {0: "piano"})  # whole words only


def test_vader_action_is_log_prob_of_matched_class():
    reward = tiny("vader_action")
    x = clip(b=1, seed=7).expand(5, -1, -1, -1, -1)
    prompts = ["playing guitar", "a man playing piano", "riding scooter", "skiing fast", "jogging"]
    r = reward(x, prompts)
    logp = reward.log_probs(x[:1])[0]
    torch.testing.assert_close(r, logp)  # prompt i names class i
    assert len(set(r.tolist())) == 5 and (r < 0).all()
    torch.testing.assert_close(r.exp().sum(), torch.tensor(1.0))


def test_vader_action_unknown_prompt_and_bad_config():
    model = tiny("vader_action").model
    with pytest.raises(ValueError, match="no action class found"):
        tiny("vader_action")(clip(b=1), ["a cat sleeping"])
    fallback = VaderActionReward(model, default_label="jogging")
    torch.testing.assert_close(fallback(clip(b=1), ["a cat sleeping"]), fallback(clip(b=1), ["jogging"]))
    with pytest.raises(ValueError, match="not a label of the classifier"):
        VaderActionReward(model, aliases={"guitarist": "shredding"})


def test_vader_action_num_frames_override(tmp_path):
    folder = save(tiny("vader_action"), tmp_path / "videomae")
    reward = build("vader_action", pretrained=folder, num_frames=2)
    assert reward.num_frames == 2 and reward.preprocess(clip()).shape == (2, 2, 3, 32, 32)
    assert torch.isfinite(reward(clip(), PROMPTS)).all()


# --------------------------------------------------------------------------- vjepa_consistency


def test_vjepa_masks_partition_the_tokens():
    for ctx, tgt in (tube_mask(2, 4, 4, 0.5), future_mask(4, 2, 2, 0.5), random_mask(2, 4, 4, 0.3, seed=1)):
        both = torch.cat([ctx, tgt]).sort().values
        assert torch.equal(both, torch.arange(both.numel())) and len(ctx) and len(tgt)
    ctx, tgt = tube_mask(2, 4, 4, 0.5)  # centred 3 x 3 block (round(4 * sqrt(.5)) = 3) in both time slots
    assert tgt.tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10, 16, 17, 18, 20, 21, 22, 24, 25, 26]
    assert future_mask(4, 2, 2, 0.5)[1].tolist() == list(range(8, 16))
    assert torch.equal(random_mask(2, 4, 4, 0.3, seed=1)[1], random_mask(2, 4, 4, 0.3, seed=1)[1])


def test_vjepa_encoder_path_matches_transformers():
    reward = tiny("vjepa_consistency")
    x = reward.preprocess(clip(seed=8))
    with torch.no_grad():
        tokens = reward.model.encoder.embeddings(x)
        ref = reward.model.get_vision_features(x)
        ids = torch.arange(tokens.shape[1])[None].expand(2, -1)
        torch.testing.assert_close(reward.encode(tokens), ref)
        torch.testing.assert_close(reward.encode(tokens, ids), ref)  # the position-mask (context) path


def test_vjepa_score_is_minus_l1_and_prompt_independent():
    reward = tiny("vjepa_consistency")
    x = clip(seed=9)
    z_hat, h = reward.features(x)
    assert z_hat.shape == h.shape == (2, reward.target_ids.numel(), 32)
    r = reward(x, PROMPTS)
    torch.testing.assert_close(r, -(z_hat - h).abs().mean(dim=(1, 2)))
    assert torch.equal(r, reward(x, ["anything", "else"])) and (r < 0).all()


def test_vjepa_mask_modes_and_detached_target():
    base = tiny("vjepa_consistency")
    x = clip(seed=10, requires_grad=True)
    for mask in ("future", "random"):
        r = VJEPAConsistencyReward(base.model, num_frames=4, mask=mask)(x, PROMPTS)
        assert torch.isfinite(r).all() and not torch.allclose(r, base(x, PROMPTS))
    detached = VJEPAConsistencyReward(base.model, num_frames=4, detach_target=True)
    torch.testing.assert_close(detached(x, PROMPTS), base(x, PROMPTS))
    g_full = torch.autograd.grad(base(x, PROMPTS).sum(), x)[0]
    g_det = torch.autograd.grad(detached(x, PROMPTS).sum(), x)[0]
    assert g_det.abs().sum() > 0 and not torch.allclose(g_full, g_det)
    with pytest.raises(ValueError, match="multiple of tubelet_size"):
        VJEPAConsistencyReward(base.model, num_frames=3)
