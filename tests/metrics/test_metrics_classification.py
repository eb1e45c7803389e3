import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dlkit.errors import ConfigError
from dlkit.metrics.classification import (
    accuracy,
    confusion_matrix,
    macro_f1,
    precision_recall_f1,
    topk_accuracy,
)


def _random(n=500, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (n,), generator=g)
    pred = torch.where(torch.rand(n, generator=g) < 0.6, target, torch.randint(0, k, (n,), generator=g))
    return pred, target


def test_confusion_matrix_equals_sklearn():
    pred, target = _random()
    ours = confusion_matrix(pred, target, 7).numpy()
    ref = skm.confusion_matrix(target.numpy(), pred.numpy(), labels=list(range(7)))
    np.testing.assert_array_equal(ours, ref)


def test_precision_recall_f1_equal_sklearn_including_empty_class():
    pred, target = _random(k=6)
    pred[pred == 5] = 4  # class 5 is never predicted: precision 0 (zero_division=0)
    cm = confusion_matrix(pred, target, 6)
    p, r, f = precision_recall_f1(cm)
    rp, rr, rf, _ = skm.precision_recall_fscore_support(target.numpy(), pred.numpy(), labels=list(range(6)),
                                                        zero_division=0)
    np.testing.assert_allclose(p.numpy(), rp, atol=1e-12)
    np.testing.assert_allclose(r.numpy(), rr, atol=1e-12)
    np.testing.assert_allclose(f.numpy(), rf, atol=1e-12)
    assert macro_f1(cm) == pytest.approx(skm.f1_score(target.numpy(), pred.numpy(), average="macro", zero_division=0))


def test_accuracy_and_topk_equal_sklearn():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 10, generator=g)
    target = torch.randint(0, 10, (300,), generator=g)
    assert accuracy(logits.argmax(1), target) == pytest.approx(skm.accuracy_score(target, logits.argmax(1)))
    assert topk_accuracy(logits, target, 3) == pytest.approx(
        skm.top_k_accuracy_score(target.numpy(), logits.numpy(), k=3, labels=list(range(10))))
    assert topk_accuracy(logits, target, 10) == 1.0


def test_bad_inputs_say_what_is_expected():
    with pytest.raises(ConfigError, match="same shape"):
        accuracy(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ConfigError, match="0..2"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


def test_accuracy_meter_equals_sklearn_and_refuses_what_it_would_misread():
    from dlkit.metrics.meter import Accuracy, Mean

    torch.manual_seed(0)
    logits, target = torch.randn(50, 4), torch.randint(0, 4, (50,))
    acc = Accuracy()
    acc.update(logits[:20], target[:20])
    acc.update(logits[20:].argmax(1), target[20:])  # predictions as indices
    assert acc.compute() == pytest.approx(skm.accuracy_score(target.numpy(), logits.argmax(1).numpy()))
    for pred, tgt, match in ((torch.tensor([0.9, 0.2]), torch.tensor([1, 0]), "integer predictions"),  # probabilities
                             (torch.randn(2, 3), torch.rand(2, 3), "integer class indices as targets"),  # soft targets
                             (torch.randn(2, 3), torch.tensor([0, 3]), r"class indices in 0\.\.2")):
        with pytest.raises(ConfigError, match=match):
            Accuracy().update(pred, tgt)
    with pytest.raises(ConfigError, match="weights must be >= 0"):
        Mean().update(1.0, -1)
    with pytest.raises(ConfigError, match="one weight, or one per value"):
        Mean().update(torch.ones(3), torch.ones(2))
