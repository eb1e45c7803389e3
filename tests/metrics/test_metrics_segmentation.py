import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dlkit.errors import ConfigError
from dlkit.metrics.segmentation import (
    SegmentationMeter,
    class_accuracy,
    dice_per_class,
    frequency_weighted_iou,
    iou_per_class,
    mean_dice,
    mean_iou,
    mean_pixel_accuracy,
    pixel_accuracy,
    segmentation_confusion,
)


def _maps(n=4, k=5, h=12, w=10, seed=0, p_correct=0.6):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (n, h, w), generator=g)
    noise = torch.randint(0, k, (n, h, w), generator=g)
    pred = torch.where(torch.rand(n, h, w, generator=g) < p_correct, target, noise)
    return pred, target


def test_confusion_equals_sklearn_confusion_matrix():
    pred, target = _maps()
    ours = segmentation_confusion(pred, target, 5)
    assert ours.dtype == torch.int64 and ours.shape == (5, 5)
    ref = skm.confusion_matrix(target.flatten().numpy(), pred.flatten().numpy(), labels=list(range(5)))
    np.testing.assert_array_equal(ours.numpy(), ref)


def test_iou_and_miou_equal_sklearn_jaccard_when_all_classes_present():
    pred, target = _maps(k=6, seed=1)
    conf = segmentation_confusion(pred, target, 6)
    y, yh = target.flatten().numpy(), pred.flatten().numpy()
    np.testing.assert_allclose(iou_per_class(conf).numpy(), skm.jaccard_score(y, yh, average=None), atol=1e-12)
    assert mean_iou(conf) == pytest.approx(skm.jaccard_score(y, yh, average="macro"), abs=1e-12)
    np.testing.assert_allclose(dice_per_class(conf).numpy(), skm.f1_score(y, yh, average=None), atol=1e-12)
    np.testing.assert_allclose(class_accuracy(conf).numpy(), skm.recall_score(y, yh, average=None), atol=1e-12)


def test_pixel_accuracy_equals_sklearn_accuracy_score():
    pred, target = _maps(seed=2)
    conf = segmentation_confusion(pred, target, 5)
    assert pixel_accuracy(conf) == pytest.approx(skm.accuracy_score(target.flatten(), pred.flatten()), abs=1e-12)
    assert mean_pixel_accuracy(conf) == pytest.approx(
        skm.balanced_accuracy_score(target.flatten(), pred.flatten()), abs=1e-12)


def test_iou_equals_the_notes_direct_formula():
    # Notes 002 §5.1: IoU_c = TP_c / (sum_i |y_hat_i = c| + |y_i = c| - TP_c), sums over the images i.
    pred, target = _maps(n=3, k=4, seed=3)
    conf = segmentation_confusion(pred, target, 4)
    for c in range(4):
        tp = sum(((target[i] == c) & (pred[i] == c)).sum().item() for i in range(3))
        union = sum((pred[i] == c).sum().item() + (target[i] == c).sum().item() for i in range(3)) - tp
        assert iou_per_class(conf)[c].item() == pytest.approx(tp / union)


def test_hand_computed_3x3_example():
    # target [[0,0,1],[1,2,2]], pred [[0,1,1],[1,2,0]] give (rows true, columns predicted)
    #   M = [[1,1,0],
    #        [0,2,0],
    #        [1,0,1]]        rows |y=c| = 2,2,2   columns |y_hat=c| = 2,3,1   TP = 1,2,1
    # IoU = 1/(2+2-1), 2/(3+2-2), 1/(1+2-1) = 1/3, 2/3, 1/2      mIoU = 1.5/3 = 0.5
    # pixel accuracy = 4/6; mean accuracy = (1/2 + 2/2 + 1/2)/3 = 2/3
    # fwIoU = (2/6)(1/3) + (2/6)(2/3) + (2/6)(1/2) = 0.5; Dice = 2/4, 4/5, 2/3
    target = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    conf = segmentation_confusion(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    np.testing.assert_allclose(iou_per_class(conf).numpy(), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(conf) == pytest.approx(0.5)
    assert pixel_accuracy(conf) == pytest.approx(4 / 6)
    assert mean_pixel_accuracy(conf) == pytest.approx(2 / 3)
    assert frequency_weighted_iou(conf) == pytest.approx(0.5)
    np.testing.assert_allclose(dice_per_class(conf).numpy(), [1 / 2, 4 / 5, 2 / 3])
    assert mean_dice(conf) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_hand_computed_2x2_binary_example():
    # target [[1,1],[0,0]], pred [[1,0],[0,0]]: M = [[2,0],[1,1]]; IoU_0 = 2/(3+2-2) = 2/3, IoU_1 = 1/(1+2-1) = 1/2
    conf = segmentation_confusion(torch.tensor([[1, 0], [0, 0]]), torch.tensor([[1, 1], [0, 0]]), 2)
    assert conf.tolist() == [[2, 0], [1, 1]]
    np.testing.assert_allclose(iou_per_class(conf).numpy(), [2 / 3, 1 / 2])
    assert mean_iou(conf) == pytest.approx(7 / 12)


def test_ignore_index_pixels_are_never_counted():
    pred, target = _maps(seed=4)
    void = torch.rand(target.shape, generator=torch.Generator().manual_seed(5)) < 0.3
    with_void = target.masked_fill(void, 255)
    conf = segmentation_confusion(pred, with_void, 5, ignore_index=255)
    assert conf.sum().item() == (~void).sum().item()
    ref = skm.confusion_matrix(target[~void].numpy(), pred[~void].numpy(), labels=list(range(5)))
    np.testing.assert_array_equal(conf.numpy(), ref)
    # whatever is predicted on a void pixel changes nothing
    scrambled = torch.where(void, (pred + 1) % 5, pred)
    assert torch.equal(segmentation_confusion(scrambled, with_void, 5, ignore_index=255), conf)


def test_class_absent_from_target_and_prediction_is_nan_and_left_out_of_the_mean():
    pred, target = _maps(k=3, seed=6)  # classes 0..2 only, evaluated with 4 classes
    conf = segmentation_confusion(pred, target, 4)
    iou = iou_per_class(conf)
    assert math.isnan(iou[3].item()) and not iou[:3].isnan().any()
    assert mean_iou(conf) == pytest.approx(iou[:3].mean().item())
    assert math.isnan(class_accuracy(conf)[3].item())
    assert mean_pixel_accuracy(conf) == pytest.approx(class_accuracy(conf)[:3].mean().item())
    assert frequency_weighted_iou(conf) == pytest.approx(frequency_weighted_iou(conf[:3, :3]))


def test_class_predicted_but_absent_from_target_has_iou_zero():
    conf = segmentation_confusion(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]), 3)
    assert iou_per_class(conf)[2].item() == 0.0  # union 1, TP 0: counted in the mean, unlike an absent class
    assert mean_iou(conf) == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_streaming_over_batches_equals_one_shot_and_accumulates_over_images():
    pred, target = _maps(n=6, k=4, seed=7)
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float() + 0.1 * torch.rand(6, 4, 12, 10)
    meter = SegmentationMeter(4)
    for i in range(0, 6, 2):
        meter.update(logits[i:i + 2], target[i:i + 2])  # logits, argmax over dim 1
    one_shot = segmentation_confusion(pred, target, 4)
    assert torch.equal(meter.confusion, one_shot)
    indices = SegmentationMeter(4)
    for i in range(6):
        indices.update(pred[i:i + 1], target[i:i + 1])  # class indices
    out, ref = meter.compute(), indices.compute()
    assert set(out) == {"pixel_accuracy", "mean_accuracy", "miou", "fwiou", "iou_per_class"}
    assert out == ref
    assert out["miou"] == pytest.approx(mean_iou(one_shot))
    assert out["pixel_accuracy"] == pytest.approx(pixel_accuracy(one_shot))
    assert isinstance(out["iou_per_class"], list) and len(out["iou_per_class"]) == 4
    meter.reset()
    assert meter.confusion.sum() == 0


def test_dataset_miou_is_not_the_mean_of_per_image_mious():
    # the notes' erratum: sums run over images; image 1 is all class 0 (perfect), image 2 has class 1 half wrong
    target = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]])
    pred = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [0, 0]]])
    dataset = mean_iou(segmentation_confusion(pred, target, 2))  # IoU_0 = 4/6, IoU_1 = 2/4
    per_image = np.mean([mean_iou(segmentation_confusion(pred[i], target[i], 2)) for i in range(2)])
    assert dataset == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert per_image == pytest.approx((1 + (0 + 1 / 2) / 2) / 2)
    assert dataset != pytest.approx(per_image)


def test_perfect_prediction_scores_one():
    _, target = _maps(seed=8)
    out = SegmentationMeter(5)
    out.update(target, target)
    assert out.compute()["miou"] == 1.0 and out.compute()["pixel_accuracy"] == 1.0


def test_bad_inputs_say_what_is_expected_and_how_to_fix():
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="argmax"):
        segmentation_confusion(torch.zeros(2, 3, 4, 4), target, 3)  # logits instead of indices
    with pytest.raises(ConfigError, match="integer class indices"):
        segmentation_confusion(torch.zeros(2, 4, 4), target, 3)
    with pytest.raises(ConfigError, match="ignore_index=255"):
        segmentation_confusion(target, target.masked_fill(target == 0, 255), 3)
    with pytest.raises(ConfigError, match="0..2"):
        segmentation_confusion(target + 3, target, 3)
    with pytest.raises(ConfigError, match="num_classes"):
        SegmentationMeter(0)
    with pytest.raises(ConfigError, match="3 channels"):
        SegmentationMeter(3).update(torch.zeros(2, 5, 4, 4), target)
    with pytest.raises(ConfigError, match="square"):
        mean_iou(torch.zeros(3, 2))


def test_compute_with_no_pixel_scored_is_refused_as_the_other_meters():
    meter = SegmentationMeter(3, ignore_index=255)
    with pytest.raises(ConfigError, match=r"SegmentationMeter.compute\(\) before any update.*no pixel to score"):
        meter.compute()
    meter.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255))
    with pytest.raises(ConfigError, match="every pixel so far was ignore_index"):
        meter.compute()
    meter.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    assert meter.compute()["pixel_accuracy"] == 1.0
