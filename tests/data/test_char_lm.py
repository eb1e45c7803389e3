"""Character-LM data: the 90/10 contiguous split, random training windows and the whole-split validation loss
(Notes: 004 RNN, 004 GPT), checked against hand-computed values, a manual loop over the windows and nanoGPT's
published split sizes."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.char_lm import (
    RandomWindows,
    char_corpus,
    random_windows,
    split_loss,
    split_windows,
    train_val_split,
)
from dlkit.data.text import load_tiny_shakespeare
from dlkit.errors import ConfigError
from dlkit.models.sequence.char_rnn import CharRNN
from dlkit.models.sequence.gpt import GPT


def test_split_is_contiguous_ninety_ten():
    ids = torch.arange(1000)
    train, val = train_val_split(ids)
    assert torch.equal(train, torch.arange(900)) and torch.equal(val, torch.arange(900, 1000))
    train, val = train_val_split(torch.arange(15), 0.1)  # floor(0.9 * 15) = 13
    assert len(train) == 13 and len(val) == 2


def test_tiny_shakespeare_split_has_nanogpt_sizes(data_root):
    corpus = char_corpus(load_tiny_shakespeare(data_root, download=False))
    # nanoGPT's data/shakespeare_char/prepare.py: vocab 65, train 1,003,854 tokens, val 111,540 tokens
    assert len(corpus.vocab) == 65
    assert (len(corpus.train), len(corpus.val)) == (1_003_854, 111_540)
    assert corpus.vocab.decode(corpus.train[:14]) == "First Citizen:"


def test_random_window_targets_are_inputs_shifted_by_one():
    data = torch.arange(100, dtype=torch.uint8)
    x, y = random_windows(data, 32, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (32, 10) and x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)  # data[i] = i: targets are the next ids
    assert torch.equal(x, x[:, :1] + torch.arange(10))  # each row is a contiguous slice
    assert int(x[:, 0].min()) >= 0 and int(y[:, -1].max()) <= 99


def test_random_windows_cover_every_offset_and_never_overrun():
    data = torch.arange(12)  # block 10: offsets 0 and 1 only
    x, y = random_windows(data, 200, 10, torch.Generator().manual_seed(1))
    assert set(x[:, 0].tolist()) == {0, 1}
    assert int(y.max()) == 11


def test_random_window_stream_is_reproducible_from_the_seed():
    data = torch.randint(0, 65, (5000,))
    a, b = RandomWindows(data, 4, 8, seed=3), RandomWindows(data, 4, 8, seed=3)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        (xa, ya), (xb, yb) = next(a), next(b)
        xr, yr = random_windows(data, 4, 8, g)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(xa, xr) and torch.equal(ya, yr)
    assert not torch.equal(next(RandomWindows(data, 4, 8, seed=4))[0], next(RandomWindows(data, 4, 8, seed=3))[0])


def test_split_windows_predict_every_character_once():
    data = torch.arange(100)
    x, y, xt, yt = split_windows(data, 8)  # floor(99 / 8) = 12 full windows and a tail of 3
    assert x.shape == (12, 8) and xt.shape == (1, 3)
    assert torch.equal(torch.cat([x.reshape(-1), xt.reshape(-1)]), data[:-1])
    assert torch.equal(torch.cat([y.reshape(-1), yt.reshape(-1)]), data[1:])
    x, y, xt, yt = split_windows(torch.arange(17), 8)  # 16 predictions fill two windows exactly
    assert x.shape == (2, 8) and yt.numel() == 0


class _Uniform(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.dummy = vocab, nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab) + 0 * self.dummy


class _Repeat(nn.Module):
    """A bigram model on {0, 1}: the next character repeats the current one with probability 3/4."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        same = F.one_hot(idx, 2).float()
        return torch.log(0.75 * same + 0.25 * (1 - same)), None  # (logits, state) like a recurrent model


def test_whole_split_loss_of_a_uniform_model_is_log_vocabulary_size():
    data = torch.randint(0, 65, (1001,))
    assert split_loss(_Uniform(65), data, 64) == pytest.approx(math.log(65), abs=1e-6)  # 4.174387...


def test_whole_split_loss_matches_a_hand_computed_bigram_value():
    data = torch.tensor([0, 0, 1, 1, 0])  # transitions: same, different, same, different
    expected = -(2 * math.log(0.75) + 2 * math.log(0.25)) / 4  # 0.836988...
    assert split_loss(_Repeat(), data, 2) == pytest.approx(expected, abs=1e-6)
    assert split_loss(_Repeat(), data, 3) == pytest.approx(0.8369882167858358, abs=1e-6)  # window size: no effect


@pytest.mark.parametrize("make", [
    lambda: GPT(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16),
    lambda: CharRNN(vocab_size=11, embed_dim=8, hidden_size=16, num_layers=1, cell="lstm"),
])
def test_whole_split_loss_equals_a_manual_loop_over_non_overlapping_windows(make):
    torch.manual_seed(0)
    model = make().train()
    data = torch.randint(0, 11, (203,))
    T, total = 16, 0.0
    with torch.no_grad():
        model.eval()
        for start in range(0, len(data) - 1, T):  # windows 0..15, 16..31, ..., the last holds 202 - 192 = 10
            x, y = data[start:start + T][None], data[start + 1:start + T + 1][None]
            x = x[:, : y.shape[1]]
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out
            total += F.cross_entropy(logits[0], y[0], reduction="sum").item()
        model.train()
    got = split_loss(model, data, T, batch_size=5)
    assert got == pytest.approx(total / 202, rel=1e-6)
    assert model.training  # the mode is restored


def test_bad_inputs_are_reported():
    with pytest.raises(ConfigError, match="val_fraction"):
        train_val_split(torch.arange(10), 1.0)
    with pytest.raises(ConfigError, match="too short"):
        train_val_split(torch.arange(5), 0.1)
    with pytest.raises(ConfigError, match="block_size"):
        random_windows(torch.arange(8), 2, 8)
    with pytest.raises(ConfigError, match="integer token ids"):
        split_windows(torch.rand(100), 8)
    with pytest.raises(ConfigError, match="batch_size"):
        random_windows(torch.arange(100), 0, 8)
