"""CenterNet (Notes: 002 §4.3.5): CornerNet's radius against hand calculations, the heat-map targets, the peak search
against a brute-force local-maximum loop, decoding on a hand example, the detector contract, and overfitting."""

import math
import time

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from dlkit import create_model
from dlkit.data.detection_scenes import shapes_scenes
from dlkit.errors import ConfigError
from dlkit.metrics.detection import COCOMeanAP
from dlkit.models.detection.centernet import (
    CenterNet,
    centernet_targets,
    decode_heatmap,
    gaussian_radius,
    heatmap_peaks,
)
from dlkit.registry import model_metadata
from tests.model_checks import detector_losses

# ----------------------------------------------------------------------------- CornerNet's Gaussian radius


def test_radius_of_a_10_by_20_box_by_hand():
    # m = 0.7, w + h = 30, wh = 200 (each case's smallest non-negative root, worked on paper):
    #   case 1: r^2 - 30 r + 200 * 0.3 / 1.7 = 0       -> r = (30 - sqrt(900 - 141.1765)) / 2 = 1.226624
    #   case 2: 4 r^2 - 60 r + 60 = 0                   -> r = (60 - sqrt(2640)) / 8 = 1.077384
    #   case 3: 2.8 r^2 + 42 r - 60 = 0                 -> r = (-42 + sqrt(2436)) / 5.6 = 1.313545
    r = gaussian_radius(torch.tensor([10.0]), torch.tensor([20.0]), 0.7)
    assert r.item() == pytest.approx(1.077384, abs=1e-6)
    # the authors' code divides by 2 instead of 2a: case 3 gives (-42 + sqrt(2436)) / 2 = 3.677925, its minimum here
    released = gaussian_radius(torch.tensor([10.0]), torch.tensor([20.0]), 0.7, rule="released")
    assert released.item() == pytest.approx(3.677925, abs=1e-6)


def _smallest_root(coeffs):
    roots = np.roots(coeffs)
    return min(r.real for r in roots if abs(r.imag) < 1e-9 and r.real >= -1e-12)


@pytest.mark.parametrize("m", [0.3, 0.5, 0.7, 0.9])
def test_radius_is_the_smallest_root_of_the_three_quadratics(m):
    g = torch.Generator().manual_seed(int(m * 10))
    w, h = torch.rand(20, generator=g, dtype=torch.float64) * 60 + 1, torch.rand(20, generator=g,
                                                                                dtype=torch.float64) * 60 + 1
    ours = gaussian_radius(w, h, m)
    for wi, hi, r in zip(w.tolist(), h.tolist(), ours.tolist()):
        s, a = wi + hi, wi * hi
        cases = [_smallest_root([1, -s, a * (1 - m) / (1 + m)]), _smallest_root([4, -2 * s, (1 - m) * a]),
                 _smallest_root([4 * m, 2 * m * s, (m - 1) * a])]
        assert r == pytest.approx(min(cases), rel=1e-9)


def test_radius_keeps_the_iou_at_the_threshold_in_its_limiting_case():
    # the geometric meaning: shifting the corners by the radius in the limiting case gives IoU = min_overlap exactly
    w, h, m = 10.0, 20.0, 0.7
    r = gaussian_radius(torch.tensor([w], dtype=torch.float64), torch.tensor([h], dtype=torch.float64), m).item()
    # case 2 (both corners inside) limits this box
    gt = torch.tensor([[0.0, 0.0, w, h]], dtype=torch.float64)
    inside = torch.tensor([[r, r, w - r, h - r]], dtype=torch.float64)
    shifted = torch.tensor([[r, r, w + r, h + r]], dtype=torch.float64)
    outside = torch.tensor([[-r, -r, w + r, h + r]], dtype=torch.float64)
    assert box_iou(gt, inside).item() == pytest.approx(m, abs=1e-9)
    assert box_iou(gt, shifted).item() > m and box_iou(gt, outside).item() > m  # the other cases are looser


# ----------------------------------------------------------------------------- training targets


def test_heatmap_target_of_one_box_by_hand():
    # box (10, 20)-(50, 100) at stride 4: centre (30, 60) -> (7.5, 15), cell (7, 15), offset (0.5, 0);
    # size (40, 80) / 4 = (10, 20), radius floor(1.077) = 1, sigma = (2 + 1) / 6 = 0.5
    t = centernet_targets([{"boxes": torch.tensor([[10.0, 20.0, 50.0, 100.0]]), "labels": torch.tensor([3])}],
                          num_classes=4, map_size=(32, 32), stride=4)
    heat = t["heatmap"]
    assert heat.shape == (1, 4, 32, 32)
    assert heat[0, 2, 15, 7] == 1.0 and heat.max() == 1.0
    assert heat[0, 2, 15, 8].item() == pytest.approx(math.exp(-1 / (2 * 0.25)))  # exp(-2)
    assert heat[0, 2, 14, 6].item() == pytest.approx(math.exp(-2 / (2 * 0.25)))  # diagonal: exp(-4)
    assert heat[0, 2, 15, 9] == 0 and heat[0, 2, 13, 7] == 0  # beyond the radius
    assert (heat[0, 2] > 0).sum() == 9 and heat[0, [0, 1, 3]].abs().sum() == 0  # a 3x3 splat in class 3 only
    assert t["centres"].tolist() == [[0, 15, 7]]
    torch.testing.assert_close(t["offset"], torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(t["size"], torch.tensor([[10.0, 20.0]]))


def test_overlapping_splats_take_the_maximum_and_offsets_lie_in_the_unit_square():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(12, 2, generator=g) * 100
    wh = torch.rand(12, 2, generator=g) * 40 + 4
    boxes = torch.cat([xy, xy + wh], 1)
    labels = torch.randint(1, 3, (12,), generator=g)
    targets = [{"boxes": boxes[:7], "labels": labels[:7]}, {"boxes": boxes[7:], "labels": labels[7:]}]
    t = centernet_targets(targets, 2, (40, 40), 4, radius_rule="released")
    assert ((t["offset"] >= 0) & (t["offset"] < 1)).all()
    # reference: every object's own splat drawn alone, then the per-class maximum
    expect = torch.zeros(2, 2, 40, 40)
    for b, tgt in enumerate(targets):
        for box, label in zip(tgt["boxes"], tgt["labels"]):
            one = centernet_targets([{"boxes": box[None], "labels": label[None]}], 2, (40, 40), 4,
                                    radius_rule="released")["heatmap"][0]
            expect[b] = torch.maximum(expect[b], one)
    torch.testing.assert_close(t["heatmap"], expect)
    for b, y, x in t["centres"].tolist():  # a value of exactly 1 at every centre
        assert (t["heatmap"][b, :, y, x] == 1).any()


def test_empty_targets_and_bad_labels():
    t = centernet_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}], 3, (8, 8), 4)
    assert t["heatmap"].abs().sum() == 0 and t["centres"].shape == (0, 3) and t["size"].shape == (0, 2)
    with pytest.raises(ConfigError, match=r"labels must be in 1\.\.3"):
        centernet_targets([{"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([0])}], 3,
                          (8, 8), 4)


# ----------------------------------------------------------------------------- peaks and decoding


def brute_force_peaks(heat: torch.Tensor) -> torch.Tensor:
    """Keep a pixel when no pixel of its 3x3 neighbourhood (inside the map) is larger."""
    out = torch.zeros_like(heat)
    b, c, h, w = heat.shape
    for n in range(b):
        for k in range(c):
            for i in range(h):
                for j in range(w):
                    window = heat[n, k, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
                    if heat[n, k, i, j] >= window.max():
                        out[n, k, i, j] = heat[n, k, i, j]
    return out


@pytest.mark.parametrize("levels", [0, 4])
def test_peaks_equal_a_brute_force_local_maximum_loop(levels):
    g = torch.Generator().manual_seed(levels)
    heat = torch.rand(2, 3, 7, 9, generator=g)
    if levels:  # a few values only: plateaus and ties
        heat = (heat * levels).floor() / levels
    torch.testing.assert_close(heatmap_peaks(heat), brute_force_peaks(heat), rtol=0, atol=0)


def test_decode_a_hand_example():
    heat = torch.zeros(1, 2, 8, 8)
    heat[0, 0, 2, 3], heat[0, 0, 2, 4] = 0.9, 0.8  # a peak and its suppressed neighbour
    heat[0, 1, 5, 5] = 0.7
    size, offset = torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)
    size[0, :, 2, 3], offset[0, :, 2, 3] = torch.tensor([2.0, 3.0]), torch.tensor([0.25, 0.5])
    size[0, :, 5, 5] = torch.tensor([1.0, 1.0])
    boxes, scores, labels = decode_heatmap(heat, size, offset, stride=4, topk=3)
    # centre ((3 + 0.25) 4, (2 + 0.5) 4) = (13, 10), size (8, 12); centre (20, 20), size (4, 4)
    torch.testing.assert_close(boxes[0, :2], torch.tensor([[9.0, 4.0, 17.0, 16.0], [18.0, 18.0, 22.0, 22.0]]))
    torch.testing.assert_close(scores[0], torch.tensor([0.9, 0.7, 0.0]))  # 0.8 is suppressed, not third
    assert labels[0, :2].tolist() == [1, 2]


# ----------------------------------------------------------------------------- the model


def test_paper_configuration_shapes_and_parameter_count():
    assert model_metadata("centernet_resnet18")["task"] == "detection"
    with torch.device("meta"):
        model = create_model("centernet_resnet18")
        maps = model.forward_maps(torch.zeros(1, 3, 512, 512))
    assert maps["heatmap"].shape == (1, 80, 128, 128)  # output stride R = 4
    assert maps["size"].shape == maps["offset"].shape == (1, 2, 128, 128)
    assert sum(p.numel() for p in model.parameters()) == 14_219_092  # derived in the factory's docstring


def test_heatmap_prior_and_contract():
    torch.manual_seed(0)
    model = create_model("centernet_tiny")
    images = torch.rand(2, 1, 64, 64)
    model.eval()
    with torch.no_grad():
        heat = torch.sigmoid(model.forward_maps(images)["heatmap"])
        out = model(images)
    assert heat.mean().item() == pytest.approx(1 / (1 + math.exp(2.19)), abs=1e-3)  # sigmoid(-2.19) ~ 0.1
    assert len(out) == 2 and out[0]["boxes"].shape == (100, 4) and out[0]["labels"].min() >= 1
    assert (out[0]["boxes"] >= 0).all() and (out[0]["boxes"] <= 64).all()
    model.train()
    losses = model(images, [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 30.0]]), "labels": torch.tensor([2])},
                            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    assert set(losses) == {"loss_heatmap", "loss_size", "loss_offset"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_any_backbone_with_feature_info():
    # a CIFAR ResNet's deepest map is already at stride 4: no up-sampling step
    model = CenterNet(num_classes=3, backbone="resnet_cifar20", neck_chans=(), head_chans=8)
    assert model.forward_maps(torch.rand(1, 3, 32, 32))["heatmap"].shape == (1, 3, 8, 8)
    with pytest.raises(ConfigError, match="neck_chans"):
        CenterNet(num_classes=3, backbone="resnet_cifar20", neck_chans=(8,))


def test_bad_inputs_are_refused():
    model = create_model("centernet_tiny")
    with pytest.raises(ConfigError, match="needs targets"):
        model(torch.rand(1, 1, 64, 64))
    with pytest.raises(ConfigError, match=r"images \[B, 1, H, W\]"):
        model(torch.rand(1, 3, 64, 64), [])
    with pytest.raises(ConfigError, match="divisible"):
        model.eval()(torch.rand(1, 1, 60, 64))
    with pytest.raises(ConfigError, match="radius_rule"):
        CenterNet(radius_rule="paper")


def test_overfits_a_handful_of_scenes():
    start = time.time()
    torch.manual_seed(0)
    scenes = shapes_scenes(4, seed=3, height=64, width=64, objects=(3, 4), sizes=(12, 32))
    images = torch.stack([scenes[i][0] for i in range(4)])
    targets = [{k: scenes[i][1][k] for k in ("boxes", "labels")} for i in range(4)]
    model = create_model("centernet_tiny", num_classes=5, in_chans=3)
    detector_losses(model, images, targets, 100)
    metric = COCOMeanAP()
    with torch.no_grad():
        metric.update(model(images), targets)
    result = metric.compute()
    # 12 shapes: measured map_50 1.0, map 0.91 after 100 steps (2.5 s of one core)
    assert result["map_50"] > 0.95 and result["map"] > 0.7, result
    assert time.time() - start < 60  # < 20 s even on a loaded 2-core machine
