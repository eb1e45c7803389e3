"""R-CNN (Notes: 002 §4.3.1-4.3.2, 003 §6): the warp against torch's bilinear resampling, the labelling and the
multi-task loss by hand (no box gradient for the background), the notes' box correction on a hand example, one CNN
pass per proposal, the proposal cache, and the registered AlexNet R-CNN's parameter count derived by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from model_checks import detector_losses

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.detection.rcnn import RCNN, WarpRegions, dilate_for_context

GT = torch.tensor([[10.0, 12.0, 40.0, 44.0], [50.0, 20.0, 80.0, 60.0]])


class StandInProposer:
    """Jittered ground-truth boxes plus random boxes (a seeded stand-in for selective search); counts its calls."""

    def __init__(self, gt: torch.Tensor = GT, random: int = 12):
        self.gt, self.random, self.calls = gt, random, 0

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        g = torch.Generator().manual_seed(self.calls)
        h, w = image.shape[-2:]
        jitter = self.gt + torch.randn(len(self.gt), 4, generator=g) * 2
        xy = torch.rand(self.random, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(self.random, 2, generator=g) * 30 + 6
        return torch.cat([jitter, torch.cat([xy, xy + wh], 1)])


def tiny(**kw) -> RCNN:
    torch.manual_seed(0)
    return create_model("rcnn_tiny", num_classes=2, proposer=kw.pop("proposer", StandInProposer()), **kw)


def test_warp_gives_the_fixed_size_and_equals_bilinear_resampling():
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    warp = WarpRegions(32)
    # a box twice the output size: each output pixel is the mean of its 2 x 2 pixels
    whole = warp([image], [torch.tensor([[0.0, 0.0, 64.0, 64.0]])])
    assert whole.shape == (1, 3, 32, 32)
    torch.testing.assert_close(whole, F.avg_pool2d(image, 2))
    # a box of half the output size: bilinear upsampling (torch's, align_corners=False) of the image, cut out
    crop = warp([image], [torch.tensor([[8.0, 8.0, 24.0, 24.0]])])
    up = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(crop, up[:, :, 16:48, 16:48])


def test_context_padding_dilates_so_that_p_pixels_surround_the_box_at_the_warped_scale():
    box = torch.tensor([[100.0, 50.0, 295.0, 245.0]])  # 195 x 195: p = 16 at 227 leaves 195 pixels for the box
    assert dilate_for_context(box, 227, 16).tolist() == [[84.0, 34.0, 311.0, 261.0]]
    assert torch.equal(dilate_for_context(box, 227, 0), box)
    with pytest.raises(ConfigError, match="context_padding"):
        WarpRegions(32, 16)


def test_labelling_by_iou_with_the_ground_truth_added():
    """IoU >= 0.5 with a box: that box's class; below: background (0); the ground-truth boxes join the proposals."""
    model = tiny(batch_size_per_image=100)
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    proposals = torch.tensor([[0.0, 0.0, 10.0, 20.0],    # IoU 0.5 -> class 2
                              [0.0, 0.0, 10.0, 21.0],    # IoU 100 / 210 < 0.5 -> background
                              [20.0, 20.0, 30.0, 30.0]])  # no overlap -> background
    regions, labels, goals = model.roi_heads.sample([proposals], [{"boxes": gt, "labels": torch.tensor([2])}])
    by_box = {tuple(r.tolist()): int(label) for r, label in zip(regions[0], labels[0])}
    assert by_box == {(0.0, 0.0, 10.0, 20.0): 2, (0.0, 0.0, 10.0, 21.0): 0, (20.0, 20.0, 30.0, 30.0): 0,
                      (0.0, 0.0, 10.0, 10.0): 2}
    gt_row = [tuple(r.tolist()) for r in regions[0]].index((0.0, 0.0, 10.0, 10.0))
    assert goals[0][gt_row].abs().max() == 0  # the ground truth needs no correction
    # (0, 0, 10, 20) -> (0, 0, 10, 10): dy = (5 - 10) / 20, dh = ln(10 / 20), scaled by the weights (10, 10, 5, 5)
    row = [tuple(r.tolist()) for r in regions[0]].index((0.0, 0.0, 10.0, 20.0))
    torch.testing.assert_close(goals[0][row], torch.tensor([0.0, 10 * -0.25, 0.0, 5 * math.log(0.5)]))


def test_multi_task_loss_by_hand_and_no_box_gradient_for_the_background():
    """L = CE + lambda 1[c != bg] Huber(t_hat_c - t), Huber(a) = a^2 / 2 if |a| <= 1 else |a| - 1/2 (Notes: 002 §4.3.2),
    over the sampled regions: here one background and one region of class 2."""
    model = tiny()
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2.0)]], requires_grad=True)
    deltas = torch.zeros(2, 3, 4)
    deltas[0] = 7.0                                  # the background region's corrections: ignored
    deltas[1, 2] = torch.tensor([0.5, 0.0, 2.0, -3.0])  # class 2's corrections of region 1
    deltas[1, 1] = 9.0                               # another class's: ignored
    deltas = deltas.reshape(2, 12).requires_grad_(True)
    losses = model.roi_heads.loss(logits, deltas, torch.tensor([0, 2]), torch.zeros(2, 4))
    ce = (math.log(3.0) + math.log(2.0)) / 2  # softmax (1/3, 1/3, 1/3) and (1/4, 1/4, 1/2)
    huber = 0.5 * 0.5 ** 2 + 0 + (2 - 0.5) + (3 - 0.5)  # 0.125 + 1.5 + 2.5
    assert losses["loss_classifier"].item() == pytest.approx(ce)
    assert losses["loss_box_reg"].item() == pytest.approx(huber / 2)
    losses["loss_box_reg"].backward()
    grad = deltas.grad.reshape(2, 3, 4)
    assert grad[0].abs().max() == 0 and grad[1, :2].abs().max() == 0  # c = bg: no box gradient
    torch.testing.assert_close(grad[1, 2], torch.tensor([0.5, 0.0, 1.0, -1.0]) / 2)  # a, then the constant +-1


def test_decoding_is_the_notes_box_correction():
    """BB_out = (x + w dx, y + h dy, w e^dw, h e^dh): the proposal (50, 50, 20, 10) (centre, size) with the
    correction (0.2, -0.1, ln 2, 0) gives (54, 49, 40, 10), the hand example of [4-22]."""
    model = tiny(bbox_reg_weights=(1.0, 1.0, 1.0, 1.0)).eval()
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        for layer in (predictor.cls_score, predictor.bbox_pred):
            layer.weight.zero_()
        predictor.cls_score.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))  # class 2
        predictor.bbox_pred.bias.copy_(torch.tensor([0.0] * 8 + [0.2, -0.1, math.log(2.0), 0.0]))
        out = model(torch.rand(1, 3, 100, 100), proposals=[torch.tensor([[40.0, 45.0, 60.0, 55.0]])])[0]
    torch.testing.assert_close(out["boxes"], torch.tensor([[34.0, 44.0, 74.0, 54.0]]))
    assert out["labels"].tolist() == [2]
    assert out["scores"].item() == pytest.approx(math.exp(5) / (math.exp(5) + 2))


def test_the_cnn_runs_once_per_proposal_and_proposals_are_cached_per_image():
    proposer = StandInProposer()
    model = tiny(proposer=proposer).eval()
    crops = []
    model.roi_heads.box_head.register_forward_hook(lambda m, args, out: crops.append(args[0].shape))
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(images)
        counts = [len(p) for p in model.proposals(images)]
    assert crops == [(sum(counts), 3, 32, 32)] and counts == [14, 14]
    assert len(out) == 2 and all(set(o) == {"boxes", "scores", "labels"} for o in out)
    assert proposer.calls == 2  # model.proposals() after the forward: from the cache
    model.train()
    targets = [{"boxes": GT, "labels": torch.tensor([1, 2])}] * 2
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg"} and proposer.calls == 2
    assert crops[-1] == (2 * (14 + 2), 3, 32, 32)  # fewer than 32 regions: all, ground truth included


def test_training_on_one_scene_lowers_the_loss():
    images = torch.zeros(1, 3, 96, 96)
    images[:, 0, 12:44, 10:40] = 1.0
    images[:, 2, 20:60, 50:80] = 1.0
    model = tiny()
    losses = detector_losses(model, images, [{"boxes": GT, "labels": torch.tensor([1, 2])}], steps=30)
    assert losses[-1] < 0.5 * losses[0]


def test_registered_rcnn_alexnet_parameter_count_by_hand():
    """AlexNet as published (one tower): conv F (k k D_in + 1) and dense D_out (D_in + 1), fc8 replaced by
    21 class scores and 84 box corrections."""
    conv = 96 * (11 * 11 * 3 + 1) + 256 * (5 * 5 * 96 + 1) + 384 * (3 * 3 * 256 + 1) + 384 * (3 * 3 * 384 + 1) \
        + 256 * (3 * 3 * 384 + 1)
    fc = 4096 * (256 * 6 * 6 + 1) + 4096 * (4096 + 1)
    heads = 21 * (4096 + 1) + 84 * (4096 + 1)
    with torch.device("meta"):
        model = create_model("rcnn_alexnet")
    assert sum(p.numel() for p in model.parameters()) == conv + fc + heads == 58_711_529
    assert model.roi_heads.box_roi_pool.size == 227 and model.roi_heads.box_roi_pool.context_padding == 16
    assert model.roi_heads.box_predictor.cls_score.out_features == 21


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="num_classes"):
        RCNN(0, "vgg_tiny_fashion")
    model = tiny()
    with pytest.raises(ConfigError, match="targets"):
        model(torch.rand(1, 3, 96, 96))
    with pytest.raises(ConfigError, match=r"labels must be in 1\.\.2"):
        model(torch.rand(1, 3, 96, 96), [{"boxes": GT[:1], "labels": torch.tensor([3])}])
    with pytest.raises(ConfigError, match="one \\[K, 4\\] tensor per image"):
        model.eval()(torch.rand(2, 3, 96, 96), proposals=[GT])
