"""Seq2SeqTask (Notes: 003 §9, 002 §3.1.4): teacher-forced loss over a whole split, greedy and beam decoding of both
model kinds (beam width 1 = greedy; a wide beam = exhaustive search), the Trainer-ready batches, and a tiny task
learnt through the headless Trainer."""

import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from dlkit.data.sequence_tasks import reversal_task
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.errors import ConfigError
from dlkit.models.sequence.seq2seq import Seq2Seq
from dlkit.models.sequence.transformer import Transformer
from dlkit.tasks.optimization import OPTIMIZER_OPTIONS
from dlkit.tasks.seq2seq import Seq2SeqTask, until_eos

PAD, SOS, EOS = 0, 1, 2


def tiny_transformer(vocab=9, **kw):
    return Transformer(**{"src_vocab_size": vocab, "d_model": 16, "num_heads": 2, "num_encoder_layers": 1,
                          "num_decoder_layers": 1, "d_ff": 32, "dropout": 0.0, "max_len": 16, **kw})


def tiny_rnn(vocab=9):
    return Seq2Seq(vocab, vocab, embed_dim=8, hidden_size=16, bidirectional=True, attention="bahdanau")


def cfg(**kw):
    return SimpleNamespace(**{**OPTIMIZER_OPTIONS, **kw})


def make_task(model, data):
    return Seq2SeqTask(model, cfg(), data.src_vocab, data.tgt_vocab)


def test_until_eos_keeps_the_eos_and_drops_padding():
    assert until_eos(torch.tensor([5, 6, EOS, 7, PAD]), EOS, PAD) == [5, 6, EOS]
    assert until_eos([5, PAD, PAD], EOS, PAD) == [5]  # never finished: no <EOS>, so it cannot equal a target


def test_loader_batches_are_those_of_sequence_task_batches_resume_mid_epoch_and_split_over_ranks():
    data = reversal_task(100, 20, num_symbols=5, min_len=2, max_len=6, seed=0)
    loader = data.loader("train", 16, seed=3)
    loader.set_epoch(2)
    ours = list(loader)
    ref = list(data.batches("train", 16, seed=3, epoch=2))
    assert len(ours) == len(loader) == len(ref)
    for (src, lengths, tgt), (rsrc, rtgt) in zip(ours, ref):
        assert torch.equal(src, rsrc.ids) and torch.equal(lengths, rsrc.lengths) and torch.equal(tgt, rtgt)
    rest = list(loader.iter_from(4))
    assert all(torch.equal(a[2], b[2]) for a, b in zip(rest, ours[4:])) and len(rest) == len(ours) - 4
    ranks = [list(data.loader("train", 16, seed=3, rank=r, world_size=2)) for r in range(2)]  # DDP: 2 slices
    one = list(data.loader("train", 16, seed=3))
    for part0, part1, whole in zip(*ranks, one):
        assert all(torch.equal(torch.cat([a, b]), c) for a, b, c in zip(part0, part1, whole))
    ordered = list(data.loader("test", 8, shuffle=False, bucket=False))
    src, tgt = data.tensors("test")
    assert torch.equal(torch.cat([b[0] for b in ordered]), src.ids) and torch.equal(torch.cat([b[2] for b in ordered]),
                                                                                  tgt)


@pytest.mark.parametrize("make", [tiny_transformer, tiny_rnn])
def test_evaluated_loss_is_the_token_mean_over_the_whole_split(make):
    data = reversal_task(40, 11, num_symbols=5, min_len=2, max_len=6, seed=1)
    model = make().double().eval()
    task = make_task(model, data)
    with torch.no_grad():
        got = task.evaluate(model, data.loader("test", 4, shuffle=False, bucket=False))
        src, tgt = data.tensors("test")  # one batch: cross-entropy summed over every real target token / count
        logits = model(src.ids, tgt[:, :-1], src.lengths)[0] if make is tiny_rnn else model(src.ids, tgt[:, :-1])
        ref = F.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], ignore_index=PAD, reduction="sum")
    assert got["loss"] == pytest.approx(ref.item() / int((tgt[:, 1:] != PAD).sum()), rel=1e-9)
    assert set(got) == {"loss", "exact_match", "token_accuracy"}


@pytest.mark.parametrize("make", [tiny_transformer, tiny_rnn])
def test_beam_width_one_equals_greedy_decoding(make):
    torch.manual_seed(2)
    model = make().double().eval()
    task = Seq2SeqTask(model, cfg(), None, None)
    src = torch.tensor([[4, 5, 6, 7], [8, 4, 5, PAD], [6, 6, PAD, PAD]])
    lengths = (src != PAD).sum(1)
    greedy, _ = task.greedy(model, src, lengths, max_len=6)
    beam = task.beam(model, src, lengths, max_len=6, beam_width=1)
    assert [until_eos(g, EOS, PAD) for g in greedy] == [until_eos(b, EOS, PAD) for b in beam]


def test_wide_beam_equals_exhaustive_search_over_all_sequences_of_up_to_three_tokens():
    # 003 §9: beam search approximates argmax_y log p(y | x); with a beam wider than every prefix it is exact
    V = 5
    model = tiny_transformer(vocab=V).double().eval()
    task = Seq2SeqTask(model, cfg(), None, None)
    for seed in range(4):
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))  # a peaked, seed-dependent distribution over sequences
        src = torch.tensor([[3, 4, 4]])
        best, best_lp = None, -float("inf")
        with torch.no_grad():
            memory, kpm = model.encode(src)
            for n in range(3):  # n tokens, then <EOS>: sequences of 1..3 tokens
                for body in itertools.product([t for t in range(V) if t != EOS], repeat=n):
                    seq = [*body, EOS]
                    logp = model.decode(torch.tensor([[SOS, *seq[:-1]]]), memory, kpm)[0].log_softmax(-1)
                    lp = sum(logp[i, t].item() for i, t in enumerate(seq))
                    if lp > best_lp:
                        best, best_lp = seq, lp
        found = task.beam(model, src, (src != PAD).sum(1), max_len=3, beam_width=40)[0]
        assert found == best, f"seed {seed}"


def fit_quietly(task, train, val, epochs):
    return fit(task, train, val, TrainerConfig(epochs=epochs, eval_every_epochs=None, progress=False,
                                               tensorboard=False, checkpoint_every_minutes=None))


def test_a_tiny_reversal_task_is_overfit_through_the_trainer():
    data = reversal_task(16, 1, num_symbols=6, min_len=3, max_len=6, seed=0)
    model = Seq2Seq(len(data.src_vocab), len(data.tgt_vocab), embed_dim=16, hidden_size=32, bidirectional=True,
                    attention="bahdanau")
    task = Seq2SeqTask(model, cfg(lr=0.02), data.src_vocab, data.tgt_vocab, beam_width=2)
    whole = data.loader("train", 16, shuffle=False, bucket=False)
    before = task.evaluate(model.eval(), whole)
    after = fit_quietly(task, data.loader("train", 8, seed=0), whole, epochs=60).metrics
    assert after["val/loss"] < 0.01 * before["loss"]
    assert after["val/exact_match"] == after["val/token_accuracy"] == after["val/beam_exact_match"] == 1.0


def test_the_transformers_teacher_forced_loss_falls_through_the_trainer():
    data = reversal_task(64, 1, num_symbols=4, min_len=2, max_len=4, seed=0)
    model = tiny_transformer(vocab=len(data.src_vocab))
    task = Seq2SeqTask(model, cfg(lr=3e-3), data.src_vocab, data.tgt_vocab)
    whole = data.loader("train", 64, shuffle=False, bucket=False)
    before = task.evaluate(model.eval(), whole)
    after = fit_quietly(task, data.loader("train", 16, seed=0), whole, epochs=10).metrics
    assert after["val/loss"] < 0.5 * before["loss"]


def test_bad_beam_width_is_refused():
    with pytest.raises(ConfigError, match="beam_width"):
        Seq2SeqTask(tiny_transformer(), cfg(), None, None, beam_width=0)


def test_the_report_reuses_the_last_evaluations_outputs_only_for_the_same_weights(tmp_path):
    data = reversal_task(20, 6, num_symbols=4, min_len=2, max_len=4, seed=0)
    model = tiny_transformer(vocab=len(data.src_vocab)).eval()
    task = make_task(model, data)
    val = data.loader("test", 4, shuffle=False, bucket=False)
    with torch.no_grad():
        task.evaluate(model, val)
        assert task._decode_all(model, val) is task._decoded[1]
        paths = task.figures(tmp_path, model, val)
        assert (tmp_path / "samples.txt").read_text().count("->") == 6 + 6  # 6 samples, then the 6 wrong ones
        assert (tmp_path / "figures" / "cross_attention_layer1.png") in paths
        next(model.parameters()).add_(1.0)  # other weights (e.g. early stopping restored the best): decode again
        again = task._decode_all(model, val)
    assert again is not task._decoded[1]
    assert all(torch.equal(g, task.greedy(model, s, n, task.max_len(t))[0]) for s, n, t, g, _ in again)
