"""`dlkit summary`: per-layer output shape, parameters and multiply-adds by the notes' formulas
(Notes: 000 §3.3-3.4, 003 §3 parameter cheat sheet, 004 CNN).

Dense layer: S_in*S_out + S_out parameters and S_in*S_out multiply-adds per output position.
Convolution: Kw*Kh*Din*Dout + Dout parameters and Kw*Kh*Din*Dout*Ow*Oh multiply-adds (Din divided by the
groups for grouped and depth-wise convolutions). Transposed convolution: the same parameters and
Kw*Kh*Din*Dout*Iw*Ih multiply-adds (each input pixel scatters a kernel). Other layers' parameters are counted
from the tensors; their operations (norms, activations, attention's matrix products) are not in the MAC total.
The totals count each parameter tensor once (tied weights are shared), so they agree with
`sum(p.numel() for p in model.parameters())`; a test checks that the formula counts equal the tensors.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..nn.conv_arithmetic import conv_flops, conv_params, dense_params


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


def _formula(module: nn.Module, inp, out) -> tuple[int | None, int]:
    """(parameters by formula or None, multiply-adds) for one call of `module`."""
    if isinstance(module, nn.Linear):
        positions = out.numel() // module.out_features
        return dense_params(module.in_features, module.out_features, module.bias is not None), \
            module.in_features * module.out_features * positions
    if isinstance(module, nn.modules.conv._ConvNd):
        k, g = tuple(module.kernel_size), module.groups
        p = conv_params(module.in_channels, module.out_channels, k, g, module.bias is not None)
        if len(k) != 2:  # Conv1d/Conv3d: the same formula over their spatial extent
            weights = math.prod(k) * (module.in_channels // g) * module.out_channels
            return p, weights * math.prod((inp[0] if module.transposed else out).shape[2:]) * out.shape[0]
        spatial = tuple(inp[0].shape[2:]) if module.transposed else tuple(out.shape[2:])
        return p, out.shape[0] * conv_flops(module.in_channels, module.out_channels, k, spatial, g)
    return None, 0


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


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's input: its `default_input_dtype`, else token ids (long) when its first layer with
    parameters is an embedding, else float32."""
    if hasattr(model, "default_input_dtype"):
        return model.default_input_dtype
    first = next((m for m in model.modules() if any(True for _ in m.parameters(recurse=False))), None)
    return torch.long if isinstance(first, nn.Embedding) else torch.float32


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


def activation_bytes(model: nn.Module, inputs: tuple) -> int:
    """Bytes of the inputs and of every module's outputs in one forward pass, computed on the meta device (shapes
    only: nothing is allocated), so a shape too large for memory is found before any allocation. An upper bound of
    what an inference forward holds at once (it frees intermediate outputs)."""
    from torch.func import functional_call

    state = {k: v.to("meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
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
            functional_call(model, state, tuple(t.to("meta") for t in inputs))
    except (RuntimeError, ValueError, IndexError, TypeError, NotImplementedError) as e:
        shape = "x".join(map(str, inputs[0].shape[1:]))
        first = " ".join(str(e).split())[:200]
        raise ConfigError(f"{type(model).__name__} cannot take an input of shape {shape} ({type(e).__name__}: "
                          f"{first}); give the shape it expects, e.g. its default input shape") from e
    finally:
        hook.remove()
        model.train(was)
    return total


def summarize(model: nn.Module, input_shape: tuple[int, ...] | None = None, inputs=None,
              device: str | torch.device = "cpu") -> Summary:
    """Run one forward pass and tabulate every module that owns parameters or has no children. An input shape is
    checked first (positive sizes, activations that fit in memory: estimated on the meta device)."""
    if inputs is None:
        if input_shape is None:
            raise ValueError("summarize needs input_shape (e.g. (1, 3, 224, 224)) or inputs")
        check_input_shape(tuple(input_shape))
        dtype = input_dtype(model)
        need = activation_bytes(model, (torch.empty(*input_shape, device="meta", dtype=dtype),))
        have = available_memory()
        if need > MEMORY_FRACTION * have:
            raise ConfigError(f"the activations of one forward pass at input shape {'x'.join(map(str, input_shape))} "
                              f"need about {need / 2**30:.3g} GiB, more than half of the {have / 2**30:.3g} GiB of "
                              "memory available; use a smaller --input-shape")
        # token models (char RNNs, GPT, BERT) declare `default_input_dtype = torch.long`: zeros are token 0
        inputs = torch.zeros(*input_shape, device=device, dtype=input_dtype(model))
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    summary = Summary(input_shape=tuple(inputs[0].shape))
    seen: set[int] = set()
    hooks = []

    def own_params(m: nn.Module) -> int:
        n = 0
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    def hook(name):
        def fn(module, inp, out):
            t = _first_tensor(out)
            by_formula, macs = _formula(module, inp, t) if t is not None else (None, 0)
            counted = own_params(module)
            if by_formula is not None and counted and by_formula != counted:
                raise AssertionError(f"{name}: formula gives {by_formula} parameters, tensors hold {counted}")
            summary.rows.append(LayerRow(name or "(model)", type(module).__name__,
                                         tuple(t.shape) if t is not None else (), counted, macs))
        return fn

    for name, m in model.named_modules():
        if not list(m.children()) or any(True for _ in m.parameters(recurse=False)):
            hooks.append(m.register_forward_hook(hook(name)))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    # parameters of modules that never ran in forward (e.g. auxiliary heads in eval) still count
    for name, m in model.named_modules():
        n = own_params(m)
        if n:
            summary.rows.append(LayerRow(name or "(model)", type(m).__name__ + " (not called)", (), n, 0))
    summary.total_params = sum(r.params for r in summary.rows)
    summary.trainable_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()
                                   if p.requires_grad)
    summary.total_macs = sum(r.macs for r in summary.rows)
    return summary
