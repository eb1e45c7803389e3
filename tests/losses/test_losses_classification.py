"""Classification losses equal torch's in value and gradient (Notes: 003 §2.2.2)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import hinge_loss as sk_hinge_loss

from dlkit.errors import ConfigError
from dlkit.losses import classification as C

RED = ["mean", "sum", "none"]
D = torch.float64


def _check(ours, ref, inp):
    """Values equal, and gradients w.r.t. `inp` of a random projection equal."""
    torch.testing.assert_close(ours, ref)
    w = torch.randn_like(ours)
    (ga,) = torch.autograd.grad((ours * w).sum(), inp, retain_graph=True)
    (gb,) = torch.autograd.grad((ref * w).sum(), inp)
    torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("reduction", RED)
def test_bce_from_probabilities_equals_torch(reduction):
    p = torch.rand(8, 3, dtype=D).clamp(0.01, 0.99).requires_grad_(True)
    t = torch.rand(8, 3, dtype=D)
    w = torch.rand(8, 3, dtype=D)
    _check(
        C.binary_cross_entropy(p, t, reduction=reduction),
        F.binary_cross_entropy(p, t, reduction=reduction),
        p,
    )
    _check(
        C.binary_cross_entropy(p, t, w, reduction), F.binary_cross_entropy(p, t, w, reduction=reduction), p
    )


def test_bce_hand_values_and_clamp():
    assert C.binary_cross_entropy(torch.tensor([0.5]), torch.tensor([1.0])).item() == pytest.approx(
        math.log(2)
    )
    assert C.binary_cross_entropy(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])).item() == 0.0
    # log 0 is clamped at -100 as torch does
    p, t = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    torch.testing.assert_close(C.binary_cross_entropy(p, t), F.binary_cross_entropy(p, t))
    assert C.binary_cross_entropy(p, t).item() == 100.0


@pytest.mark.parametrize("reduction", RED)
def test_bce_with_logits_equals_torch_including_extreme_logits(reduction):
    x = torch.randn(10, 4, dtype=D) * 5
    x[0, :] = torch.tensor([1000.0, -1000.0, 80.0, -80.0])
    x.requires_grad_(True)
    t = torch.rand(10, 4, dtype=D)
    t[0] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    pw = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=D)
    w = torch.rand(10, 4, dtype=D)
    ours = C.binary_cross_entropy_with_logits(x, t, reduction=reduction)
    assert torch.isfinite(ours).all()
    _check(ours, F.binary_cross_entropy_with_logits(x, t, reduction=reduction), x)
    _check(
        C.binary_cross_entropy_with_logits(x, t, w, pw, reduction),
        F.binary_cross_entropy_with_logits(x, t, w, reduction=reduction, pos_weight=pw),
        x,
    )


def test_bce_with_logits_equals_sigmoid_then_bce():
    x, t = torch.randn(50, dtype=D), torch.randint(0, 2, (50,)).to(D)
    torch.testing.assert_close(
        C.binary_cross_entropy_with_logits(x, t), C.binary_cross_entropy(torch.sigmoid(x), t)
    )


@pytest.mark.parametrize("reduction", RED)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_index_targets_equal_torch(reduction, smoothing, weighted):
    x = torch.randn(9, 5, dtype=D, requires_grad=True)
    y = torch.randint(0, 5, (9,))
    y[2] = -100  # ignored
    w = torch.rand(5, dtype=D) + 0.5 if weighted else None
    kw = dict(weight=w, reduction=reduction, label_smoothing=smoothing)
    _check(C.cross_entropy(x, y, **kw), F.cross_entropy(x, y, **kw), x)


@pytest.mark.parametrize("reduction", RED)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_soft_and_onehot_targets_equal_torch(reduction, smoothing):
    x = torch.randn(6, 4, 3, 2, dtype=D, requires_grad=True)  # [N, C, H, W]
    soft = torch.softmax(torch.randn(6, 4, 3, 2, dtype=D), 1)
    w = torch.rand(4, dtype=D) + 0.5
    _check(
        C.cross_entropy(x, soft, reduction=reduction, label_smoothing=smoothing),
        F.cross_entropy(x, soft, reduction=reduction, label_smoothing=smoothing),
        x,
    )
    _check(
        C.cross_entropy(x, soft, w, reduction=reduction, label_smoothing=smoothing),
        F.cross_entropy(x, soft, w, reduction=reduction, label_smoothing=smoothing),
        x,
    )
    idx = torch.randint(0, 4, (6, 3, 2))
    onehot = F.one_hot(idx, 4).permute(0, 3, 1, 2).to(D)
    _check(C.cross_entropy(x, onehot, reduction=reduction), F.cross_entropy(x, idx, reduction=reduction), x)


def test_cross_entropy_spatial_index_and_unbatched():
    x = torch.randn(2, 3, 4, 4, dtype=D, requires_grad=True)
    y = torch.randint(0, 3, (2, 4, 4))
    _check(C.cross_entropy(x, y, label_smoothing=0.1), F.cross_entropy(x, y, label_smoothing=0.1), x)
    v = torch.randn(5, dtype=D, requires_grad=True)
    _check(C.cross_entropy(v, torch.tensor(2)), F.cross_entropy(v, torch.tensor(2)), v)


def test_cross_entropy_uniform_prediction_is_log_k_and_stable():
    assert C.cross_entropy(torch.zeros(3, 10), torch.tensor([0, 4, 9])).item() == pytest.approx(math.log(10))
    x = torch.tensor([[1000.0, -1000.0, 0.0]])
    torch.testing.assert_close(C.cross_entropy(x, torch.tensor([1])), F.cross_entropy(x, torch.tensor([1])))
    assert C.cross_entropy(x, torch.tensor([1])).item() == 2000.0


@pytest.mark.parametrize("reduction", RED)
def test_categorical_cross_entropy_from_probabilities_equals_torch(reduction):
    x = torch.randn(7, 4, dtype=D)
    p = torch.softmax(x, 1).requires_grad_(True)
    y = torch.randint(0, 4, (7,))
    _check(
        C.categorical_cross_entropy(p, y, reduction=reduction),
        F.nll_loss(torch.log(p), y, reduction=reduction),
        p,
    )
    onehot = F.one_hot(y, 4).to(D)
    torch.testing.assert_close(
        C.categorical_cross_entropy(p, onehot, reduction=reduction),
        F.cross_entropy(x, y, reduction=reduction),
    )
    # equals -log of the true-class probability
    torch.testing.assert_close(
        C.categorical_cross_entropy(p, y, reduction="none"), -torch.log(p[torch.arange(7), y])
    )


@pytest.mark.parametrize("reduction", RED)
def test_nll_loss_equals_torch(reduction):
    lp = torch.log_softmax(torch.randn(8, 6, dtype=D), 1).requires_grad_(True)
    y = torch.randint(0, 6, (8,))
    y[0] = 3
    w = torch.rand(6, dtype=D)
    _check(C.nll_loss(lp, y, reduction=reduction), F.nll_loss(lp, y, reduction=reduction), lp)
    _check(
        C.nll_loss(lp, y, w, ignore_index=3, reduction=reduction),
        F.nll_loss(lp, y, w, ignore_index=3, reduction=reduction),
        lp,
    )


def test_binary_hinge_equals_sklearn_and_hand_values():
    s = torch.randn(40, dtype=D, requires_grad=True)
    t = torch.randint(0, 2, (40,)).to(D) * 2 - 1
    assert C.hinge_loss(s, t).item() == pytest.approx(sk_hinge_loss(t.numpy(), s.detach().numpy()))
    (g,) = torch.autograd.grad(C.hinge_loss(s, t, reduction="sum"), s)
    torch.testing.assert_close(g, torch.where(t * s < 1, -t, torch.zeros_like(t)))
    vals = C.hinge_loss(torch.tensor([2.0, 0.0, 0.5]), torch.tensor([1.0, 1.0, -1.0]), reduction="none")
    assert vals.tolist() == [0.0, 1.0, 1.5]


@pytest.mark.parametrize("reduction", RED)
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_equals_torch(reduction, p):
    x = torch.randn(10, 5, dtype=D, requires_grad=True)
    y = torch.randint(0, 5, (10,))
    w = torch.rand(5, dtype=D)
    _check(
        C.multi_margin_loss(x, y, p=p, margin=0.7, reduction=reduction),
        F.multi_margin_loss(x, y, p=p, margin=0.7, reduction=reduction),
        x,
    )
    _check(
        C.multi_margin_loss(x, y, p=p, weight=w, reduction=reduction),
        F.multi_margin_loss(x, y, p=p, weight=w, reduction=reduction),
        x,
    )


def test_binary_hinge_is_twice_two_class_multi_margin():
    s = torch.randn(20, dtype=D)
    t = torch.randint(0, 2, (20,))
    scores = torch.stack([-s / 2, s / 2], 1)
    torch.testing.assert_close(C.hinge_loss(s, (2 * t - 1).to(D)), 2 * F.multi_margin_loss(scores, t))


def test_modules_equal_torch_modules():
    x, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    w = torch.rand(4)
    torch.testing.assert_close(
        C.CrossEntropyLoss(w, label_smoothing=0.1)(x, y),
        torch.nn.CrossEntropyLoss(w, label_smoothing=0.1)(x, y),
    )
    torch.testing.assert_close(
        C.NLLLoss()(torch.log_softmax(x, 1), y), torch.nn.NLLLoss()(torch.log_softmax(x, 1), y)
    )
    torch.testing.assert_close(C.CategoricalCrossEntropyLoss()(torch.softmax(x, 1), y), F.cross_entropy(x, y))
    t = torch.rand(6, 4)
    torch.testing.assert_close(
        C.BCEWithLogitsLoss(pos_weight=w)(x, t), torch.nn.BCEWithLogitsLoss(pos_weight=w)(x, t)
    )
    torch.testing.assert_close(C.BCELoss()(torch.sigmoid(x), t), torch.nn.BCELoss()(torch.sigmoid(x), t))
    torch.testing.assert_close(C.MultiMarginLoss(p=2)(x, y), torch.nn.MultiMarginLoss(p=2)(x, y))
    assert "weight" in C.CrossEntropyLoss(w).state_dict()
    assert np.isfinite(C.HingeLoss()(x[:, 0], torch.ones(6)).item())


def test_bad_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="probabilities"):
        C.binary_cross_entropy(torch.tensor([1.5]), torch.tensor([1.0]))
    with pytest.raises(ConfigError, match="probabilities"):
        C.categorical_cross_entropy(torch.randn(3, 4) - 5, torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match=r"class indices must be in \[0, 3\]"):
        C.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 4]))
    with pytest.raises(ConfigError, match="must have shape"):
        C.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="label_smoothing"):
        C.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(ConfigError, match="-1, \\+1"):
        C.hinge_loss(torch.randn(3), torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ConfigError, match="integer class indices"):
        C.nll_loss(torch.randn(3, 4), torch.rand(3, 4))
    with pytest.raises(ConfigError, match="weight"):
        C.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]), weight=torch.ones(3))
    with pytest.raises(ConfigError, match="reduction"):
        C.CrossEntropyLoss(reduction="avg")


def test_bce_targets_and_float_class_indices_are_refused_as_torch_refuses_them():
    from dlkit.losses.classification import binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy

    p, x = torch.full((3,), 0.5), torch.zeros(3)
    for fn, inp in ((binary_cross_entropy, p), (binary_cross_entropy_with_logits, x)):
        with pytest.raises(ConfigError, match="expects targets in \\[0, 1\\]; got values in \\[0, 2\\]"):
            fn(inp, torch.tensor([0.0, 1.0, 2.0]))
        with pytest.raises(ConfigError, match="expects float targets in \\[0, 1\\]; got torch.int64"):
            fn(inp, torch.tensor([0, 1, 1]))
    with pytest.raises(RuntimeError):  # the reference refuses the same integer targets
        torch.nn.functional.binary_cross_entropy(p, torch.tensor([0, 1, 1]))
    with pytest.raises(ConfigError, match="float target shaped like class indices .* must be integers"):
        cross_entropy(torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 1.0]))


def test_mean_cross_entropy_of_a_batch_of_ignored_targets_is_nan_as_torch():
    logits, void = torch.randn(3, 4), torch.full((3,), -100)
    assert C.cross_entropy(logits, void).isnan() and F.cross_entropy(logits, void).isnan()
    assert C.cross_entropy(logits, void, reduction="sum").item() == 0.0
