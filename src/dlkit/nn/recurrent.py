"""Recurrent networks from their equations: Elman RNN, LSTM and GRU cells and layers (Notes: 000 §5.2-5.2.1,
003 §8, 004 RNN/LSTM/GRU).

A recurrent layer applies one cell, with the same weights, at every time step; the hidden state carries the past:

    Elman RNN  h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)        f = tanh (or relu, identity)
    LSTM       i, f, o = sigma(.), g = tanh(.)   (gate pre-activations W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
               c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)     (h_t = W_hr h_t with a projection, as LSTMP)
    GRU        r, z = sigma(.),  n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn)),
               h_t = (1 - z) * n + z * h_{t-1}

The notes' concatenated form W [h_{t-1}, x_t] + b is the same product split into W_hh h + W_ih x; torch (whose
parameter names and gate order, LSTM i,f,g,o and GRU r,z,n, are used here so that `load_state_dict` from
nn.RNN/nn.LSTM/nn.GRU works directly) keeps two bias vectors where the notes have one: only their sum matters.
`bias=False` gives the notes' bias-free RNN and GRU (004). Errata: 004's LSTM output gate contains a GRU reset
gate r_t; it is ignored here and 000's six equations are used.

GRU conventions: the 004 notes, Cho et al. (2014) and torch all write h_t = z h_{t-1} + (1 - z) n; Chung et al.
(2014) and some textbooks swap z and 1 - z (`update="swapped"`; not "Cho's paper", as the 003 inventory says).
The notes' candidate tanh(W x + r * (U h)) applies r after the product, as torch and cuDNN do; Cho et al. (2014,
eq. 8) apply it before, tanh(W x + U (r * h)) (`reset_after=False`, Keras' older default).

Layers: multi-layer (`num_layers`, `dropout` between layers), `bidirectional` (a second stack reads the sequence
end to start; outputs are concatenated per step, 003 §8.2.1), `batch_first`, an initial state argument, variable
lengths (`lengths=` or a PackedSequence), and the hidden-state initialisations of 000 §5.2: zeros, sampled from
N(0, init_std^2), or learned. The time loop is plain Python for clarity; `fast=True` runs torch's fused kernels
on the same parameters (a test proves both equal).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..errors import ConfigError

NONLINEARITIES = ("tanh", "relu", "identity")
INIT_STATES = ("zeros", "sampled", "learned")
GRU_UPDATES = ("torch", "swapped")
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}

# ----------------------------------------------------------------------------- one time step


def _affine(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    y = x @ w.t()
    return y if b is None else y + b


def _nonlinearity(name: str, z: Tensor) -> Tensor:
    if name == "tanh":
        return torch.tanh(z)
    if name == "relu":
        return torch.relu(z)
    return z


def rnn_step(gx: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, nonlinearity: str = "tanh") -> Tensor:
    """One Elman RNN step. Notes: 000 §5.2, 004 RNN, 003 §8. h_t = f(gx + W_hh h_{t-1} + b_hh), gx = W_ih x_t + b_ih."""
    return _nonlinearity(nonlinearity, gx + _affine(h, w_hh, b_hh))


def lstm_step(gx: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor | None,
              w_hr: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One LSTM step. Notes: 000 §5.2.1 (the six equations), 003 §8.2.

    [i, f, g, o] = gx + W_hh h_{t-1} + b_hh (gx = W_ih x_t + b_ih); i, f, o = sigma(.), g = tanh(.) (the notes'
    C~_t); c_t = f * c_{t-1} + i * g; h_t = o * tanh(c_t), then h_t = W_hr h_t when a projection W_hr is given.
    """
    i, f, g, o = (gx + _affine(h, w_hh, b_hh)).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return (h if w_hr is None else h @ w_hr.t()), c


def gru_step(gx: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, update: str = "torch",
             reset_after: bool = True) -> Tensor:
    """One GRU step. Notes: 004 GRU, 003 §8.2 (Cho et al. 2014).

    [x_r, x_z, x_n] = gx = W_ih x_t + b_ih;  r = sigma(x_r + W_hr h + b_hr), z = sigma(x_z + W_hz h + b_hz);
    n = tanh(x_n + r * (W_hn h + b_hn)) (reset_after, torch and the notes) or tanh(x_n + W_hn (r * h) + b_hn);
    h_t = (1 - z) * n + z * h_{t-1} (update="torch", as the 004 notes) or z * n + (1 - z) * h_{t-1} ("swapped").
    """
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    w_r, w_z, w_n = w_hh.chunk(3, dim=0)
    b_r, b_z, b_n = b_hh.chunk(3, dim=0) if b_hh is not None else (None, None, None)
    r = torch.sigmoid(x_r + _affine(h, w_r, b_r))
    z = torch.sigmoid(x_z + _affine(h, w_z, b_z))
    n = torch.tanh(x_n + (r * _affine(h, w_n, b_n) if reset_after else _affine(r * h, w_n, b_n)))
    return (1 - z) * n + z * h if update == "torch" else z * n + (1 - z) * h


# ----------------------------------------------------------------------------- cells


def _check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {choices}; got {value!r}")


def _check_size(what: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} must be a positive int; got {value!r}")
    return value


class _Cell(nn.Module):
    mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size = _check_size("input_size", input_size), _check_size("hidden_size",
                                                                                                   hidden_size)
        kw = {"device": device, "dtype": dtype}
        g = _GATES[self.mode] * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(g, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(g, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), as torch initialises its cells."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _prepare(self, x: Tensor):
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ConfigError(f"{type(self).__name__} expects input [batch, {self.input_size}] or [{self.input_size}]; "
                              f"got {tuple(x.shape)}")
        batched = x.dim() == 2
        x = x if batched else x.unsqueeze(0)
        gx = _affine(x, self.weight_ih, self.bias_ih)
        return x, gx, batched

    def _zeros(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.hidden_size)

    def _state(self, h: Tensor | None, x: Tensor, batched: bool) -> Tensor:
        if h is None:
            return self._zeros(x)
        h = h if batched else h.unsqueeze(0)
        if h.shape != (x.shape[0], self.hidden_size):
            raise ConfigError(f"{type(self).__name__} state must be [{x.shape[0]}, {self.hidden_size}] for this "
                              f"input; got {tuple(h.shape)}")
        return h


class RNNCell(_Cell):
    """Elman RNN cell. Notes: 000 §5.2, 004 RNN, 003 §8 (Elman). h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    `nonlinearity` is 'tanh' (the notes' typical f), 'relu' (both as torch.nn.RNNCell) or 'identity' (a linear RNN).
    """

    mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None):
        _check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        x, gx, batched = self._prepare(x)
        h = rnn_step(gx, self._state(hx, x, batched), self.weight_hh, self.bias_hh, self.nonlinearity)
        return h if batched else h.squeeze(0)


class LSTMCell(_Cell):
    """LSTM cell with torch.nn.LSTMCell's parameters (gate order i, f, g, o). Notes: 000 §5.2.1, 003 §8.2.

    f_t = sigma(W_f [h_{t-1}, x_t] + b_f), i_t, o_t alike, C~_t = tanh(W_C [h_{t-1}, x_t] + b_C),
    C_t = f_t * C_{t-1} + i_t * C~_t, h_t = o_t * tanh(C_t). forward(x, (h, c)) returns (h_t, c_t).
    """

    mode = "lstm"

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        x, gx, batched = self._prepare(x)
        h, c = (None, None) if hx is None else hx
        h, c = lstm_step(gx, self._state(h, x, batched), self._state(c, x, batched), self.weight_hh, self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_Cell):
    """GRU cell with torch.nn.GRUCell's parameters (gate order r, z, n). Notes: 004 GRU, 003 §8.2.

    r = sigma(W_ir x + b_ir + W_hr h + b_hr), z alike, n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h_t = (1 - z) * n + z * h_{t-1}. `update='swapped'` (Chung et al. 2014) and `reset_after=False` (Cho et al.
    2014 eq. 8) give the other published forms.
    """

    mode = "gru"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, update: str = "torch",
                 reset_after: bool = True, device=None, dtype=None):
        _check_choice("update", update, GRU_UPDATES)
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.update, self.reset_after = update, bool(reset_after)

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        x, gx, batched = self._prepare(x)
        h = gru_step(gx, self._state(hx, x, batched), self.weight_hh, self.bias_hh, self.update, self.reset_after)
        return h if batched else h.squeeze(0)


# ----------------------------------------------------------------------------- helpers


def reverse_padded(x: Tensor, lengths: Tensor | None = None, time_dim: int = 0) -> Tensor:
    """Reverse each sequence of a padded batch within its own length; padding stays where it is.

    x: [T, B, ...] (time_dim=0) or [B, T, ...] (time_dim=1); lengths: [B] (None: all T, i.e. a plain flip).
    out[t, b] = x[L_b - 1 - t, b] for t < L_b, x[t, b] otherwise.
    """
    if lengths is None:
        return x.flip(time_dim)
    xt = x.transpose(0, time_dim) if time_dim else x
    t_len = xt.shape[0]
    lengths = torch.as_tensor(lengths, device=x.device).long()
    t = torch.arange(t_len, device=x.device).unsqueeze(1)  # [T, 1]
    src = torch.where(t < lengths.unsqueeze(0), lengths.unsqueeze(0) - 1 - t, t)  # [T, B]
    index = src.reshape(t_len, -1, *([1] * (xt.dim() - 2))).expand_as(xt)
    out = xt.gather(0, index)
    return out.transpose(0, time_dim) if time_dim else out


# ----------------------------------------------------------------------------- layers


class _RecurrentLayer(nn.Module):
    """Multi-layer, optionally bidirectional recurrent layer over a whole sequence (shared code of RNN/LSTM/GRU)."""

    mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 init_state: str = "zeros", init_std: float = 1.0, fast: bool = False, proj_size: int = 0,
                 nonlinearity: str = "tanh", update: str = "torch", reset_after: bool = True,
                 device=None, dtype=None):
        super().__init__()
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        _check_size("num_layers", num_layers)
        _check_choice("init_state", init_state, INIT_STATES)
        _check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        _check_choice("update", update, GRU_UPDATES)
        if float(init_std) < 0:
            raise ConfigError(f"init_std (std of a sampled initial state) must be >= 0; got {init_std!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout between layers must be in [0, 1); got {dropout!r}")
        if not isinstance(proj_size, int) or not (proj_size == 0 or 0 < proj_size < hidden_size):
            raise ConfigError(f"proj_size must be 0 (no projection) or an int in [1, hidden_size={hidden_size}); "
                              f"got {proj_size!r}")
        if fast and (nonlinearity == "identity" or update != "torch" or not reset_after):
            raise ConfigError("fast=True runs torch's kernels, which know only tanh/relu RNNs and the torch GRU "
                              f"(update='torch', reset_after=True); got nonlinearity={nonlinearity!r}, "
                              f"update={update!r}, reset_after={reset_after!r}. Use fast=False for these forms.")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, bool(batch_first), float(dropout)
        self.bidirectional, self.num_directions = bool(bidirectional), 2 if bidirectional else 1
        self.init_state, self.init_std, self.fast, self.proj_size = init_state, float(init_std), bool(fast), proj_size
        self.nonlinearity, self.update, self.reset_after = nonlinearity, update, bool(reset_after)
        self.out_size = proj_size or hidden_size
        kw = {"device": device, "dtype": dtype}
        g = _GATES[self.mode] * hidden_size
        self._names: list[list[str]] = []  # per (layer, direction): [w_ih, w_hh, b_ih, b_hh, w_hr]
        for layer in range(num_layers):
            for direction in range(self.num_directions):
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                n_in = input_size if layer == 0 else self.out_size * self.num_directions
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}", f"bias_ih{sfx}", f"bias_hh{sfx}", f"weight_hr{sfx}"]
                self.register_parameter(names[0], nn.Parameter(torch.empty(g, n_in, **kw)))
                self.register_parameter(names[1], nn.Parameter(torch.empty(g, self.out_size, **kw)))
                self.register_parameter(names[2], nn.Parameter(torch.empty(g, **kw)) if bias else None)
                self.register_parameter(names[3], nn.Parameter(torch.empty(g, **kw)) if bias else None)
                self.register_parameter(names[4], nn.Parameter(torch.empty(proj_size, hidden_size, **kw))
                                        if proj_size else None)
                self._names.append(names)
        n_states = num_layers * self.num_directions
        if init_state == "learned":
            self.h0 = nn.Parameter(torch.zeros(n_states, self.out_size, **kw))
            self.c0 = nn.Parameter(torch.zeros(n_states, hidden_size, **kw)) if self.mode == "lstm" else None
        self.reset_parameters()
        if fast:
            self.__dict__["_template"] = self._torch_template()  # not a submodule: no parameters, no state_dict

    # -------------------------------------------------------------- parameters

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), as torch initialises nn.RNN/nn.LSTM/nn.GRU."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for names in self._names:
            for name in names:
                p = getattr(self, name)
                if p is not None:
                    nn.init.uniform_(p, -bound, bound)

    def _layer_params(self, layer: int, direction: int) -> list[Tensor | None]:
        return [getattr(self, n) for n in self._names[layer * self.num_directions + direction]]

    def _torch_template(self) -> nn.Module:
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[self.mode]
        kw = {"nonlinearity": self.nonlinearity} if self.mode == "rnn" else {}
        if self.mode == "lstm":
            kw["proj_size"] = self.proj_size
        return cls(self.input_size, self.hidden_size, self.num_layers, bias=self.bias, batch_first=False,
                   dropout=self.dropout, bidirectional=self.bidirectional, device="meta", **kw)

    # -------------------------------------------------------------- state

    def initial_state(self, batch_size: int, device=None, dtype=None):
        """h_0 (and c_0 for an LSTM), [num_layers * num_directions, batch, H], by `init_state`. Notes: 000 §5.2.

        'zeros': h_0 = 0; 'sampled': h_0 ~ N(0, init_std^2), drawn afresh at every call; 'learned': a Parameter
        (initially 0) shared by all sequences and trained with the rest of the network.
        """
        ref = getattr(self, self._names[0][0])
        device, dtype = device or ref.device, dtype or ref.dtype
        n = self.num_layers * self.num_directions
        shapes = [(n, batch_size, self.out_size)] + ([(n, batch_size, self.hidden_size)] if self.mode == "lstm" else [])
        if self.init_state == "zeros":
            states = [torch.zeros(s, device=device, dtype=dtype) for s in shapes]
        elif self.init_state == "sampled":
            states = [torch.randn(s, device=device, dtype=dtype) * self.init_std for s in shapes]
        else:
            learned = [self.h0] + ([self.c0] if self.mode == "lstm" else [])
            states = [p.to(device=device, dtype=dtype).unsqueeze(1).expand(s) for p, s in zip(learned, shapes)]
        return (states[0], states[1]) if self.mode == "lstm" else states[0]

    def _check_state(self, hx, batch: int, batched: bool):
        items = hx if self.mode == "lstm" else (hx,)
        if self.mode == "lstm" and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ConfigError("LSTM state must be a tuple (h_0, c_0); got " + type(hx).__name__)
        n = self.num_layers * self.num_directions
        out = []
        for k, s in enumerate(items):
            s = s if batched else s.unsqueeze(1)
            want = (n, batch, self.out_size if k == 0 else self.hidden_size)
            if tuple(s.shape) != want:
                raise ConfigError(f"{type(self).__name__} initial state {'hc'[k]}_0 must be "
                                  f"[num_layers * num_directions, batch, H] = {list(want)}; got {tuple(s.shape)}")
            out.append(s)
        return tuple(out) if self.mode == "lstm" else out[0]

    # -------------------------------------------------------------- forward

    def forward(self, input: Tensor | PackedSequence, hx=None, lengths: Tensor | None = None):
        """Run the sequence; returns (output, h_n) for RNN/GRU and (output, (h_n, c_n)) for LSTM, as torch.

        input: [T, B, input_size] ([B, T, input_size] if batch_first), [T, input_size] unbatched, or a
        PackedSequence. output: [T, B, num_directions * H] (zeros at padded steps); h_n: [num_layers *
        num_directions, B, H], the state after each sequence's last valid step. lengths: [B] valid lengths.
        """
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ConfigError("pass either a PackedSequence or lengths=, not both")
            padded, lens = pad_packed_sequence(input)  # [T, B, F], original batch order
            out, state = self._run(padded, hx, lens, batched=True)
            order = input.sorted_indices
            sorted_out = out if order is None else out.index_select(1, order)
            sorted_lens = lens if order is None else lens[order.cpu()]
            return input._replace(data=pack_padded_sequence(sorted_out, sorted_lens).data), state
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            layout = "[B, T, input_size]" if self.batch_first else "[T, B, input_size]"
            raise ConfigError(f"{type(self).__name__} expects input {layout} with input_size={self.input_size} "
                              f"(or [T, input_size] unbatched); got {tuple(input.shape)}")
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[0] == 0:
            time_dim = "dim 1" if batched and self.batch_first else "dim 0"
            raise ConfigError(f"{type(self).__name__} needs a sequence of at least one step; got input "
                              f"{tuple(input.shape)} with T = 0 ({time_dim})")
        if lengths is not None:
            lengths = torch.as_tensor(lengths).long().cpu()
            if lengths.shape != (x.shape[1],) or lengths.min() < 1 or lengths.max() > x.shape[0]:
                raise ConfigError(f"lengths must hold one length in [1, T={x.shape[0]}] per sequence "
                                  f"(batch {x.shape[1]}); got {lengths.tolist()}")
        out, state = self._run(x, hx, lengths, batched)
        if not batched:
            out = out.squeeze(1)
            state = (state[0].squeeze(1), state[1].squeeze(1)) if self.mode == "lstm" else state.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, state

    def _run(self, x: Tensor, hx, lengths: Tensor | None, batched: bool):
        """x: [T, B, F] time-major; returns time-major output and the final state."""
        hx = self.initial_state(x.shape[1], x.device, x.dtype) if hx is None else self._check_state(
            hx, x.shape[1], batched)
        if self.fast:
            return self._run_fast(x, hx, lengths)
        lstm = self.mode == "lstm"
        h0, c0 = hx if lstm else (hx, None)
        mask = None
        if lengths is not None and bool((lengths < x.shape[0]).any()):
            mask = (torch.arange(x.shape[0]).unsqueeze(1) < lengths.unsqueeze(0)).to(x.device).unsqueeze(-1)
        h_n, c_n, layer_input = [], [], x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                w_ih, w_hh, b_ih, b_hh, w_hr = self._layer_params(layer, direction)
                k = layer * self.num_directions + direction
                gx = _affine(layer_input, w_ih, b_ih)  # W_ih x_t + b_ih for every t at once: [T, B, G*H]
                h, c = h0[k], (c0[k] if lstm else None)
                ys: list[Tensor | None] = [None] * x.shape[0]
                for t in (reversed(range(x.shape[0])) if direction else range(x.shape[0])):
                    if lstm:
                        h_new, c_new = lstm_step(gx[t], h, c, w_hh, b_hh, w_hr)
                    elif self.mode == "gru":
                        h_new, c_new = gru_step(gx[t], h, w_hh, b_hh, self.update, self.reset_after), None
                    else:
                        h_new, c_new = rnn_step(gx[t], h, w_hh, b_hh, self.nonlinearity), None
                    if mask is not None:  # past a sequence's end its state stays, its output is 0
                        ys[t] = torch.where(mask[t], h_new, torch.zeros_like(h_new))
                        h_new = torch.where(mask[t], h_new, h)
                        c_new = torch.where(mask[t], c_new, c) if lstm else None
                    else:
                        ys[t] = h_new
                    h, c = h_new, c_new
                outputs.append(torch.stack(ys))
                h_n.append(h)
                c_n.append(c)
            layer_input = torch.cat(outputs, dim=-1) if self.num_directions == 2 else outputs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        h_n = torch.stack(h_n)
        return layer_input, ((h_n, torch.stack(c_n)) if lstm else h_n)

    def _run_fast(self, x: Tensor, hx, lengths: Tensor | None):
        template = self.__dict__["_template"]
        template.train(self.training)
        params = {n: getattr(self, n) for n, _ in template.named_parameters()}
        if lengths is None:
            return torch.func.functional_call(template, params, (x, hx))
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, state = torch.func.functional_call(template, params, (packed, hx))
        return pad_packed_sequence(out, total_length=x.shape[0])[0], state

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False),
                              ("proj_size", 0), ("init_state", "zeros"), ("fast", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s


class RNN(_RecurrentLayer):
    """Multi-layer Elman RNN over a sequence, parameter-compatible with torch.nn.RNN. Notes: 000 §5.2, 004 RNN.

    h_t^(l) = f(W_ih^(l) h_t^(l-1) + b_ih^(l) + W_hh^(l) h_{t-1}^(l) + b_hh^(l)), h_t^(0) = x_t, f = tanh/relu/identity.
    Returns (output, h_n). See the module docstring for lengths, bidirectional, init_state and fast.
    """

    mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 init_state: str = "zeros", init_std: float = 1.0, fast: bool = False, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, init_state,
                         init_std, fast, nonlinearity=nonlinearity, device=device, dtype=dtype)


class LSTM(_RecurrentLayer):
    """Multi-layer LSTM over a sequence, parameter-compatible with torch.nn.LSTM. Notes: 000 §5.2.1, 003 §8.2.

    Each layer applies `lstm_step` (f, i, o = sigma, C~ = tanh, C_t = f C_{t-1} + i C~, h_t = o tanh(C_t)) at
    every step; returns (output, (h_n, c_n)). `proj_size` > 0 adds torch's output projection h_t = W_hr h_t (LSTMP,
    used by ELMo). `forget_bias` sets the forget-gate bias (b_ih_f = value, b_hh_f = 0; Keras and Jozefowicz et
    al. 2015 use 1) so that early in training the cell keeps its memory.
    """

    mode = "lstm"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 init_state: str = "zeros", init_std: float = 1.0, fast: bool = False,
                 forget_bias: float | None = None, device=None, dtype=None):
        if forget_bias is not None and not bias:
            raise ConfigError("forget_bias needs bias=True (it is a bias value); got bias=False")
        self.forget_bias = forget_bias
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, init_state,
                         init_std, fast, proj_size=proj_size, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """torch's U(-1/sqrt(H), 1/sqrt(H)) for all, then the forget-gate bias set to `forget_bias` if given."""
        super().reset_parameters()
        if self.forget_bias is not None:
            h = self.hidden_size
            with torch.no_grad():
                for names in self._names:
                    getattr(self, names[2])[h:2 * h].fill_(float(self.forget_bias))  # gate order i, f, g, o
                    getattr(self, names[3])[h:2 * h].zero_()


class GRU(_RecurrentLayer):
    """Multi-layer GRU over a sequence, parameter-compatible with torch.nn.GRU. Notes: 004 GRU, 003 §8.2.

    Each layer applies `gru_step` (r, z = sigma, n = tanh(W_in x + b_in + r (W_hn h + b_hn)),
    h_t = (1 - z) n + z h_{t-1}); returns (output, h_n). `update` and `reset_after` choose the other published
    conventions (see the module docstring).
    """

    mode = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 init_state: str = "zeros", init_std: float = 1.0, fast: bool = False, update: str = "torch",
                 reset_after: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, init_state,
                         init_std, fast, update=update, reset_after=reset_after, device=device, dtype=dtype)


LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def recurrent_layer(cell: str, *args, **kwargs) -> _RecurrentLayer:
    """Build RNN, LSTM or GRU by name ('rnn', 'lstm', 'gru')."""
    if cell not in LAYERS:
        raise ConfigError(f"cell must be one of {tuple(LAYERS)}; got {cell!r}")
    return LAYERS[cell](*args, **kwargs)
