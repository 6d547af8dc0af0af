"""VideoCrafter2's 3D UNet, with the parameter names of the official checkpoint.

Written for this project from the facts of the public implementation (AILab-CVC/VideoCrafter,
``lvdm/modules/networks/openaimodel3d.py``, ``lvdm/modules/attention.py``) and its v2 config
(``configs/inference_t2v_512_v2.0.yaml``). The module tree reproduces the official state-dict
keys one for one (``model.diffusion_model.*`` without that prefix), so ``model.ckpt`` loads with
``strict=True``; ``manifests/videocrafter2_512_v2.json`` lists every key and shape.

Layout (v2 config: model_channels 320, channel_mult 1,2,4,4, 2 res blocks per level, attention
at downsampling rates 4,2,1, 64 channels per head, context 1024, linear projections):

    time_embed.{0,2}, fps_embedding.{0,2}       MLPs on the sinusoid of t and of fps (emb = sum)
    input_blocks.0.0                            conv_in (2D, per frame)
    init_attn.0                                 a temporal transformer right after conv_in
                                                (8 heads of 64, 1x1 Conv1d projections)
    input_blocks.N / middle_block / output_blocks.N
        ResBlock: in_layers, emb_layers, out_layers, skip_connection,
                  temopral_conv (sic: four (3,1,1) Conv3d stages over frames, last one zero-init)
        SpatialTransformer: norm, proj_in, transformer_blocks.0.{attn1 self, attn2 cross to text,
                  ff GEGLU, norm1-3}, proj_out                 (attention over h*w, per frame)
        TemporalTransformer: the same block with attn1 AND attn2 self-attention over frames
                  (batch = b*h*w); no relative position, not causal (v2: both off)
        Downsample (op: stride-2 conv) / Upsample (conv after nearest x2)
    out.{0,2}                                   GroupNorm, SiLU, conv_out

Activations are ``[(b f), c, h, w]`` except inside temporal layers (``[b, c, f, h, w]``); the
time/fps embedding and the text context are repeated per frame. Group norms of the ResBlocks
and of ``out`` run in float32 (as the official ``normalization``); norms of temporal layers see
all frames of a clip at once (they normalise the 5D tensor).

Differences from the official code, none of which changes outputs: attention runs through
``F.scaled_dot_product_attention`` (same scale ``dim_head**-0.5``), the 1x1 ``Conv1d``
projections of ``init_attn`` are applied as the equivalent linear maps, and activation
checkpointing is per block (``gradient_checkpointing``) instead of per layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class VC2UNetConfig:
    """Hyper-parameters of the UNet. Defaults are VideoCrafter2 (inference_t2v_512_v2.0.yaml)."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [4, 2, 1])
    num_head_channels: int = 64
    transformer_depth: int = 1
    temporal_transformer_depth: int = 1
    context_dim: int = 1024
    init_attn_heads: int = 8  # the official code fixes n_heads=8 for init_attn
    norm_groups: int = 32  # fixed to 32 in the official code; tiny test configs use fewer
    dropout: float = 0.0
    temporal_conv_dropout: float = 0.1  # fixed in the official TemporalConvBlock
    fps_cond: bool = True
    # the student's guidance (w) and motion (eta) conditioning, T2V-Turbo's names: None = a teacher
    time_cond_proj_dim: int | None = None
    motion_cond_proj_dim: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoid ``[cos(t f_j), sin(t f_j)]`` with ``f_j = max_period^(-j / (dim/2))`` (the
    official order: cosines first)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.reshape(-1).float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (the official ``normalization``)."""

    def forward(self, x):
        w, b = self.weight.float(), self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def to_video(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[(b f), c, h, w] -> [b, c, f, h, w]``."""
    bf, c, h, w = x.shape
    return x.reshape(bf // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """``[b, c, f, h, w] -> [(b f), c, h, w]``."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


# ---------------------------------------------------------------------------------------------
# Convolutional blocks
# ---------------------------------------------------------------------------------------------
class TemporalConv(nn.Module):
    """Four ``GroupNorm -> SiLU -> [Dropout] -> Conv3d(3,1,1)`` stages over frames, added to the
    input; the last conv starts at zero (identity at init)."""

    def __init__(self, channels: int, groups: int, dropout: float):
        super().__init__()

        def stage(drop: bool) -> nn.Sequential:
            layers = [nn.GroupNorm(groups, channels), nn.SiLU()]
            if drop:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
            return nn.Sequential(*layers)

        self.conv1, self.conv2, self.conv3, self.conv4 = stage(False), stage(True), stage(True), stage(True)
        _zero(self.conv4[-1])

    def forward(self, x):  # [b, c, f, h, w]
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    """Per-frame residual block with the timestep embedding added between its two convs,
    followed by the temporal convolution over the clip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, cfg: VC2UNetConfig):
        super().__init__()
        g = cfg.norm_groups
        self.in_layers = nn.Sequential(
            GroupNorm32(g, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(g, out_channels),
            nn.SiLU(),
            nn.Dropout(cfg.dropout),
            _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )
        self.temopral_conv = TemporalConv(out_channels, g, cfg.temporal_conv_dropout)  # sic: checkpoint name

    def forward(self, x, emb, num_frames: int):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        return to_frames(self.temopral_conv(to_video(h, num_frames)))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


# ---------------------------------------------------------------------------------------------
# Attention blocks
# ---------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head attention; keys/values from ``context`` when given, else from ``x``. ``eager`` (set by
    ``model.attention=eager``, t2vturbo/backbones/attention.py) writes out softmax(Q K^T / sqrt(d)) V as the
    official LDM ``CrossAttention`` does, instead of ``F.scaled_dot_product_attention``."""

    eager = False

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        ctx = x if context is None else context
        n, lq, _ = x.shape

        def split(y):  # [n, l, heads*d] -> [n, heads, l, d]
            return y.reshape(n, y.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx))
        if self.eager:
            out = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(n, lq, -1))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Dropout(0.0), nn.Linear(mult * dim, dim))

    def forward(self, x):
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: attn1 (self), attn2 (cross to ``context``, or self without a context
    dimension), GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None):
        super().__init__()
        self.attn1 = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, heads, dim_head, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context=None):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


def _project(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ``Linear`` or a 1x1 ``Conv1d`` applied to the channel (last) dim of ``x``."""
    if isinstance(layer, nn.Conv1d):
        return F.linear(x, layer.weight[..., 0], layer.bias)
    return layer(x)


class SpatialTransformer(nn.Module):
    """Attention over the h*w positions of each frame, cross-attending to the text."""

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, groups: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)]
        )
        self.proj_out = _zero(nn.Linear(inner, channels))

    def forward(self, x, context):  # [(b f), c, h, w]
        n, c, h, w = x.shape
        y = self.proj_in(self.norm(x).reshape(n, c, h * w).transpose(1, 2))
        for block in self.transformer_blocks:
            y = block(y, context)
        return self.proj_out(y).transpose(1, 2).reshape(n, c, h, w) + x


class TemporalTransformer(nn.Module):
    """Self-attention over the frames at every spatial position (batch = b*h*w); both attn1
    and attn2 of its blocks are self-attention. ``linear=False``: 1x1 ``Conv1d`` projections
    (the official ``init_attn``)."""

    def __init__(
        self, channels: int, heads: int, dim_head: int, depth: int, groups: int, linear: bool = True
    ):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if linear else nn.Conv1d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(inner, heads, dim_head, None) for _ in range(depth)]
        )
        self.proj_out = _zero(nn.Linear(inner, channels) if linear else nn.Conv1d(inner, channels, 1))

    def forward(self, x):  # [b, c, f, h, w]
        b, c, f, h, w = x.shape
        y = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, f, c)
        y = _project(self.proj_in, y)
        for block in self.transformer_blocks:
            y = block(y)
        y = _project(self.proj_out, y)
        return y.reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2) + x


class Stage(nn.ModuleList):
    """One entry of input_blocks / middle_block / output_blocks: its layers in order, each
    given what it needs (the official ``TimestepEmbedSequential``)."""

    def forward(self, h, emb, context, num_frames: int):
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, num_frames)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context)
            elif isinstance(layer, TemporalTransformer):
                h = to_frames(layer(to_video(h, num_frames)))
            else:
                h = layer(h)
        return h


# ---------------------------------------------------------------------------------------------
# The UNet
# ---------------------------------------------------------------------------------------------
class VC2UNet(nn.Module):
    """``forward(x [B,C,F,h,w], timesteps [B], context [B,L,D], fps [B], timestep_cond [B,256] | None,
    motion_cond [B,256] | None) -> [B,C_out,F,h,w]``; the two conditions only for a student
    (``time_cond_proj_dim`` / ``motion_cond_proj_dim`` set), as T2V-Turbo's UNet."""

    def __init__(self, config: VC2UNetConfig | dict | None = None):
        super().__init__()
        cfg = config if isinstance(config, VC2UNetConfig) else VC2UNetConfig(**(config or {}))
        self.config = cfg
        self.gradient_checkpointing = False
        mc, g = cfg.model_channels, cfg.norm_groups
        emb_ch = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.fps_embedding = (
            nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
            if cfg.fps_cond
            else None
        )
        self.time_cond_proj = self.motion_cond_proj = self.combine_proj = None
        self._add_cond_projections()

        def attention(ch: int) -> list[nn.Module]:
            heads, d = ch // cfg.num_head_channels, cfg.num_head_channels
            return [
                SpatialTransformer(ch, heads, d, cfg.transformer_depth, cfg.context_dim, g),
                TemporalTransformer(ch, heads, d, cfg.temporal_transformer_depth, g),
            ]

        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        self.init_attn = Stage(
            [
                TemporalTransformer(
                    mc, cfg.init_attn_heads, cfg.num_head_channels, cfg.transformer_depth, g, linear=False
                )
            ]
        )
        skips, ch, ds = [mc], mc, 1
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_ch, mult * mc, cfg)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += attention(ch)
                self.input_blocks.append(Stage(layers))
                skips.append(ch)
            if level != last:
                self.input_blocks.append(Stage([Downsample(ch)]))
                skips.append(ch)
                ds *= 2
        self.middle_block = Stage(
            [ResBlock(ch, emb_ch, ch, cfg), *attention(ch), ResBlock(ch, emb_ch, ch, cfg)]
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb_ch, mult * mc, cfg)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += attention(ch)
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Stage(layers))
        self.out = nn.Sequential(
            GroupNorm32(g, ch), nn.SiLU(), _zero(nn.Conv2d(mc, cfg.out_channels, 3, padding=1))
        )

    def _add_cond_projections(self) -> None:
        """T2V-Turbo's student conditioning (openaimodel3d.py of its repository): ``time_cond_proj``
        (w, 256 -> C) and with motion conditioning ``motion_cond_proj`` (eta, 256 -> C) and ``combine_proj``
        (2C -> C), all without bias and with PyTorch's default (random) init; registered right after
        ``fps_embedding`` as there, so ``named_modules()`` order (which v1 LoRA lists follow) is the official."""
        cfg, mc = self.config, self.config.model_channels
        new = {}
        if cfg.time_cond_proj_dim and self.time_cond_proj is None:
            new["time_cond_proj"] = nn.Linear(cfg.time_cond_proj_dim, mc, bias=False)
        if cfg.motion_cond_proj_dim and self.motion_cond_proj is None:
            if not cfg.time_cond_proj_dim:
                raise ValueError("motion_cond_proj_dim needs time_cond_proj_dim (eta is combined with w)")
            new["motion_cond_proj"] = nn.Linear(cfg.motion_cond_proj_dim, mc, bias=False)
            new["combine_proj"] = nn.Linear(2 * mc, mc, bias=False)
        if not new:
            return
        for k in new:
            self.__dict__.pop(k, None)  # the None placeholders set in __init__
        dev = self.time_embed[0].weight
        order = {}
        for name, mod in self._modules.items():
            if name not in new:
                order[name] = mod
            if name == ("fps_embedding" if "fps_embedding" in self._modules else "time_embed"):
                for k, m in new.items():
                    order[k] = m.to(dev.device, dev.dtype)
        self._modules.clear()
        self._modules.update(order)

    def add_guidance_conditioning(self, embed_dim: int = 256, motion: bool = True) -> VC2UNet:
        """Make this (teacher) UNet a student: add the projections of :meth:`_add_cond_projections` (in
        place; the config records the dims, so the official layout is ``state_dict()`` as is)."""
        self.config.time_cond_proj_dim = embed_dim
        if motion:
            self.config.motion_cond_proj_dim = embed_dim
        self._add_cond_projections()
        return self

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.config.model_channels

    def _embedding(self, timesteps, fps, dtype, timestep_cond=None, motion_cond=None):
        mc = self.config.model_channels
        t_emb = timestep_embedding(timesteps, mc).to(dtype)
        if timestep_cond is not None:  # the student: w (and eta) are added to the sinusoid, before the MLP
            if self.time_cond_proj is None:
                raise ValueError("this UNet has no time_cond_proj (a teacher): it takes no timestep_cond")
            c = self.time_cond_proj(timestep_cond.to(dtype))
            if motion_cond is not None:
                if self.motion_cond_proj is None:
                    raise ValueError("this UNet has no motion_cond_proj: it takes no motion_cond")
                c = self.combine_proj(torch.cat([c, self.motion_cond_proj(motion_cond.to(dtype))], dim=1))
            t_emb = t_emb + c
        elif motion_cond is not None:
            raise ValueError("motion_cond needs timestep_cond (the official forward asserts the same)")
        emb = self.time_embed(t_emb)
        if self.fps_embedding is not None:
            if fps is None:
                raise ValueError("this UNet is fps-conditioned (fps_cond=True): pass fps")
            fps = torch.as_tensor(fps, device=timesteps.device).reshape(-1).expand(timesteps.shape[0])
            emb = emb + self.fps_embedding(timestep_embedding(fps, mc).to(dtype))
        return emb

    def _run(self, stage, h, emb, context, num_frames):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(stage, h, emb, context, num_frames, use_reentrant=False)
        return stage(h, emb, context, num_frames)

    # Motion guidance (t2vturbo.guidance.attention_capture): the temporal self-attentions, and the
    # decoder's by default (output_blocks 3..11 of the official model, the 9 layers T2V-Turbo-v2 reads).
    default_temporal_layers = ("output_blocks.*.transformer_blocks.0.attn1",)

    def temporal_attention_layers(self) -> list[str]:
        """Names of the ``attn1`` self-attentions inside every TemporalTransformer (module order)."""
        names = []
        for tname, tmod in self.named_modules():
            if isinstance(tmod, TemporalTransformer):
                names += [
                    f"{tname}.{sub}"
                    for sub, m in tmod.named_modules()
                    if sub.endswith("attn1") and isinstance(m, Attention)
                ]
        return names

    def forward(self, x, timesteps, context, fps=None, timestep_cond=None, motion_cond=None):
        b, _, f = x.shape[:3]
        dtype = self.time_embed[0].weight.dtype
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(b)
        emb = self._embedding(timesteps, fps, dtype, timestep_cond, motion_cond).repeat_interleave(f, dim=0)
        context = context.to(dtype).repeat_interleave(f, dim=0)
        h = to_frames(x.to(dtype))
        skips = []
        for i, stage in enumerate(self.input_blocks):
            h = self._run(stage, h, emb, context, f)
            if i == 0:
                h = self._run(self.init_attn, h, emb, context, f)
            skips.append(h)
        h = self._run(self.middle_block, h, emb, context, f)
        for stage in self.output_blocks:
            h = self._run(stage, torch.cat([h, skips.pop()], dim=1), emb, context, f)
        return to_video(self.out(h), f)
