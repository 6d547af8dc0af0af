"""The trained module and its optimizer as whole (unsharded) tensors: what a checkpoint stores.

DeepSpeed keeps a parameter's fp32 master and its Adam moments in a layout that depends on the ZeRO
stage and the number of ranks (flat per-rank partitions under ZeRO-1/2/3, separate fp32 copies under
bf16), and its own checkpoint files are pickles. Here every tensor is read as the *whole* tensor of one
named parameter, through DeepSpeed's full-parameter API (``deepspeed.utils.safe_get_full_fp32_param``,
``safe_get_full_optimizer_state`` and their setters) where a parameter has a partitioned master, and
directly otherwise. The result does not depend on the number of ranks or the ZeRO stage, is written
as safetensors, and loads into an engine of any number of ranks and any stage:

    model    {parameter or buffer name: tensor}    trained parameters as their fp32 masters
    optim    {"exp_avg.NAME", "exp_avg_sq.NAME": tensor}  AdamW moments of each trained parameter
    meta     {"adam_step", "global_steps", "global_samples", "skipped_steps", "lr_scheduler"}  (JSON)

:func:`gather` and :func:`apply` are collective under ZeRO (every rank calls them).
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from deepspeed.utils import (
    safe_get_full_fp32_param,
    safe_get_full_optimizer_state,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
)

MOMENTS = ("exp_avg", "exp_avg_sq")  # torch.optim.AdamW's per-element state (engine.initialize builds AdamW)


class StateMismatchError(RuntimeError):
    """A checkpoint's tensors do not fit this run's module (another model or LoRA config)."""


def _partitioned(p) -> bool:
    """DeepSpeed holds this parameter's master (and moments) in partitions: the full-parameter API applies."""
    return hasattr(p, "ds_id") or hasattr(p, "_hp_mapping")  # _hp_mapping is None on ranks without a fragment


def _shape(p) -> tuple:
    return tuple(getattr(p, "ds_shape", p.shape))  # ZeRO-3 leaves an empty .data outside a gather


def _set_full(p, value: torch.Tensor, key: str | None = None) -> None:
    """``safe_set_full_fp32_param`` / ``safe_set_full_optimizer_state``, except that a ZeRO-3 parameter whose size
    is not a multiple of the number of ranks is handled: DeepSpeed 0.19's own setter cuts the last rank's
    (zero-padded) partition out of the unpadded value and fails."""
    if not hasattr(p, "ds_id"):
        if key is None:
            safe_set_full_fp32_param(p, value)
        else:
            safe_set_full_optimizer_state(p, value, key)
        return
    opt = p._z3_optimizer
    part, group = opt._get_fp32_opt_state_partition(p, release_swap_buffers=False, optim_state_key=key)
    n = part.numel()
    piece = value.flatten()[opt._get_param_partition_rank(p) * n :][:n]
    part.data.zero_()
    part.data[: piece.numel()].copy_(piece)
    if opt._swappable_optimizer_subgroup(group):
        opt._optimizer_states_and_gradient_swap_out(group)


def _base_optimizer(engine):
    opt = engine.optimizer
    return getattr(opt, "optimizer", None) or opt


def _plain_masters(engine) -> dict[int, torch.Tensor]:
    """id(module parameter) -> the tensor the base optimizer updates, for parameters without a partitioned
    master: a separate fp32 copy (DeepSpeed's bf16/fp16 optimizer without ZeRO) or the parameter itself."""
    opt = engine.optimizer
    if hasattr(opt, "fp16_groups") and hasattr(opt, "fp32_groups"):
        return {id(lp): hp for lo, hi in zip(opt.fp16_groups, opt.fp32_groups) for lp, hp in zip(lo, hi)}
    return {}


def _gathered(p, modifier_rank=None):
    if hasattr(p, "ds_id"):  # ZeRO-3 partitions the module's own parameters
        import deepspeed

        return deepspeed.zero.GatheredParameters([p], modifier_rank=modifier_rank)
    return contextlib.nullcontext()


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather(engine, keep: bool | None = None) -> tuple[dict, dict, dict]:
    """``(model, optim, meta)`` of ``engine`` as whole tensors on the CPU. Collective; only ranks with ``keep``
    (default: rank 0) keep the tensors (the others return empty dicts)."""
    keep = _rank() == 0 if keep is None else keep
    module = engine.module
    masters = _plain_masters(engine)
    base = _base_optimizer(engine)
    model, optim = {}, {}
    for name, p in module.named_parameters():
        if p.requires_grad and _partitioned(p):
            full = safe_get_full_fp32_param(p)
            moments = {k: safe_get_full_optimizer_state(p, k) if base.state else None for k in MOMENTS}
            full = full.reshape(_shape(p))
        else:
            master = masters.get(id(p), p)
            with _gathered(p):
                full = master.detach().float() if p.requires_grad else p.detach()
                full = full.reshape(p.shape).clone()
            st = base.state.get(master, {}) if p.requires_grad else {}
            moments = {k: st.get(k) for k in MOMENTS}
        if keep:
            model[name] = full.detach().cpu().contiguous()
            for k, v in moments.items():
                if v is not None:
                    optim[f"{k}.{name}"] = v.detach().float().reshape(_shape(p)).cpu().clone()
    for name, b in module.named_buffers():
        if keep:
            model[name] = b.detach().cpu().clone().contiguous()
    steps = {float(s["step"]) for s in base.state.values() if "step" in s}
    if len(steps) > 1:
        raise RuntimeError(f"optimizer param groups disagree on the Adam step count: {sorted(steps)}")
    sched = getattr(engine, "lr_scheduler", None)
    meta = {
        "adam_step": steps.pop() if steps else 0.0,
        "global_steps": int(engine.global_steps),
        "global_samples": int(engine.global_samples),
        "skipped_steps": int(getattr(engine, "skipped_steps", 0)),
        "lr_scheduler": sched.state_dict() if sched is not None else None,
    }
    return (model, optim, meta) if keep else ({}, {}, meta)


def _shape_in(tensors, k) -> tuple:
    """A stored tensor's shape without reading it (``checkpoint._Tensors``), or a dict's tensor's."""
    return tensors.shape_of(k) if hasattr(tensors, "shape_of") else tuple(tensors[k].shape)


def _check(module, model, optim) -> None:
    names = dict(module.named_parameters())
    names.update(module.named_buffers())
    missing = sorted(set(names) - set(model))
    unexpected = sorted(set(model) - set(names))
    wrong = [
        f"{n}: checkpoint {_shape_in(model, n)}, this run {_shape(t)}"
        for n, t in names.items()
        if n in model and _shape_in(model, n) != _shape(t)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors of this run are not in it (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(
                f"{len(unexpected)} of its tensors are not in this run (e.g. {', '.join(unexpected[:3])})"
            )
        if wrong:
            parts.append(f"{len(wrong)} have another shape (e.g. {'; '.join(wrong[:3])})")
        raise StateMismatchError("the checkpoint does not fit this run's model: " + "; ".join(parts))
    for n, p in module.named_parameters():
        if p.requires_grad and len(optim) and any(f"{k}.{n}" not in optim for k in MOMENTS):
            raise StateMismatchError(f"the checkpoint has no optimizer state for the trained parameter {n}")


def _materialise_moments(engine, base, step: float) -> None:
    """Create AdamW's per-parameter state (as torch's AdamW does at its first step) where it does not
    exist yet, so that moments can be written before the resumed run's first step; set every step count."""
    tensors = [q for group in base.param_groups for q in group["params"]]
    # ZeRO-3 hands its flat fp32 partitions to the optimizer only during its step
    tensors += list(getattr(engine.optimizer, "fp32_partitioned_groups_flat", None) or [])
    for q in {id(q): q for q in tensors}.values():
        st = base.state[q]
        for k in MOMENTS:
            if k not in st:
                st[k] = torch.zeros_like(q, memory_format=torch.preserve_format)
        st["step"] = torch.tensor(step, dtype=torch.float32)


def apply(engine, model, optim, meta: dict) -> None:
    """Load ``gather``'s output into ``engine`` (any number of ranks, any ZeRO stage). Collective; every rank
    passes the whole tensors (mappings name -> tensor, read one at a time). Raises :class:`StateMismatchError` (before changing anything) when they do not
    fit the module."""
    module = engine.module
    _check(module, model, optim)
    masters = _plain_masters(engine)
    base = _base_optimizer(engine)
    if len(optim):
        _materialise_moments(engine, base, float(meta["adam_step"]))
        link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
        if link is not None:  # ZeRO-1/2 and the bf16 optimizer point each parameter at its moment fragments
            engine.optimizer._hp_optimizer_states_linked = False
            link()
    with torch.no_grad():
        for name, p in module.named_parameters():
            full = model[name].to(p.device)
            with _gathered(p, modifier_rank=0):
                p.data.copy_(full.reshape(p.data.shape).to(p.dtype))
            if not p.requires_grad:
                continue
            if _partitioned(p):
                _set_full(p, full.float())
                for k in MOMENTS:
                    if len(optim):
                        _set_full(p, optim[f"{k}.{name}"].to(p.device), k)
            else:
                master = masters.get(id(p), p)
                master.data.copy_(full.reshape(master.shape).to(master.dtype))
                for k in MOMENTS:
                    if len(optim):
                        base.state[master][k].copy_(optim[f"{k}.{name}"].reshape(master.shape))
        for name, b in module.named_buffers():
            b.copy_(model[name].to(b.device))
    engine.global_steps = int(meta["global_steps"])
    engine.global_samples = int(meta["global_samples"])
    if hasattr(engine, "skipped_steps"):
        engine.skipped_steps = int(meta["skipped_steps"])
    sched = getattr(engine, "lr_scheduler", None)
    if sched is not None and meta.get("lr_scheduler") is not None:
        sched.load_state_dict(meta["lr_scheduler"])
