"""Capture temporal self-attention probabilities of a diffusers video UNet without changing it.

In diffusers' ``UNet3DConditionModel`` the temporal attentions are ``TransformerTemporalModel``
blocks (``transformer_in``, ``{down,mid,up}_blocks.*.temp_attentions.*``). Their
``transformer_blocks.*.attn1`` is self-attention over frames: the sequence is the F frames, the
batch is B*H*W spatial locations. For such a layer we record

    A = softmax(Q K^T / sqrt(d))          shape [B*H*W, heads, F, F]   (row = query frame)

with Q = to_q(x), K = to_k(x) split into heads exactly as diffusers does
(``head_to_batch_dim`` + ``get_attention_scores``: ``baddbmm(.., q, k^T, beta=0, alpha=scale)``
then softmax in the layer's dtype, upcast when the layer says so).

Exactness: the capturing processor *composes* the layer's original processor (whatever it is:
``AttnProcessor2_0``/SDPA by default with torch 2, ``AttnProcessor``, xformers, ...). The layer's
output is the original processor's output on the same inputs, untouched, so a captured forward
is bit-for-bit the uncaptured forward (tested). The probabilities are computed on the side from
the same input (one extra q/k projection and an F x F softmax per captured layer; cheap next to
the UNet). A bit-exact reuse of the probabilities inside the output is impossible in general:
SDPA's fused kernels never materialise them and do not round like ``softmax`` + ``bmm``.

Gradients flow through the captured maps (they are built from the layer input inside the
autograd graph), which is what motion guidance differentiates.

Usage::

    with capture_temporal_attention(unet) as store:      # default: decoder temporal attn1 layers
        out = unet(z, t, cond)
        maps = store.pop()                                # {layer name: [B*H*W, heads, F, F]}

Capture is off by default: nothing is installed outside the ``with`` block, and the original
processors are restored on exit (also on exceptions).

Native UNets (VideoCrafter2's ``VC2UNet``) list their temporal self-attention layers themselves
(``temporal_attention_layers()``, default selection ``default_temporal_layers``); their modules are
captured with a forward hook that recomputes softmax(Q K^T / sqrt(d)) from the layer's input.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

# The decoder's temporal self-attentions. In a ModelScope / VideoCrafter2-shaped UNet3D these are the
# 9 layers up_blocks.{1,2,3}.temp_attentions.{0,1,2}.transformer_blocks.0.attn1, i.e. the same 9
# decoder layers (VideoCrafter2 output_blocks.3..11) that T2V-Turbo-v2 reads.
DEFAULT_LAYERS: tuple[str, ...] = (
    "up_blocks.*.temp_attentions.*.transformer_blocks.0.attn1",
    "up_blocks.*.motion_modules.*.transformer_blocks.0.attn1",  # UNetMotionModel (AnimateDiff-style)
)
# Named selections accepted by ``layers=``.
LAYER_PRESETS: dict[str, tuple[str, ...]] = {
    "decoder": DEFAULT_LAYERS,
    "all": ("*",),  # every temporal self-attention (transformer_in, encoder, mid, decoder)
}


def resolve_unet(model: nn.Module) -> nn.Module:
    """The UNet inside a denoiser wrapper (``UNet3DDenoiser.unet``), or the model itself."""
    return getattr(model, "unet", model)


def _is_attention(m: nn.Module) -> bool:
    return isinstance(m, Attention)


def list_temporal_attention_layers(model: nn.Module) -> list[str]:
    """Names (relative to the UNet) of every temporal self-attention ``attn1``: the ``attn1`` of each
    ``BasicTransformerBlock`` inside a ``TransformerTemporalModel``. Order = module order.

    A native (non-diffusers) UNet declares its own with a ``temporal_attention_layers()`` method
    (and its default selection in ``default_temporal_layers``); see :func:`native_probabilities`."""
    # AnimateDiffTransformer3D: UNetMotionModel's motion modules (in diffusers since 0.30)
    temporal = (TransformerTemporalModel, AnimateDiffTransformer3D)
    unet = resolve_unet(model)
    if hasattr(unet, "temporal_attention_layers"):
        return list(unet.temporal_attention_layers())
    names = []
    for tname, tmod in unet.named_modules():
        if not isinstance(tmod, temporal):
            continue
        for sub, m in tmod.named_modules():
            if sub.endswith("attn1") and _is_attention(m):
                names.append(f"{tname}.{sub}" if tname else sub)
    return names


def select_layers(model: nn.Module, layers: str | Iterable[str] | None = None) -> list[str]:
    """Resolve ``layers`` (None = decoder default; a preset name ``'decoder'``/``'all'``; or exact
    names / ``fnmatch`` patterns) against the temporal self-attention layers of ``model``.
    Raises if nothing matches (a typo must not silently disable guidance)."""
    available = list_temporal_attention_layers(model)
    if layers is None or layers == "decoder" or (not isinstance(layers, str) and list(layers) == ["decoder"]):
        patterns: tuple[str, ...] = tuple(
            getattr(resolve_unet(model), "default_temporal_layers", DEFAULT_LAYERS)
        )
    elif isinstance(layers, str):
        patterns = LAYER_PRESETS.get(layers, (layers,))
    else:
        patterns = tuple(layers)
        if len(patterns) == 1 and patterns[0] in LAYER_PRESETS:
            patterns = LAYER_PRESETS[patterns[0]]
    chosen = [n for n in available if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise ValueError(
            f"no temporal self-attention layer matches {list(patterns)}; available: {available or 'none'}"
        )
    return chosen


def attention_probabilities(
    attn: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    temb: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(Q K^T * scale) of a diffusers ``Attention`` for the given processor inputs, shaped
    [batch, heads, L_q, L_k]. Mirrors the steps of diffusers' ``AttnProcessor`` up to
    ``get_attention_scores`` (spatial/group norm, mask preparation, q/k projection, optional q/k
    norms, ``head_to_batch_dim``, ``baddbmm`` with ``alpha=attn.scale``, softmax)."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    if hidden_states.ndim == 4:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    batch_size, sequence_length, _ = (
        hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
    )
    attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)
    query = attn.head_to_batch_dim(query)  # [batch*heads, L, d]
    key = attn.head_to_batch_dim(key)
    if getattr(attn, "norm_q", None) is not None:
        query = attn.norm_q(query)
    if getattr(attn, "norm_k", None) is not None:
        key = attn.norm_k(key)
    probs = attn.get_attention_scores(query, key, attention_mask)  # [batch*heads, L_q, L_k]
    return probs.reshape(-1, attn.heads, probs.shape[-2], probs.shape[-1])


def native_probabilities(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) of a native self-attention module (``to_q``, ``to_k``, ``heads``;
    input ``x`` [N, L, C], queries and keys both from ``x``), shaped [N, heads, L, L]; computed in
    float32 (the module's output uses fused SDPA, which never materialises the probabilities)."""
    n, length, _ = x.shape
    q = attn.to_q(x).reshape(n, length, attn.heads, -1).transpose(1, 2).float()
    k = attn.to_k(x).reshape(n, length, attn.heads, -1).transpose(1, 2).float()
    return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)


class AttentionStore:
    """Where captured maps go: ``maps[layer name] = [B*H*W, heads, F, F]`` of the latest forward.

    ``enabled`` pauses capture without removing the processors. A later forward overwrites a layer's
    entry (so a recomputation by activation checkpointing during backward is harmless).
    ``calls`` counts captured layer calls.
    """

    def __init__(self, layers: list[str], detach: bool = False):
        self.layers = list(layers)
        self.detach = detach
        self.enabled = True
        self.maps: dict[str, torch.Tensor] = {}
        self.calls = 0

    def record(self, name: str, probs: torch.Tensor) -> None:
        self.maps[name] = probs.detach() if self.detach else probs
        self.calls += 1

    def pop(self) -> dict[str, torch.Tensor]:
        """The maps of the latest forward in layer order (raises if a selected layer did not run)."""
        missing = [n for n in self.layers if n not in self.maps]
        if missing:
            raise RuntimeError(f"no attention captured for {missing}: run a forward inside the capture block")
        out = {n: self.maps[n] for n in self.layers}
        self.maps = {}
        return out

    def clear(self) -> None:
        self.maps = {}


class CapturingAttnProcessor:
    """Processor wrapper: returns ``original(attn, ...)`` unchanged and records the attention
    probabilities of the same call in ``store`` (when ``store.enabled``).

    Use :func:`make_capturing_processor`, which also gives the wrapper the original processor's
    call signature (diffusers' ``Attention.forward`` filters keyword arguments by it).
    """

    def __init__(self, original, name: str, store: AttentionStore):
        self.original = original
        self.name = name
        self.store = store

    def __call__(self, attn, hidden_states, *args, **kwargs):
        out = self.original(attn, hidden_states, *args, **kwargs)  # exactly the uncaptured call
        if self.store.enabled:
            # diffusers passes these by keyword; positional order is (encoder_hidden_states, attention_mask, temb)
            pos = dict(zip(("encoder_hidden_states", "attention_mask", "temb"), args))
            get = lambda k: kwargs.get(k, pos.get(k))  # noqa: E731
            probs = attention_probabilities(
                attn, hidden_states, get("encoder_hidden_states"), get("attention_mask"), get("temb")
            )
            self.store.record(self.name, probs)
        return out


_WRAPPER_CLASSES: dict[type, type] = {}


def make_capturing_processor(original, name: str, store: AttentionStore) -> CapturingAttnProcessor:
    """A :class:`CapturingAttnProcessor` whose ``__call__`` advertises ``original.__call__``'s
    parameters (so ``Attention.forward`` passes through exactly what it would pass to the original)."""
    cls = type(original)
    if cls not in _WRAPPER_CLASSES:
        try:
            orig_sig = inspect.signature(original.__call__)
            params = [
                inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                *orig_sig.parameters.values(),
            ]
            sig = inspect.Signature(params)
        except (TypeError, ValueError):
            sig = None

        def __call__(self, *args, **kwargs):
            return CapturingAttnProcessor.__call__(self, *args, **kwargs)

        if sig is not None:
            __call__.__signature__ = sig
        _WRAPPER_CLASSES[cls] = type(
            f"Capturing{cls.__name__}", (CapturingAttnProcessor,), {"__call__": __call__}
        )
    return _WRAPPER_CLASSES[cls](original, name, store)


@contextmanager
def capture_temporal_attention(
    model: nn.Module, layers: str | Iterable[str] | None = None, detach: bool = False
) -> Iterator[AttentionStore]:
    """Install capturing processors on the selected temporal self-attention layers of ``model``
    (a UNet3DConditionModel or a wrapper with ``.unet``) and yield the :class:`AttentionStore`.
    The original processors are put back on exit."""
    unet = resolve_unet(model)
    names = select_layers(unet, layers)
    modules = dict(unet.named_modules())
    store = AttentionStore(names, detach=detach)
    originals = {}
    hooks = []

    def native_hook(name):
        def hook(module, args, output):  # the output is returned untouched
            if store.enabled:
                store.record(name, native_probabilities(module, args[0]))

        return hook

    try:
        for n in names:
            attn = modules[n]
            if _is_attention(attn):
                originals[n] = attn.processor
                attn.set_processor(make_capturing_processor(attn.processor, n, store))
            else:  # a native module (e.g. VideoCrafter2's): a forward hook reads its input
                hooks.append(attn.register_forward_hook(native_hook(n)))
        yield store
    finally:
        for n, proc in originals.items():
            modules[n].set_processor(proc)
        for h in hooks:
            h.remove()
        store.enabled = False
