"""Per-clip scores, filters and near-duplicate search (pure functions + small model wrappers).

* motion: mean Farneback optical-flow magnitude between sampled frame pairs, on grey frames
  downscaled so the short side is at most ``size``, in analysis-frame pixels per second
  (the per-pair mean magnitude divided by the pair's time gap).
* text_area: fraction of the frame covered by RapidOCR text boxes (union of the detected
  polygons / frame area), max over the sampled frames.
* aesthetic: LAION improved-aesthetic-predictor MLP on the L2-normalised CLIP image embedding,
  mean over the sampled frames.
* clip_similarity: mean over the sampled frames of cosine(CLIP image emb, CLIP caption emb).
* phash: ``imagehash.phash`` of a few frames; clips compare by the mean per-frame Hamming distance.

CLIP preprocessing is our own PIL/numpy code (no torchvision): bicubic resize of the short side to
``shortest_edge``, centre crop, ``/255``, ``(x - mean) / std`` with the values of the model
folder's ``preprocessor_config.json`` (CLIP's defaults when it has none).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from .config import AESTHETIC_LAYOUT, CAPTIONER_LAYOUT, CLIP_LAYOUT, check_model_path
from .video import spread

__all__ = [
    "FILTERS",
    "AestheticMLP",
    "Captioner",
    "ClipScorer",
    "NearDuplicateIndex",
    "TextAreaScorer",
    "apply_filters",
    "clip_preprocess",
    "dedup_order",
    "grey_small",
    "load_aesthetic_mlp",
    "motion_pairs",
    "motion_score",
    "phash_bits",
    "phash_hex",
]

#: OpenAI CLIP normalisation (the default when a CLIP folder has no preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# --------------------------------------------------------------------------- motion


def grey_small(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 grey frame, downscaled (INTER_AREA) so the short side is at most ``size``."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    s = min(h, w)
    if s > size:
        g = cv2.resize(
            g, (max(1, round(w * size / s)), max(1, round(h * size / s))), interpolation=cv2.INTER_AREA
        )
    return g


def motion_pairs(n: int, fps: float, num_pairs: int, gap_seconds: float) -> tuple[int, list[int]]:
    """``(gap, starts)``: frame pairs ``(s, s + gap)`` (clip-relative) for the motion score.

    ``gap = max(1, round(gap_seconds * fps))`` (at most ``n - 1``); starts are :func:`spread`
    over ``[0, n - gap)``.  ``gap == 0`` (a one-frame clip) means no pairs.
    """
    gap = min(max(1, int(round(gap_seconds * fps))), n - 1)
    if gap < 1:
        return 0, []
    return gap, spread(n - gap, num_pairs)


def motion_score(pairs: Sequence[tuple[np.ndarray, np.ndarray]], gap_seconds: float) -> float:
    """Mean Farneback flow magnitude over ``pairs`` of grey frames, divided by ``gap_seconds``."""
    mags = []
    for a, b in pairs:
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mags.append(float(np.sqrt((flow.astype(np.float64) ** 2).sum(-1)).mean()))
    return float(np.mean(mags)) / gap_seconds


# --------------------------------------------------------------------------- OCR


class TextAreaScorer:
    """Fraction of a frame covered by text boxes (RapidOCR detection only)."""

    def __init__(self, engine_kwargs: dict[str, Any] | None = None):
        from rapidocr_onnxruntime import RapidOCR

        self.engine = RapidOCR(**dict(engine_kwargs or {}))

    def boxes(self, rgb: np.ndarray) -> list[np.ndarray]:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        boxes, _ = self.engine(bgr, use_det=True, use_cls=False, use_rec=False)
        return [np.asarray(b, dtype=np.float64).reshape(-1, 2) for b in (boxes or [])]

    def __call__(self, rgb: np.ndarray) -> float:
        h, w = rgb.shape[:2]
        boxes = self.boxes(rgb)
        if not boxes:
            return 0.0
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(b).astype(np.int32) for b in boxes], 1)
        return float(mask.mean())


# --------------------------------------------------------------------------- phash / dedup


def phash_hex(rgb: np.ndarray, hash_size: int) -> str:
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(rgb), hash_size=hash_size))


def phash_bits(hexes: Sequence[str]) -> np.ndarray:
    """bool ``[F, hash_size**2]`` from the hex strings of :func:`phash_hex`."""
    import imagehash

    return np.stack([imagehash.hex_to_hash(h).hash.reshape(-1) for h in hexes])


class NearDuplicateIndex:
    """Kept clips' hashes; :meth:`query` finds the closest kept clip (same number of frames)."""

    def __init__(self, max_distance: float):
        self.max_distance = float(max_distance)
        self._groups: dict[tuple[int, int], tuple[list[str], list[np.ndarray]]] = {}
        self._stacked: dict[tuple[int, int], np.ndarray] = {}

    def query(self, bits: np.ndarray) -> tuple[str | None, float | None]:
        """``(kept id, distance)`` of the closest kept clip within ``max_distance``, else ``(None, d)``."""
        g = self._groups.get(bits.shape)
        if not g or not g[0]:
            return None, None
        arr = self._stacked.get(bits.shape)
        if arr is None or len(arr) != len(g[1]):
            arr = self._stacked[bits.shape] = np.stack(g[1])
        d = (arr != bits[None]).sum(-1).mean(-1)
        j = int(np.argmin(d))  # the earliest kept clip among equally close ones
        dist = float(d[j])
        return (g[0][j], dist) if dist <= self.max_distance else (None, dist)

    def add(self, clip_id: str, bits: np.ndarray) -> None:
        ids, arrs = self._groups.setdefault(bits.shape, ([], []))
        ids.append(clip_id)
        arrs.append(bits)


def dedup_order(ids: Sequence[str], values: dict[str, float | None] | None) -> list[str]:
    """The order in which dedup visits clips: ``ids`` as given (``values is None``: keep the first
    of each group), else by descending value (absent values last; input order among equals), so
    the highest-scored clip of each group is the one kept."""
    if values is None:
        return list(ids)
    return sorted(ids, key=lambda i: -math.inf if values.get(i) is None else float(values[i]), reverse=True)


# --------------------------------------------------------------------------- filters

#: (filter key, score, reason, keep test)
FILTERS = (
    ("min_motion", "motion", "low motion", lambda v, t: v >= t),
    ("max_motion", "motion", "high motion", lambda v, t: v <= t),
    ("max_text_area", "text_area", "text", lambda v, t: v <= t),
    ("min_aesthetic", "aesthetic", "low aesthetic", lambda v, t: v >= t),
    ("min_clip_similarity", "clip_similarity", "low clip similarity", lambda v, t: v >= t),
)


def apply_filters(scores: dict[str, float], thresholds: dict[str, float | None]) -> list[tuple[str, str]]:
    """``[(reason, detail), ...]`` of every failed filter, in :data:`FILTERS` order (empty: keep).

    A threshold of ``None`` is off; a score that is absent for this clip passes.
    """
    failed = []
    for key, score, reason, ok in FILTERS:
        t, v = thresholds.get(key), scores.get(score)
        if t is None or v is None or ok(v, t):
            continue
        failed.append((reason, f"{score}={v:.4g} vs {key}={t:g}"))
    return failed


# --------------------------------------------------------------------------- CLIP + aesthetic

_MLP_KEYS = [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]


class AestheticMLP(nn.Module):
    """The improved-aesthetic-predictor head: Linear layers with Dropout between, no activations."""

    def __init__(self, dims: Sequence[int] = (768, 1024, 128, 64, 16, 1)):
        super().__init__()
        d = list(dims)
        self.layers = nn.Sequential(
            nn.Linear(d[0], d[1]),
            nn.Dropout(0.2),
            nn.Linear(d[1], d[2]),
            nn.Dropout(0.2),
            nn.Linear(d[2], d[3]),
            nn.Dropout(0.1),
            nn.Linear(d[3], d[4]),
            nn.Linear(d[4], d[5]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_aesthetic_mlp(path: str | Path, in_dim: int | None = None) -> AestheticMLP:
    """Load the MLP weights (``.safetensors``, or a ``.pth``/``.pt`` state dict, never unpickled)."""
    p = check_model_path("aesthetic MLP weights", path, AESTHETIC_LAYOUT, is_dir=False)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
    if not isinstance(sd, dict) or sorted(sd) != sorted(_MLP_KEYS):
        got = sorted(sd)[:12] if isinstance(sd, dict) else type(sd).__name__
        raise ValueError(
            f"{p}: unexpected aesthetic MLP weights (got keys {got}); expected {AESTHETIC_LAYOUT}"
        )
    ws = [sd[f"layers.{i}.weight"] for i in (0, 2, 4, 6, 7)]
    dims = [int(ws[0].shape[1])] + [int(w.shape[0]) for w in ws]
    chain_ok = all(w.ndim == 2 and int(w.shape[1]) == dims[k] for k, w in enumerate(ws)) and dims[-1] == 1
    if not chain_ok:
        raise ValueError(
            f"{p}: aesthetic MLP shapes do not chain ({[tuple(w.shape) for w in ws]}); expected {AESTHETIC_LAYOUT}"
        )
    if in_dim is not None and dims[0] != in_dim:
        raise ValueError(
            f"{p}: the aesthetic MLP takes {dims[0]}-d embeddings but the CLIP model gives {in_dim}-d"
        )
    mlp = AestheticMLP(dims)
    mlp.load_state_dict({k: v.float() for k, v in sd.items()})
    return mlp.eval()


def _edge(v: Any, key: str) -> int | None:
    if isinstance(v, (int, float)):
        return int(v)
    if isinstance(v, dict):
        return int(v[key]) if key in v and v[key] is not None else None
    return None


def clip_preprocess(
    rgb: np.ndarray, shortest_edge: int, crop: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """float32 ``[3, crop_h, crop_w]``: bicubic short-side resize, centre crop, /255, normalise."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if w <= h:
        nw, nh = shortest_edge, int(shortest_edge * h / w)
    else:
        nh, nw = shortest_edge, int(shortest_edge * w / h)
    x = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BICUBIC), dtype=np.float32)
    ch, cw = crop
    top, left = max(0, (nh - ch) // 2), max(0, (nw - cw) // 2)
    x = x[top : top + ch, left : left + cw]
    if x.shape[:2] != (ch, cw):  # crop larger than the resized frame: pad with zeros, centred
        pad = np.zeros((ch, cw, 3), np.float32)
        t, lft = (ch - x.shape[0]) // 2, (cw - x.shape[1]) // 2
        pad[t : t + x.shape[0], lft : lft + x.shape[1]] = x
        x = pad
    x = (x / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


class ClipScorer:
    """CLIP image / text embeddings (L2-normalised) and the optional aesthetic MLP, from local files."""

    def __init__(self, clip_dir: str | Path, aesthetic: str | Path | None = None, device: str = "cpu"):
        from transformers import AutoTokenizer, CLIPModel

        d = check_model_path("CLIP model", clip_dir, CLIP_LAYOUT, is_dir=True)
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(str(d)).eval().to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(d))
        vc = self.model.config.vision_config
        pp: dict[str, Any] = {}
        if (d / "preprocessor_config.json").is_file():
            pp = json.loads((d / "preprocessor_config.json").read_text())
        size = _edge(pp.get("size"), "shortest_edge") or int(vc.image_size)
        crop = pp.get("crop_size")
        self.shortest_edge = size
        self.crop = (_edge(crop, "height") or size, _edge(crop, "width") or size)
        self.mean = tuple(pp.get("image_mean") or CLIP_MEAN)
        self.std = tuple(pp.get("image_std") or CLIP_STD)
        self.max_text_len = int(self.model.config.text_config.max_position_embeddings)
        self.mlp = None
        if aesthetic is not None:
            dim = int(self.model.config.projection_dim)
            self.mlp = load_aesthetic_mlp(aesthetic, in_dim=dim).to(self.device)

    @torch.no_grad()
    def image_embeds(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        x = np.stack([clip_preprocess(f, self.shortest_edge, self.crop, self.mean, self.std) for f in frames])
        px = torch.from_numpy(x).to(self.device, self.model.dtype)
        pooled = self.model.vision_model(pixel_values=px).pooler_output
        e = self.model.visual_projection(pooled).float()
        return e / e.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt"
        ).to(self.device)
        pooled = self.model.text_model(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
        ).pooler_output
        e = self.model.text_projection(pooled).float()
        return e / e.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def aesthetic(self, image_embeds: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            raise RuntimeError("no aesthetic MLP loaded")
        return self.mlp(image_embeds.float()).squeeze(-1)


def clip_scores(
    scorer: ClipScorer, frames: Sequence[np.ndarray], text_emb: torch.Tensor | None
) -> dict[str, float]:
    """``aesthetic`` (with an MLP) and ``clip_similarity`` (with a caption embedding) of one clip."""
    out: dict[str, float] = {}
    emb = scorer.image_embeds(frames)
    if scorer.mlp is not None:
        out["aesthetic"] = float(scorer.aesthetic(emb).mean())
    if text_emb is not None:
        out["clip_similarity"] = float((emb @ text_emb.reshape(-1)).mean())
    for k, v in out.items():
        if not math.isfinite(v):
            raise ValueError(f"{k} score is {v}")
    return out


# --------------------------------------------------------------------------- captioner


class Captioner:
    """A transformers image-to-text model (BLIP, GIT, VisionEncoderDecoder, ...) from a local folder."""

    def __init__(self, path: str | Path, device: str = "cpu", max_new_tokens: int = 30, num_beams: int = 1):
        import transformers
        from transformers import AutoImageProcessor, AutoTokenizer

        d = check_model_path("captioning model", path, CAPTIONER_LAYOUT, is_dir=True)
        auto = (
            getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
        )
        self.device = torch.device(device)
        self.processor = AutoImageProcessor.from_pretrained(str(d))
        self.tokenizer = AutoTokenizer.from_pretrained(str(d))
        self.model = auto.from_pretrained(str(d)).eval().to(self.device)
        self.gen = {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams), "do_sample": False}

    @torch.no_grad()
    def __call__(self, frames: Sequence[np.ndarray]) -> list[str]:
        px = self.processor(images=list(frames), return_tensors="pt")["pixel_values"]
        out = self.model.generate(pixel_values=px.to(self.device, self.model.dtype), **self.gen)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
