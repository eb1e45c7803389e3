"""Detection post-processing against torchvision's ops composed as torchvision's RetinaNet composes them."""

import pytest
import torch
from torchvision.ops import batched_nms, clip_boxes_to_image

from dlkit.errors import ConfigError
from dlkit.models.detection.postprocess import finalize_detections, top_candidates


def _random_boxes(g, n, size=100.0):
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    return torch.cat([xy - 10, xy + wh], 1)  # some boxes stick out of the image


def test_top_candidates_equals_flatten_threshold_topk():
    g = torch.Generator().manual_seed(1)
    for topk in (1, 7, 1000):
        scores = torch.rand(50, 4, generator=g)
        idx, labels, values = top_candidates(scores, 0.3, topk)
        flat = scores.flatten()
        keep = flat > 0.3
        ref_values, ref_order = flat[keep].topk(min(topk, int(keep.sum())))
        ref_index = torch.where(keep)[0][ref_order]
        assert torch.equal(values, ref_values)
        assert torch.equal(idx, ref_index // 4) and torch.equal(labels, ref_index % 4 + 1)
        assert torch.equal(scores[idx, labels - 1], values)


def test_top_candidates_hand_example_and_nothing_above_threshold():
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.05, 0.5]])
    idx, labels, values = top_candidates(scores, 0.4, 2)
    assert idx.tolist() == [0, 1] and labels.tolist() == [2, 1] and values.tolist() == pytest.approx([0.9, 0.8])
    idx, labels, values = top_candidates(scores, 0.95, 5)
    assert idx.numel() == labels.numel() == values.numel() == 0


def test_finalize_detections_equals_torchvision_clip_nms_keep():
    g = torch.Generator().manual_seed(2)
    for trial in range(10):
        n = int(torch.randint(0, 300, (), generator=g))
        boxes = _random_boxes(g, n)
        scores, labels = torch.rand(n, generator=g), torch.randint(1, 4, (n,), generator=g)
        out = finalize_detections(boxes, scores, labels, (80, 90), 0.5, 20)
        clipped = clip_boxes_to_image(boxes, (80, 90))
        keep = batched_nms(clipped, scores, labels, 0.5)[:20]
        assert torch.equal(out["boxes"], clipped[keep]), trial
        assert torch.equal(out["scores"], scores[keep]) and torch.equal(out["labels"], labels[keep])


def test_finalize_detections_refuses_mismatched_shapes():
    with pytest.raises(ConfigError, match=r"boxes \[N, 4\], scores \[N\], labels \[N\]"):
        finalize_detections(torch.zeros(3, 4), torch.zeros(2), torch.zeros(3, dtype=torch.int64), (10, 10), 0.5, 5)
