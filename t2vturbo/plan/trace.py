"""Run the real training step under fake tensors and record what it costs: FLOPs per phase, bytes by category.

* :func:`fake_parameters` -- the library's own builders run unchanged, every parameter they register a fake
  tensor (``FakeTensorMode``): shapes and dtypes, no data, so a 14 B-parameter model needs no memory. The
  step runs unchanged too: every op that touches a weight (or a fake input) is fake, while what the step
  computes from small real tensors -- the per-sample draws, the DDIM grid, which samples are motion-guided
  -- stays real, so its data-dependent choices are the real ones.
* :class:`StepTrace` -- one ``TorchDispatchMode`` that, op by op, counts FLOPs (torch's own
  ``torch.utils.flop_counter`` formulas, so the total equals ``FlopCounterMode``'s) into the current
  *phase*, and follows every tensor storage from creation to release, by category: ``parameters``,
  ``buffers``, ``gradients`` (a trainable parameter's ``.grad``), ``optimizer`` (made inside an optimizer
  step), ``activations`` (made in a forward) and ``temporaries`` (made in backward: gradients of
  activations, recomputed checkpoint activations). It records the peak of the live total and the
  breakdown at that moment. Works the same on real tensors (the check against reality).

Phases are pushed by :meth:`StepTrace.phase` (a context) and by forward hooks on the step's networks
(:meth:`StepTrace.label`): the innermost label wins, except the :attr:`StepTrace.STICKY` phases
(``backward``, motion guidance), which take everything run inside them.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

CATEGORIES = ("parameters", "buffers", "gradients", "optimizer", "activations", "temporaries")


# ---- fake tensors ---------------------------------------------------------------------------------------
def _apply_by_assignment(self, fn, recurse=True):
    """``nn.Module._apply`` (``.to``, ``.float``, ...) for fake parameters: a converted parameter is a new
    ``Parameter`` assigned in place of the old one (torch's own path swaps tensors, which a fake parameter
    does not allow)."""
    if recurse:
        for child in self.children():
            child._apply(fn)
    for key, p in self._parameters.items():
        if p is None:
            continue
        with torch.no_grad():
            q = fn(p)
        if q is not p:
            new = nn.Parameter(q, requires_grad=p.requires_grad)
            if p.grad is not None:
                new.grad = fn(p.grad)
            self._parameters[key] = new
    for key, b in self._buffers.items():
        if b is not None:
            self._buffers[key] = fn(b)
    return self


@contextlib.contextmanager
def fake_parameters(mode: FakeTensorMode, device="cpu"):
    """Inside: every parameter a module registers becomes a fake tensor on ``device`` (no memory, initialisers
    cost nothing), so the library's own builders make full-size networks unchanged. Buffers (noise schedules,
    RoPE tables) stay real. Leaving it restores ``nn.Module``; the fake parameters stay fake.

    The step then runs outside any fake mode: an op on a fake tensor runs in ``mode`` (its output is fake),
    an op on real tensors only (grid indices, draws) computes for real, so the step's data-dependent choices
    (which samples are motion-guided, ...) are the real ones."""
    device = torch.device(device)
    register = nn.Module.register_parameter

    def register_fake(self, name, param):
        if param is not None and not is_fake(param):
            f = mode.fake_tensor_converter.from_meta_and_device(mode, param.detach().to("meta"), device)
            param = nn.Parameter(f, requires_grad=param.requires_grad)
        register(self, name, param)

    # initialisers have nothing to fill (and some read values): no-ops on fake parameters
    inits = {k: getattr(nn.init, k) for k in dir(nn.init) if k.endswith("_") and not k.startswith("_")}

    def keep(tensor, *args, **kwargs):
        return tensor

    nn.Module.register_parameter = register_fake
    for k in inits:
        setattr(nn.init, k, keep)
    try:
        with module_apply_by_assignment():
            yield mode
    finally:
        nn.Module.register_parameter = register
        for k, f in inits.items():
            setattr(nn.init, k, f)


@contextlib.contextmanager
def module_apply_by_assignment():
    """``nn.Module.to`` & co. that work on modules with fake parameters (while inside)."""
    nn.Module._apply, apply = _apply_by_assignment, nn.Module._apply
    try:
        yield
    finally:
        nn.Module._apply = apply


def new_fake_mode() -> FakeTensorMode:
    return FakeTensorMode(allow_non_fake_inputs=True)


def fake_input(mode: FakeTensorMode, shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """A fake tensor of ``shape`` (a batch input: clip pixels, latents, embeddings)."""
    return mode.fake_tensor_converter.from_meta_and_device(
        mode, torch.empty(tuple(shape), dtype=dtype, device="meta"), torch.device(device)
    )


def is_fake(t) -> bool:
    from torch._subclasses.fake_tensor import is_fake as _is_fake

    return isinstance(t, torch.Tensor) and _is_fake(t)


# ---- the trace ------------------------------------------------------------------------------------------
class StepTrace(TorchDispatchMode):
    """FLOPs per phase and live bytes per category of everything run inside it (see the module docstring).

    Register what exists before the step with :meth:`register` (parameters / buffers of modules, an
    optimizer's state); ``peak`` and ``peak_breakdown`` then include it. ``reset_peak()`` restarts the peak
    from the current live bytes (e.g. after a warm-up step)."""

    def __init__(self):
        super().__init__()
        self.flops: dict[str, int] = defaultdict(int)
        self.live: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        self.peak = 0
        self.peak_breakdown: dict[str, int] = dict(self.live)
        self.peak_phase = None
        self._phases: list[str] = []
        self._storages: dict[int, tuple] = {}  # id(storage) -> (weakref, category, nbytes)
        self._hooks: list = []
        self._in_opt = False

    # -- phases --
    #: phases that take every op run inside them, whatever network runs it (in this order of precedence)
    STICKY = ("backward", "mg_inversion", "motion_guidance")

    @property
    def current(self) -> str:
        for name in self.STICKY:
            if name in self._phases:
                return name
        return self._phases[-1] if self._phases else "other"

    @contextlib.contextmanager
    def phase(self, name: str):
        self._phases.append(name)
        try:
            yield
        finally:
            self._phases.pop()

    def label(self, module: nn.Module, name: str) -> None:
        """Every forward of ``module`` (a network of the step) counts as phase ``name``."""

        def pre(_m, _a):
            self._phases.append(name)

        def post(_m, _a, _o):
            if self._phases and self._phases[-1] == name:
                self._phases.pop()

        self._hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def optimizer(self, opt: torch.optim.Optimizer) -> None:
        """Tensors made inside ``opt.step()`` are optimizer state (or its temporaries, freed at once)."""

        def pre(*_):
            self._in_opt = True
            self._phases.append("optimizer")

        def post(*_):
            self._in_opt = False
            self._phases.pop()
            for state in opt.state.values():
                for v in state.values():
                    if isinstance(v, torch.Tensor):
                        self._track(v, "optimizer", retag=True)

        self._hooks += [opt.register_step_pre_hook(pre), opt.register_step_post_hook(post)]

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # -- memory --
    def register(self, *objs) -> None:
        """Track what exists already: modules (parameters, buffers, existing grads) and tensors."""
        for obj in objs:
            if isinstance(obj, nn.Module):
                for p in obj.parameters():
                    self._track(p, "parameters")
                    if p.grad is not None:
                        self._track(p.grad, "gradients")
                    if p.requires_grad:
                        self._hooks.append(
                            p.register_post_accumulate_grad_hook(
                                lambda q: self._track(q.grad, "gradients", retag=True)
                            )
                        )
                for b in obj.buffers():
                    self._track(b, "buffers")
            elif isinstance(obj, torch.optim.Optimizer):
                self.optimizer(obj)
                for state in obj.state.values():
                    for v in state.values():
                        if isinstance(v, torch.Tensor):
                            self._track(v, "optimizer")
            elif isinstance(obj, torch.Tensor):
                self._track(obj, "activations")

    def _track(self, t: torch.Tensor, category: str, retag: bool = False) -> None:
        try:
            st = t.untyped_storage()
        except (NotImplementedError, RuntimeError):  # sparse, nested: not produced by our step
            return
        key = id(st)
        known = self._storages.get(key)
        if known is not None and known[0]() is st:
            if retag and known[1] != category:
                self._move(known[1], category, known[2])
                self._storages[key] = (known[0], category, known[2])
            return
        nbytes = st.nbytes()
        if nbytes == 0:
            return

        def release(_ref, key=key):
            entry = self._storages.pop(key, None)
            if entry is not None:
                self.live[entry[1]] -= entry[2]

        self._storages[key] = (weakref.ref(st, release), category, nbytes)
        self.live[category] += nbytes
        self._update_peak()

    def _move(self, src: str, dst: str, nbytes: int) -> None:
        self.live[src] -= nbytes
        self.live[dst] += nbytes

    def _update_peak(self) -> None:
        total = sum(self.live.values())
        if total > self.peak:
            self.peak = total
            self.peak_breakdown = dict(self.live)
            self.peak_phase = self.current

    @property
    def total(self) -> int:
        return sum(self.live.values())

    def reset_peak(self) -> None:
        self.peak = self.total
        self.peak_breakdown = dict(self.live)
        self.peak_phase = self.current

    # -- dispatch --
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            self.flops[self.current] += int(flop_registry[packet](*args, **kwargs, out_val=out))
        if self._in_opt:
            category = "optimizer"
        elif "backward" in self._phases:
            category = "temporaries"
        else:
            category = "activations"
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, category)
        return out

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())
