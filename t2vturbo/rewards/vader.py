"""VADER-style rewards (Prabhudesai et al. 2024, "Video Diffusion Alignment via Reward Gradients").

Three rewards on transformers models, all differentiable w.r.t. the frames and all with
torch-only preprocessing: pixels mapped to [0, 1] and clamped (``clamp=True``, as VADER's
loss functions do; ``clamp=False`` keeps the gradient of out-of-range pixels), resized,
normalised with the ImageNet mean / std (every model here uses it).

``vader_objects`` (kind ``image``) — object removal with :class:`~transformers.YolosForObjectDetection`.
    VADER's ``objectDetection`` reward (``VADER-VideoCrafter/scripts/main/train_t2v_lora.py``):
    the target class comes from the config (``--target_object``, default ``"book"``), not
    from the prompt, and the score reproduces ``post_process_object_detection(threshold=0.2)``
    in a differentiable way.  Per frame, with ``p_q = softmax(logits_q)`` over the K classes
    plus the final "no object" class of detection query ``q``::

        s_q = max_{c<K} p_q[c],  l_q = argmax_{c<K} p_q[c]
        D   = {q : l_q = target and s_q > threshold}                (threshold = 0.2)
        reduction="vader" (default):  loss = mean_{q in D} p_q[target]   (0 when D is empty)
        reduction="max":              loss = max_q p_q[target]           (dense gradient)
        r   = mean over frames of (1 - loss)                            in [0, 1]

    1 means "no target detected".  With ``"vader"`` the gradient flows through the selected
    queries' probabilities only (the selection itself is a hard mask, as in VADER), so a frame
    with no detection has zero gradient; ``"max"`` always pushes down the most confident query.
    Frames: short side resized to ``shortest_edge`` (512, VADER's resize height and
    ``hustvl/yolos-tiny``'s processor; the long side keeps the aspect ratio, capped at 1333),
    bilinear, no crop.

``vader_action`` (kind ``video``) — action classification with
    :class:`~transformers.VideoMAEForVideoClassification` (Kinetics-400,
    ``MCG-NJU/videomae-base-finetuned-kinetics``).  VADER's ``actpred`` reward minimises the
    cross-entropy of the prompt's Kinetics class, i.e. maximises::

        r = log softmax(VideoMAE(x))[a(prompt)]                          in (-inf, 0]

    ``x``: the clip resampled to ``config.num_frames`` frames
    (:func:`~t2vturbo.rewards.xclip.uniform_frame_indices`), short side resized to
    ``config.image_size`` and centre-cropped (the VideoMAE processor; VADER squashes to
    224 x 224 instead).  ``from_pretrained(path, num_frames=n)`` overrides the clip length
    as VADER does (VideoMAE's position table is a fixed sinusoid built from the config).
    The action ``a(prompt)`` is found by :func:`match_action`: the prompt itself when it is a
    label (VADER passes the label as the prompt), else the longest label that occurs in the
    prompt as a whole-word phrase (``"a man playing guitar on stage"`` -> ``"playing guitar"``),
    else the ``aliases`` (keyword -> label, e.g. ``{"guitar": "playing guitar"}``; VADER
    hard-codes such a table), else ``default_label``, else :class:`ValueError`.

``vjepa_consistency`` (kind ``video``) — temporal consistency with V-JEPA 2
    (:class:`~transformers.VJEPA2Model`, encoder + predictor).  VADER reports a V-JEPA reward
    for temporal consistency but released no code for it; this is our design, the V-JEPA 2
    pre-training objective evaluated on the generated clip (``facebookresearch/vjepa2``,
    ``app/vjepa/train.py``: context encoder on the visible tokens, predictor, target =
    ``layer_norm`` of the encoder on the full clip, loss ``mean |z - h|^p / p`` with
    ``p = loss_exp = 1``)::

        x      = clip resampled to num_frames (16, V-JEPA 2's pre-training clip length),
                 short side -> int(S * 256 / 224), centre crop S = config.crop_size
        e      = patch (tubelet) embeddings of x           [B, N, D], N = T/t * (S/p)^2
        C, M   = context / target token ids (disjoint, C u M = all tokens), from ``mask``
        z      = Enc(e[C]; RoPE positions C)               context encoder: visible tokens only
        h      = LN(Enc(e))[M]                             target encoder: full clip, plain LN
        z_hat  = Pred(z, C, M)                             predicted features of the masked tokens
        r      = -mean_{M, d} |z_hat - h|^p / p            (p = 1: minus the mean L1 error)

    A clip whose hidden part is predictable from the rest scores higher.  Masks
    (deterministic, the same for every clip): ``"tube"`` (default) hides a centred spatial
    block of ``mask_ratio`` of the frame area through *all* time steps — V-JEPA's
    tube / multi-block masks, the distribution the released predictor was trained on
    (the predictor's mask token 1 is its "large block" token); ``"future"`` hides the last
    ``mask_ratio`` of the temporal slots (predict the future from the past — most directly
    temporal, but out of the predictor's training distribution); ``"random"`` hides a
    seeded random ``mask_ratio`` of the tokens.  ``detach_target=True`` stops the gradient
    through the target branch (V-JEPA's stop-gradient); by default the reward is
    differentiated through both branches, since both depend on the clip.
    Caveats: a static or blank clip is trivially predictable, so this reward is meant as
    a regulariser beside prompt-alignment rewards, not alone.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from transformers import VideoMAEConfig, VideoMAEForVideoClassification, YolosConfig, YolosForObjectDetection

from .base import IMAGENET_MEAN, IMAGENET_STD, Reward, normalize, resize_center_crop, to_unit_range
from .registry import register
from .xclip import load_pretrained, missing_weights_error, resample_frames

__all__ = [
    "VJEPAConsistencyReward",
    "VaderActionReward",
    "VaderObjectReward",
    "future_mask",
    "match_action",
    "normalize_text",
    "random_mask",
    "resize_short_side",
    "tube_mask",
]


def _param_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def resize_short_side(x: torch.Tensor, shortest: int, longest: int | None = None) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` so the short side is ``shortest`` (aspect kept, bilinear, antialiased).

    If the long side would then exceed ``longest`` it is scaled to ``longest`` instead (the
    DETR / YOLOS processor rule).  No resize when the size already matches.
    """
    h, w = x.shape[-2:]
    scale = shortest / min(h, w)
    if longest is not None and max(h, w) * scale > longest:
        scale = longest / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if (nh, nw) == (h, w):
        return x
    return F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


# =========================================================================== vader_objects


@register("vader_objects")
class VaderObjectReward(Reward):
    """Object removal: ``1 -`` the detector's confidence in the configured ``target`` class."""

    kind = "image"
    expects = (
        "a transformers YolosForObjectDetection folder (e.g. hustvl/yolos-base or hustvl/yolos-tiny): "
        "config.json (with id2label holding the target class), model.safetensors | pytorch_model.bin"
    )
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(
        self,
        model=None,
        target: str = "book",
        threshold: float = 0.2,
        reduction: str = "vader",
        shortest_edge: int = 512,
        longest_edge: int = 1333,
        clamp: bool = True,
    ):
        super().__init__()
        if model is None:
            raise missing_weights_error(type(self))
        if reduction not in ("vader", "max"):
            raise ValueError(f"reduction must be 'vader' or 'max', got {reduction!r}")
        self.model = model
        self.target = str(target)
        self.target_id = self._label_id(model.config, self.target)
        self.threshold = float(threshold)
        self.reduction = reduction
        self.shortest_edge = int(shortest_edge)
        self.longest_edge = int(longest_edge)
        self.clamp = bool(clamp)
        self.freeze()

    @staticmethod
    def _label_id(config, target: str) -> int:
        label2id = {str(k): int(v) for k, v in config.label2id.items()}
        if target in label2id:
            return label2id[target]
        folded = {k.lower(): v for k, v in label2id.items()}
        if target.strip().lower() in folded:
            return folded[target.strip().lower()]
        names = sorted(k for k in label2id if k != "N/A")
        raise ValueError(
            f"vader_objects: target {target!r} is not a class of the detector; known classes: {', '.join(names)}"
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> VaderObjectReward:
        model = load_pretrained(
            YolosForObjectDetection, path, layout_hint=f"{cls.name!r} expects {cls.expects}"
        )
        return cls(model, **kwargs)

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        labels: tuple[str, ...] = ("person", "book", "dog", "cat"),
        shortest_edge: int = 32,
        **kwargs,
    ) -> VaderObjectReward:
        """Random tiny YOLOS (2 layers, width 32, patch 8, 10 detection tokens, unit-scale init) over ``labels``."""
        config = YolosConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            image_size=[32, 32],
            patch_size=8,
            num_detection_tokens=10,
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
        torch.manual_seed(seed)
        model = YolosForObjectDetection(config)
        # YOLOS zero-initialises its detection tokens and position embeddings and uses std 0.02
        # weights: every query would then give the same near-uniform class probabilities.
        # Unit-scale weights make the tiny detector's queries differ and its scores spread.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name or name.endswith("bias"):
                    continue
                std = p[0].numel() ** -0.5 if name.endswith("weight") else 1.0
                p.normal_(0.0, std)
        return cls(model, shortest_edge=shortest_edge, **kwargs)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, F, 3, H, W]`` in [-1, 1] -> ``[B*F, 3, h, w]`` detector input."""
        x = to_unit_range(frames, clamp=self.clamp).flatten(0, 1)
        x = resize_short_side(x, self.shortest_edge, self.longest_edge)
        return normalize(x, self.mean, self.std).to(_param_dtype(self.model))

    def target_probs(self, frames: torch.Tensor) -> torch.Tensor:
        """``softmax`` over classes + "no object" per query: ``[B, F, Q, K+1]``."""
        logits = self.model(pixel_values=self.preprocess(frames)).logits.float()
        return logits.softmax(-1).reshape(*frames.shape[:2], *logits.shape[1:])

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        p = self.target_probs(frames)  # [B, F, Q, K+1]
        pt = p[..., self.target_id]  # [B, F, Q]
        if self.reduction == "max":
            loss = pt.amax(dim=-1)
        else:
            s, lab = p[..., :-1].max(dim=-1)
            sel = ((lab == self.target_id) & (s > self.threshold)).to(pt.dtype).detach()
            loss = (pt * sel).sum(-1) / sel.sum(-1).clamp_min(1.0)
        return (1.0 - loss).mean(dim=1)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, target={self.target!r}, threshold={self.threshold}, "
            f"reduction={self.reduction!r}, shortest_edge={self.shortest_edge}"
        )


# =========================================================================== vader_action


def normalize_text(text: str) -> str:
    """Lower-case, every run of non-alphanumerics -> one space, stripped."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _contains_phrase(text: str, phrase: str) -> bool:
    return bool(phrase) and f" {phrase} " in f" {text} "


def match_action(
    prompt: str,
    labels: Mapping[int, str],
    aliases: Mapping[str, str] | None = None,
    default_label: str | None = None,
) -> int:
    """The class id of the action named by ``prompt`` (rule in order, on :func:`normalize_text` forms).

    1. the prompt *is* a label (VADER's case);
    2. labels occurring in the prompt as a whole-word phrase — the longest wins (most
       characters, then lowest id); a label with a parenthesised qualifier also matches
       by its head (``"skiing (not slalom or crosscountry)"`` by ``"skiing"``);
    3. ``aliases`` (keyword or phrase -> label) occurring as a whole-word phrase, longest first;
    4. ``default_label``;
    5. otherwise :class:`ValueError` naming the prompt.
    """
    text = normalize_text(prompt)
    names = {i: normalize_text(name) for i, name in labels.items()}
    by_name = {}
    for i in sorted(names):
        by_name.setdefault(names[i], i)
    if text in by_name:
        return by_name[text]
    best: tuple[int, int] | None = None  # (-length, id)
    for i in sorted(labels):
        forms = {names[i], normalize_text(str(labels[i]).split("(")[0])}
        for form in forms:
            if _contains_phrase(text, form):
                key = (-len(form), i)
                best = key if best is None or key < best else best
    if best is not None:
        return best[1]
    for keyword, label in sorted(
        (aliases or {}).items(), key=lambda kv: (-len(normalize_text(kv[0])), kv[0])
    ):
        if _contains_phrase(text, normalize_text(keyword)):
            return by_name[normalize_text(label)]
    if default_label is not None:
        return by_name[normalize_text(default_label)]
    raise ValueError(
        f"vader_action: no action class found in prompt {prompt!r} (no label occurs in it); "
        "pass aliases={'keyword': 'label'} or default_label='label' (reward.kwargs.vader_action)"
    )


@register("vader_action")
class VaderActionReward(Reward):
    """Log-probability of the prompt's action class under a VideoMAE Kinetics classifier."""

    kind = "video"
    expects = (
        "a transformers VideoMAEForVideoClassification folder (e.g. MCG-NJU/videomae-base-finetuned-kinetics): "
        "config.json (with id2label), model.safetensors | pytorch_model.bin"
    )
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(
        self,
        model=None,
        aliases: Mapping[str, str] | None = None,
        default_label: str | None = None,
        clamp: bool = True,
    ):
        super().__init__()
        if model is None:
            raise missing_weights_error(type(self))
        self.model = model
        self.labels = {int(k): str(v) for k, v in model.config.id2label.items()}
        known = {normalize_text(v) for v in self.labels.values()}
        self.aliases = {str(k): str(v) for k, v in (aliases or {}).items()}
        for label in [*self.aliases.values(), *([default_label] if default_label is not None else [])]:
            if normalize_text(label) not in known:
                raise ValueError(
                    f"vader_action: {label!r} (aliases / default_label) is not a label of the classifier"
                )
        self.default_label = default_label
        self.clamp = bool(clamp)
        self.num_frames = int(model.config.num_frames)
        size = model.config.image_size
        self.image_size = int(size) if isinstance(size, int) else int(size[0])
        self._cache: dict[str, int] = {}
        self.freeze()

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, num_frames: int | None = None, **kwargs
    ) -> VaderActionReward:
        """``num_frames`` (optional) overrides the config's clip length, as VADER does."""
        over = {} if num_frames is None else {"num_frames": int(num_frames)}
        model = load_pretrained(
            VideoMAEForVideoClassification, path, layout_hint=f"{cls.name!r} expects {cls.expects}", **over
        )
        return cls(model, **kwargs)

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        labels: tuple[str, ...] = (
            "playing guitar",
            "playing piano",
            "riding scooter",
            "skiing (not slalom or crosscountry)",
            "jogging",
        ),
        num_frames: int = 4,
        **kwargs,
    ) -> VaderActionReward:
        """Random tiny VideoMAE classifier (2 layers, width 32, 32 px, ``num_frames`` frames)."""
        config = VideoMAEConfig(
            image_size=32,
            patch_size=16,
            num_frames=num_frames,
            tubelet_size=2,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
        torch.manual_seed(seed)
        return cls(VideoMAEForVideoClassification(config), **kwargs)

    def action_id(self, prompt: str) -> int:
        """Class id of ``prompt``'s action (:func:`match_action`, cached)."""
        if prompt not in self._cache:
            self._cache[prompt] = match_action(prompt, self.labels, self.aliases, self.default_label)
        return self._cache[prompt]

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        x = resample_frames(frames, self.num_frames)
        x = resize_center_crop(to_unit_range(x, clamp=self.clamp), self.image_size, mode="bilinear")
        return normalize(x, self.mean, self.std).to(_param_dtype(self.model))

    def log_probs(self, frames: torch.Tensor) -> torch.Tensor:
        """``log softmax`` over the classes, ``[B, num_labels]``."""
        return self.model(pixel_values=self.preprocess(frames)).logits.float().log_softmax(-1)

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        ids = torch.tensor([self.action_id(p) for p in prompts], dtype=torch.long)
        logp = self.log_probs(frames)
        return logp.gather(1, ids.to(logp.device)[:, None]).squeeze(1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_frames={self.num_frames}, image_size={self.image_size}"


# =========================================================================== vjepa_consistency


def tube_mask(t_slots: int, gh: int, gw: int, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context ids, target ids)``: a centred spatial block of ~``ratio`` of the area, every time slot.

    Token id ``= t * gh * gw + row * gw + col`` (the order of V-JEPA 2's patch embedding).
    The block is ``bh x bw`` with ``bh = round(gh sqrt(ratio))`` (likewise ``bw``), clamped so
    that at least one row / column stays visible.
    """
    bh = min(max(1, round(gh * math.sqrt(ratio))), max(1, gh - 1))
    bw = min(max(1, round(gw * math.sqrt(ratio))), max(1, gw - 1))
    top, left = (gh - bh) // 2, (gw - bw) // 2
    hidden = torch.zeros(gh, gw, dtype=torch.bool)
    hidden[top : top + bh, left : left + bw] = True
    hidden = hidden.flatten().repeat(t_slots)
    ids = torch.arange(t_slots * gh * gw)
    return ids[~hidden], ids[hidden]


def future_mask(t_slots: int, gh: int, gw: int, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context ids, target ids)``: the last ``max(1, round(ratio * t_slots))`` time slots hidden."""
    if t_slots < 2:
        raise ValueError("mask='future' needs at least 2 temporal slots (num_frames >= 2 * tubelet_size)")
    k = min(max(1, round(ratio * t_slots)), t_slots - 1)
    ids = torch.arange(t_slots * gh * gw)
    cut = (t_slots - k) * gh * gw
    return ids[:cut], ids[cut:]


def random_mask(
    t_slots: int, gh: int, gw: int, ratio: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context ids, target ids)``: a seeded random ``ratio`` of the tokens hidden (sorted ids)."""
    n = t_slots * gh * gw
    k = min(max(1, round(ratio * n)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


_MASKS = {"tube": tube_mask, "future": future_mask, "random": random_mask}


@register("vjepa_consistency")
class VJEPAConsistencyReward(Reward):
    """Minus V-JEPA 2's masked feature-prediction error on the clip (module docstring)."""

    kind = "video"
    expects = (
        "a transformers VJEPA2Model folder with the predictor (e.g. facebook/vjepa2-vitl-fpc64-256): "
        "config.json, model.safetensors | pytorch_model.bin"
    )
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(
        self,
        model=None,
        num_frames: int = 16,
        mask: str = "tube",
        mask_ratio: float = 0.5,
        seed: int = 0,
        loss_exp: float = 1.0,
        detach_target: bool = False,
        clamp: bool = True,
    ):
        super().__init__()
        if model is None:
            raise missing_weights_error(type(self))
        cfg = model.config
        if mask not in _MASKS:
            raise ValueError(f"mask must be one of {sorted(_MASKS)}, got {mask!r}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if num_frames < cfg.tubelet_size or num_frames % cfg.tubelet_size:
            raise ValueError(
                f"num_frames must be a positive multiple of tubelet_size={cfg.tubelet_size}, got {num_frames}"
            )
        self.model = model
        self.num_frames = int(num_frames)
        self.crop_size = int(cfg.crop_size)
        self.resize_size = int(cfg.crop_size * 256 / 224)
        self.mask = mask
        self.mask_ratio = float(mask_ratio)
        self.seed = int(seed)
        self.loss_exp = float(loss_exp)
        self.detach_target = bool(detach_target)
        self.clamp = bool(clamp)
        grid = self.crop_size // cfg.patch_size
        t_slots = self.num_frames // cfg.tubelet_size
        kw = {"seed": self.seed} if mask == "random" else {}
        ctx, tgt = _MASKS[mask](t_slots, grid, grid, self.mask_ratio, **kw)
        self.register_buffer("context_ids", ctx, persistent=False)
        self.register_buffer("target_ids", tgt, persistent=False)
        self.freeze()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> VJEPAConsistencyReward:
        # optional: VJEPA2 needs transformers >= 4.53 (pyproject allows >= 4.46); at module level its
        # absence would drop vader_objects / vader_action from the registry too
        from transformers import VJEPA2Model

        model = load_pretrained(VJEPA2Model, path, layout_hint=f"{cls.name!r} expects {cls.expects}")
        return cls(model, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, num_frames: int = 4, **kwargs) -> VJEPAConsistencyReward:
        """Random tiny V-JEPA 2 (2-layer encoder width 32, 1-layer predictor width 16, 32 px, patch 8)."""
        # optional: VJEPA2 needs transformers >= 4.53 (see from_pretrained)
        from transformers import VJEPA2Config, VJEPA2Model

        config = VJEPA2Config(
            patch_size=8,
            crop_size=32,
            frames_per_clip=num_frames,
            tubelet_size=2,
            hidden_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            mlp_ratio=2.0,
            pred_hidden_size=16,
            pred_num_attention_heads=2,
            pred_num_hidden_layers=1,
            pred_mlp_ratio=2.0,
            pred_num_mask_tokens=2,
            pred_zero_init_mask_tokens=False,
            num_pooler_layers=1,
        )
        torch.manual_seed(seed)
        return cls(VJEPA2Model(config), num_frames=num_frames, **kwargs)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, F, 3, H, W]`` in [-1, 1] -> ``[B, num_frames, 3, S, S]`` (V-JEPA 2 video processor)."""
        x = resample_frames(frames, self.num_frames)
        x = _center_crop(
            resize_center_crop(to_unit_range(x, clamp=self.clamp), self.resize_size, mode="bilinear"),
            self.crop_size,
        )
        return normalize(x, self.mean, self.std).to(_param_dtype(self.model))

    def encode(self, tokens: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """V-JEPA 2 encoder layers + final norm on ``tokens [B, n, D]`` at positions ``ids [B, n]``.

        ``ids=None``: the full token grid (same as ``VJEPA2Model.get_vision_features``).
        """
        enc = self.model.encoder
        h = tokens
        for layer in enc.layer:
            h = layer(h, ids)[0]
        return enc.layernorm(h)

    def features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_hat, h)``: predicted and target features of the masked tokens, ``[B, |M|, D]`` each."""
        x = self.preprocess(frames)
        b = x.shape[0]
        tokens = self.model.encoder.embeddings(x)  # [B, N, D]
        n, d = tokens.shape[1:]
        ctx = self.context_ids.to(x.device)[None].expand(b, -1)
        tgt = self.target_ids.to(x.device)[None].expand(b, -1)
        z = self.encode(tokens.gather(1, ctx[..., None].expand(-1, -1, d)), ctx)
        # The predictor gathers the context rows itself: place z at its token ids.
        full = z.new_zeros(b, n, d).scatter(1, ctx[..., None].expand(-1, -1, d), z)
        z_hat = self.model.predictor(full, [ctx], [tgt]).last_hidden_state
        h = F.layer_norm(self.encode(tokens), (d,)).gather(1, tgt[..., None].expand(-1, -1, d))
        if self.detach_target:
            h = h.detach()
        return z_hat, h

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        z_hat, h = self.features(frames)
        err = (z_hat.float() - h.float()).abs().pow(self.loss_exp) / self.loss_exp
        return -err.mean(dim=(1, 2))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_frames={self.num_frames}, crop_size={self.crop_size}, "
            f"mask={self.mask!r}, mask_ratio={self.mask_ratio}, targets={self.target_ids.numel()}"
        )
