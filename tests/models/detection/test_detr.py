"""DETR (Notes: 002 §4.3.6): shapes and ranges of the outputs, set equivariance of the object queries, the Hungarian
loss by hand and against torch / torchvision / scipy on the matched pairs, padding masks, the decoder's attention
maps, and the published parameter count of DETR-R50 derived term by term."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
import torchvision.ops as tvops
from scipy.optimize import linear_sum_assignment
from torch import nn

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.detection.detr import DETR, hungarian_loss
from dlkit.models.detection.hungarian_matcher import HungarianMatcher
from tests.model_checks import detector_losses

C = 3  # object classes of the small models


def small_detr(**kw) -> DETR:
    """detr_tiny's backbone with 2 + 2 layers of width 32 and 6 queries."""
    args = dict(num_classes=C, d_model=32, num_heads=4, dim_feedforward=64, num_queries=6, dropout=0.0)
    torch.manual_seed(0)
    return create_model("detr_tiny", **(args | kw))


def n_params(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


IMAGES = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
TARGETS = [{"boxes": torch.tensor([[10.0, 8, 50, 40], [60, 30, 90, 62]]), "labels": torch.tensor([1, 3])},
           {"boxes": torch.tensor([[0.0, 0, 30, 20]]), "labels": torch.tensor([2])}]


def test_output_shapes_box_ranges_and_detections():
    model = small_detr().eval()
    with torch.no_grad():
        logits, boxes, sizes = model.head_outputs(IMAGES)
        dets = model(IMAGES)
    assert logits.shape == (2, 2, 6, C + 1) and boxes.shape == (2, 2, 6, 4)  # [layers, B, N, C + 1], [.., 4]
    assert boxes.min() >= 0 and boxes.max() <= 1 and sizes.tolist() == [[64, 96]] * 2
    for det, lg, bx in zip(dets, logits[-1], boxes[-1]):
        prob = lg.softmax(-1)[:, :C]  # the no-object column dropped
        order = prob.max(-1).values.argsort(descending=True)
        torch.testing.assert_close(det["scores"], prob.max(-1).values[order])
        assert det["labels"].tolist() == (prob.argmax(-1)[order] + 1).tolist()
        expected = tvops.box_convert(bx[order], "cxcywh", "xyxy") * torch.tensor([96, 64, 96, 64])
        torch.testing.assert_close(det["boxes"], expected)


def test_permuting_the_object_queries_permutes_the_outputs():
    model = small_detr().eval()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        logits, boxes, _ = model.head_outputs(IMAGES)
        model.query_embed.weight.copy_(model.query_embed.weight[perm])
        logits_p, boxes_p, _ = model.head_outputs(IMAGES)
    torch.testing.assert_close(logits_p, logits[:, :, perm], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(boxes_p, boxes[:, :, perm], rtol=1e-4, atol=1e-5)
    model.train()  # and the training loss does not change (dropout is 0)
    before = model(IMAGES, TARGETS)
    with torch.no_grad():
        model.query_embed.weight.copy_(model.query_embed.weight[perm.argsort()])
    after = model(IMAGES, TARGETS)
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=1e-4, atol=1e-5)


def hand_example():
    """2 predictions, 1 object of class 0 at (0.5, 0.5, 0.2, 0.2). Prediction 0: softmax (1/2, 1/4, 1/4), box
    shifted right by 0.05 (L1 0.05; corners [0.45, 0.4, 0.65, 0.6] and [0.4, 0.4, 0.6, 0.6]: intersection 0.03,
    union 0.05, enclosing 0.05, GIoU 0.6). Prediction 1: softmax (1/5, 1/5, 3/5), a far box (match cost
    -0.2 + 5 0.8 + 2 (1 + 0.753) = 7.26 against -0.5 + 5 0.05 + 2 0.4 = 0.55): prediction 0 is matched."""
    logits = torch.tensor([[[math.log(2), 0.0, 0.0], [0.0, 0.0, math.log(3)]]], dtype=torch.float64)
    boxes = torch.tensor([[[0.55, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]], dtype=torch.float64)
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]], dtype=torch.float64)}]
    return logits, boxes, target


def test_hand_value_of_the_hungarian_loss_two_predictions_one_object():
    logits, boxes, target = hand_example()
    loss = hungarian_loss(logits, boxes, target, HungarianMatcher(), eos_coef=0.1)
    # class: (1 (-ln 1/2) + 0.1 (-ln 3/5)) / (1 + 0.1); the no-object prediction weighs 0.1
    expected_ce = (math.log(2) + 0.1 * math.log(5 / 3)) / 1.1
    assert loss["loss_ce"].item() == pytest.approx(expected_ce, abs=1e-12)
    assert expected_ce == pytest.approx(0.676572, abs=1e-6)
    assert loss["loss_bbox"].item() == pytest.approx(0.05, abs=1e-12)
    assert loss["loss_giou"].item() == pytest.approx(1 - 0.6, abs=1e-12)


def test_the_loss_is_invariant_to_permuting_the_predictions():
    logits, boxes, target = hand_example()
    swapped = hungarian_loss(logits[:, [1, 0]], boxes[:, [1, 0]], target, HungarianMatcher())
    g = torch.Generator().manual_seed(5)
    logits_r = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    boxes_r = torch.rand(2, 7, 4, generator=g, dtype=torch.float64) * 0.4 + 0.1
    targets_r = [{"labels": torch.tensor([0, 3, 1]), "boxes": torch.rand(3, 4, generator=g, dtype=torch.float64) * 0.4
                  + 0.1}, {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.2]])}]
    perm = torch.randperm(7, generator=g)
    for (lg, bx, t), (lg_p, bx_p) in (((logits, boxes, target), (logits[:, [1, 0]], boxes[:, [1, 0]])),
                                      ((logits_r, boxes_r, targets_r), (logits_r[:, perm], boxes_r[:, perm]))):
        a, b = hungarian_loss(lg, bx, t, HungarianMatcher()), hungarian_loss(lg_p, bx_p, t, HungarianMatcher())
        for k in a:
            torch.testing.assert_close(a[k], b[k])
    assert swapped["loss_giou"].item() == pytest.approx(0.4, abs=1e-12)


def reference_loss(logits, boxes, targets, image_size):
    """DETR's loss of every decoder layer from scipy's assignment on the notes' cost (torchvision's GIoU) and
    torch's cross entropy / L1, weights 1, 5, 2 and no-object weight 0.1."""
    h, w = image_size
    norm = [{"labels": t["labels"] - 1,
             "boxes": tvops.box_convert(t["boxes"] / torch.tensor([w, h, w, h]), "xyxy", "cxcywh")} for t in targets]
    num_boxes = sum(len(t["labels"]) for t in norm)
    total = {"loss_ce": 0.0, "loss_bbox": 0.0, "loss_giou": 0.0}
    for lg, bx in zip(logits, boxes):
        classes = torch.full(lg.shape[:2], C, dtype=torch.long)
        src, tgt = [], []
        for b, t in enumerate(norm):
            xyxy = tvops.box_convert
            cost = (-lg[b].softmax(-1)[:, t["labels"]] + 5 * torch.cdist(bx[b], t["boxes"], p=1)
                    + 2 * (1 - tvops.generalized_box_iou(xyxy(bx[b], "cxcywh", "xyxy"), xyxy(t["boxes"], "cxcywh",
                                                                                                "xyxy"))))
            rows, cols = linear_sum_assignment(cost.detach().numpy())
            classes[b, rows] = t["labels"][cols]
            src.append(bx[b, rows])
            tgt.append(t["boxes"][cols])
        src, tgt = torch.cat(src), torch.cat(tgt)
        weight = torch.tensor([1.0] * C + [0.1])
        total["loss_ce"] += F.cross_entropy(lg.flatten(0, 1), classes.flatten(), weight=weight)
        total["loss_bbox"] += 5 * F.l1_loss(src, tgt, reduction="sum") / num_boxes
        giou = tvops.generalized_box_iou(tvops.box_convert(src, "cxcywh", "xyxy"),
                                         tvops.box_convert(tgt, "cxcywh", "xyxy")).diagonal()
        total["loss_giou"] += 2 * (1 - giou).sum() / num_boxes
    return total


def test_the_loss_equals_an_independent_recomputation_over_every_decoder_layer():
    model = small_detr(num_decoder_layers=3).train()
    losses = model(IMAGES, TARGETS)
    logits, boxes, _ = model.head_outputs(IMAGES)  # dropout 0: the same forward
    assert len(logits) == 3
    expected = reference_loss(logits, boxes, TARGETS, (64, 96))
    assert set(losses) == set(expected)
    for k in losses:
        torch.testing.assert_close(losses[k], expected[k], rtol=1e-5, atol=1e-6)
    last_only = small_detr(num_decoder_layers=3, aux_loss=False).train()(IMAGES, TARGETS)
    expected_last = reference_loss(logits[-1:], boxes[-1:], TARGETS, (64, 96))
    for k in last_only:
        torch.testing.assert_close(last_only[k], expected_last[k], rtol=1e-5, atol=1e-6)


def test_padded_cells_are_masked_out_of_the_attention():
    """A 64 x 64 image beside a 96 x 128 one sits on a 96 x 128 canvas: its C5 grid is 3 x 4, of which 2 x 2 cells
    are the image. Whatever the features of the padded cells, its detections stay the same (they are masked out of
    every attention's keys); changing a valid cell changes them."""
    model = small_detr().eval()
    a = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    b = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(2))
    _, mask, sizes = model.batch([a, b])
    assert mask.shape == (2, 96, 128) and mask[0, :64, :64].logical_not().all() and mask[0, 64:].all()
    assert not mask[1].any() and sizes.tolist() == [[64, 64], [96, 128]]

    def detections(cells):
        def perturb(module, inputs, out):
            out = out.clone()
            out[0, :, cells[0], cells[1]] += 10 * torch.randn_like(out[0, :, cells[0], cells[1]])
            return out
        handle = model.input_proj.register_forward_hook(perturb)
        try:
            return model([a, b])[0]
        finally:
            handle.remove()

    with torch.no_grad():
        clean = model([a, b])
        rows_changed = detections((slice(2, None), slice(None)))
        cols_changed = detections((slice(None), slice(2, None)))
        valid_changed = detections((1, 1))
        maps = model.cross_attention_maps([a, b])
    for k in clean[0]:
        torch.testing.assert_close(rows_changed[k], clean[0][k], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(cols_changed[k], clean[0][k], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(valid_changed["scores"], clean[0]["scores"])
    assert clean[1]["boxes"][:, 2].max() <= 128 and maps.shape == (2, 6, 3, 4)
    assert (maps[0, :, 2:, :] == 0).all() and (maps[0, :, :, 2:] == 0).all()  # padded cells get no attention
    torch.testing.assert_close(maps.sum((-1, -2)), torch.ones(2, 6))


def test_cross_attention_maps_are_distributions_over_the_c5_grid():
    model = small_detr().eval()
    with torch.no_grad():
        maps = model.cross_attention_maps(IMAGES)
    assert maps.shape == (2, 6, 64 // 32, 96 // 32) and (maps >= 0).all()
    torch.testing.assert_close(maps.sum((-1, -2)), torch.ones(2, 6))
    dc5 = small_detr(dilation=True).eval()  # DETR-DC5: C5 at stride 16, the same parameters
    assert dc5.stride == 16 and n_params(dc5) == n_params(model)
    with torch.no_grad():
        maps = dc5.cross_attention_maps(IMAGES)
    assert maps.shape == (2, 6, 64 // 16, 96 // 16)
    torch.testing.assert_close(maps.sum((-1, -2)), torch.ones(2, 6))


def test_a_few_steps_fit_one_batch_and_bad_inputs_are_refused():
    model = small_detr()
    losses = detector_losses(model, IMAGES, TARGETS, steps=40, lr=1e-3)  # 25 steps: 0.60x, on the edge on some CPUs
    assert losses[-1] < 0.5 * losses[0], losses
    model.train()
    with pytest.raises(ConfigError, match="model\\(images, targets\\)"):
        model(IMAGES)
    with pytest.raises(ConfigError, match="labels must be in 1..3"):
        model(IMAGES, [TARGETS[0], {"boxes": torch.tensor([[0.0, 0, 5, 5]]), "labels": torch.tensor([0])}])
    with pytest.raises(ConfigError, match="expects images"):
        model(torch.rand(2, 1, 64, 64), TARGETS)
    with pytest.raises(ConfigError, match="more object queries"):
        model(IMAGES[:1], [{"boxes": torch.tensor([[0.0, 0, 5, 5]] * 7), "labels": torch.ones(7, dtype=torch.long)}])


def test_detr_r50_parameter_count_derived_term_by_term():
    d, dff, queries, logits = 256, 2048, 100, 92
    attention = 4 * d * d + 4 * d  # W_Q, W_K, W_V, W_O and their biases
    ffn = d * dff + dff + dff * d + d
    encoder_layer = attention + ffn + 2 * 2 * d  # two layer norms
    decoder_layer = 2 * attention + ffn + 3 * 2 * d
    assert (attention, ffn, encoder_layer, decoder_layer) == (263_168, 1_050_880, 1_315_072, 1_578_752)
    with torch.device("meta"):
        tv = torchvision.models.resnet50()
        ours = create_model("detr_resnet50")
        torch_encoder_layer = nn.TransformerEncoderLayer(d, 8, dff)
        torch_decoder_layer = nn.TransformerDecoderLayer(d, 8, dff)
    bn = sum(n_params(m) for m in tv.modules() if isinstance(m, nn.BatchNorm2d))
    resnet = n_params(tv) - n_params(tv.fc) - bn  # without the classifier; batch norms frozen (buffers)
    conv1 = 64 * 3 * 7 * 7
    layer1 = sum(n_params(m) for m in tv.layer1.modules() if isinstance(m, nn.Conv2d))
    assert (resnet, conv1, layer1) == (23_454_912, 9_408, 212_992)
    assert n_params(torch_encoder_layer) == encoder_layer and n_params(torch_decoder_layer) == decoder_layer
    parts = {"backbone": resnet, "encoder": 6 * encoder_layer, "decoder": 6 * decoder_layer + 2 * d,
             "input_proj": 2048 * d + d, "query_embed": queries * d, "class_embed": d * logits + logits,
             "bbox_embed": 2 * (d * d + d) + d * 4 + 4}
    assert parts["encoder"] == 7_890_432 and parts["decoder"] == 9_473_024
    assert (parts["input_proj"], parts["query_embed"], parts["class_embed"], parts["bbox_embed"]) == (
        524_544, 25_600, 23_644, 132_612)
    for name, count in parts.items():
        assert n_params(getattr(ours, name)) == count, name
    assert n_params(ours) == sum(parts.values()) == 41_524_768
    assert n_params(ours, trainable=True) == sum(parts.values()) - conv1 - layer1 == 41_302_368  # DETR's 41.3M
    frozen = {n.split(".")[1] for n, p in ours.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"0"}  # stem.0 (the 7x7 convolution) and stages.0 (layer1)
    assert {n.split(".")[0] for n, p in ours.backbone.named_parameters() if not p.requires_grad} == {"stem", "stages"}
    assert all(p.requires_grad for n, p in ours.backbone.named_parameters() if n.startswith("stages.1"))
    with torch.device("meta"):
        unfrozen = create_model("detr_resnet50", frozen_stages=0)
    assert n_params(unfrozen, trainable=True) == 41_524_768
