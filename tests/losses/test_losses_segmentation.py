import math

import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.losses.segmentation import (
    DiceLoss,
    SoftIoULoss,
    SoftmaxFocalLoss,
    dice_loss,
    soft_iou_loss,
    softmax_focal_loss,
)

REGION_LOSSES = [dice_loss, soft_iou_loss]


def _batch(n=2, c=3, h=5, w=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, dtype=dtype), torch.randint(0, c, (n, h, w), generator=g)


def _hand_example():
    # two pixels, C = 2: pixel A logits (0, ln 3) -> p = (1/4, 3/4), target 1; pixel B logits (0, 0) -> (1/2, 1/2),
    # target 0. Shape [N=1, C=2, H=1, W=2].
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3), 0.0]]]], dtype=torch.float64)
    return logits, torch.tensor([[[1, 0]]])


def test_dice_hand_example():
    # class 0: sum pg = 1/2, sum p = 1/4 + 1/2 = 3/4, sum g = 1;  class 1: sum pg = 3/4, sum p = 5/4, sum g = 1
    # smooth 1: D0 = (1 + 1)/(3/4 + 1 + 1) = 8/11, D1 = (3/2 + 1)/(5/4 + 1 + 1) = 10/13; L = 1 - (8/11 + 10/13)/2
    #         = 36/143
    # smooth 0: D0 = 1/(7/4) = 4/7, D1 = (3/2)/(9/4) = 2/3; L = 1 - (4/7 + 2/3)/2 = 8/21
    logits, target = _hand_example()
    assert dice_loss(logits, target).item() == pytest.approx(36 / 143, abs=1e-12)
    assert dice_loss(logits, target, smooth=0.0).item() == pytest.approx(8 / 21, abs=1e-12)


def test_soft_iou_hand_example():
    # smooth 0: class 0: I = 1/2, U = 3/4 + 1 - 1/2 = 5/4 -> 2/5; class 1: I = 3/4, U = 5/4 + 1 - 3/4 = 3/2 -> 1/2
    # L = 1 - (2/5 + 1/2)/2 = 11/20
    logits, target = _hand_example()
    assert soft_iou_loss(logits, target, smooth=0.0).item() == pytest.approx(11 / 20, abs=1e-12)


def test_focal_hand_example_and_notes_down_weighting():
    # pixel A: p_t = 3/4, pixel B: p_t = 1/2; gamma 2: mean of (1/4)^2 (-ln 3/4) and (1/2)^2 (-ln 1/2)
    logits, target = _hand_example()
    ref = ((1 / 4) ** 2 * -math.log(3 / 4) + (1 / 2) ** 2 * -math.log(1 / 2)) / 2
    assert softmax_focal_loss(logits, target).item() == pytest.approx(ref, abs=1e-12)
    # Notes 002 §4.3.4: with gamma = 2 a pixel of p_t = 0.9 is down-weighted by (0.1)^2 = 1/100 (binary, C = 1)
    x = torch.full((1, 1, 1, 1), math.log(0.9 / 0.1), dtype=torch.float64)  # sigmoid(x) = 0.9
    one = torch.ones(1, 1, 1, dtype=torch.long)
    assert softmax_focal_loss(x, one).item() == pytest.approx(0.01 * -math.log(0.9), abs=1e-12)
    assert softmax_focal_loss(x, 1 - one).item() == pytest.approx(0.81 * -math.log(0.1), abs=1e-12)  # p_t = 0.1


@pytest.mark.parametrize("loss", REGION_LOSSES + [softmax_focal_loss])
def test_perfect_one_hot_like_logits_give_about_zero_loss(loss):
    _, target = _batch(c=4)
    logits = 30.0 * F.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(-logits, target).item() > 0.5  # and confidently wrong logits are penalised


def test_focal_with_gamma_zero_is_cross_entropy_and_alpha_weights_classes():
    logits, target = _batch(seed=1)
    torch.testing.assert_close(softmax_focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
    w = torch.tensor([0.2, 0.5, 1.3])
    torch.testing.assert_close(softmax_focal_loss(logits, target, gamma=0.0, alpha=w, reduction="sum"),
                               F.cross_entropy(logits, target, weight=w, reduction="sum"))
    per_pixel = softmax_focal_loss(logits, target, gamma=2.0, reduction="none")
    assert per_pixel.shape == target.shape
    assert (per_pixel <= F.cross_entropy(logits, target, reduction="none") + 1e-7).all()


def test_binary_focal_equals_two_class_softmax_focal_with_alpha():
    # the notes' alpha-balanced binary focal loss on sigmoid(x) is the 2-class softmax one on logits (0, x)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 4, 4), generator=g)
    two = torch.cat([torch.zeros_like(x), x], 1)
    torch.testing.assert_close(softmax_focal_loss(x, y, alpha=0.25), softmax_focal_loss(two, y, alpha=0.25))
    torch.testing.assert_close(softmax_focal_loss(x, y, gamma=0.0),
                               F.binary_cross_entropy_with_logits(x[:, 0], y.double()))


@pytest.mark.parametrize("loss", REGION_LOSSES + [softmax_focal_loss])
def test_ignored_pixels_change_nothing_and_get_no_gradient(loss):
    logits, target = _batch(seed=3, dtype=torch.float64)
    void = torch.zeros_like(target, dtype=torch.bool)
    void[:, :2, :] = True
    target_void = target.masked_fill(void, 255)
    base = loss(logits.clone(), target_void, ignore_index=255)
    changed_logits = logits.clone()
    changed_logits.permute(0, 2, 3, 1)[void] = torch.randn(int(void.sum()), 3, dtype=torch.float64) * 5
    assert not torch.equal(changed_logits, logits)
    leaf = changed_logits.requires_grad_()
    out = loss(leaf, target_void, ignore_index=255)
    torch.testing.assert_close(out, base)
    out.backward()
    assert leaf.grad.permute(0, 2, 3, 1)[void].abs().max() == 0
    assert leaf.grad.permute(0, 2, 3, 1)[~void].abs().max() > 0
    # equal to the loss on the counted pixels alone (the void rows cut away)
    torch.testing.assert_close(out, loss(logits[:, :, 2:], target[:, 2:]))


@pytest.mark.parametrize("loss,kwargs", [(dice_loss, {}), (dice_loss, {"smooth": 0.0, "per_image": True}),
                                         (soft_iou_loss, {}), (softmax_focal_loss, {"gamma": 2.0}),
                                         (softmax_focal_loss, {"gamma": 1.5, "alpha": torch.tensor([0.3, 0.5, 0.9])})])
def test_gradcheck_float64(loss, kwargs):
    logits, target = _batch(n=2, c=3, h=3, w=2, seed=4, dtype=torch.float64)
    target[0, 0, 0] = 7  # an ignored pixel
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: loss(z, target, ignore_index=7, **kwargs), (logits,))


def test_binary_region_loss_uses_sigmoid_foreground():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 4, 4), generator=g)
    p, t = torch.sigmoid(x[:, 0]), y.double()
    ref = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    torch.testing.assert_close(dice_loss(x, y), ref)


def test_per_image_dice_averages_image_scores():
    logits, target = _batch(seed=6)
    per = [dice_loss(logits[i:i + 1], target[i:i + 1]) for i in range(2)]
    torch.testing.assert_close(dice_loss(logits, target, per_image=True), torch.stack(per).mean())


def test_modules_match_functions():
    logits, target = _batch(seed=7)
    torch.testing.assert_close(DiceLoss()(logits, target), dice_loss(logits, target))
    torch.testing.assert_close(SoftIoULoss(smooth=0.5)(logits, target), soft_iou_loss(logits, target, smooth=0.5))
    w = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(SoftmaxFocalLoss(alpha=w)(logits, target), softmax_focal_loss(logits, target, alpha=w))


@pytest.mark.parametrize("loss", REGION_LOSSES + [softmax_focal_loss])
def test_bad_shapes_and_values_raise_config_error(loss):
    logits, target = _batch()
    with pytest.raises(ConfigError, match="target of shape"):
        loss(logits, target[:, :3])
    with pytest.raises(ConfigError, match="target of shape"):
        loss(logits, F.one_hot(target, 3).permute(0, 3, 1, 2))  # one-hot instead of indices
    with pytest.raises(ConfigError, match="integer class indices"):
        loss(logits, target.float())
    with pytest.raises(ConfigError, match="float logits"):
        loss(target, target)
    with pytest.raises(ConfigError, match="ignore_index=255"):
        loss(logits, target.masked_fill(target == 0, 255))


def test_focal_bad_alpha_and_gamma():
    logits, target = _batch()
    with pytest.raises(ConfigError, match="one weight per class"):
        softmax_focal_loss(logits, target, alpha=0.25)
    with pytest.raises(ConfigError, match=r"shape \(3,\)"):
        softmax_focal_loss(logits, target, alpha=torch.ones(2))
    with pytest.raises(ConfigError, match="gamma"):
        softmax_focal_loss(logits, target, gamma=-1.0)


@pytest.mark.parametrize("loss", REGION_LOSSES + [softmax_focal_loss])
def test_a_batch_of_ignored_pixels_gives_zero_and_no_gradient_where_cross_entropy_gives_nan(loss):
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    void = torch.full((2, 5, 6), 255)
    value = loss(logits, void, ignore_index=255)
    (grad,) = torch.autograd.grad(value, logits)
    assert value.item() == 0.0 and grad.abs().max() == 0
    assert F.cross_entropy(logits, void, ignore_index=255).isnan()  # what the module docstring contrasts it with
