"""Backpropagation through time, its truncated form, and the vanishing/exploding-gradient measurement (Notes: 000
§5.2, 003 §8.1, 004 RNN).

BPTT unrolls the network over the sequence, each step a layer with the same weights, and backpropagates through
the unrolled graph; because the weights are shared, the per-step gradients of a weight add up (003 §8.1). The
notes disagree on the reduction: 004 writes L = sum_t L_t, 000 "averages the gradients of each time step" (the
sum divided by T); `reduction=` chooses, and the two differ by exactly the factor T.

Truncated BPTT cuts the graph every k steps (the hidden state is carried forward as a value but detached), so a
loss at step t reaches inputs back to the start of its k-step chunk only; with k >= T it is full BPTT.

Repeated multiplication by W_hh diag(f') makes dh_T/dh_t vanish or explode with T - t (004: by the largest
singular value of W_hh; tanh saturation shrinks it further); the LSTM's cell line c_t = f c_{t-1} + i g lets
it decay far more slowly. `gradient_norm_vs_distance` measures it for the figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.recurrent import GRU, LSTM, RNN, gru_step, lstm_step, rnn_step
from ..optim.clip import clip_grad_norm_

REDUCTIONS = ("mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction over time must be 'mean' (000 §5.2) or 'sum' (004 RNN); got {reduction!r}")


def sequence_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean",
                           ignore_index: int = -100) -> Tensor:
    """Loss of a sequence model over time. Notes: 004 RNN (L = sum_t L_t), 000 §5.2 (the average over steps).

    logits [B, T, V], targets [B, T]; L_t = mean over the batch of -log softmax(logits[:, t])[targets[:, t]].
    reduction='sum' gives sum_t L_t, 'mean' gives (1/T) sum_t L_t. Targets equal to `ignore_index` are skipped
    (L_t then averages the valid entries of step t; steps with none count as 0).
    """
    _check_reduction(reduction)
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ConfigError(f"sequence_cross_entropy expects logits [B, T, V] and targets [B, T]; got "
                          f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=ignore_index)
    valid = (targets != ignore_index).to(per_token.dtype)
    per_step = per_token.sum(0) / valid.sum(0).clamp(min=1)  # L_t, [T]
    return per_step.sum() if reduction == "sum" else per_step.mean()


def detach_state(state):
    """The hidden state as values only (tensors detached, tuples kept): the cut of truncated BPTT."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


def _chunks(length: int, k: int) -> list[tuple[int, int]]:
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"truncation length k must be a positive int; got {k!r}")
    return [(s, min(s + k, length)) for s in range(0, length, k)]


def truncated_forward(model: Callable, x: Tensor, k: int, state=None, time_dim: int = 1):
    """Run `model(chunk, state) -> (output, state)` over x in chunks of k steps, detaching the state between them.

    Notes: 003 §8.1 (truncated BPTT). The values equal one full forward pass; the graph is cut every k steps,
    so d output_t / d x_s = 0 for s before the chunk of t. Returns (outputs concatenated along time_dim, state).
    """
    outputs = []
    for start, stop in _chunks(x.shape[time_dim], k):
        out, state = model(x.narrow(time_dim, start, stop - start), state)
        outputs.append(out)
        if stop < x.shape[time_dim]:
            state = detach_state(state)
    return torch.cat(outputs, dim=time_dim), state


@dataclass
class TBPTTResult:
    """Per-chunk losses and gradient norms (before clipping) of `train_tbptt`, and the final (detached) state."""

    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    state: object = None


def train_tbptt(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                k: int, clip_norm: float | None = None, state=None, time_dim: int = 1) -> TBPTTResult:
    """Truncated-BPTT training over one long sequence: an update every k steps. Notes: 003 §8.1, 000 §5.2.

    For each chunk [s, s + k): output, state = model(x_chunk, state); loss = loss_fn(output, y_chunk);
    backward; clip the global gradient norm to `clip_norm` if given (the remedy for exploding gradients);
    optimizer step; state = detach(state). With k >= T this is one step of full BPTT.
    """
    result = TBPTTResult()
    params = [p for p in model.parameters() if p.requires_grad]
    for start, stop in _chunks(x.shape[time_dim], k):
        out, state = model(x.narrow(time_dim, start, stop - start), state)
        loss = loss_fn(out, y.narrow(time_dim, start, stop - start))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            norm = clip_grad_norm_(params, clip_norm)
        else:
            grads = [p.grad.detach().reshape(-1) for p in params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.cat(grads)) if grads else torch.tensor(0.0)
        optimizer.step()
        state = detach_state(state)
        result.losses.append(float(loss.detach()))
        result.grad_norms.append(float(norm))
    result.state = state
    return result


def rnn_bptt(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b: Tensor, grad_h: Tensor,
             reduction: str = "sum") -> dict[str, Tensor]:
    """BPTT by hand for the Elman RNN h_t = tanh(W_ih x_t + W_hh h_{t-1} + b). Notes: 003 §8.1, 000 §5.2.

    x [T, B, D], h0 [B, H], grad_h [T, B, H] = dL/dh_t from the per-step losses (the direct part only).
    Backward in time: g_t = grad_h[t] + W_hh^T delta_{t+1}, delta_t = g_t (.) (1 - h_t^2); then dW_hh =
    sum_t delta_t h_{t-1}^T, dW_ih = sum_t delta_t x_t^T, db = sum_t delta_t, dx_t = W_ih^T delta_t,
    dh_0 = W_hh^T delta_1 (batch summed). reduction='mean' divides the weight gradients by T (000's average).
    """
    _check_reduction(reduction)
    with torch.no_grad():
        hs = [h0]
        for t in range(x.shape[0]):  # forward, keeping every h_t
            hs.append(torch.tanh(x[t] @ w_ih.T + hs[-1] @ w_hh.T + b))
        d_w_ih, d_w_hh, d_b = torch.zeros_like(w_ih), torch.zeros_like(w_hh), torch.zeros_like(b)
        dx, carry = torch.zeros_like(x), torch.zeros_like(h0)  # carry = W_hh^T delta_{t+1}
        for t in reversed(range(x.shape[0])):
            delta = (grad_h[t] + carry) * (1 - hs[t + 1] ** 2)
            d_w_hh += delta.T @ hs[t]
            d_w_ih += delta.T @ x[t]
            d_b += delta.sum(0)
            dx[t] = delta @ w_ih
            carry = delta @ w_hh
        scale = 1.0 / x.shape[0] if reduction == "mean" else 1.0
        return {"weight_ih": d_w_ih * scale, "weight_hh": d_w_hh * scale, "bias": d_b * scale, "x": dx, "h0": carry}


def _build_cell(cell: str, input_size: int, hidden_size: int, weight_scale: float | None, forget_bias: float,
                nonlinearity: str, generator: torch.Generator) -> nn.Module:
    if cell == "rnn":
        layer = RNN(input_size, hidden_size, nonlinearity=nonlinearity, dtype=torch.float64)
    elif cell == "lstm":
        layer = LSTM(input_size, hidden_size, forget_bias=forget_bias, dtype=torch.float64)
    elif cell == "gru":
        layer = GRU(input_size, hidden_size, dtype=torch.float64)
    else:
        raise ConfigError(f"cell must be 'rnn', 'lstm', 'gru' or a one-layer dlkit RNN/LSTM/GRU; got {cell!r}")
    bound = hidden_size ** -0.5
    with torch.no_grad():  # torch's U(-1/sqrt(H), 1/sqrt(H)) drawn from `generator`, so runs are reproducible
        for p in layer.parameters():
            p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 * bound - bound)
        if cell == "lstm":
            layer.bias_ih_l0[hidden_size:2 * hidden_size] = forget_bias
            layer.bias_hh_l0[hidden_size:2 * hidden_size] = 0.0
        if weight_scale is not None:  # each gate's block of W_hh gets largest singular value weight_scale
            for block in layer.weight_hh_l0.split(hidden_size, dim=0):
                block.mul_(weight_scale / torch.linalg.matrix_norm(block, ord=2))
    return layer


def gradient_norm_vs_distance(cell: str | nn.Module, T: int, input_size: int = 4, hidden_size: int = 16,
                              weight_scale: float | None = None, forget_bias: float = 1.0,
                              nonlinearity: str = "tanh", input_scale: float = 1.0, seed: int = 0,
                              norm: str = "spectral") -> Tensor:
    """||dh_T / ds_t|| for t = 0..T, the vanishing/exploding-gradient curve. Notes: 004 RNN, 003 §8.1, 000 §5.2.

    s_t is the recurrent state after step t (s_0 the initial state, zero): h_t for an RNN or GRU, (h_t, c_t) for
    an LSTM (so the cell line's path counts), and the derivative is the Jacobian of the state map s_t -> h_T
    (matrix 2-norm, or Frobenius with norm='fro'). `cell` is 'rnn', 'lstm', 'gru' (float64, torch's init from
    `seed`; `weight_scale` rescales each gate's W_hh block to that largest singular value; `forget_bias` sets
    the LSTM's forget bias), or a one-layer unidirectional dlkit RNN/LSTM/GRU used as is. Inputs
    x_t ~ N(0, input_scale^2). Since |tanh'| <= 1, an RNN gives ||dh_T/dh_t||_2 <= ||W_hh||_2^(T - t).
    """
    if norm not in ("spectral", "fro"):
        raise ConfigError(f"norm must be 'spectral' or 'fro'; got {norm!r}")
    if not isinstance(T, int) or T < 1:
        raise ConfigError(f"T must be a positive int; got {T!r}")
    gen = torch.Generator().manual_seed(seed)
    layer = cell if isinstance(cell, nn.Module) else _build_cell(cell, input_size, hidden_size, weight_scale,
                                                                 forget_bias, nonlinearity, gen)
    if not isinstance(layer, (RNN, LSTM, GRU)) or layer.num_layers != 1 or layer.bidirectional:
        raise ConfigError("gradient_norm_vs_distance needs a one-layer, unidirectional dlkit RNN/LSTM/GRU; got "
                          f"{type(layer).__name__}")
    w_ih, w_hh = layer.weight_ih_l0, layer.weight_hh_l0
    b_ih, b_hh, w_hr = layer.bias_ih_l0, layer.bias_hh_l0, getattr(layer, "weight_hr_l0", None)
    x = torch.randn(T, 1, layer.input_size, generator=gen, dtype=w_ih.dtype) * input_scale
    with torch.enable_grad():
        gx = x @ w_ih.detach().T + (b_ih.detach() if b_ih is not None else 0.0)
        w_hh, b_hh = w_hh.detach(), (b_hh.detach() if b_hh is not None else None)
        h = torch.zeros(1, layer.out_size, dtype=x.dtype, requires_grad=True)
        c = torch.zeros(1, layer.hidden_size, dtype=x.dtype, requires_grad=True) if layer.mode == "lstm" else None
        states = [(h, c)]
        for t in range(T):
            if layer.mode == "lstm":
                h, c = lstm_step(gx[t], h, c, w_hh, b_hh, None if w_hr is None else w_hr.detach())
                c = c.clone()  # a fresh node: the gradient reaching it comes from step t + 1 only
            elif layer.mode == "gru":
                h = gru_step(gx[t], h, w_hh, b_hh, layer.update, layer.reset_after)
            else:
                h = rnn_step(gx[t], h, w_hh, b_hh, layer.nonlinearity)
            h = h.clone()
            states.append((h, c))
        inputs = [s for pair in states for s in pair if s is not None]
        eye = torch.eye(layer.out_size, dtype=x.dtype).unsqueeze(1)  # one backward pass per component of h_T
        grads = torch.autograd.grad(h, inputs, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        grads = [torch.zeros(eye.shape[0], *s.shape, dtype=x.dtype) if g is None else g  # c_T: unused
                 for g, s in zip(grads, inputs)]
    per_state = 2 if layer.mode == "lstm" else 1
    norms = []
    for t in range(T + 1):
        jac = torch.cat([g.squeeze(1) for g in grads[t * per_state:(t + 1) * per_state]], dim=1)  # [H, |s_t|]
        norms.append(torch.linalg.matrix_norm(jac, ord=2 if norm == "spectral" else "fro"))
    return torch.stack(norms).detach()
