"""From traced steps to a plan: memory per rank for each ZeRO stage, micro-batch, checkpointing and offload;
FLOPs per optimizer step; step time and GPU-hours; the verdict.

Memory per rank = the traced micro-step's peak (every network's parameters and buffers, the activations and
temporaries of forward and backward, the gradients as they appear) with the trainable parameters' model
states replaced by what DeepSpeed keeps for them on ``N`` ranks (Psi trainable parameters, p bytes each in
the model dtype; the ZeRO paper's accounting, as DeepSpeed 0.19 allocates it):

    ZeRO stage         parameters       gradients                       optimizer (AdamW)
    0 (fp32)           4 Psi            4 Psi                           8 Psi            (m, v)
    0 (bf16)           2 Psi            2 Psi + 4 Psi (fp32 accum.)     12 Psi / N       (master, m, v)
    1                  p Psi            p Psi                           12 Psi / N
    2                  p Psi            4 Psi / N + bucket              12 Psi / N
    3                  p Psi / N + L    4 Psi / N + bucket              12 Psi / N

L: the largest block's parameters, gathered while it runs; bucket: DeepSpeed's gradient bucket, allocated
whole (p x reduce_bucket_size, 5e8 by default: 1.9 GiB in fp32, whatever the model's size). The optimizer
step is a second candidate for the peak: every state above plus the step's own temporaries
(:func:`optimizer_step_temporaries`, traced with torch's AdamW). With ``offload`` (ZeRO-Offload, stage >= 1) the optimizer states and the
fp32 gradient partition live in CPU memory. Activations grow linearly with the micro-batch: two traced
micro-batches give the slope, and a third is traced to check it (:func:`linear_fit`).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
REDUCE_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements)


@dataclass
class States:
    parameters: float
    gradients: float
    optimizer: float


def model_states(
    psi: int,
    p_bytes: int,
    stage: int,
    n: int,
    offload: bool = False,
    largest: int = 0,
    reduce_bucket: int = REDUCE_BUCKET,
) -> States:
    """Bytes per rank DeepSpeed keeps for ``psi`` trainable parameters (see the module docstring)."""
    bucket = p_bytes * reduce_bucket  # contiguous_gradients: allocated whole, whatever the model's size
    if stage == 0:
        if p_bytes == 4:
            return States(4 * psi, 4 * psi, 8 * psi)
        return States(p_bytes * psi, p_bytes * psi + 4 * psi, 12 * psi / n)
    params = p_bytes * psi if stage < 3 else p_bytes * psi / n + p_bytes * largest
    grads = p_bytes * psi if stage == 1 else 4 * psi / n + bucket
    opt = 12 * psi / n  # fp32 too: DeepSpeed keeps its own fp32 partition besides the module's parameters
    if offload:
        opt = 0.0
        grads = p_bytes * psi if stage == 1 else bucket
    return States(params, grads, opt)


def optimizer_step_temporaries(numel: int, foreach: bool, tensors: int = 1) -> int:
    """Peak bytes an AdamW step allocates beyond its parameters, gradients and states, for ``numel`` fp32
    elements in ``tensors`` tensors: traced (fake tensors, a steady-state second step) with torch's own
    AdamW -- ``foreach`` (torch's default on GPU) works on all tensors at once, the loop on one at a time."""
    import torch

    from .trace import StepTrace, fake_input, new_fake_mode

    mode = new_fake_mode()
    sizes = [numel // tensors] * (tensors - 1) + [numel - (numel // tensors) * (tensors - 1)]
    params = [torch.nn.Parameter(fake_input(mode, (k,))) for k in sizes if k > 0]
    for q in params:
        q.grad = fake_input(mode, q.shape)
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=foreach)
    opt.step()  # the states exist in steady state
    tr = StepTrace()
    tr.register(*params, opt)
    for q in params:
        tr._track(q.grad, "gradients")
    base = tr.total
    tr.reset_peak()
    with tr:
        opt.step()
    tr.close()
    return max(0, tr.peak - base)


def linear_fit(points: dict[int, float]) -> tuple[float, float]:
    """(intercept, slope) of bytes against micro-batch from traced points (least squares)."""
    xs, ys = list(points), list(points.values())
    if len(xs) == 1:
        return ys[0], 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - slope * mx, slope


def step_seconds(flops_per_rank_step: float, peak_tflops: float, mfu: float) -> float:
    return flops_per_rank_step / (peak_tflops * 1e12 * mfu)


def implied_mfu(flops_per_rank_step: float, measured_s: float, peak_tflops: float) -> float:
    return flops_per_rank_step / (measured_s * peak_tflops * 1e12)


def gib(x: float) -> float:
    return round(float(x) / GIB, 4)


def max_fitting(predict, limit_bytes: float, upper: int) -> int:
    """The largest micro-batch in 1..upper whose prediction fits under ``limit_bytes`` (0: none)."""
    best = 0
    for mb in range(1, upper + 1):
        if predict(mb) <= limit_bytes:
            best = mb
        else:
            break
    return best
