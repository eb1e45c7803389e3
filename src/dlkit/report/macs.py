"""Multiply-adds of one forward pass by the notes' formulas (Notes: 000 §3.3-3.4, 002/003 conv arithmetic,
003 §3 parameter cheat sheet, 002 §3.1 attention, 000 §5.2 and 003 §8.2 recurrent cells).

Counted: the multiply-adds of matrix products, the operations whose cost is a product of widths.

    dense layer   S_in * S_out per position (an input [B, T, S_in] is B*T positions)
    convolution   K_h K_w (D_in / G) D_out O_h O_w per sample (transposed: ... I_h I_w, each input scatters a kernel)
    attention     projections L d_q (h d_k) + S d_k' (h d_k) + S d_v' (h d_v) + L (h d_v) d_model, then the scores
                  Q K^T (h L S d_k) and the weighted values softmax(.) V (h L S d_v); L queries, S keys
    recurrent     per time step and direction: G H (D_in + H_r), G = 1 (Elman), 3 (GRU), 4 (LSTM), H_r = H or the
                  projection width P (then + P H for h_t = W_hr h_t); layers above the first read D_in = dirs H_r
    matmul        A [..., n, k] @ B [..., k, m] inside any other module: n k m per batch element (also bmm, einsum,
                  F.linear, F.conv*, F.scaled_dot_product_attention called directly)

Not counted (0): embeddings (a table look-up), norms, activations, pooling, softmax, bias adds and residual sums,
whose cost is one tensor's size, not a product of widths. The same convention is
`torch.utils.flop_counter.FlopCounterMode`'s (2 FLOPs per multiply-add of a matrix product or convolution); a
test checks every registered model against it. A layer with a formula owns the multiply-adds of everything that
runs inside it (the attention's projection layers are in its row); a module without one gets the matrix products
its own code runs. Causal masks do not halve the count (the scores are computed for every pair, as the notes' n^2 d).
"""

from __future__ import annotations

import math
import string

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.overrides import TorchFunctionMode

from ..nn.attention import MultiHeadAttention
from ..nn.conv_arithmetic import conv_flops
from ..nn.recurrent import _Cell, _RecurrentLayer

GATES = {"rnn": 1, "rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


# ----------------------------------------------------------------------------- layers


def linear_macs(module: nn.Linear, out: Tensor) -> int:
    """S_in * S_out per position: every output vector is one W x."""
    return module.in_features * module.out_features * (out.numel() // module.out_features)


def conv_macs(module: nn.modules.conv._ConvNd, x: Tensor, out: Tensor) -> int:
    """K (D_in / G) D_out per output position (per input position for a transposed convolution)."""
    k, g = tuple(module.kernel_size), module.groups
    spatial = tuple((x if module.transposed else out).shape[2:])
    if len(k) == 2:
        return out.shape[0] * conv_flops(module.in_channels, module.out_channels, k, spatial, g)
    return out.shape[0] * math.prod(k) * (module.in_channels // g) * module.out_channels * math.prod(spatial)


def attention_macs(batch: int, L: int, S: int, d_q: int, d_k_in: int, d_v_in: int, heads: int, d_k: int, d_v: int,
                   d_out: int) -> int:
    """Multi-head attention (Notes: 002 §3.1.3): the Q, K, V and output projections, Q K^T and softmax(.) V."""
    projections = L * d_q * heads * d_k + S * d_k_in * heads * d_k + S * d_v_in * heads * d_v + L * heads * d_v * d_out
    return batch * (projections + heads * L * S * (d_k + d_v))


def _arg(args: tuple, kwargs: dict, i: int, name: str):
    return args[i] if len(args) > i else kwargs.get(name)


def mha_macs(module: MultiHeadAttention, args: tuple, kwargs: dict) -> int:
    """dlkit's MultiHeadAttention, batch-first [B, L, d_model]; key and value default to the query."""
    q = _arg(args, kwargs, 0, "query")
    k = _arg(args, kwargs, 1, "key")
    k = q if k is None else k
    v = _arg(args, kwargs, 2, "value")
    v = k if v is None else v
    return attention_macs(q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], v.shape[2], module.num_heads,
                          module.head_dim, module.v_head_dim, module.embed_dim)


def torch_mha_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> int:
    """torch.nn.MultiheadAttention: [L, B, E] ([B, L, E] if batch_first, [L, E] unbatched), d_k = d_v = E / h."""
    q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
    if q.dim() == 2:
        batch, L, S = 1, q.shape[0], k.shape[0]
    else:
        batch, L, S = q.shape[0 if module.batch_first else 1], q.shape[-2 if module.batch_first else 0], \
            k.shape[-2 if module.batch_first else 0]
    d = module.embed_dim
    return attention_macs(batch, L, S, d, k.shape[-1], v.shape[-1], module.num_heads, module.head_dim,
                          module.head_dim, d)


def recurrent_step_macs(mode: str, input_size: int, hidden_size: int, proj_size: int = 0) -> int:
    """One time step of one cell: G H (D_in + H_r) for the gates (+ P H for the projection). Notes: 000 §5.2.1."""
    h_r = proj_size or hidden_size
    return GATES[mode] * hidden_size * (input_size + h_r) + proj_size * hidden_size


def recurrent_macs(mode: str, input_size: int, hidden_size: int, num_layers: int, directions: int, proj_size: int,
                   steps: int) -> int:
    """A multi-layer (bidirectional) recurrent layer run for `steps` (sequence, time) pairs."""
    width = (proj_size or hidden_size) * directions
    per_step = sum(recurrent_step_macs(mode, input_size if layer == 0 else width, hidden_size, proj_size)
                   for layer in range(num_layers))
    return directions * per_step * steps


def _steps(x, lengths=None) -> int:
    """(sequence, time step) pairs a recurrent kernel computes: all B*T of a padded batch; the valid ones of a
    PackedSequence or of given lengths (torch's packed kernel skips the padding)."""
    if isinstance(x, PackedSequence):
        return int(x.data.shape[0])
    if lengths is not None:
        return int(torch.as_tensor(lengths).sum())
    return x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]


def dlkit_recurrent_macs(module: _RecurrentLayer, args: tuple, kwargs: dict) -> int:
    """dlkit's RNN/LSTM/GRU: `fast=True` runs torch's packed kernel on given lengths; the plain time loop computes
    every padded step (and masks the finished sequences)."""
    x, lengths = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 2, "lengths")
    if isinstance(x, PackedSequence) and not module.fast:
        steps = int(x.batch_sizes[0]) * len(x.batch_sizes)
    else:
        steps = _steps(x, lengths if module.fast else None)
    return recurrent_macs(module.mode, module.input_size, module.hidden_size, module.num_layers,
                          module.num_directions, module.proj_size, steps)


def torch_recurrent_macs(module: nn.RNNBase, args: tuple, kwargs: dict) -> int:
    x = _arg(args, kwargs, 0, "input")
    return recurrent_macs(module.mode.lower(), module.input_size, module.hidden_size, module.num_layers,
                          2 if module.bidirectional else 1, module.proj_size, _steps(x))


def cell_macs(mode: str, module, args: tuple, kwargs: dict) -> int:
    x = _arg(args, kwargs, 0, "input")
    rows = x.shape[0] if x.dim() == 2 else 1
    return rows * recurrent_step_macs(mode, module.input_size, module.hidden_size)


def has_formula(module: nn.Module) -> bool:
    """Whether `layer_macs` counts this module from its hyperparameters and shapes."""
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, MultiHeadAttention, nn.MultiheadAttention,
                               _RecurrentLayer, nn.RNNBase, _Cell, nn.RNNCellBase))


def layer_macs(module: nn.Module, args: tuple, kwargs: dict, out) -> int:
    """Multiply-adds of one call of a module for which `has_formula` holds."""
    if isinstance(module, nn.Linear):
        return linear_macs(module, out)
    if isinstance(module, nn.modules.conv._ConvNd):
        return conv_macs(module, _arg(args, kwargs, 0, "input"), out)
    if isinstance(module, MultiHeadAttention):
        return mha_macs(module, args, kwargs)
    if isinstance(module, nn.MultiheadAttention):
        return torch_mha_macs(module, args, kwargs)
    if isinstance(module, _RecurrentLayer):
        return dlkit_recurrent_macs(module, args, kwargs)
    if isinstance(module, nn.RNNBase):
        return torch_recurrent_macs(module, args, kwargs)
    if isinstance(module, _Cell):
        return cell_macs(module.mode, module, args, kwargs)
    if isinstance(module, nn.RNNCellBase):
        mode = {nn.LSTMCell: "lstm", nn.GRUCell: "gru"}.get(type(module), "rnn")
        return cell_macs(mode, module, args, kwargs)
    raise TypeError(f"no multiply-add formula for {type(module).__name__}")


# ----------------------------------------------------------------------------- matrix products in other code


def _methods(*names: str) -> set:
    found = set()
    for owner in (torch, torch.Tensor, torch._C.TensorBase):
        for name in names:
            if hasattr(owner, name):
                found.add(getattr(owner, name))
    return found


_MATMUL = _methods("matmul", "__matmul__", "mm", "bmm", "mv", "dot", "vdot", "inner")
_ADDMM = _methods("addmm", "baddbmm", "addmv")  # out = beta * input + alpha * (A @ B)
_CONV = {F.conv1d, F.conv2d, F.conv3d}
_CONV_T = {F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d}


def einsum_macs(equation: str, operands: list[Tensor]) -> int:
    """Contracting the operands left to right: each pairwise product costs the product of the sizes of every index
    it involves (for 'bd,bkd->bk': B K D)."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) < 2:
        return 0
    if "..." in eq:  # name the broadcast dimensions with unused letters, aligned on the right
        spare = [c for c in string.ascii_letters if c not in eq]
        ndim = [x.dim() - (len(t) - 3) if "..." in t else 0 for t, x in zip(terms, operands)]
        width = max(ndim)
        terms = [t.replace("...", "".join(spare[width - n:width])) for t, n in zip(terms, ndim)]
        out = out.replace("...", "".join(spare[:width]))
    if not arrow:
        out = "".join(sorted(c for c in set("".join(terms)) if "".join(terms).count(c) == 1))
    sizes: dict[str, int] = {}
    for t, x in zip(terms, operands):
        for c, n in zip(t, x.shape):
            sizes[c] = max(sizes.get(c, 1), n)
    macs, held = 0, set(terms[0])
    for i, t in enumerate(terms[1:], 1):
        involved = held | set(t)
        macs += math.prod(sizes[c] for c in involved)
        later = set(out).union(*terms[i + 1:])
        held = {c for c in involved if c in later}
    return macs


def op_macs(func, args: tuple, kwargs: dict, out) -> int:
    """Multiply-adds of one torch call that is a matrix product, convolution or attention; 0 for any other."""
    if not isinstance(out, Tensor):
        return 0
    if func in _MATMUL:
        return out.numel() * args[0].shape[-1]
    if func in _ADDMM:
        return out.numel() * args[1].shape[-1]
    if func is F.linear:
        return out.numel() * _arg(args, kwargs, 1, "weight").shape[-1]
    if func in _CONV or func in _CONV_T:
        w = _arg(args, kwargs, 1, "weight")
        per = w.shape[1] * math.prod(w.shape[2:])
        return (out.numel() if func in _CONV else args[0].numel()) * per
    if func is F.scaled_dot_product_attention:
        q, k, v = args[0], _arg(args, kwargs, 1, "key"), _arg(args, kwargs, 2, "value")
        return math.prod(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    if func is torch.einsum:
        operands = list(args[1][0] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:])
        return einsum_macs(args[0], operands)
    return 0


class MatmulCounter(TorchFunctionMode):
    """Calls `record(func, macs)` for every matrix product run while active (torch functions and tensor methods)."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        macs = op_macs(func, args, kwargs, out)
        if macs:
            self.record(macs)
        return out
