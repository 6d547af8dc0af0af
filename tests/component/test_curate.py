"""Curation pipeline (python -m data_recipes.curate) on real, tiny mp4 files written here.

One module-scoped run curates eight synthetic videos (64x128, 10 fps) with the toy recipe, a tiny
random CLIP + aesthetic MLP and a tiny random BLIP captioner; the tests check its records, shards
and summary, then rerun it (no recomputation; an interrupted stage resumes per item; a changed
recipe reruns only the affected stages).  The CLI (Hydra multirun over chunks, config errors) runs
in subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from data_recipes import curate
from data_recipes.curate import ConfigError, load_config, validate
from data_recipes.curate import pipeline as pipeline_mod
from data_recipes.curate import scenes as scenes_mod
from data_recipes.curate import scores as scores_mod
from data_recipes.curate import video as video_mod
from data_recipes.curate.inputs import chunk_slice, list_inputs
from t2vturbo.data.shards import ClipStream
from t2vturbo.data.video_io import write_video

REPO = Path(__file__).resolve().parents[2]
FPS, H, W = 10, 64, 128
STAGE_NAMES = ("probe", "scenes", "scores", "filter", "dedup", "caption", "shards")

# --------------------------------------------------------------------------- synthetic videos


def _texture(seed: int, h: int, w: int, tint) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 5)
    n = (n - n.min()) / (n.max() - n.min())
    return n[..., None] * np.asarray(tint, np.float32)


def _moving(seed: int, tint, frames: int, dx: int = 0, dy: int = 0) -> np.ndarray:
    """A smooth random texture translating by (dx, dy) pixels per frame (no wrap-around)."""
    t = _texture(seed, H + abs(dy) * frames, W + abs(dx) * frames, tint)
    y0, x0 = (abs(dy) * frames if dy < 0 else 0), (abs(dx) * frames if dx < 0 else 0)
    clip = [t[y0 + i * dy : y0 + i * dy + H, x0 + i * dx : x0 + i * dx + W] for i in range(frames)]
    return np.stack(clip).clip(0, 255).astype(np.uint8)


def write_inputs(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    # a: 2 s of a red texture moving right, then 2 s of a blue one moving down -> a cut at 2.0 s
    two = np.concatenate([_moving(1, (255, 70, 40), 20, dx=1), _moving(2, (40, 90, 255), 20, dy=1)])
    write_video(d / "a_two.mp4", two, fps=FPS)
    (d / "a_two.txt").write_text("a red then a blue texture\n")
    # b: a still picture (sidecar json caption) -> dropped by min_motion
    write_video(d / "b_static.mp4", np.repeat(_moving(3, (200, 200, 200), 1), 20, axis=0), fps=FPS)
    (d / "b_static.json").write_text(json.dumps({"caption": "a still picture"}))
    # c: moving texture under large white text -> dropped by max_text_area
    text = _moving(4, (90, 90, 90), 20, dx=2)
    for f in text:
        cv2.putText(f, "TEXT", (8, 46), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (255, 255, 255), 3)
    write_video(d / "c_text.mp4", text, fps=FPS)
    (d / "c_text.txt").write_text("a texture with text")
    # d, e: the same content (e slightly brighter) in two files -> one near-duplicate group
    dup = _moving(5, (60, 230, 80), 20, dx=-1)
    write_video(d / "d_dup.mp4", dup, fps=FPS)
    (d / "d_dup.txt").write_text("a green texture")
    write_video(d / "e_dup.mp4", np.clip(dup.astype(int) + 6, 0, 255).astype(np.uint8), fps=FPS)
    (d / "e_dup.txt").write_text("the same green texture")
    # f: no caption anywhere (the captioning model, or "no caption")
    write_video(d / "f_nocap.mp4", _moving(6, (230, 200, 60), 15, dy=-1), fps=FPS)
    # g: 0.5 s -> too short; h: 5.5 s -> two 2.5 s clips + a 0.5 s remainder (too short)
    write_video(d / "g_short.mp4", _moving(7, (200, 60, 200), 5, dx=1), fps=FPS)
    (d / "g_short.txt").write_text("too short")
    write_video(d / "h_long.mp4", _moving(8, (120, 220, 220), 55, dx=2), fps=FPS)
    (d / "h_long.txt").write_text("a long cyan shot")


# Video ids are the sorted input order.
A, B, C, D, E, F, G, HL = (f"{i:08d}" for i in range(8))

# --------------------------------------------------------------------------- tiny models


class _Head(torch.nn.Module):
    """Independent copy of the improved-aesthetic-predictor layout (for saving / checking)."""

    def __init__(self, d: int):
        super().__init__()
        L, Dr = torch.nn.Linear, torch.nn.Dropout
        self.layers = torch.nn.Sequential(
            L(d, 1024), Dr(0.2), L(1024, 128), Dr(0.2), L(128, 64), Dr(0.1), L(64, 16), L(16, 1)
        )

    def forward(self, x):
        return self.layers(x)


def make_tiny_clip(d: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    try:  # transformers >= 5 without torchvision
        from transformers import CLIPImageProcessorPil as Proc
    except ImportError:  # pragma: no cover
        from transformers import CLIPImageProcessor as Proc

    d.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
        ),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(cfg).eval().save_pretrained(str(d))
    tok.save_pretrained(str(d))
    Proc(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(d))


def make_tiny_blip(d: Path) -> None:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

    try:
        from transformers import BlipImageProcessorPil as Proc
    except ImportError:  # pragma: no cover
        from transformers import BlipImageProcessor as Proc

    d.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "blue", "green", "circle",
             "square", "moving", "left", "right", "up", "down", "the", "on", "texture"]  # fmt: skip
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(d / "vocab.txt"), bos_token="[DEC]").save_pretrained(str(d))
    cfg = BlipConfig(
        text_config=dict(
            vocab_size=len(words), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=32, bos_token_id=5, pad_token_id=0, sep_token_id=3, eos_token_id=3,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
        ),
        projection_dim=16,
        image_text_hidden_size=16,
    )  # fmt: skip
    torch.manual_seed(1)
    BlipForConditionalGeneration(cfg).eval().save_pretrained(str(d))
    Proc(size={"height": 32, "width": 32}).save_pretrained(str(d))


def make_mlp(path: Path, dim: int = 16) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(2)
    save_file({k: v.contiguous() for k, v in _Head(dim).state_dict().items()}, str(path))


# --------------------------------------------------------------------------- helpers


def decode(path: str, indices) -> dict[int, np.ndarray]:
    """The test's own PyAV decode of the given frame indices (decode order)."""
    import av

    want, out = set(indices), {}
    with av.open(path) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i in want:
                out[i] = fr.to_ndarray(format="rgb24")
            if len(out) == len(want):
                break
    return out


def records(work: Path, stage: str) -> dict[str, dict]:
    lines = (work / f"{stage}.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["stage"] == stage
    return {r["id"]: r for r in map(json.loads, lines[1:])}


class Calls:
    """Counts calls of the pipeline's expensive functions (patched for the whole module)."""

    NAMES = {
        "probe": (video_mod, "probe"),
        "detect_scenes": (scenes_mod, "detect_scenes"),
        "iter_frames": (video_mod, "iter_frames"),
        "motion": (scores_mod, "motion_score"),
        "phash": (scores_mod, "phash_hex"),
        "ocr": (scores_mod.TextAreaScorer, "__call__"),
        "clip_images": (scores_mod.ClipScorer, "image_embeds"),
        "captioner": (scores_mod.Captioner, "__call__"),
        "encoder": (video_mod.ClipEncoder, "__init__"),
    }

    def __init__(self, mp: pytest.MonkeyPatch):
        self.n = dict.fromkeys(self.NAMES, 0)
        for key, (owner, attr) in self.NAMES.items():
            mp.setattr(owner, attr, self._wrap(key, getattr(owner, attr)))

    def _wrap(self, key, fn):
        def wrapped(*a, **k):
            self.n[key] += 1
            return fn(*a, **k)

        return wrapped

    def reset(self) -> dict[str, int]:
        out, self.n = self.n, dict.fromkeys(self.NAMES, 0)
        return out


def snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    """mtime + bytes of every stage file and shard."""
    files = (
        sorted(out.glob("*.tar"))
        + sorted((out / "_work").rglob("*.jsonl"))
        + sorted((out / "_work").rglob("*.done"))
    )
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


# --------------------------------------------------------------------------- the shared run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate")
    write_inputs(root / "videos")
    make_tiny_clip(root / "clip")
    make_tiny_blip(root / "blip")
    make_mlp(root / "aesthetic.safetensors")
    overrides = [
        f"input={root / 'videos'}",
        f"output={root / 'out'}",
        "curate_recipe=toy",
        f"models.clip={root / 'clip'}",
        f"models.aesthetic={root / 'aesthetic.safetensors'}",
        f"models.captioner={root / 'blip'}",
        "progress=false",
    ]
    mp = pytest.MonkeyPatch()
    calls = Calls(mp)
    summary = curate.run(load_config(overrides), command="test run 1")
    first = calls.reset()
    out = root / "out"
    yield {
        "root": root, "out": out, "work": out / "_work" / "chunk-00000-of-00001", "overrides": overrides,
        "summary": summary, "calls": calls, "first_calls": first,
    }  # fmt: skip
    mp.undo()


EXPECTED_SUMMARY = [
    {"stage": "probe", "unit": "video", "in": 8, "kept": 8, "dropped": {}},
    {"stage": "scenes", "unit": "clip", "in": 11, "kept": 9, "dropped": {"too short": 2}},
    {"stage": "scores", "unit": "clip", "in": 9, "kept": 9, "dropped": {}},
    {"stage": "filter", "unit": "clip", "in": 9, "kept": 7, "dropped": {"low motion": 1, "text": 1}},
    {"stage": "dedup", "unit": "clip", "in": 7, "kept": 6, "dropped": {"duplicate": 1}},
    {"stage": "caption", "unit": "clip", "in": 6, "kept": 6, "dropped": {}},
    {"stage": "shards", "unit": "clip", "in": 6, "kept": 6, "dropped": {}},
]


# --------------------------------------------------------------------------- pure pieces


def test_list_inputs_captions_and_chunks(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.mp4", "a.MOV", "sub/c.webm", "skip.gif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a.txt").write_text("  from txt \n")
    (tmp_path / "a.json").write_text(json.dumps({"caption": "loses to the txt"}))
    (tmp_path / "sub" / "c.json").write_text(json.dumps({"caption": "from json"}))
    got = list_inputs(tmp_path)
    assert [Path(v.path).relative_to(tmp_path).as_posix() for v in got] == ["a.MOV", "b.mp4", "sub/c.webm"]
    assert [(v.caption, v.caption_source) for v in got] == [
        ("from txt", "txt"),
        (None, None),
        ("from json", "json"),
    ]

    (tmp_path / "list.jsonl").write_text(
        json.dumps({"path": "b.mp4", "caption": "from list"})
        + "\n\n"
        + json.dumps({"path": str(tmp_path / "a.MOV")})
        + "\n"
    )
    got = list_inputs(tmp_path / "list.jsonl")
    assert [(Path(v.path).name, v.caption, v.caption_source) for v in got] == [
        ("b.mp4", "from list", "list"), ("a.MOV", "from txt", "txt"),
    ]  # fmt: skip
    (tmp_path / "list.txt").write_text("# comment\nsub/c.webm\nb.mp4\n")
    assert [Path(v.path).name for v in list_inputs(tmp_path / "list.txt")] == ["c.webm", "b.mp4"]
    (tmp_path / "bad.jsonl").write_text('{"caption": "no path"}\n')
    with pytest.raises(ValueError, match="path"):
        list_inputs(tmp_path / "bad.jsonl")

    parts = [list(chunk_slice(10, i, 4)) for i in range(4)]
    assert sum(parts, []) == list(range(10)) and [len(p) for p in parts] == [2, 3, 2, 3]


def test_split_scene_bounds():
    # 7.5 s scene at 10 fps, clips of 1..3 s: 3 s + 3 s + 1.5 s
    assert scenes_mod.split_scene(0, 75, 10, 1.0, 3.0) == ([(0, 30), (30, 60), (60, 75)], [])
    # a 0.5 s remainder is dropped; a scene shorter than min_seconds is dropped whole
    assert scenes_mod.split_scene(10, 75, 10, 1.0, 3.2) == ([(10, 42), (42, 74)], [(74, 75)])
    assert scenes_mod.split_scene(0, 9, 10, 1.0, 3.0) == ([], [(0, 9)])
    assert video_mod.spread(10, 3) == [1, 5, 8] and video_mod.spread(2, 5) == [0, 1]
    assert video_mod.output_size(128, 64, 32) == (64, 32) and video_mod.output_size(33, 65, None) == (32, 64)


def test_filters_and_dedup_order():
    t = {
        "min_motion": 1.0,
        "max_motion": 50.0,
        "max_text_area": 0.02,
        "min_aesthetic": 4.5,
        "min_clip_similarity": 0.2,
    }
    good = {"motion": 5.0, "text_area": 0.0, "aesthetic": 5.0, "clip_similarity": 0.3}
    assert scores_mod.apply_filters(good, t) == []
    for key, bad, reason in (
        ("motion", 0.5, "low motion"), ("motion", 60.0, "high motion"), ("text_area", 0.1, "text"),
        ("aesthetic", 4.0, "low aesthetic"), ("clip_similarity", 0.1, "low clip similarity"),
    ):  # fmt: skip
        assert [r for r, _ in scores_mod.apply_filters(good | {key: bad}, t)] == [reason]
    assert scores_mod.apply_filters({"motion": 0.0}, dict.fromkeys(t)) == []  # null = off
    assert scores_mod.apply_filters({}, t) == []  # absent scores pass
    assert [r for r, _ in scores_mod.apply_filters({"motion": 0.0, "text_area": 1.0}, t)] == [
        "low motion",
        "text",
    ]

    # keep the highest-scored member of a near-duplicate group
    order = scores_mod.dedup_order(["a", "b", "c", "d"], {"a": 1.0, "b": 3.0, "c": None, "d": 3.0})
    assert order == ["b", "d", "a", "c"] and scores_mod.dedup_order(["x", "y"], None) == ["x", "y"]
    idx = scores_mod.NearDuplicateIndex(max_distance=2)
    bits = {k: np.zeros((3, 64), bool) for k in "abcd"}
    bits["a"][:, :2] = True  # distance 2 from b, d (near duplicates)
    bits["c"][:, :32] = True  # distance 32 (distinct)
    kept, dup = [], {}
    for k in order:
        other, _ = idx.query(bits[k])
        if other is None:
            idx.add(k, bits[k])
            kept.append(k)
        else:
            dup[k] = other
    assert kept == ["b", "c"] and dup == {"d": "b", "a": "b"}


# --------------------------------------------------------------------------- the run's results


def test_scene_cut_two_segments(world):
    sc = records(world["work"], "scenes")
    assert sc[A]["scenes"] == [[0, 20], [20, 40]]
    assert [(c["start_frame"], c["end_frame"]) for c in sc[A]["clips"]] == [(0, 20), (20, 40)]
    # long scene split into 2.5 s clips, remainder and the short video dropped with their reason
    assert [(c["start_frame"], c["end_frame"]) for c in sc[HL]["clips"]] == [(0, 25), (25, 50)]
    assert [(d["start_frame"], d["end_frame"], d["reason"]) for d in sc[HL]["dropped"]] == [
        (50, 55, "too short")
    ]
    assert sc[G]["kept"] is False and sc[G]["dropped"][0]["reason"] == "too short"
    metas = {}
    for s in sorted(world["out"].glob("*.tar")):
        with tarfile.open(s) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    metas[m.name[:-5]] = json.loads(tf.extractfile(m).read())
    assert (metas[f"{A}_0000"]["start"], metas[f"{A}_0000"]["end"]) == (0.0, 2.0)
    assert (metas[f"{A}_0001"]["start"], metas[f"{A}_0001"]["end"]) == (2.0, 4.0)
    assert metas[f"{A}_0001"]["num_frames"] == 20 and metas[f"{A}_0001"]["fps"] == FPS


def test_motion_filter_drops_static_clip(world):
    sc, fl = records(world["work"], "scores"), records(world["work"], "filter")
    assert sc[f"{B}_0000"]["scores"]["motion"] < 0.5
    assert fl[f"{B}_0000"]["kept"] is False and fl[f"{B}_0000"]["reason"] == "low motion"
    assert "min_motion=1" in fl[f"{B}_0000"]["detail"]
    for cid in (f"{A}_0000", f"{A}_0001", f"{D}_0000", f"{F}_0000", f"{HL}_0000"):
        assert sc[cid]["scores"]["motion"] > 4.0, cid  # ~1-2 px/frame at 10 fps
        assert fl[cid]["kept"] is True


def test_ocr_filter_drops_text_clip(world):
    sc, fl = records(world["work"], "scores"), records(world["work"], "filter")
    assert sc[f"{C}_0000"]["scores"]["text_area"] > 0.1
    assert fl[f"{C}_0000"]["kept"] is False and fl[f"{C}_0000"]["reason"] == "text"
    for cid, rec in sc.items():
        if cid != f"{C}_0000":
            assert rec["scores"]["text_area"] == pytest.approx(0.0, abs=1e-3), cid


def test_dedup_merges_duplicate_files(world):
    dd = records(world["work"], "dedup")
    assert dd[f"{E}_0000"]["kept"] is False and dd[f"{E}_0000"]["reason"] == "duplicate"
    assert dd[f"{E}_0000"]["duplicate_of"] == f"{D}_0000" and dd[f"{E}_0000"]["distance"] <= 6
    assert dd[f"{D}_0000"]["kept"] is True
    assert [r["id"] for r in dd.values() if not r["kept"]] == [f"{E}_0000"]


def test_aesthetic_and_clip_similarity_match_independent_computation(world):
    from safetensors.torch import load_file
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    root = world["root"]
    model = CLIPModel.from_pretrained(str(root / "clip")).eval()
    proc = AutoImageProcessor.from_pretrained(str(root / "clip"))
    tok = AutoTokenizer.from_pretrained(str(root / "clip"))
    head = _Head(16).eval()
    head.load_state_dict(load_file(str(root / "aesthetic.safetensors")))

    def feats(o):
        return o if isinstance(o, torch.Tensor) else o.pooler_output

    probe, sc = records(world["work"], "probe"), records(world["work"], "scores")
    assert len(sc) == 9
    for cid, rec in sc.items():
        v = probe[cid.split("_")[0]]
        idx = rec["frames"]["clip"]
        assert len(idx) == 2
        frames = decode(v["path"], idx)
        px = proc(images=[frames[i] for i in idx], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            img = feats(model.get_image_features(pixel_values=px))
            img = img / img.norm(dim=-1, keepdim=True)
            aesthetic = head(img).squeeze(-1).mean().item()
        assert rec["scores"]["aesthetic"] == pytest.approx(aesthetic, abs=1e-4), cid
        if v["caption"] is None:
            assert "clip_similarity" not in rec["scores"]  # no caption to compare with
            continue
        with torch.no_grad():
            t = feats(model.get_text_features(**tok([v["caption"]], return_tensors="pt")))
            t = t / t.norm(dim=-1, keepdim=True)
        assert rec["scores"]["clip_similarity"] == pytest.approx((img @ t[0]).mean().item(), abs=1e-4), cid
    assert len({round(r["scores"]["aesthetic"], 6) for r in sc.values()}) > 3  # really frame dependent


def test_missing_or_bad_weights_give_clear_errors(world, tmp_path):
    base = world["overrides"][:3]
    with pytest.raises(ConfigError, match=r"models\.clip=.*nowhere.*no such directory.*CLIPModel"):
        load_config(base + [f"models.clip={tmp_path / 'nowhere'}"])
    with pytest.raises(
        ConfigError, match=r"models\.aesthetic=.*missing\.pth.*no such file.*layers\.\{0,2,4,6,7\}"
    ):
        load_config(
            base + [f"models.clip={world['root'] / 'clip'}", f"models.aesthetic={tmp_path / 'missing.pth'}"]
        )
    with pytest.raises(ConfigError, match=r"models\.captioner=.*no config\.json.*image-to-text"):
        load_config(base + [f"models.captioner={tmp_path}"])
    with pytest.raises(ConfigError, match="models.aesthetic needs models.clip"):
        load_config(base + [f"models.aesthetic={world['root'] / 'aesthetic.safetensors'}"])
    with pytest.raises(FileNotFoundError, match="no such file.*improved-aesthetic-predictor"):
        scores_mod.load_aesthetic_mlp(tmp_path / "missing.safetensors")
    torch.save({"fc.weight": torch.zeros(1, 16)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"unexpected aesthetic MLP weights.*fc\.weight.*layers"):
        scores_mod.load_aesthetic_mlp(tmp_path / "wrong.pth")
    torch.save(_Head(768).state_dict(), tmp_path / "l14.pth")  # a .pth state dict loads (weights_only)
    with pytest.raises(ValueError, match="takes 768-d embeddings but the CLIP model gives 16-d"):
        scores_mod.load_aesthetic_mlp(tmp_path / "l14.pth", in_dim=16)


def test_captioning_model_captions_uncaptioned_clip(world):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    cap = records(world["work"], "caption")
    cid = f"{F}_0000"
    assert cap[cid]["caption_source"] == "model" and cap[cid]["kept"] is True
    assert cap[f"{A}_0000"] == {
        **cap[f"{A}_0000"],
        "caption": "a red then a blue texture",
        "caption_source": "txt",
    }
    assert f"{B}_0000" not in cap  # filtered out before captioning
    # the same caption from the test's own call of the tiny BLIP on the clip's middle frame
    d = str(world["root"] / "blip")
    mid = 0 + 15 // 2
    frame = decode(str(world["root"] / "videos" / "f_nocap.mp4"), [mid])[mid]
    model = AutoModelForImageTextToText.from_pretrained(d).eval()
    px = AutoImageProcessor.from_pretrained(d)(images=[frame], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ids = model.generate(pixel_values=px, max_new_tokens=8, num_beams=1, do_sample=False)
    expected = AutoTokenizer.from_pretrained(d).batch_decode(ids, skip_special_tokens=True)[0].strip()
    assert expected and cap[cid]["caption"] == expected
    assert world["first_calls"]["captioner"] == 1  # only the uncaptioned clip went through the model


def test_shards_read_back_by_clipstream(world):
    out = world["out"]
    index = json.loads((out / "index.json").read_text())
    assert index["shards"] == ["clips-00000-000000.tar", "clips-00000-000001.tar"]
    assert [s["count"] for s in index["shard_info"]] == [4, 2] and index["count"] == 6
    assert index["recipe"]["name"] == "toy" and index["recipe"]["output"]["shard_size"] == 4
    chunk_index = json.loads((out / "index-00000-of-00001.json").read_text())
    assert chunk_index["command"] == "test run 1" and chunk_index["summary"] == EXPECTED_SUMMARY
    caps = {k: r["caption"] for k, r in records(world["work"], "caption").items() if r["kept"]}
    stream = ClipStream([str(out / s) for s in index["shards"]], num_frames=4, size=32)
    items = list(stream)
    assert stream.num_skipped == 0 and len(items) == 6
    assert {it["key"]: it["caption"] for it in items} == caps
    for it in items:
        assert tuple(it["video"].shape) == (4, 3, 32, 32)
        m = it["meta"]
        assert (m["width"], m["height"], m["fps"]) == (64, 32, FPS)  # short side 64 -> 32
        assert set(m["scores"]) == {"motion", "text_area", "aesthetic"} | (
            {"clip_similarity"} if m["caption_source"] != "model" else set()
        )
        assert m["source"].endswith(".mp4") and m["end"] > m["start"]


def test_summary_counts_are_exact(world, capsys):
    assert world["summary"]["stages"] == EXPECTED_SUMMARY
    saved = json.loads((world["work"] / "summary.json").read_text())
    assert saved["stages"] == EXPECTED_SUMMARY and saved["count"] == 6
    table = pipeline_mod.format_summary(EXPECTED_SUMMARY)
    assert "filter   clip    9     7  low motion: 1, text: 1" in table
    calls = world["first_calls"]
    assert (
        calls["probe"] == 8 and calls["detect_scenes"] == 8 and calls["motion"] == 9 and calls["encoder"] == 6
    )


def test_config_errors_name_the_key(world, tmp_path):
    base = world["overrides"][:3]
    with pytest.raises(ConfigError, match=r"'curate_recipe\.filter\.min_motionn'"):
        load_config(base + ["+curate_recipe.filter.min_motionn=1"])
    with pytest.raises(ConfigError, match=r"'bogus'"):
        load_config(base + ["+bogus=1"])
    raw = OmegaConf.to_container(load_config(base))
    raw["curate_recipe"]["dedup"]["max_distanse"] = 3  # a typo in a recipe file
    with pytest.raises(ConfigError, match=r"curate_recipe\.dedup\.max_distanse"):
        validate(raw)
    with pytest.raises(ConfigError, match=r"min_aesthetic is set but the aesthetic score is off"):
        load_config(base + ["curate_recipe.filter.min_aesthetic=4.5"])
    with pytest.raises(ConfigError, match="chunk.index"):
        load_config(base + ["chunk.index=4", "chunk.count=4"])
    # the CLI exits with status 2 and the key's name, before any heavy import
    r = subprocess.run(
        [sys.executable, "-m", "data_recipes.curate", f"input={tmp_path}", f"output={tmp_path / 'o'}",
         "+curate_recipe.scores.motion.sizee=3"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "curate_recipe.scores.motion.sizee" in r.stderr


def test_slurm_launcher_composes_with_the_curate_config():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(curate.CONF_DIR), version_base="1.3"):
        cfg = compose(
            "curate",
            overrides=["input=/raw", "output=/shards", "chunk.count=4", "hydra/launcher=slurm"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert OmegaConf.select(cfg, "hydra.launcher.name") == "t2vturbo-curate"
    assert OmegaConf.select(cfg, "hydra.sweep.dir").startswith("/shards/_logs/multirun/")


def test_cli_multirun_chunks_from_a_list_file(world, tmp_path):
    vids = world["root"] / "videos"
    lst = tmp_path / "list.jsonl"
    lst.write_text(
        json.dumps({"path": os.path.relpath(vids / "d_dup.mp4", tmp_path), "caption": "from the list"}) + "\n"
        + json.dumps({"path": str(vids / "h_long.mp4")}) + "\n"
    )  # fmt: skip
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "data_recipes.curate", "-m", "chunk.index=0,1", "chunk.count=2",
           f"input={lst}", f"output={out}", "curate_recipe=toy", "progress=false", "hydra/launcher=local"]  # fmt: skip
    r = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "all 2 chunk(s) done" in r.stdout
    for i in (0, 1):
        assert (out / "_work" / f"chunk-{i:05d}-of-00002" / "shards.done").is_file()
        assert (out / f"index-{i:05d}-of-00002.json").is_file()
    index = json.loads((out / "index.json").read_text())
    assert index["shards"] == ["clips-00000-000000.tar", "clips-00001-000000.tar"] and index["count"] == 3
    assert "chunk.index=1" in index["commands"][1] and index["chunks"] == 2
    assert {r["stage"]: r["kept"] for r in index["summary"]} == {
        "probe": 2, "scenes": 3, "scores": 3, "filter": 3, "dedup": 3, "caption": 3, "shards": 3,
    }  # fmt: skip
    items = list(ClipStream([str(out / s) for s in index["shards"]], num_frames=4, size=32))
    assert sorted(it["caption"] for it in items) == ["a long cyan shot", "a long cyan shot", "from the list"]
    assert {it["key"] for it in items} == {"00000000_0000", "00000001_0000", "00000001_0001"}


# --------------------------------------------------------------------------- restarts (last: they rewrite state)


def test_restart_recomputes_nothing_then_resumes_and_reruns_changed_stages(world):
    out, work, calls = world["out"], world["work"], world["calls"]
    before = snapshot(out)

    # 1. the same command again: every stage is complete -> nothing recomputed, nothing rewritten
    s2 = curate.run(load_config(world["overrides"]), command="test run 1")
    assert all(v == 0 for v in calls.reset().values())
    assert snapshot(out) == before
    assert s2["stages"] == EXPECTED_SUMMARY and s2["shards"] == world["summary"]["shards"]

    # 2. an interrupted scores stage (no done marker, last 3 records lost, a half-written line)
    lines = (work / "scores.jsonl").read_text().splitlines(keepends=True)
    (work / "scores.jsonl").write_text("".join(lines[:-3]) + '{"id": "0000')
    (work / "scores.done").unlink()
    curate.run(load_config(world["overrides"]))
    n = calls.reset()
    assert n["motion"] == 3 and n["iter_frames"] == 2 and n["probe"] == 0 and n["detect_scenes"] == 0
    assert n["encoder"] == 0 and n["captioner"] == 0  # later stages were complete with the same settings
    assert (work / "scores.jsonl").read_text() == "".join(lines)  # the same records again

    # 3. a deleted shard is rewritten alone, with the same bytes
    shard = out / "clips-00000-000001.tar"
    data = shard.read_bytes()
    shard.unlink()
    curate.run(load_config(world["overrides"]))
    n = calls.reset()
    assert n["encoder"] == 2 and n["motion"] == 0 and shard.read_bytes() == data

    # 4. a changed recipe: no captioning model + keep the highest aesthetic score in dedup
    #    -> scores untouched; dedup, caption and shards rerun
    stage_files = {s: (work / f"{s}.jsonl").stat().st_mtime_ns for s in STAGE_NAMES}
    overrides = [o for o in world["overrides"] if not o.startswith("models.captioner")]
    s3 = curate.run(load_config(overrides + ["curate_recipe.dedup.keep=aesthetic"]))
    n = calls.reset()
    assert n["motion"] == n["ocr"] == n["clip_images"] == n["detect_scenes"] == n["captioner"] == 0
    assert n["encoder"] == 5
    for s in STAGE_NAMES:
        changed = (work / f"{s}.jsonl").stat().st_mtime_ns != stage_files[s]
        assert changed == (s in ("dedup", "caption", "shards")), s
    cap = records(work, "caption")
    assert cap[f"{F}_0000"]["kept"] is False and cap[f"{F}_0000"]["reason"] == "no caption"
    sc, dd = records(work, "scores"), records(work, "dedup")
    aes = {c: sc[c]["scores"]["aesthetic"] for c in (f"{D}_0000", f"{E}_0000")}
    best = max(aes, key=aes.get)
    other = min(aes, key=aes.get)
    assert dd[best]["kept"] is True and dd[other]["duplicate_of"] == best
    rows = {r["stage"]: r for r in s3["stages"]}
    assert rows["caption"] == {
        "stage": "caption",
        "unit": "clip",
        "in": 6,
        "kept": 5,
        "dropped": {"no caption": 1},
    }
    assert rows["shards"]["kept"] == 5 and s3["shards"] == [
        "clips-00000-000000.tar",
        "clips-00000-000001.tar",
    ]
    assert len(list(ClipStream([str(out / s) for s in s3["shards"]], num_frames=4, size=32))) == 5
