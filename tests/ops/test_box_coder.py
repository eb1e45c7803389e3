"""The R-CNN box coder equals torchvision's BoxCoder and the notes' formulas (Notes: 002 §4.3.2)."""

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder

from dlkit.errors import ConfigError
from dlkit.ops import BoxCoder, box_convert


def boxes(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 300
    return torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g, dtype=dtype) * 90], 1)  # sizes within 10x


def test_notes_hand_example():
    # 002 §4.3.2: anchor (50, 50, 20, 10) and ground truth (54, 49, 40, 10) in centre form -> (0.2, -0.1, ln 2, 0)
    anchor = box_convert(torch.tensor([[50.0, 50, 20, 10]]), "cxcywh", "xyxy")
    gt = box_convert(torch.tensor([[54.0, 49, 40, 10]]), "cxcywh", "xyxy")
    coder = BoxCoder(weights=(1, 1, 1, 1))
    torch.testing.assert_close(coder.encode(gt, anchor), torch.tensor([[0.2, -0.1, math.log(2), 0.0]]))
    torch.testing.assert_close(coder.decode(torch.zeros(1, 4), anchor), anchor)  # zero deltas: the anchor itself


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 4.0, 5.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_decode_equal_torchvision_and_invert_each_other(weights, dtype):
    ours, ref = BoxCoder(weights), TvBoxCoder(weights)
    for seed in range(5):
        gt, anchors = boxes(64, seed, dtype), boxes(64, seed + 50, dtype)
        deltas = ours.encode(gt, anchors)
        torch.testing.assert_close(deltas, ref.encode_single(gt, anchors))
        torch.testing.assert_close(ours.decode(deltas, anchors), ref.decode_single(deltas, anchors))
        tol = 1e-4 if dtype == torch.float32 else 1e-9  # coordinates up to ~400 lose float32 last bits
        torch.testing.assert_close(ours.decode(deltas, anchors), gt, rtol=0, atol=tol)  # decode(encode(b)) == b
        assert not any(isinstance(w, int) for w in ours.weights)


def test_decode_clamps_log_size_corrections_like_torchvision():
    anchors = boxes(8, 0)
    deltas = torch.randn(8, 4, dtype=torch.float64) * 40  # e^(40 / 5) would be far beyond 1000 / 16
    want = TvBoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(deltas, anchors)
    torch.testing.assert_close(BoxCoder().decode(deltas, anchors), want)
    w = (BoxCoder().decode(deltas, anchors)[:, 2] - BoxCoder().decode(deltas, anchors)[:, 0])
    assert (w <= (anchors[:, 2] - anchors[:, 0]) * 1000 / 16 + 1e-6).all()


def test_per_class_deltas_broadcast_against_anchors():
    # torchvision decodes [N, 4K] per-class codes into [N, K, 4]; here [N, K, 4] against anchors [N, 1, 4]
    anchors, deltas = boxes(6, 1), torch.randn(6, 3, 4, dtype=torch.float64)
    want = TvBoxCoder((10.0, 10.0, 5.0, 5.0)).decode(deltas.reshape(6, 12), [anchors])
    torch.testing.assert_close(BoxCoder().decode(deltas, anchors[:, None]), want)


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="4 positive numbers"):
        BoxCoder((1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match=r"deltas must be a tensor \[\.\.\., 4\]"):
        BoxCoder().decode(torch.zeros(3, 5), boxes(3, 0))
    with pytest.raises(ConfigError, match=r"references must have shape"):
        BoxCoder().encode(boxes(3, 0), torch.zeros(3, 3))
