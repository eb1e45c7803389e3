"""The language-model task and its training stream (Notes: 004 GPT, 004 RNN/LSTM): the whole-split loss against
a window-by-window loop with log_softmax, the step's loss against the models' own losses, nanoGPT's learning-rate
formula, samples, a resumable stream and DDP rank shares that add up to the global batch."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.char_lm import RandomWindows, random_windows
from dlkit.data.text import CharVocab
from dlkit.engine import checkpoint as ckpt
from dlkit.engine.task import TrainingPlan
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.errors import ConfigError
from dlkit.models.sequence.char_rnn import CharRNN
from dlkit.models.sequence.gpt import GPT
from dlkit.tasks.language_model import LanguageModelTask

V = 11


def _gpt(block=8):
    torch.manual_seed(0)
    return GPT(V, block, n_layer=1, n_head=2, n_embd=16, bias=False)


def _task(model, **kw):
    return LanguageModelTask(model, **{"block_size": 8, "lr": 1e-2, "warmup_steps": 2, "lr_decay_steps": 10,
                                       "min_lr": 1e-3, **kw})


# ----------------------------------------------------------------------------- RandomWindows


def test_random_windows_state_dict_round_trips_through_a_checkpoint(tmp_path):
    data = torch.randint(0, V, (3000,))
    a = RandomWindows(data, 6, 8, seed=5)
    for _ in range(3):
        next(a)
    path = ckpt.save_checkpoint(tmp_path, 3, {"data": a.state_dict()})
    expected = [next(a) for _ in range(4)]  # the uninterrupted stream
    b = RandomWindows(data, 6, 8, seed=123)  # another seed: everything must come from the state
    b.load_state_dict(ckpt.load_checkpoint_file(path)["data"])
    assert b.drawn == 3
    for (xe, ye), (xb, yb) in zip(expected, (next(b) for _ in range(4)), strict=True):
        assert torch.equal(xe, xb) and torch.equal(ye, yb)


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shares_concatenate_to_the_global_batch(world):
    data = torch.randint(0, V, (3000,))
    streams = [RandomWindows(data, 12, 8, seed=7, rank=r, world_size=world) for r in range(world)]
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        parts = [next(s) for s in streams]
        x, y = random_windows(data, 12, 8, g)  # one process drawing the global batch
        assert all(p[0].shape == (12 // world, 8) for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ConfigError, match="multiple of 2"):
        RandomWindows(torch.arange(100), 5, 8, rank=0, world_size=2)
    with pytest.raises(ConfigError, match="rank"):
        RandomWindows(torch.arange(100), 4, 8, rank=2, world_size=2)


# ----------------------------------------------------------------------------- evaluation


def _reference_split_loss(model, data, block):
    """Every id after the first predicted once: a loop over consecutive windows, log_softmax and gather."""
    total, count = 0.0, 0
    for s in range(0, len(data) - 1, block):
        x, y = data[s:s + block], data[s + 1:s + block + 1]
        x = x[:len(y)]
        out = model(x[None])
        logits = out[0] if isinstance(out, tuple) else out
        total -= F.log_softmax(logits[0].double(), -1).gather(1, y[:, None]).sum().item()
        count += len(y)
    assert count == len(data) - 1
    return total / count


@pytest.mark.parametrize("make", [_gpt, lambda: CharRNN(V, 8, 16, 1, cell="lstm")])
@pytest.mark.parametrize("eval_batch_size", [1, 4, 128])
def test_evaluate_is_the_mean_loss_over_every_token_of_the_split(make, eval_batch_size):
    model = make().eval()
    data = torch.randint(0, V, (203,))  # 202 predictions: 25 windows of 8 and a tail of 2
    task = _task(model, eval_batch_size=eval_batch_size)
    with torch.no_grad():
        got = task.evaluate(model, data)
        ref = _reference_split_loss(model, data, 8)
    assert got["loss"] == pytest.approx(ref, rel=1e-6)
    assert got["bits_per_char"] == pytest.approx(ref / math.log(2), rel=1e-6)


def test_evaluate_of_a_uniform_model_is_log_vocabulary_size():
    class Uniform(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return torch.zeros(*x.shape, V) + self.w

    assert _task(Uniform()).evaluate(Uniform(), torch.randint(0, V, (50,)))["loss"] == pytest.approx(math.log(V))


def test_evaluation_runs_in_float32_under_a_bf16_autocast():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(V, V)

        def forward(self, x):
            out = self.lin(F.one_hot(x, V).float())
            seen.append(out.dtype)
            return out

    model = Probe()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _task(model).evaluate(model, torch.randint(0, V, (40,)))
    assert set(seen) == {torch.float32}


# ----------------------------------------------------------------------------- training step and optimizer


def test_training_step_loss_equals_the_models_own_next_token_loss():
    x, y = random_windows(torch.randint(0, V, (500,)), 4, 8, torch.Generator().manual_seed(0))
    gpt = _gpt()
    assert torch.equal(_task(gpt).training_step(gpt, (x, y), None)["loss"], gpt.loss(x, y))
    rnn = CharRNN(V, 8, 16, 1, cell="lstm")
    assert torch.equal(_task(rnn).training_step(rnn, (x, y), None)["loss"], rnn.loss(x, y)[0])


def test_optimizer_decays_gpt_matrices_only_and_follows_nanogpts_learning_rate():
    model = _gpt()
    lr, min_lr, warm, decay = 1e-2, 1e-3, 3, 10
    (opt,), (sched,) = _task(model, lr=lr, warmup_steps=warm, lr_decay_steps=decay, min_lr=min_lr,
                             weight_decay=0.1).configure_optimizers(TrainingPlan(20, None, None))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.dim() >= 2}

    def get_lr(it):  # nanoGPT train.py
        if it < warm:
            return lr * (it + 1) / (warm + 1)
        if it > decay:
            return min_lr
        coeff = 0.5 * (1.0 + math.cos(math.pi * (it - warm) / (decay - warm)))
        return min_lr + coeff * (lr - min_lr)

    for it in range(15):
        assert opt.param_groups[0]["lr"] == pytest.approx(get_lr(it), rel=1e-12)
        opt.step()
        sched.step()


def test_lr_decay_steps_default_to_the_run_length_and_bad_warmup_is_refused():
    (opt,), (sched,) = _task(_gpt(), lr_decay_steps=None, warmup_steps=0, min_lr=0.0).configure_optimizers(
        TrainingPlan(4, None, None))
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine reaches min_lr at total_steps
    with pytest.raises(ConfigError, match="warmup_steps"):
        _task(_gpt(), warmup_steps=11, lr_decay_steps=10).configure_optimizers(TrainingPlan(20, None, None))


def test_fit_on_an_endless_stream_lowers_the_whole_split_loss():
    text = "to be or not to be that is the question " * 40
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    model = GPT(len(vocab), 16, n_layer=1, n_head=2, n_embd=32, bias=False)
    task = LanguageModelTask(model, block_size=16, lr=1e-2, warmup_steps=5, lr_decay_steps=60, min_lr=1e-3,
                             vocab=vocab)
    before = task.evaluate(model.eval(), ids[1200:])["loss"]
    result = fit(task, RandomWindows(ids[:1200], 8, 16, seed=0), ids[1200:],
                 TrainerConfig(max_steps=60, grad_clip_norm=1.0, progress=False, tensorboard=False))
    assert result.steps == 60 and result.metrics["val/loss"] < 0.5 * before


def test_samples_are_reproducible_continuations_in_the_vocabulary(tmp_path):
    text = "abcdefgh ijk\n" * 20
    vocab = CharVocab.from_text(text)
    model = GPT(len(vocab), 8, n_layer=1, n_head=1, n_embd=8, bias=False).eval()
    task = LanguageModelTask(model, block_size=8, lr=1e-3, vocab=vocab, num_samples=2, sample_chars=30,
                             temperature=1.0, top_k=5, seed=3, title="tiny GPT")
    task.figures(tmp_path, model, None)
    first = (tmp_path / "samples.txt").read_text()
    task.figures(tmp_path, model, None)
    assert (tmp_path / "samples.txt").read_text() == first
    header, *samples = first.rstrip("\n").split("\n" + "-" * 60 + "\n")
    assert header.startswith("tiny GPT; samples at temperature 1, top-k 5")
    assert len(samples) == 2 and all(len(s) == 30 and set(s) <= set(vocab.chars) for s in samples)


@pytest.mark.parametrize("bf16", [True, False])
def test_bf16_autocasts_the_training_forward_pass_but_not_the_validation(bf16):
    seen = {True: set(), False: set()}

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.table, self.lin = nn.Embedding(V, V), nn.Linear(V, V)

        def forward(self, x):
            out = self.lin(self.table(x))  # a matmul: bf16 under autocast
            seen[self.training].add((torch.is_autocast_enabled("cpu"), out.dtype))
            return out

    model = Probe()
    ids = torch.randint(0, V, (400,))
    fit(_task(model), RandomWindows(ids[:300], 4, 8), ids[300:],
        TrainerConfig(max_steps=4, bf16=bf16, progress=False, tensorboard=False))
    assert seen[True] == ({(True, torch.bfloat16)} if bf16 else {(False, torch.float32)})
    assert {dtype for _, dtype in seen[False]} == {torch.float32}
    assert model.lin.weight.dtype == torch.float32  # master weights stay fp32


def test_a_split_that_is_not_one_tensor_of_ids_and_a_fractional_block_are_refused():
    model = GPT(20, 8, 1, 2, 8, dropout=0.0)
    with pytest.raises(ConfigError, match="block_size and eval_batch_size must be whole numbers >= 1; got 2.5"):
        LanguageModelTask(model, block_size=2.5, lr=1e-3)
    task = LanguageModelTask(model, block_size=8, lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.randint(0, 20, (64,)), batch_size=8)
    with pytest.raises(ConfigError, match="evaluates a whole split given as one 1-D tensor of token ids .*DataLoader"):
        task.evaluate(model, loader)
