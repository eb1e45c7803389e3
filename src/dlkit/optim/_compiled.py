"""Adam's update as one compiled pass over memory per tensor (Notes: 002 §1.4.3, §1.4.4).

A chain of `_foreach` ops reads and writes every state tensor once per op (about 20 passes over memory for
one Adam step); the update is memory-bound, so that is ~3x the 7 passes it needs (read theta, g, m, s; write
theta, m, s). `torch.compile` (inductor) turns the same formula into one loop per tensor that does the whole
update in registers. To compile once for any model, the kernel takes `SLOTS` tensors of any length (flat views
of the parameters, shapes marked dynamic) and every hyper-parameter as data in a vector `h` (10 numbers a slot),
so changing lr, betas or the step never recompiles; a model's tensors are packed SLOTS at a time (the last
call padded with dummies). The bias corrections are computed on the host in double precision exactly as
torch.optim computes them, and stored in the precision of the arithmetic (float32, or float64 for float64
parameters): the compiled loop reloads `h` at every vector of 16 elements (its stores may alias it), so a number
it had to convert or combine there would cost instructions in the loop (with float64 `h` the kernel took ~4%
longer). One compilation per (kernel, dtype, device): ~6-10 s with inductor's on-disk cache warm, 25-65 s cold on
a loaded 2-core CPU (`benchmarks/bench_optim.py` prints it).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

SLOTS = 32  # tensors per kernel call: fewer calls (each costs ~60 us of Python) against a longer compilation
SMALL = 4096  # parameters with fewer elements share one slot (see Pack)
HINT = 1 << 16  # the order of the example sizes the kernel is compiled on (see prepare)
SCALARS = 10  # per slot: step_size, 1/sqrt(1 - b2^t), 1 - b1, b1, b2, 1 - b2, eps, decay, l2, sign
_PAD = (0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0)  # a padding slot's scalars: the update leaves it unchanged
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _decay_and_moments(p: Tensor, g: Tensor, m: Tensor, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The update up to its last line, for one slot's scalars `h`: `g <- sign g + l2 theta`, `theta <- decay
    theta`, `m <- b1 m + (1 - b1) g`, `s <- b2 s + (1 - b2) g^2`; returns (step_size, 1 / sqrt(1 - b2^t), eps)."""
    step_size, inv_bc2_sqrt, w1, b1, b2, w2, eps, decay, l2, sign = h.unbind()
    g = g * sign + l2 * p
    p.mul_(decay)
    m.mul_(b1).add_(w1 * g)
    v.mul_(b2).add_(w2 * g * g)
    return step_size, inv_bc2_sqrt, eps


def _adam_update(ps: list[Tensor], gs: list[Tensor], ms: list[Tensor], vs: list[Tensor], h: Tensor) -> None:
    """theta <- theta * decay - step_size m / (sqrt(s) / sqrt(1 - b2^t) + eps), with m, s updated first.

    Per slot i, h[10i:10i+10] = (lr / (1 - b1^t), 1 / sqrt(1 - b2^t), 1 - b1, b1, b2, 1 - b2, eps, decay, l2, sign):
    `g <- sign g + l2 theta` (maximize; Adam's coupled L2), `theta <- decay theta` (AdamW's decoupled decay,
    decay = 1 - lr wd), `m <- b1 m + (1 - b1) g`, `s <- b2 s + (1 - b2) g^2`, in torch.optim's order. Written with
    multiplies and adds (torch uses lerp for m, and divides by sqrt(1 - b2^t)), which the CPU does in fewer
    instructions: the same numbers up to float rounding (tests: 2e-7 after 5 steps, 1e-5 after 100).
    """
    for i, (p, g, m, v) in enumerate(zip(ps, gs, ms, vs)):
        step_size, inv_bc2_sqrt, eps = _decay_and_moments(p, g, m, v, h[SCALARS * i:SCALARS * (i + 1)])
        p.sub_(m / (v.sqrt() * inv_bc2_sqrt + eps) * step_size)


def _amsgrad_update(ps: list[Tensor], gs: list[Tensor], ms: list[Tensor], vs: list[Tensor], xs: list[Tensor],
                    h: Tensor) -> None:
    """`_adam_update` dividing by the running maximum x of s (AMSGrad): x <- max(x, s) before the step."""
    for i, (p, g, m, v, x) in enumerate(zip(ps, gs, ms, vs, xs)):
        step_size, inv_bc2_sqrt, eps = _decay_and_moments(p, g, m, v, h[SCALARS * i:SCALARS * (i + 1)])
        x.copy_(torch.maximum(x, v))
        p.sub_(m / (x.sqrt() * inv_bc2_sqrt + eps) * step_size)


_KERNELS = {"adam": _adam_update, "amsgrad": _amsgrad_update}
_compiled: dict[str, object] = {}
_ready: set[tuple] = set()           # (kernel, dtype, device type) compiled in this process
_broken: dict[tuple, str] = {}       # the same key -> why compiling failed (then the caller falls back)
_dummies: dict[tuple, list[list[Tensor]]] = {}


def is_broken(kernel: str, dtype: torch.dtype, device: torch.device) -> bool:
    """True if compiling the kernel for this dtype and device failed in this process."""
    return (kernel, dtype, device.type) in _broken


def _fn(kernel: str):
    fn = _compiled.get(kernel)
    if fn is None:
        # size_asserts off: the wrapper would check every input's size and stride at every call (~30% of the
        # call's Python overhead); the inputs are always 1-D contiguous views of matching sizes (`flat_views`).
        fn = _compiled[kernel] = torch.compile(_KERNELS[kernel], fullgraph=True, dynamic=True,
                                               options={"size_asserts": False})
    return fn


def _pad(kernel: str, dtype: torch.dtype, device: torch.device, lists: int) -> list[list[Tensor]]:
    """Distinct 2-element tensors for padding slots (distinct so that no two inputs alias, sizes >= 2 so that
    they match the compiled graph's dynamic sizes)."""
    key = (kernel, dtype, str(device))
    if key not in _dummies:
        _dummies[key] = [[torch.zeros(2, dtype=dtype, device=device) for _ in range(SLOTS)] for _ in range(lists)]
    return _dummies[key]


def prepare(kernel: str, dtype: torch.dtype, device: torch.device) -> str | None:
    """Compile `kernel` for dtype/device once per process, on dummies of SLOTS distinct sizes (so that the graph's
    sizes are symbolic and independent); return None, or why it cannot be compiled."""
    key = (kernel, dtype, device.type)
    if key in _broken:
        return _broken[key]
    if key in _ready:
        return None
    lists = 5 if kernel == "amsgrad" else 4
    # sizes of a real layer's order (64k + i elements, ~40 MB in all, freed at once): inductor decides from these
    # example sizes whether a loop is worth running on several threads; compiled on tiny ones, the kernel ran on
    # one thread and took 1.8x torch's fused kernel at two threads (1.1x now; 1.06x either way at one thread)
    args = [[torch.zeros(HINT + i + 2, dtype=dtype, device=device) for i in range(SLOTS)] for _ in range(lists)]
    h = torch.tensor(_PAD * SLOTS, dtype=scalars_dtype(dtype), device=device)
    try:
        with torch.no_grad():
            _fn(kernel)(*args, h)
    except Exception as e:  # no C++ compiler, an unsupported platform: the caller uses the eager path
        _broken[key] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return _broken[key]
    _ready.add(key)
    return None


def flat_views(p: Tensor, others: list[Tensor]) -> list[Tensor] | None:
    """1-D views of `p` and `others` in the same element order (memory order of a dense `p`, so channels-last
    weights qualify), or None if some tensor cannot be viewed that way."""
    if p.is_contiguous():
        perm = None
    else:
        perm = sorted(range(p.dim()), key=lambda d: -p.stride(d))
        if not p.permute(perm).is_contiguous():
            return None
    out = []
    for t in (p, *others):
        if t.shape != p.shape:
            return None
        q = t if perm is None else t.permute(perm)
        if not q.is_contiguous():
            return None
        out.append(q.view(-1))
    return out


def step_scalars(t: float, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, maximize: bool,
                 decay: str) -> tuple[float, ...]:
    """One slot's SCALARS numbers of `h`, computed in double precision as torch.optim computes them (the bias
    corrections; m's two factors as the weights of torch's lerp: w1 = 1 - b1 and 1 - w1)."""
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    l2 = weight_decay if decay == "l2" else 0.0
    shrink = 1.0 if decay == "l2" or weight_decay == 0 else 1 - (lr * weight_decay if decay == "decoupled"
                                                                 else weight_decay)
    w1 = 1 - beta1
    return (lr / bc1, 1 / math.sqrt(bc2), w1, 1 - w1, beta2, 1 - beta2, eps, shrink, l2, -1.0 if maximize else 1.0)


def scalars_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of `h` for parameters of `dtype`: that of the compiled arithmetic (float32 for float32, bfloat16
    and float16 parameters), so that the loop converts nothing."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class Pack:
    """Small parameters (fewer than SMALL elements: biases, norm weights) updated as one slot. Their state tensors
    (exp_avg, ..., and the step counters) become views of one flat buffer per name, so a step concatenates only
    theta and g and copies theta back: three ops instead of a slot each (a slot costs ~6 us of call overhead,
    more than their update)."""

    def __init__(self, params: list[Tensor], states: list[dict], names: tuple[str, ...]):
        self.params = list(params)
        self.vectors = all(p.dim() == 1 for p in params)  # biases and norm weights: no reshape needed
        self.flat_p = [p.detach().view(-1) for p in params]
        self.sizes = [p.numel() for p in params]
        self.bufs = []
        for name in names:
            buf = torch.cat([st[name].reshape(-1) for st in states])
            for st, piece, p in zip(states, buf.split(self.sizes), params):
                st[name] = piece.view(p.shape)
            self.bufs.append(buf)
        self.steps = torch.stack([st["step"] for st in states])  # the step counters too: one add for all
        for i, st in enumerate(states):
            st["step"] = self.steps[i]

    def slot(self) -> tuple[list[Tensor], tuple[list[Tensor], list[Tensor]]]:
        """This step's slot tensors [theta, g, state buffers...] and the copy of the new theta back."""
        theta = torch.cat(self.flat_p)
        grad = torch.cat([p.grad for p in self.params] if self.vectors else [p.grad.reshape(-1) for p in self.params])
        return [theta, grad, *self.bufs], (self.flat_p, list(theta.split(self.sizes)))


class Batch:
    """The slots of one compiled update (one kernel, dtype and device), run SLOTS at a time."""

    def __init__(self, kernel: str, dtype: torch.dtype, device: torch.device):
        self.kernel, self.dtype, self.device = kernel, dtype, device
        self.tensors: list[list[Tensor]] = []
        self.scalars: list[tuple[float, ...]] = []
        self.owners: list[list] = []
        self.steps: list[Tensor] = []
        self.copies: list[tuple[list[Tensor], list[Tensor]] | None] = []

    def add(self, tensors: list[Tensor], scalars: tuple[float, ...], owners: list, steps: Tensor,
            copy_back: tuple[list[Tensor], list[Tensor]] | None = None) -> None:
        """One slot: [flat theta, g, m, s(, max s)], its SCALARS numbers, what it updates, its step counter(s) to
        increment after the update, and (for a pack) the copy of the result back into the parameters."""
        self.tensors.append(tensors)
        self.scalars.append(scalars)
        self.owners.append(owners)
        self.steps.append(steps)
        self.copies.append(copy_back)

    def run(self) -> int:
        """Update every slot, SLOTS per call; return how many slots were updated (fewer than all only if a call
        failed to compile, which updates nothing: the caller updates the rest eagerly)."""
        kernel, dtype, device = self.kernel, self.dtype, self.device
        fn = _fn(kernel)
        lists = 5 if kernel == "amsgrad" else 4
        done = 0
        for a in range(0, len(self.tensors), SLOTS):
            chunk = self.tensors[a:a + SLOTS]
            cols: list[list[Tensor]] = [list(c) for c in zip(*chunk)]
            values = [x for s in self.scalars[a:a + SLOTS] for x in s]
            if len(chunk) < SLOTS:
                pad = _pad(kernel, dtype, device, lists)
                cols = [c + pad[j][len(chunk):] for j, c in enumerate(cols)]
                values += _PAD * (SLOTS - len(chunk))
            h = torch.tensor(values, dtype=scalars_dtype(dtype), device=device)
            try:
                fn(*cols, h)
            except torch._dynamo.exc.TorchDynamoException as e:  # e.g. the recompile limit: nothing was updated
                _broken[(kernel, dtype, device.type)] = f"{type(e).__name__}: {e}"
                warnings.warn(f"dlkit.optim: the compiled Adam update failed ({type(e).__name__}); using the "
                              "_foreach path from now on", RuntimeWarning, stacklevel=3)
                return done
            copies = [c for c in self.copies[a:a + SLOTS] if c is not None]
            if copies:
                torch._foreach_copy_([t for c in copies for t in c[0]], [t for c in copies for t in c[1]])
            done += len(chunk)
        return done
