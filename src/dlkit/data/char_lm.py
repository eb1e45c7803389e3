"""Character language-model data: a contiguous train/validation split, random training windows held in memory,
and the loss over every character of a split (Notes: 004 RNN, 004 GPT, 002 §3.1.2; nanoGPT's shakespeare_char).

A character LM reads x_1..x_T and predicts x_2..x_{T+1}: a window of T + 1 consecutive ids gives the inputs
(its first T) and the targets (its last T). The corpus stays one id tensor in memory; a training batch is B
random offsets drawn with a `torch.Generator` and gathered by indexing, with no DataLoader or worker processes
(the fast path on CPU, DESIGN.md "Data"). The validation loss is

    L = - (1 / (N - 1)) sum_{i=2..N} log p(x_i | the characters before x_i in its window)   (nats per character)

over the N characters of the split, cut into consecutive non-overlapping windows of T predictions (the last one
shorter), so every character after the first is predicted exactly once; unlike nanoGPT's estimate from a few
random batches, it is a deterministic number. Divide by ln 2 for bits per character.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .text import CharVocab


class CharCorpus(NamedTuple):
    """A character corpus: the vocabulary and the int64 ids of the training and validation splits."""

    vocab: CharVocab
    train: Tensor
    val: Tensor


def train_val_split(ids: Tensor, val_fraction: float = 0.1) -> tuple[Tensor, Tensor]:
    """Contiguous split: the first floor((1 - f) N) ids train, the rest validate (nanoGPT's 90/10 split).

    Tiny Shakespeare's 1,115,394 characters give 1,003,854 training and 111,540 validation characters.
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1); got {val_fraction}")
    ids = torch.as_tensor(ids).reshape(-1)
    n_train = int(len(ids) * (1 - val_fraction))
    if n_train < 2 or len(ids) - n_train < 2:
        raise ConfigError(f"a text of {len(ids)} tokens is too short to split with val_fraction={val_fraction}: "
                          "each split needs at least 2 tokens (one input and one target)")
    return ids[:n_train], ids[n_train:]


def char_corpus(text: str, val_fraction: float = 0.1) -> CharCorpus:
    """Encode `text` with the vocabulary of all its characters (as nanoGPT does) and split it 90/10."""
    vocab = CharVocab.from_text(text)
    train, val = train_val_split(vocab.encode(text), val_fraction)
    return CharCorpus(vocab, train, val)


def _check_block(data: Tensor, block_size: int) -> None:
    if data.dim() != 1 or data.dtype.is_floating_point or data.dtype == torch.bool:
        raise ConfigError(f"expected a 1-D tensor of integer token ids; got {data.dtype} {tuple(data.shape)}")
    if block_size < 1 or len(data) < block_size + 1:
        raise ConfigError(f"windows of block_size={block_size} predictions need block_size >= 1 and at least "
                          f"block_size + 1 = {block_size + 1} tokens; got {len(data)} tokens. Use a smaller "
                          "block_size or more text.")


def _window_offsets(n_tokens: int, batch_size: int, block_size: int, generator: torch.Generator | None) -> Tensor:
    """B window starts o ~ U{0, ..., N - T - 1}, drawn on the CPU, so data[o : o + T + 1] fits."""
    return torch.randint(n_tokens - block_size, (batch_size,), generator=generator)


def _gather(data: Tensor, offsets: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    # an asynchronous host-to-device copy: a blocking one would wait for the GPU's queue at every step
    offsets = offsets.to(data.device, non_blocking=True)
    chunk = data[offsets[:, None] + torch.arange(block_size + 1, device=data.device)].long()
    return chunk[:, :-1], chunk[:, 1:]


def random_windows(data: Tensor, batch_size: int, block_size: int,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One training batch: inputs x [B, T] and targets y [B, T] = x shifted left, from B random offsets.

    Offsets o ~ U{0, ..., N - T - 1} (drawn on the CPU with `generator`), so the window data[o : o + T + 1]
    fits; x = its first T ids, y its last T. Ids come back as int64 on data's device whatever its integer dtype
    (uint8 saves memory for a byte-sized vocabulary).
    """
    _check_block(data, block_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1; got {batch_size}")
    return _gather(data, _window_offsets(len(data), batch_size, block_size, generator), block_size)


class RandomWindows:
    """An endless stream of `random_windows` batches, reproducible from `seed`, resumable and shardable.

    `batch_size` is the global batch. Under data parallelism (`world_size` > 1) every rank draws the same
    global batch of offsets from the same generator and keeps its contiguous rows
    [rank B / W, (rank + 1) B / W), so W ranks together train on exactly the batch one process would
    (Notes: 000 §2.1 mini-batches; the DDP gradient is the mean over the ranks' equal shares). `state_dict`
    holds the generator's state and the number of batches drawn, so a resumed stream continues bit-exactly.
    """

    def __init__(self, data: Tensor, batch_size: int, block_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        _check_block(data, block_size)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number >= 1; got {batch_size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size) with world_size >= 1; got rank={rank}, "
                              f"world_size={world_size}")
        if batch_size % world_size:
            fit = batch_size + world_size - batch_size % world_size
            raise ConfigError(f"the global batch_size={batch_size} must split evenly over {world_size} processes; "
                              f"use a multiple of {world_size} (e.g. batch_size={fit})")
        self.data, self.batch_size, self.block_size = data, batch_size, block_size
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self.drawn = 0  # global batches drawn so far

    def __iter__(self):
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        offsets = _window_offsets(len(self.data), self.batch_size, self.block_size, self.generator)
        self.drawn += 1
        if self.world_size > 1:
            share = self.batch_size // self.world_size
            offsets = offsets[self.rank * share:(self.rank + 1) * share]
        return _gather(self.data, offsets, self.block_size)

    def state_dict(self) -> dict:
        """The generator's state (a uint8 tensor) and the batches drawn: enough to continue the same stream."""
        return {"generator": self.generator.get_state(), "drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        """Continue the stream from `state` (from `state_dict`, possibly through a checkpoint)."""
        self.generator.set_state(state["generator"].to(torch.uint8).cpu().contiguous())
        self.drawn = int(state["drawn"])


def split_windows(data: Tensor, block_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The whole split as non-overlapping windows: full inputs/targets [n, T] and the tail [1, r] (r may be 0).

    n = floor((N - 1) / T) full windows start at 0, T, 2T, ...; the tail predicts the last r = N - 1 - n T ids.
    Together they predict every id of `data` but the first exactly once.
    """
    _check_block(data, block_size)
    n = (len(data) - 1) // block_size
    end = n * block_size
    x, y = data[:end].view(n, block_size), data[1:end + 1].view(n, block_size)
    return x.long(), y.long(), data[end:-1].long()[None], data[end + 1:].long()[None]


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    return out[0] if isinstance(out, tuple) else out  # recurrent models return (logits, state)


@torch.no_grad()
def split_loss(model: nn.Module, data: Tensor, block_size: int, batch_size: int = 128) -> float:
    """Mean next-character cross-entropy (nats per character) over a whole split, windows of `block_size`.

    `model(x [B, T])` returns logits [B, T, V] or (logits, state); each window starts from an empty context
    (a recurrent state starts at its initial value). The model is put in eval mode and restored afterwards.
    """
    x, y, x_tail, y_tail = split_windows(data, block_size)
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        chunks = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        if y_tail.numel():
            chunks.append((x_tail, y_tail))
        for xb, yb in chunks:
            xb, yb = xb.to(device), yb.to(device)
            logits = _logits(model, xb)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), yb.reshape(-1),
                                     reduction="sum").double()
    finally:
        model.train(was)
    return float(total) / (len(data) - 1)
