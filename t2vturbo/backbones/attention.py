"""``model.attention``: which attention kernel the teacher's denoiser (and so the student and target copied
from it) runs. Applied once, where backbones are built (:func:`t2vturbo.backbones.build_backbone`).

* ``sdpa`` (default): ``F.scaled_dot_product_attention`` (PyTorch picks its fused kernel); what every
  family runs when built: VideoCrafter2's ``vc2_unet.Attention``, diffusers' ``AttnProcessor2_0`` (UNet3D /
  ModelScope / motion UNet), Wan's ``WanAttnProcessor`` through diffusers' attention dispatch (``native``).
* ``eager``: the reference softmax(Q K^T * scale) V with the probabilities materialised:
  ``vc2_unet.Attention.eager`` (the official LDM ``CrossAttention`` lines), diffusers' ``AttnProcessor``
  (``baddbmm`` + softmax + ``bmm``), and for Wan diffusers 0.42's ``_native_math`` dispatch backend (SDPA
  restricted to PyTorch's math kernel, which is the same matmul / softmax / matmul composite; diffusers 0.42
  has no ``eager`` backend, its ``AttentionBackendName.EAGER`` is commented out).

Only the denoiser's attention changes (not the text encoder's or the VAE's). Motion guidance's attention
capture (t2vturbo/guidance/attention_capture.py) wraps whichever processor is installed, so it works with
both.
"""

from __future__ import annotations

from torch import nn

KINDS = ("sdpa", "eager")


def set_attention(denoiser: nn.Module, kind: str) -> int:
    """Switch every attention layer of ``denoiser`` to ``kind`` (``sdpa`` | ``eager``); returns how many
    layers were set. Raises ``ValueError`` naming ``model.attention`` on an unknown kind, or for ``eager`` on a
    layer whose processor has no eager form here (e.g. xformers); ``sdpa`` leaves such a layer as it is."""
    if kind not in KINDS:
        raise ValueError(f"model.attention={kind!r}: expected one of {', '.join(KINDS)}")
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_dispatch import AttentionBackendName
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    from .vc2_unet import Attention as VC2Attention

    eager = kind == "eager"
    n = 0
    for name, m in denoiser.named_modules():
        if isinstance(m, VC2Attention):
            m.eager = eager
        elif isinstance(m, Attention) and type(m.processor) in (AttnProcessor, AttnProcessor2_0):
            m.set_processor(AttnProcessor() if eager else AttnProcessor2_0())
        elif isinstance(m, AttentionModuleMixin) and hasattr(m.processor, "_attention_backend"):
            # per layer, not diffusers' set_attention_backend: that also sets the process-wide active backend
            m.processor._attention_backend = AttentionBackendName._NATIVE_MATH if eager else None
        elif eager and isinstance(m, (Attention, AttentionModuleMixin)):
            raise ValueError(
                f"model.attention={kind!r}: the attention layer {name} runs {type(m.processor).__name__}, "
                "which is neither sdpa nor eager"
            )
        else:
            continue
        n += 1
    return n
