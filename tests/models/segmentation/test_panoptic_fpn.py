"""Panoptic FPN (Notes: 002 §5.3.1): the semantic branch against a recomputation with torch.nn.functional from the
FPN maps, its loss against F.cross_entropy, the Mask R-CNN losses against maskrcnn_tiny with the same weights, the
panoptic output against panoptic_merge and PanopticQuality, the parameter count by hand, the targets' checks."""

import pytest
import torch
import torch.nn.functional as F

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.metrics.panoptic import PanopticQuality
from dlkit.models.segmentation.panoptic_fpn import SemanticFPNHead, semantic_loss
from dlkit.ops.panoptic_merge import panoptic_merge
from dlkit.registry import MODELS


def scene(h=128, w=128):
    """Two boxes with box-filled masks; semantic class 0 (things) on them, 1 elsewhere, a 255 band ignored."""
    boxes = torch.tensor([[10.0, 12.0, 50.0, 60.0], [60.0, 40.0, 110.0, 100.0]])
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.long().tolist()):
        m[y1:y2, x1:x2] = 1
    semantic = (masks.sum(0) == 0).long()
    semantic[:, :4] = 255
    return {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks, "semantic": semantic}


def reference_head(head: SemanticFPNHead, maps, upsample=4):
    """The branch with functional ops: per level conv2d (3 x 3, padding 1, no bias) -> group_norm -> relu
    [-> 2x bilinear], the levels summed, conv2d 1 x 1 + bias, 4x bilinear."""
    total = 0
    for level, x in enumerate(maps):
        for stage in head.scale_heads[level]:
            conv, gn = stage[0], stage[1]
            x = F.relu(F.group_norm(F.conv2d(x, conv.weight, None, padding=1), gn.num_groups, gn.weight, gn.bias,
                                    gn.eps))
            if level > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        total = total + x
    logits = F.conv2d(total, head.predictor.weight, head.predictor.bias)
    return F.interpolate(logits, scale_factor=float(upsample), mode="bilinear", align_corners=False)


def spread(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.1)


def test_the_stages_per_level_and_group_norm():
    head = SemanticFPNHead(256, 54, 128)
    assert [len(s) for s in head.scale_heads] == [1, 1, 2, 3]
    assert all(st[1].num_groups == 32 and st[0].bias is None for s in head.scale_heads for st in s)
    assert [s[0][0].in_channels for s in head.scale_heads] == [256] * 4


def test_semantic_branch_equals_a_functional_recomputation():
    torch.manual_seed(0)
    head = SemanticFPNHead(16, 5, 32).double()
    spread(head)
    maps = [torch.randn(2, 16, 24 // 2 ** k, 32 // 2 ** k, dtype=torch.float64) for k in range(4)]
    out = head(maps)
    assert out.shape == (2, 5, 96, 128)  # stride 4 -> the image
    torch.testing.assert_close(out, reference_head(head, maps))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_model("panoptic_fpn_tiny", rpn_pre_nms_top_n=dict(training=200, testing=100),
                         rpn_post_nms_top_n=dict(training=50, testing=20), box_detections_per_img=10).double()
    spread(model.semantic_head)
    return model


def test_model_semantic_logits_are_the_branch_on_its_fpn_maps_cropped(tiny):
    tiny.eval()
    images = torch.rand(2, 3, 120, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = tiny(images)
        _, maps, _ = tiny._features(images)  # padded to 128 x 128
        want = reference_head(tiny.semantic_head, maps[:4])[..., :120, :100]
    assert maps[0].shape[-2:] == (32, 32)
    for d, w in zip(out, want):
        assert d["semantic"].shape == (2, 120, 100)
        torch.testing.assert_close(d["semantic"], w)
        assert d["masks"].shape == (len(d["boxes"]), 1, 120, 100)


def test_training_losses_are_mask_rcnns_plus_the_weighted_cross_entropy(tiny):
    tiny.train()
    images = torch.rand(2, 3, 128, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    targets = [scene(), scene()]
    targets[1]["semantic"] = targets[1]["semantic"].flip(-1)
    torch.manual_seed(3)
    losses = tiny(images, targets)
    mask_rcnn = create_model("maskrcnn_tiny", rpn_pre_nms_top_n=dict(training=200, testing=100),
                             rpn_post_nms_top_n=dict(training=50, testing=20), box_detections_per_img=10).double()
    state = {k: v for k, v in tiny.state_dict().items() if not k.startswith("semantic_head.")}
    mask_rcnn.load_state_dict(state)
    mask_rcnn.train()
    torch.manual_seed(3)
    reference = mask_rcnn(images, [{k: v for k, v in t.items() if k != "semantic"} for t in targets])
    assert set(losses) == set(reference) | {"loss_semantic"}
    for k, v in reference.items():
        torch.testing.assert_close(losses[k], v)
    with torch.no_grad():
        _, maps, _ = tiny._features(images)
        logits = reference_head(tiny.semantic_head, maps[:4])
    want = 0.5 * F.cross_entropy(logits, torch.stack([t["semantic"] for t in targets]), ignore_index=255)
    torch.testing.assert_close(losses["loss_semantic"].detach(), want)
    losses["loss_semantic"].backward()
    assert all(p.grad is not None and p.grad.any() for p in tiny.semantic_head.parameters())
    tiny.zero_grad()


def test_semantic_loss_by_hand_and_all_ignored():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # [1, 2 classes, 1, 2 pixels]
    target = torch.tensor([[[1, 255]]])
    hand = -torch.log(torch.exp(torch.tensor(0.0)) / (torch.exp(torch.tensor(2.0)) + 1))
    torch.testing.assert_close(semantic_loss(logits, target, 0.5), 0.5 * hand)
    assert semantic_loss(logits, torch.full_like(target, 255)).item() == 0


def test_panoptic_output_is_the_merge_and_panoptic_quality_accepts_it(tiny):
    torch.manual_seed(4)
    images = torch.rand(2, 3, 128, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    tiny.train()
    results = tiny.panoptic(images, score_threshold=0.0, stuff_area_threshold=1)
    assert tiny.training  # the mode comes back
    assert tiny.stuff_categories == [4]
    tiny.eval()
    with torch.no_grad():
        detections = tiny(images)
    metric = PanopticQuality(1 + tiny.num_classes + tiny.num_stuff_classes, thing_categories=[1, 2, 3])
    for (id_map, segments), d in zip(results, detections):
        cats = torch.where(d["semantic"].argmax(0) > 0, d["semantic"].argmax(0) + 3, 0)  # stuff class 1 -> 4
        want_map, want_segments = panoptic_merge(d["masks"], d["scores"], d["labels"], cats, [4],
                                                 score_threshold=0.0, stuff_area_threshold=1)
        assert torch.equal(id_map, want_map) and segments == want_segments
        assert id_map.shape == (128, 128) and id_map.dtype == torch.int64
        assert set(id_map.unique().tolist()) - {0} == {s["id"] for s in segments}
        assert all(s["category"] in (1, 2, 3) if s["isthing"] else s["category"] == 4 for s in segments)
        ground_truth = (torch.where(scene()["masks"][0].bool(), 1, 2),
                        [{"id": 1, "category": 1}, {"id": 2, "category": 4}])
        metric.update((id_map, segments), ground_truth)
    result = metric.compute()
    assert result["n_things"] >= 1 and result["n_stuff"] == 1  # the ground truth's thing 1 and stuff 4 appear
    assert all(0.0 <= result[k] <= 1.0 for k in ("pq", "sq", "rq", "pq_things", "pq_stuff"))


def test_parameter_count_by_hand():
    fpn, width, classes = 256, 128, 53 + 1
    first = 3 * 3 * fpn * width + 2 * width  # a level's first 3 x 3 convolution (no bias) + GroupNorm gamma, beta
    later = 3 * 3 * width * width + 2 * width  # P4's second, P5's second and third stages
    predictor = width * classes + classes
    branch = 4 * first + 3 * later + predictor
    assert (first, later, predictor, branch) == (295_168, 147_712, 6_966, 1_630_774)
    with torch.device("meta"):
        model = create_model("panoptic_fpn_resnet50")
    assert sum(p.numel() for p in model.semantic_head.parameters()) == branch
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == 44_401_393 + branch == 46_032_167 == MODELS.get("panoptic_fpn_resnet50").meta["num_params"]


@pytest.mark.parametrize("semantic, match", [
    (None, "needs semantic"),
    (torch.zeros(128, 128, dtype=torch.int32), "int64"),
    (torch.zeros(64, 128, dtype=torch.int64), r"\[128, 128\]"),
    (torch.full((128, 128), 2, dtype=torch.int64), "0..1"),
    (torch.full((128, 128), -1, dtype=torch.int64), "0..1"),
])
def test_bad_semantic_targets_raise_config_error(tiny, semantic, match):
    target = scene()
    if semantic is None:
        del target["semantic"]
    else:
        target["semantic"] = semantic
    tiny.train()
    with pytest.raises(ConfigError, match=match):
        tiny(torch.rand(1, 3, 128, 128, dtype=torch.float64), [target])


def test_bad_configuration_raises_config_error():
    with pytest.raises(ConfigError, match="num_stuff_classes"):
        create_model("panoptic_fpn_tiny", num_stuff_classes=0)
    with pytest.raises(ConfigError, match="semantic_loss_weight"):
        create_model("panoptic_fpn_tiny", semantic_loss_weight=-1.0)
