"""Recurrent seq2seq with attention (Notes: 003 §9, §9.2; 004 Seq2Seq): shapes, the teacher-forced loss against a
by-hand computation, padding, attention weights, greedy and beam-search decoding, and a reversal overfit."""

import itertools
import math
import time

import pytest
import torch
from torch import nn

from dlkit import create_model
from dlkit.data.sequence_tasks import reversal_task
from dlkit.data.text import pad_sequences
from dlkit.errors import ConfigError
from dlkit.models.sequence.seq2seq import Seq2Seq, beam_search, greedy_search

PAD, SOS, EOS = 0, 1, 2
CONFIGS = [("gru", False, "bahdanau"), ("gru", True, "bahdanau"), ("lstm", True, "luong_general"),
           ("gru", False, "luong_dot"), ("lstm", False, "none"), ("gru", True, "none")]


def small(cell="gru", bidirectional=False, attention="bahdanau", **kw):
    return Seq2Seq(11, 9, embed_dim=6, hidden_size=8, cell=cell, bidirectional=bidirectional,
                   attention=attention, **kw).double()


def batch(lengths, vocab=11, generator=None):
    seqs = [torch.randint(3, vocab, (n,), generator=generator) for n in lengths]
    return pad_sequences(seqs, PAD)


def targets(lengths, vocab=9):
    seqs = [torch.cat([torch.tensor([SOS]), torch.randint(3, vocab, (n,)), torch.tensor([EOS])]) for n in lengths]
    return pad_sequences(seqs, PAD).ids


@pytest.mark.parametrize("cell,bidirectional,attention", CONFIGS)
def test_shapes_of_logits_and_attention(cell, bidirectional, attention):
    m = small(cell, bidirectional, attention)
    src, tgt = batch([5, 3, 4]).ids, targets([2, 4, 3])
    logits, attn = m(src, tgt[:, :-1])
    assert logits.shape == (3, 5, 9)
    assert attn is None if attention == "none" else attn.shape == (3, 5, 5)


def gru_cell(x, h, rnn):
    """torch's GRU: r, z = s(W x + b + U h + c), n = tanh(W_n x + b_n + r (U_n h + c_n)), h' = (1 - z) n + z h."""
    gi = x @ rnn.weight_ih_l0.t() + rnn.bias_ih_l0
    gh = h @ rnn.weight_hh_l0.t() + rnn.bias_hh_l0
    (ir, iz, i_n), (hr, hz, hn) = gi.chunk(3, -1), gh.chunk(3, -1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(i_n + r * hn)
    return (1 - z) * n + z * h


@pytest.mark.parametrize("bidirectional", [False, True])
def test_bahdanau_teacher_forced_loss_equals_stepwise_hand_computation(bidirectional):
    m = small("gru", bidirectional, "bahdanau")
    src, tgt = batch([5, 2, 4]), targets([3, 1, 2])
    dec, score = m.decoder, m.decoder.attn.score
    total, count = 0.0, 0
    for b in range(3):  # one unpadded example at a time
        s = src.ids[b, :int(src.lengths[b])]
        h, h_n = m.encoder.rnn(m.encoder.embed(s[None]))  # torch's GRU on the bare sequence, no packing
        h, last = h[0], torch.cat(list(h_n), -1)  # h_i [S, E]; last state [1, E] (both directions)
        state = torch.tanh(m.bridge(last)) if m.bridge is not None else last  # s_0
        t = tgt[b][tgt[b] != PAD]
        for j in range(len(t) - 1):
            e_scores = score.v(torch.tanh(score.W_q(state) + score.W_k(h))).squeeze(-1)  # v^T tanh(W1 s + W2 h_i)
            a = torch.exp(e_scores) / torch.exp(e_scores).sum()  # a_i = exp(e_i) / sum_j exp(e_j)
            c = a @ h  # c = sum_i a_i h_i
            state = gru_cell(torch.cat([dec.embed(t[j:j + 1]), c[None]], -1), state, dec.rnn)
            logits = dec.out(torch.cat([state, c[None]], -1))[0]
            total = total - torch.log_softmax(logits, -1)[t[j + 1]]
            count += 1
    torch.testing.assert_close(m.loss(src.ids, tgt), total / count)


@pytest.mark.parametrize("cell,bidirectional,attention", CONFIGS)
def test_whole_sequence_loss_equals_stepwise_decoding_with_pad_ignored(cell, bidirectional, attention):
    m = small(cell, bidirectional, attention)
    src, tgt = batch([4, 5, 2]).ids, targets([3, 1, 2])
    memory = m.encode(src)
    state, logits = memory.state, []
    for t in range(tgt.shape[1] - 1):
        lg, state, _ = m.decoder.step(tgt[:, t], state, memory)
        logits.append(lg)
    logp = torch.log_softmax(torch.stack(logits, 1), -1)
    nll = -logp.gather(2, tgt[:, 1:, None])[..., 0]
    keep = tgt[:, 1:] != PAD
    torch.testing.assert_close(m.loss(src, tgt), nll[keep].sum() / keep.sum())
    wrong = tgt.clone()
    wrong[:, 1:][~keep] = 5  # the positions left out are exactly those whose target is <PAD>
    assert not torch.allclose(m.loss(src, wrong), m.loss(src, tgt))


@pytest.mark.parametrize("cell,bidirectional,attention", CONFIGS)
def test_attention_sums_to_one_is_zero_on_padding_and_padding_changes_nothing(cell, bidirectional, attention):
    m = small(cell, bidirectional, attention)
    src, tgt = batch([5, 3, 2]), targets([2, 2, 2])
    logits, attn = m(src.ids, tgt[:, :-1])
    if attn is not None:
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, 3, dtype=attn.dtype))
        assert (attn.masked_select(src.padding_mask[:, None, :].expand_as(attn)) == 0).all()
        assert (attn[:, :, :2] > 0).all()
    for b in range(3):  # each padded example decodes exactly as it does alone
        n = int(src.lengths[b])
        alone, attn_alone = m(src.ids[b:b + 1, :n], tgt[b:b + 1, :-1])
        torch.testing.assert_close(logits[b:b + 1], alone)
        if attn is not None:
            torch.testing.assert_close(attn[b:b + 1, :, :n], attn_alone)


def test_teacher_forcing_ratio_zero_feeds_back_the_models_own_argmax():
    m = small("gru", True, "bahdanau")
    src, tgt = batch([5, 4]).ids, targets([5, 5])
    logits, _ = m(src, tgt[:, :-1], teacher_forcing_ratio=0.0)
    greedy, _, _ = m.greedy_decode(src, max_len=6)
    free = logits.argmax(-1)
    for b in range(2):
        ended = (greedy[b] == EOS).nonzero()
        n = int(ended[0]) + 1 if len(ended) else 6
        assert torch.equal(free[b, :n], greedy[b, :n])
    teacher, _ = m(src, tgt[:, :-1])
    assert not torch.allclose(teacher, logits)


# ----------------------------------------------------------------------------- decoding


def table_decoder(table):
    """A hand-built decoder whose next-token distribution depends on the last token only: p(y_t | y_t-1) = table."""
    logp = torch.log(torch.tensor(table, dtype=torch.float64))

    def step(tokens, state):
        return logp[tokens], tokens, None

    return step


# tokens: 0 <PAD>, 1 <SOS>, 2 <EOS>, 3 A, 4 B
TRAP = [[0, 0, 1, 0, 0],          # after <PAD> (unused)
        [0, 0, 0, 0.6, 0.4],      # after <SOS>: A is likelier than B ...
        [0, 0, 1, 0, 0],          # after <EOS> (unused)
        [0, 0, 0.4, 0.3, 0.3],    # ... but after A nothing is likely,
        [0, 0, 0.9, 0.05, 0.05]]  # while after B <EOS> is: p(B <EOS>) = 0.36 > p(A <EOS>) = 0.24


def best_by_enumeration(table, max_len):
    best, best_p = None, -1.0
    for n in range(max_len):
        for mid in itertools.product([3, 4], repeat=n):
            seq, p, prev = [*mid, EOS], 1.0, SOS
            for tok in seq:
                p, prev = p * table[prev][tok], tok
            if p > best_p:
                best, best_p = seq, p
    return best, best_p


def test_beam_search_finds_the_most_probable_sequence_that_greedy_misses():
    step = table_decoder(TRAP)
    greedy, g_score, _ = greedy_search(step, torch.tensor([SOS]), 1, SOS, EOS, max_len=5)
    assert greedy[0].tolist() == [3, EOS] and g_score.item() == pytest.approx(math.log(0.24))
    best, p = best_by_enumeration(TRAP, 5)
    assert best == [4, EOS] and p == pytest.approx(0.36)
    hyps = beam_search(step, torch.tensor([SOS]), SOS, EOS, beam_width=2, max_len=5)
    assert hyps[0].tokens == best and hyps[0].finished and hyps[0].score == pytest.approx(math.log(0.36))
    assert hyps[1].tokens == [3, EOS]  # the runner-up, ranked second
    width1 = beam_search(step, torch.tensor([SOS]), SOS, EOS, beam_width=1, max_len=5)
    assert width1[0].tokens == greedy[0].tolist()


def test_length_normalisation_prefers_the_higher_mean_log_probability():
    table = [[0, 0, 1, 0, 0], [0, 0, 0.5, 0.5, 0], [0, 0, 1, 0, 0], [0, 0, 0.95, 0.05, 0], [0, 0, 1, 0, 0]]
    raw = beam_search(table_decoder(table), torch.tensor([SOS]), SOS, EOS, beam_width=2, max_len=4)
    assert raw[0].tokens == [EOS]  # p = 0.5 > p(A <EOS>) = 0.475
    normed = beam_search(table_decoder(table), torch.tensor([SOS]), SOS, EOS, beam_width=2, max_len=4,
                         length_penalty=1.0)
    assert normed[0].tokens == [3, EOS]  # log(0.475) / 2 = -0.37 > log(0.5) / 1 = -0.69
    assert normed[0].normalized_score == pytest.approx(math.log(0.475) / 2)


def tree_decoder(tree):
    """A hand-built decoder with p(y_t | y_<t) = tree[prefix] (a dict token -> probability; <EOS> if absent)."""

    def step(tokens, state):
        state = torch.cat([state, tokens[:, None]], 1)  # the prefix read so far, <SOS> first
        logp = torch.full((len(tokens), 5), -math.inf, dtype=torch.float64)
        for i, row in enumerate(state.tolist()):
            for tok, p in tree.get(tuple(row[2:]), {EOS: 1.0}).items():
                logp[i, tok] = math.log(p)
        return logp, state, None

    return step


def test_beam_search_stops_only_when_no_live_prefix_can_beat_the_finished_ones():
    A, B = 3, 4
    tree = {(): {EOS: 0.3, A: 0.45, B: 0.25}, (A,): {EOS: 0.1, A: 0.9}, (B,): {EOS: 0.8, A: 0.2}}
    # whole sequences: <EOS> .3, A <EOS> .045, A A <EOS> .405, B <EOS> .2, B A <EOS> .05. After two steps <EOS>
    # and B <EOS> have ended (k = 2 finished) while the live prefix A A (.405) can still beat them.
    hyps = beam_search(tree_decoder(tree), torch.tensor([[SOS]]), SOS, EOS, beam_width=2, max_len=5)
    assert hyps[0].tokens == [A, A, EOS] and hyps[0].score == pytest.approx(math.log(0.405))
    assert [h.tokens for h in hyps] == [[A, A, EOS], [EOS]]


@pytest.mark.parametrize("cell,bidirectional,attention", CONFIGS[:3])
def test_beam_width_one_equals_greedy_decoding(cell, bidirectional, attention):
    m = small(cell, bidirectional, attention).eval()
    src = batch([5, 3, 4, 2])
    greedy, scores, attn = m.greedy_decode(src.ids, max_len=7)
    beams = m.beam_search(src.ids, beam_width=1, max_len=7)
    for b, hyps in enumerate(beams):
        n = len(hyps[0].tokens)
        assert hyps[0].tokens == greedy[b, :n].tolist() and (n == 7 or greedy[b, n - 1] == EOS)
        assert hyps[0].score == pytest.approx(scores[b].item())
        torch.testing.assert_close(hyps[0].attention, attn[b, :n])
        torch.testing.assert_close(hyps[0].attention.sum(-1), torch.ones(n, dtype=attn.dtype))
    wide = m.beam_search(src.ids, beam_width=4, max_len=7)
    assert all(w[0].score >= g[0].score - 1e-9 for w, g in zip(wide, beams) if w[0].finished and g[0].finished)


def test_a_tiny_model_overfits_the_reversal_task_within_seconds():
    task = reversal_task(16, 1, num_symbols=6, min_len=3, max_len=6, seed=0)
    src, tgt = task.tensors("train")
    m = Seq2Seq(len(task.src_vocab), len(task.tgt_vocab), embed_dim=16, hidden_size=32, bidirectional=True,
                attention="bahdanau")
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    first = m.loss(src.ids, tgt).item()
    start, loss = time.perf_counter(), first
    while time.perf_counter() - start < 5.0 and loss > 0.01 * first:
        loss_t = m.loss(src.ids, tgt)
        opt.zero_grad()
        loss_t.backward()
        opt.step()
        loss = loss_t.item()
    assert loss < 0.01 * first, (first, loss)
    out, _, attn = m.greedy_decode(src.ids, max_len=8)
    assert [task.tgt_vocab.to_text(r) for r in out] == [t for _, t in task.train]
    ends = (out == task.tgt_vocab.eos_id).int().argmax(1)  # decoding stops at <EOS>, <PAD> after it
    assert all((out[i, ends[i] + 1:] == task.tgt_vocab.pad_id).all() for i in range(len(out)))
    assert ends.tolist() == [len(t) for _, t in task.train]
    assert attn.shape[:2] == out.shape


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_models_count_the_parameters_of_their_torch_parts():
    with torch.device("meta"):
        m = create_model("seq2seq_gru_attention")
        want = (count(nn.Embedding(70, 64)) + count(nn.GRU(64, 128, bidirectional=True))  # encoder
                + count(nn.Linear(256, 128))  # bridge s_0 = tanh(W h)
                + count(nn.Embedding(15, 64)) + 128 * 128 + 256 * 128 + 128  # W_1, W_2, v_a
                + count(nn.GRU(64 + 256, 128)) + count(nn.Linear(128 + 256, 15)))
        assert count(m) == want
        m = create_model("seq2seq_lstm_luong")
        want = (count(nn.Embedding(70, 64)) + count(nn.LSTM(64, 128)) + count(nn.Embedding(15, 64))
                + 128 * 128 + count(nn.LSTM(64, 128)) + 256 * 128 + count(nn.Linear(128, 15)))  # W, LSTM, W_c, W_s
        assert count(m) == want
    assert create_model("seq2seq_gru").attention == "none"


def test_bad_configurations_and_inputs_are_reported():
    with pytest.raises(ConfigError, match="dot score"):
        Seq2Seq(10, attention="luong_dot", bidirectional=True)
    with pytest.raises(ConfigError, match="attention must be"):
        Seq2Seq(10, attention="cosine")
    with pytest.raises(ConfigError, match="cell"):
        Seq2Seq(10, cell="rnn")
    m = small()
    with pytest.raises(ConfigError, match="lengths"):
        m.encode(torch.tensor([[3, 4], [0, 0]]))
    with pytest.raises(ConfigError, match="integer"):
        m.encode(torch.rand(2, 3))
