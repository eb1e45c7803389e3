"""`dlkit summary`: per-layer output shape, parameters and multiply-adds by the notes' formulas
(Notes: 000 §3.3-3.4, 003 §3 parameter cheat sheet, 004 CNN, 002 §3.1 attention).

Dense layer: S_in*S_out + S_out parameters; convolution: Kw*Kh*Din*Dout + Dout (Din divided by the groups for
grouped and depth-wise convolutions). Multiply-adds: every matrix product of the forward pass by the formulas in
`report/macs.py` (dense, convolution, attention with its projections, recurrent cells per time step, and the
matrix products of any other module); norms, activations, pooling and embeddings count 0. The totals count each
parameter tensor once (tied weights are shared), so they agree with `sum(p.numel() for p in model.parameters())`.

Token models (whose first layer with parameters is an embedding) read token ids [batch, length]: their input
shape is the sequence length alone, and every required input of their forward (a translation model's source and
target) gets ids of that length.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..errors import ConfigError
from ..nn.attention import KeyValueAttention, MultiHeadAttention
from ..nn.conv_arithmetic import conv_params, dense_params
from .macs import MatmulCounter, has_formula, layer_macs


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple
    params: int
    macs: int


@dataclass
class Summary:
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    input_shape: tuple = ()

    def format_table(self) -> str:
        w = max([len(r.name) for r in self.rows] + [5])
        k = max([len(r.kind) for r in self.rows] + [4])
        head = f"{'layer':<{w}}  {'type':<{k}}  {'output shape':<22} {'params':>14} {'mult-adds':>16}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            shape = "x".join(map(str, r.output_shape)) if r.output_shape else "-"
            lines.append(f"{r.name:<{w}}  {r.kind:<{k}}  {shape:<22} {r.params:>14,} {r.macs:>16,}")
        lines += ["-" * len(head),
                  f"input {'x'.join(map(str, self.input_shape))}: {self.total_params:,} parameters "
                  f"({self.trainable_params:,} trainable), {self.total_macs:,} multiply-adds "
                  f"({self.total_macs / 1e9:.3f} GMACs, about {2 * self.total_macs / 1e9:.3f} GFLOPs)"]
        return "\n".join(lines)


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(out, dict):
        return _first_tensor(list(out.values()))
    return None


def _formula_params(module: nn.Module) -> int | None:
    """Parameters of a dense or convolution layer by the notes' formula (None for other modules)."""
    if isinstance(module, nn.Linear):
        return dense_params(module.in_features, module.out_features, module.bias is not None)
    if isinstance(module, nn.modules.conv._ConvNd):
        k, g = tuple(module.kernel_size), module.groups
        return conv_params(module.in_channels, module.out_channels, k, g, module.bias is not None)
    return None


MAX_DIM = 2**31 - 1            # the largest size of one dimension torch indexes with 32-bit kernels
MEMORY_FRACTION = 0.5          # activations may take at most this share of the available memory


def check_input_shape(shape: tuple[int, ...]) -> None:
    """Refuse an input shape that no tensor can have: empty, a dimension below 1 or above MAX_DIM, or more
    elements than a 64-bit count holds."""
    if not shape:
        raise ConfigError("the input shape has no dimensions; give one sample's shape, e.g. 3,224,224")
    bad = [d for d in shape if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DIM]
    if bad:
        raise ConfigError(f"the input shape {'x'.join(map(str, shape))[:80]} has a dimension outside 1..{MAX_DIM} "
                          f"({str(bad[0])[:40]}); every size must be a positive whole number")
    if math.prod(shape) > 2**60:  # 8-byte elements: a size in bytes that a 64-bit count holds
        raise ConfigError(f"the input shape {'x'.join(map(str, shape))[:80]} has {math.prod(shape):.3g} elements, "
                          "more than a tensor can hold; use smaller sizes")


DEFAULT_SEQUENCE_LENGTH = 32  # tokens, for token models that declare no default input shape
TOKEN_ID = 1                  # the id fed to token models: in every vocabulary (>= 2 tokens), not padding id 0


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's input: its `default_input_dtype`, else token ids (long) when its first layer with
    parameters (a module without children: a container's own scalars, such as ELMo's mixing weights, are not a
    layer) is an embedding, else float32."""
    if hasattr(model, "default_input_dtype"):
        return model.default_input_dtype
    first = next((m for m in model.modules()
                  if not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False))), None)
    return torch.long if isinstance(first, nn.Embedding) else torch.float32


def takes_tokens(model: nn.Module) -> bool:
    return not input_dtype(model).is_floating_point


def default_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """One sample's shape: the model's `default_input_shape`, else DEFAULT_SEQUENCE_LENGTH tokens for a token
    model (at most its `block_size`), else None."""
    if getattr(model, "default_input_shape", None) is not None:
        return tuple(model.default_input_shape)
    if takes_tokens(model):
        return (min(DEFAULT_SEQUENCE_LENGTH, getattr(model, "block_size", DEFAULT_SEQUENCE_LENGTH)),)
    return None


def required_inputs(model: nn.Module) -> int:
    """How many positional inputs `model.forward` needs (2 for a translation model's source and target)."""
    params = inspect.signature(model.forward).parameters.values()
    n = sum(1 for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return max(n, 1)


def check_token_shape(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """A token model reads [batch, length]; any other model is refused nothing here (its forward checks)."""
    if takes_tokens(model) and len(input_shape) != 2:
        sample = "x".join(map(str, input_shape[1:])) or "(none)"
        raise ConfigError(f"{type(model).__name__} reads token ids [batch, length] (its first layer is an embedding), "
                          f"so its input shape is one number, the sequence length (e.g. {DEFAULT_SEQUENCE_LENGTH}); "
                          f"got {sample}")


def example_inputs(model: nn.Module, input_shape: tuple[int, ...], device="cpu") -> tuple[torch.Tensor, ...]:
    """Inputs of shape `input_shape` (batch included) for one forward pass: token id TOKEN_ID for a token model (one
    tensor per required input of its forward), else zeros of the model's dtype."""
    if takes_tokens(model):
        check_token_shape(model, tuple(input_shape))
        ids = torch.full(tuple(input_shape), TOKEN_ID, dtype=input_dtype(model), device=device)
        return (ids,) * required_inputs(model)
    return (torch.zeros(*input_shape, device=device, dtype=input_dtype(model)),)


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux MemAvailable, else the free physical pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _forward_bytes(model: nn.Module, inputs: tuple, run) -> int:
    """Bytes of the inputs and of every leaf module's output in the forward pass `run()` makes."""
    total = sum(t.numel() * t.element_size() for t in inputs)

    def count(module, inp, out):
        nonlocal total
        t = _first_tensor(out)
        if t is not None and not list(module.children()):
            total += t.numel() * t.element_size()

    hook = nn.modules.module.register_module_forward_hook(count)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            run()
    finally:
        hook.remove()
        model.train(was)
    return total


def _probe_bytes(model: nn.Module, inputs: tuple, probe: int = 8) -> int:
    """Activation bytes of a token model whose forward reads values (lengths from padding), which the meta device
    cannot give: a real forward at `probe` tokens, scaled to the full length (quadratically where attention scores
    [L, S] are held, linearly otherwise). An estimate, not a bound."""
    length = inputs[0].shape[-1]
    short = example_inputs(model, (*inputs[0].shape[:-1], min(probe, length)))
    got = _forward_bytes(model, short, lambda: model(*short))
    attention = any(isinstance(m, (MultiHeadAttention, KeyValueAttention, nn.MultiheadAttention))
                    for m in model.modules())
    return math.ceil(got * (length / short[0].shape[-1]) ** (2 if attention else 1))


def _value_bytes(model: nn.Module, inputs: tuple) -> int:
    """Activation bytes of an image model whose forward reads values (a detector: which anchors survive NMS, which
    regions selective search proposes), which the meta device cannot give: a real forward at the given shape, refused
    first when the input alone would take more than 1/64 of the available memory (a safe margin for a detector)."""
    real = example_inputs(model, tuple(inputs[0].shape))
    size = sum(t.numel() * t.element_size() for t in real)
    if 64 * size > available_memory():
        raise ConfigError(f"an input of shape {'x'.join(map(str, real[0].shape))} takes {size / 2**30:.3g} GiB; "
                          f"{type(model).__name__}'s activations would not fit in memory; use a smaller --input-shape")
    return _forward_bytes(model, real, lambda: model(*real))


@contextlib.contextmanager
def _weights_on_meta(model: nn.Module):
    """Every parameter and buffer of `model` replaced by a meta tensor of its shape for the block, tied ones by one
    shared meta tensor, and the very same objects put back afterwards, whatever happens (torch.func.functional_call
    left weights tied across modules on the meta device when the forward failed)."""
    slots = [(m, table, name, t) for m in model.modules() for table in (m._parameters, m._buffers)
             for name, t in table.items() if t is not None]
    metas: dict[int, torch.Tensor] = {}
    try:
        for _, table, name, t in slots:
            if id(t) not in metas:
                on_meta = t.detach().to("meta")
                metas[id(t)] = nn.Parameter(on_meta, t.requires_grad) if isinstance(t, nn.Parameter) else on_meta
            table[name] = metas[id(t)]
        yield
    finally:
        for _, table, name, t in slots:
            table[name] = t


def activation_bytes(model: nn.Module, inputs: tuple) -> int:
    """Bytes of the inputs and of every module's outputs in one forward pass, computed on the meta device (shapes
    only: nothing is allocated), so a shape too large for memory is found before any allocation. An upper bound of
    what an inference forward holds at once (it frees intermediate outputs). A token model whose forward needs
    values (e.g. lengths read from the padding) is estimated from a short real forward (`_probe_bytes`), an image
    model that needs them (a detector) from a real forward (`_value_bytes`)."""
    meta = tuple(t.to("meta") for t in inputs)
    try:
        try:
            with _weights_on_meta(model):
                return _forward_bytes(model, meta, lambda: model(*meta))
        except (RuntimeError, NotImplementedError) as e:
            if "meta" not in str(e):
                raise
            return _probe_bytes(model, inputs) if takes_tokens(model) else _value_bytes(model, inputs)
    except (RuntimeError, ValueError, IndexError, TypeError, NotImplementedError) as e:
        shape = "x".join(map(str, inputs[0].shape[1:]))
        first = " ".join(str(e).split())[:200]
        default = default_input_shape(model)
        hint = f"e.g. {'x'.join(map(str, default))} (its default)" if default else "e.g. its default input shape"
        raise ConfigError(f"{type(model).__name__} cannot take an input of shape {shape} ({type(e).__name__}: "
                          f"{first}); give the shape it expects, {hint}") from e


@dataclass
class _Frame:
    """A module running in the forward pass: its row name, whether its formula counts it (and everything inside),
    whether an enclosing formula already does, and the multiply-adds of matrix products its own code ran."""
    name: str
    formula: bool
    inside: bool
    macs: int = 0


def summarize(model: nn.Module, input_shape: tuple[int, ...] | None = None, inputs=None,
              device: str | torch.device = "cpu") -> Summary:
    """Run one forward pass and tabulate every module that owns parameters, has no children or runs matrix products
    of its own. An input shape (batch included) is checked first: positive sizes, [batch, length] for a token model,
    activations that fit in memory (estimated on the meta device). Multiply-adds: `report/macs.py`."""
    if inputs is None:
        if input_shape is None:
            raise ValueError("summarize needs input_shape (e.g. (1, 3, 224, 224)) or inputs")
        check_input_shape(tuple(input_shape))
        check_token_shape(model, tuple(input_shape))
        need = activation_bytes(model, example_inputs(model, tuple(input_shape), device="meta"))
        have = available_memory()
        if need > MEMORY_FRACTION * have:
            raise ConfigError(f"the activations of one forward pass at input shape {'x'.join(map(str, input_shape))} "
                              f"need about {need / 2**30:.3g} GiB, more than half of the {have / 2**30:.3g} GiB of "
                              "memory available; use a smaller --input-shape")
        inputs = example_inputs(model, tuple(input_shape), device=device)
    if not isinstance(inputs, tuple) or isinstance(inputs, PackedSequence):  # a PackedSequence is one input
        inputs = (inputs,)
    summary = Summary(input_shape=tuple(_first_tensor(inputs).shape))
    seen: set[int] = set()
    stack: list[_Frame] = []
    ran_formula: set[str] = set()  # layers whose formula counted them (and everything they ran)
    hooks = []

    def own_params(m: nn.Module) -> int:
        n = 0
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    def enter(name):
        def fn(module, args):
            inside = bool(stack) and (stack[-1].inside or stack[-1].formula)
            stack.append(_Frame(name or "(model)", has_formula(module) and not inside, inside))
        return fn

    def leave(name):
        def fn(module, args, kwargs, out):
            frame = stack.pop()
            if frame.formula:
                ran_formula.add(name)
            t = _first_tensor(out)
            macs = frame.macs + (layer_macs(module, args, kwargs, out if t is None else t) if frame.formula else 0)
            by_formula = _formula_params(module)
            tensors = sum(p.numel() for p in module.parameters(recurse=False))
            if by_formula is not None and by_formula != tensors:
                raise AssertionError(f"{name}: formula gives {by_formula} parameters, tensors hold {tensors}")
            counted = own_params(module)
            if counted or macs or not list(module.children()):
                summary.rows.append(LayerRow(frame.name, type(module).__name__,
                                             tuple(t.shape) if t is not None else (), counted, macs))
        return fn

    def record(macs: int) -> None:
        if stack and not (stack[-1].inside or stack[-1].formula):
            stack[-1].macs += macs

    for name, m in model.named_modules():
        hooks.append(m.register_forward_pre_hook(enter(name)))
        hooks.append(m.register_forward_hook(leave(name), with_kwargs=True))
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), MatmulCounter(record):
            model(*inputs)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    # parameters of modules that never ran in forward (e.g. auxiliary heads in eval) still count; those of a layer
    # whose parent used their weights directly (attention's fused Q/K/V product) are in the parent's multiply-adds
    for name, m in model.named_modules():
        n = own_params(m)
        if n:
            parent = next((p for p in sorted(ran_formula) if name.startswith(p + ".") or not p), None)
            how = f" (run by {parent or '(model)'})" if parent is not None else " (not called)"
            summary.rows.append(LayerRow(name or "(model)", type(m).__name__ + how, (), n, 0))
    summary.total_params = sum(r.params for r in summary.rows)
    summary.trainable_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()
                                   if p.requires_grad)
    summary.total_macs = sum(r.macs for r in summary.rows)
    return summary
