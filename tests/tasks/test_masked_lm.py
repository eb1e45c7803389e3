"""MaskedLMTask (Notes: 004 Training BERT): the masked-position losses equal the model's full loss, evaluation
against a by-hand count, the training stream resumes where it stopped, a tiny batch is overfit through the
Trainer, and the fine-tuning comparison leaves the pre-trained model as it was."""

from types import SimpleNamespace

import pytest
import torch

from dlkit import create_model
from dlkit.data.sentence_tasks import BERT_SPECIALS, MaskedLMCorpus
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.models.sequence.bert import IGNORE_INDEX, mask_tokens
from dlkit.tasks.masked_lm import FineTuneComparison, MaskedLMTask, _RunningPermutations, pretraining_losses
from dlkit.tasks.optimization import OPTIMIZER_OPTIONS

LINES = ["the king is dead and the queen is sad", "long live the king and his good queen",
         "my lord the king would speak with you", "good night sweet prince and all the rest",
         "what is the matter with the king my lord", "the night is long and the day is short"] * 8


def tiny_bert(vocab_size, **kw):
    return create_model("bert_tiny", vocab_size=vocab_size, hidden=32, max_position=32, dropout=0.0, **kw)


def cfg(**kw):
    return SimpleNamespace(**{**OPTIMIZER_OPTIONS, **kw})


def test_pretraining_losses_equal_the_models_full_loss():
    torch.manual_seed(0)
    model = create_model("bert_tiny", vocab_size=50, max_position=16, dropout=0.0).double()
    x = torch.randint(len(BERT_SPECIALS), 50, (4, 12))
    types = torch.cat([torch.zeros(4, 6, dtype=torch.long), torch.ones(4, 6, dtype=torch.long)], 1)
    corrupted, labels = mask_tokens(x, 50, mask_id=4, special_ids=range(len(BERT_SPECIALS)), mlm_prob=0.3,
                                    generator=torch.Generator().manual_seed(1))
    is_next = torch.tensor([0, 1, 1, 0])
    mlm, nsp, acc = pretraining_losses(model, corrupted, types, labels, is_next)
    full = model.loss(corrupted, labels, is_next, token_type_ids=types)
    torch.testing.assert_close(mlm + nsp, full)
    chosen = labels != IGNORE_INDEX
    logits, _ = model(corrupted, types)
    assert acc.item() == pytest.approx((logits[chosen].argmax(-1) == labels[chosen]).double().mean().item())


def test_evaluation_counts_masked_hits_baseline_and_nsp_by_hand():
    corpus = MaskedLMCorpus(LINES[:40], LINES[40:], level="char")
    model = tiny_bert(len(corpus.vocab)).double().eval()
    batches = corpus.heldout_batches(3, 4, 10, seed=5)
    task = MaskedLMTask(model, cfg(), corpus)
    with torch.no_grad():
        got = task.evaluate(model, batches)
        hits = base = total = nsp = 0
        for x, types, labels, is_next in batches:
            mlm_logits, nsp_logits = model(x, types)  # the full head, every position
            chosen = labels != IGNORE_INDEX
            hits += int((mlm_logits[chosen].argmax(-1) == labels[chosen]).sum())
            base += int((labels[chosen] == corpus.most_frequent).sum())
            total += int(chosen.sum())
            nsp += int((nsp_logits.argmax(-1) == is_next).sum())
    assert got["masked_accuracy"] == pytest.approx(hits / total)
    assert got["unigram_baseline"] == pytest.approx(base / total)
    assert got["nsp_accuracy"] == pytest.approx(nsp / 12)
    assert corpus.vocab.itos[corpus.most_frequent] == " "  # the most frequent character of these lines


def test_heldout_batches_are_the_same_every_time_and_the_stream_resumes_where_it_stopped():
    corpus = MaskedLMCorpus(LINES[:40], LINES[40:], level="char")
    a, b = corpus.heldout_batches(2, 4, 8, seed=1), corpus.heldout_batches(2, 4, 8, seed=1)
    assert all(torch.equal(u, v) for x, y in zip(a, b) for u, v in zip(x, y))
    stream = corpus.stream(4, 8, seed=3)
    it = iter(stream)
    for _ in range(3):
        next(it)
    state = stream.state_dict()
    expected = [next(it) for _ in range(2)]
    resumed = corpus.stream(4, 8, seed=3)
    resumed.load_state_dict(state)
    got = [b for _, b in zip(range(2), resumed)]
    assert all(torch.equal(u, v) for x, y in zip(got, expected) for u, v in zip(x, y))


def test_a_tiny_batch_is_overfit_through_the_trainer():
    torch.manual_seed(0)
    corpus = MaskedLMCorpus(LINES[:40], LINES[40:], level="char")
    model = tiny_bert(len(corpus.vocab))
    task = MaskedLMTask(model, cfg(lr=3e-3), corpus)
    batch = [corpus.batch(corpus.train_ids, 8, 10, torch.Generator().manual_seed(0))]  # one fixed batch
    before = task.evaluate(model.eval(), batch)
    after = fit(task, batch, batch, TrainerConfig(epochs=150, eval_every_epochs=None, progress=False,
                                                  tensorboard=False, checkpoint_every_minutes=None)).metrics
    assert after["val/mlm_loss"] < 0.05 * before["mlm_loss"]
    assert after["val/masked_accuracy"] == after["val/nsp_accuracy"] == 1.0


def test_running_permutations_follow_one_generator_across_epochs():
    x, y = torch.arange(10), torch.arange(10)
    loader = _RunningPermutations(x, y, batch_size=4, seed=7)
    g = torch.Generator().manual_seed(7)
    for epoch in range(3):  # the order of `for epoch: perm = randperm(n, g)`
        perm = torch.randperm(10, generator=g)
        loader.set_epoch(epoch)
        assert torch.equal(torch.cat([b[0] for b in loader]), perm)


def test_fine_tuning_comparison_reports_both_accuracies_and_leaves_the_pretrained_body_alone():
    corpus = MaskedLMCorpus(LINES[:40], LINES[40:], level="char")
    model = tiny_bert(len(corpus.vocab))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    c = SimpleNamespace(seed=0, weight_decay=0.01, ft_train=8, ft_test=4, ft_min_words=6, ft_max_len=32,
                        ft_batch_size=4, ft_epochs=1, ft_lr=1e-3, ft_dropout=0.1)
    compare = FineTuneComparison(corpus, LINES[:40], LINES[40:], lambda: tiny_bert(len(corpus.vocab)).bert, c)
    metrics, histories, examples = compare.compare(model.bert)
    assert set(metrics) == {"test/finetune_accuracy_pretrained", "test/finetune_accuracy_scratch"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values()) and len(examples.labels) == 4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_vocabulary_with_room_only_for_the_special_tokens_is_refused_in_one_line():
    from dlkit.errors import ConfigError

    lines = ["to be or not to be", "that is the question"]
    for size in (1, 5):
        with pytest.raises(ConfigError, match=rf"counts BERT.s 5 special tokens .* must be > 5 .*got {size}"):
            MaskedLMCorpus(lines, lines, "word", size)
    assert len(MaskedLMCorpus(lines, lines, "word", 6).vocab) == 6
