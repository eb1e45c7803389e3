"""Masked language modelling: BERT pre-training by masked LM plus next-sentence prediction, then fine-tuning
(Notes: 004 BERT, Training BERT and Fine-tuning BERT; 000 §5.3).

Contract: the model is a `BertForPreTraining` (forward(input_ids, token_type_ids, masked=bool [B, T]) ->
(MLM logits of the masked positions [M, V], NSP logits [B, 2])); a batch is (corrupted ids [B, T], segment ids
[B, T], MLM labels [B, T] with -100 where no token was chosen, is_next [B]) as `MaskedLMCorpus.batch` draws
them. The training loss is the cross-entropy of the chosen tokens plus that of next-sentence prediction;
evaluation reports the masked-token accuracy against the unigram baseline (always guess the most frequent
training token), the MLM loss in nats per masked token and the NSP accuracy. `FineTuneComparison` fine-tunes
the pre-trained encoder with a new output layer after pre-training and compares it with the same classifier
trained from scratch, each through the headless `dlkit.engine.trainer.fit`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.loader import TensorLoader
from ..data.sentence_tasks import MaskedLMCorpus, encode_single_sentences, word_order_examples
from ..engine.callbacks import Callback, LambdaCallback
from ..engine.distributed import DistInfo
from ..engine.task import Task
from ..engine.trainer import TrainerConfig, fit
from ..metrics.meter import Accuracy, Mean
from ..models.sequence.bert import IGNORE_INDEX, BertForSequenceClassification
from .classification import ClassificationTask
from .optimization import build_optimizers
from .seq2seq import at_least_fp32, unwrap


def pretraining_losses(model: nn.Module, input_ids: Tensor, token_type_ids: Tensor, labels: Tensor,
                       is_next: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(MLM loss, NSP loss, masked-token accuracy) of a `BertForPreTraining` batch. Notes: 004 Training BERT.

    The same cross-entropies as `BertForPreTraining.loss`, with the vocabulary projection computed only at the
    masked positions (the loss is zero elsewhere), which saves most of the MLM head's work.
    """
    chosen = labels != IGNORE_INDEX
    logits, nsp_logits = model(input_ids, token_type_ids, masked=chosen)
    target = labels[chosen]
    mlm = F.cross_entropy(logits, target)
    nsp = F.cross_entropy(nsp_logits, is_next)
    return mlm, nsp, (logits.argmax(-1) == target).float().mean()


class MaskedLMTask(Task):
    """BERT pre-training and its held-out scores; see the module docstring.

    `cfg` holds the optimizer options (`tasks.optimization`); `corpus` (a `MaskedLMCorpus`) gives the unigram
    baseline's token and, with `sample_lines`, the fill-in samples of the report.
    """

    metric_names = ("masked_accuracy", "unigram_baseline", "mlm_loss", "nsp_accuracy")

    def __init__(self, model: nn.Module, cfg, corpus: MaskedLMCorpus, sample_lines: Sequence[str] = (),
                 sample_max_len: int = 63):
        super().__init__(model)
        self.cfg, self.corpus = cfg, corpus
        self.sample_lines, self.sample_max_len = list(sample_lines), sample_max_len

    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def training_step(self, model, batch, ctx):
        mlm, nsp, acc = pretraining_losses(model, *batch)
        return {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp, "masked_accuracy": acc}

    def evaluate(self, model, data):
        """Masked-token accuracy, the unigram baseline, the MLM loss (nats per masked token) and the NSP accuracy
        over the batches of `data` (e.g. `MaskedLMCorpus.heldout_batches`)."""
        device = next(model.parameters()).device
        masked, baseline, nsp_acc, loss = Accuracy(), Accuracy(), Accuracy(), Mean()
        for x, types, labels, is_next in data:
            x, types, labels, is_next = x.to(device), types.to(device), labels.to(device), is_next.to(device)
            chosen = labels != IGNORE_INDEX
            logits, nsp_logits = model(x, types, masked=chosen)
            target = labels[chosen]
            masked.update(logits.argmax(-1), target)
            baseline.update(torch.full_like(target, self.corpus.most_frequent), target)
            loss.update(F.cross_entropy(at_least_fp32(logits), target), len(target))
            nsp_acc.update(nsp_logits.argmax(-1), is_next)
        return {"masked_accuracy": masked.compute(), "unigram_baseline": baseline.compute(),
                "mlm_loss": loss.compute(), "nsp_accuracy": nsp_acc.compute()}

    def figures(self, run_dir: Path, model, data) -> list[Path]:
        """samples_mlm.txt: held-out lines with every fifth token masked and the model's guesses."""
        if not self.sample_lines:
            return []
        path = run_dir / "samples_mlm.txt"
        write_fill_ins(path, unwrap(model), self.corpus, self.sample_lines, self.sample_max_len)
        return [path]


@torch.no_grad()
def write_fill_ins(path: Path, model: nn.Module, corpus: MaskedLMCorpus, lines: Sequence[str], max_len: int) -> None:
    """Lines with every fifth token masked and the model's guesses ([guess|truth] where wrong). Notes: 004
    Training BERT (the MLM task: predict the masked tokens from both sides)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    sep = "" if corpus.level == "char" else " "
    for line in lines:
        ids = corpus.vocab.encode(corpus.tokenize(line))[: max_len - 2]
        if len(ids) < 2:
            continue
        x = encode_single_sentences([ids], len(ids) + 2, corpus.cls_id, corpus.sep_id, corpus.pad_id).to(device)
        masked = torch.zeros_like(x, dtype=torch.bool)
        masked[0, 1: len(ids) + 1: 5] = True
        logits, _ = model(x.masked_fill(masked, corpus.mask_id), masked=masked)
        guesses = iter(logits.argmax(-1).tolist())
        shown = []
        for i, t in enumerate(ids.tolist()):
            truth = corpus.vocab.itos[t]
            guess = corpus.vocab.itos[next(guesses)] if masked[0, i + 1] else truth
            shown.append(truth if guess == truth else f"[{guess}|{truth}]")
        out.append(sep.join(shown))
    path.write_text("every fifth token of held-out lines masked; [guess|truth] where the guess is wrong\n\n"
                    + "\n".join(out) + "\n")
    model.train(was)


class _RunningPermutations(TensorLoader):
    """A TensorLoader whose epoch e visits the samples in the (e+1)-th permutation drawn from one generator
    seeded `seed` (the order of a plain `for epoch: perm = randperm(n, g)` loop; resumable, as it is replayed)."""

    def _order(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epoch + 1):
            perm = torch.randperm(self.n, generator=g)
        return perm


class FineTuneComparison(Callback):
    """After pre-training: fine-tune the pre-trained encoder with a new output layer on a generated sentence task
    (a real line, or its words shuffled: `word_order_examples`), and the same classifier from scratch, each by
    the headless `fit`; add their test accuracies to the run's metrics and draw their training losses.
    Notes: 004 Fine-tuning BERT ("a new set of data, specific to the task", a new output layer).

    `new_body()` draws a fresh, untrained `BertModel` like the pre-trained one. `cfg` holds seed, weight_decay and
    the ft_* options: ft_train, ft_test (lines), ft_min_words, ft_max_len, ft_batch_size, ft_epochs, ft_lr,
    ft_dropout. Classifier heads are drawn after `torch.manual_seed(seed + 2)`, batches are shuffled from seed + 3.
    """

    def __init__(self, corpus: MaskedLMCorpus, train_lines: Sequence[str], test_lines: Sequence[str],
                 new_body: Callable[[], nn.Module], cfg, prefix: str = "test"):
        self.corpus, self.train_lines, self.test_lines = corpus, train_lines, test_lines
        self.new_body, self.cfg, self.prefix = new_body, cfg, prefix

    def on_fit_end(self, trainer) -> None:
        t0 = time.perf_counter()
        metrics, histories, examples = self.compare(trainer.eval_model.bert, str(trainer.device))
        trainer.last_metrics.update(metrics, finetune_seconds=time.perf_counter() - t0)
        if trainer.run_dir is not None and trainer.dist.is_main:
            self.draw(trainer.run_dir, metrics, histories, examples)

    def compare(self, body: nn.Module, device: str = "cpu") -> tuple[dict, dict, object]:
        """Fine-tune a copy of `body` and a fresh body: (metrics, loss histories, test examples)."""
        c = self.cfg
        ft_tr = word_order_examples(self.train_lines, c.ft_train, min_words=c.ft_min_words, seed=c.seed,
                                    tokenize=str.split, keep_punctuation=False)
        ft_te = word_order_examples(self.test_lines, c.ft_test, min_words=c.ft_min_words, seed=c.seed + 1,
                                    tokenize=str.split, keep_punctuation=False)
        x_tr, x_te = self.corpus.encode_sentences(ft_tr.tokens, c.ft_max_len), \
            self.corpus.encode_sentences(ft_te.tokens, c.ft_max_len)
        torch.manual_seed(c.seed + 2)
        tuned = BertForSequenceClassification.from_pretrained_body(copy.deepcopy(body), 2, c.ft_dropout)
        torch.manual_seed(c.seed + 2)
        scratch = BertForSequenceClassification.from_pretrained_body(self.new_body(), 2, c.ft_dropout)
        metrics, histories = {}, {}
        for name, clf in (("pretrained", tuned), ("scratch", scratch)):
            acc, histories[name] = self._fine_tune(clf, x_tr, ft_tr.labels, x_te, ft_te.labels, device)
            metrics[f"{self.prefix}/finetune_accuracy_{name}"] = acc
        return metrics, histories, ft_te

    def _fine_tune(self, clf, x_tr, y_tr, x_te, y_te, device) -> tuple[float, list[tuple[int, float]]]:
        c = self.cfg
        total = c.ft_epochs * math.ceil(len(y_tr) / c.ft_batch_size)
        opt_cfg = SimpleNamespace(optimizer="adamw", lr=c.ft_lr, weight_decay=c.weight_decay, momentum=0.0,
                                  fused=True, schedule="warmup_cosine", warmup_steps=max(1, round(0.05 * total)))
        history: list[tuple[int, float]] = []
        record = LambdaCallback(on_step_end=lambda tr, out: history.append((tr.step, out["loss"].item()))
                                if tr.step % 5 == 0 else None)
        train = _RunningPermutations(x_tr, y_tr, batch_size=c.ft_batch_size, seed=c.seed + 3)
        test = TensorLoader(x_te, y_te, batch_size=500, shuffle=False)
        config = TrainerConfig(epochs=c.ft_epochs, device=device, grad_clip_norm=1.0, eval_every_epochs=None,
                               checkpoint_every_minutes=None, log_every=max(1, total), progress=False,
                               tensorboard=False)
        result = fit(ClassificationTask(clf, opt_cfg), train, test, config, callbacks=[record], dist=DistInfo())
        return result.metrics["val/accuracy"], history

    def draw(self, run_dir: Path, metrics: dict, histories: dict, examples) -> None:
        from ..report.figures import plot_lines

        tuned, scratch = (metrics[f"{self.prefix}/finetune_accuracy_{n}"] for n in ("pretrained", "scratch"))
        curves = {label: ([s for s, _ in histories[k]], [v for _, v in histories[k]])
                  for k, label in (("pretrained", "pre-trained encoder"), ("scratch", "from scratch"))}
        plot_lines(curves, run_dir / "figures" / "fine_tuning_loss.png", "step", "training cross-entropy",
                   title=f"real vs shuffled lines: test acc {tuned:.3f} (pre-trained), {scratch:.3f} (scratch)")
        samples = [f"{'real' if y else 'shuffled'}: {' '.join(t)}"
                   for t, y in zip(examples.tokens[:10], examples.labels.tolist())]
        (run_dir / "samples_fine_tuning.txt").write_text("\n".join(samples) + "\n")
