"""MaskFormer (Notes: 002 §5.3.2): shapes, the matcher against brute force and scipy, the mask costs against hand
values and torchvision's focal loss, the loss's invariance to the query order, semantic inference against an
explicit sum, panoptic inference on a hand case, and a few training steps."""

import itertools
import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment as scipy_lsa
from torchvision.ops import sigmoid_focal_loss as tv_focal

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.segmentation.mask_classification import (
    MaskHungarianMatcher,
    mask_pair_losses,
    pairwise_dice_cost,
    pairwise_focal_cost,
    panoptic_inference,
    semantic_inference,
    semantic_targets,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _targets():
    a = torch.zeros(2, 64, 64, dtype=torch.bool)
    a[0, :32] = True
    a[1, 32:] = True
    b = torch.zeros(3, 64, 64, dtype=torch.bool)
    b[0, :, :20] = True
    b[1, :, 20:40] = True
    b[2, :, 40:] = True
    return [{"masks": a, "labels": torch.tensor([1, 3])}, {"masks": b, "labels": torch.tensor([2, 5, 1])}]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("maskformer_tiny")


def test_output_shapes(tiny):
    x = torch.rand(2, 3, 64, 48, generator=_gen())  # 48 is padded to 64 and cropped back
    logits, masks, size = tiny.head_outputs(x)
    assert logits.shape == (2, 2, 10, 6) and masks.shape == (2, 2, 10, 16, 16) and tuple(size) == (64, 48)
    assert tiny(x).shape == (2, 5, 64, 48)
    losses = tiny(torch.rand(2, 3, 64, 64, generator=_gen()), _targets())
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"} and all(v.dim() == 0 for v in losses.values())


def test_pairwise_dice_cost_against_hand_values():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])  # sigmoid: [0.5, 0.75], [0.75, 0.5]
    targets = torch.tensor([[0, 1], [1, 1]])
    # pred 0 vs target 0: 1 - (2 * 0.75 + 1) / (1.25 + 1 + 1); vs target 1: 1 - (2 * 1.25 + 1) / (1.25 + 2 + 1)
    expected = torch.tensor([[1 - 2.5 / 3.25, 1 - 3.5 / 4.25], [1 - 2.0 / 3.25, 1 - 3.5 / 4.25]])
    torch.testing.assert_close(pairwise_dice_cost(logits, targets), expected)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0)])
def test_pairwise_focal_cost_against_torchvision(alpha, gamma):
    logits = torch.randn(4, 30, generator=_gen(1)) * 3
    targets = torch.rand(3, 30, generator=_gen(2)) > 0.5
    cost = pairwise_focal_cost(logits, targets, alpha, gamma)
    for q, j in itertools.product(range(4), range(3)):
        ref = tv_focal(logits[q], targets[j].float(), alpha, gamma).mean()
        torch.testing.assert_close(cost[q, j], ref)


def test_mask_pair_losses_against_torchvision_and_the_hand_dice():
    pred = torch.randn(3, 20, generator=_gen(3))
    gt = torch.rand(3, 20, generator=_gen(4)) > 0.4
    focal, dice = mask_pair_losses(pred, gt, num_masks=2.0)
    torch.testing.assert_close(focal, tv_focal(pred, gt.float(), reduction="none").mean(1).sum() / 2)
    s, g = pred.sigmoid(), gt.float()
    hand = sum(1 - (2 * (s[i] * g[i]).sum() + 1) / (s[i].sum() + g[i].sum() + 1) for i in range(3)) / 2
    torch.testing.assert_close(dice, hand)


def _random_case(n, m, seed):
    g = _gen(seed)
    return (torch.randn(n, 4, generator=g), torch.randn(n, 25, generator=g), torch.randint(0, 3, (m,), generator=g),
            torch.rand(m, 25, generator=g) > 0.5)


@pytest.mark.parametrize("n,m,seed", [(4, 3, 0), (5, 5, 1), (6, 2, 2)])
def test_matching_equals_brute_force_and_scipy(n, m, seed):
    logits, masks, labels, tmasks = _random_case(n, m, seed)
    matcher = MaskHungarianMatcher()
    cost = matcher.cost_matrix(logits, masks, labels, tmasks.float())
    rows, cols = matcher(logits[None], [masks], [labels], [tmasks])[0]
    ours = cost[rows, cols].sum()
    brute = min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))
    torch.testing.assert_close(ours, brute)
    r, c = scipy_lsa(cost.numpy())
    assert rows.tolist() == r.tolist() and cols.tolist() == c.tolist()
    # the class term is -p(class): a query predicting the segment's class surely pays less
    prob = logits.softmax(-1)
    torch.testing.assert_close(cost - MaskHungarianMatcher(0.0, 20.0, 1.0).cost_matrix(logits, masks, labels,
                                                                                     tmasks.float()),
                               -prob[:, labels])


def test_the_loss_is_invariant_to_permuting_the_queries(tiny):
    logits, masks, size = tiny.head_outputs(torch.rand(2, 3, 64, 64, generator=_gen(5)))
    perm = torch.randperm(10, generator=_gen(6))
    a = tiny.loss(logits, masks, _targets(), size)
    b = tiny.loss(logits[:, :, perm], masks[:, :, perm], _targets(), size)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_semantic_inference_against_an_explicit_sum():
    logits = torch.randn(2, 4, 4, generator=_gen(7))  # B 2, N 4, K 3 + no object
    masks = torch.randn(2, 4, 5, 6, generator=_gen(8))
    out = semantic_inference(logits, masks)
    p = logits.softmax(-1)
    for b, k in itertools.product(range(2), range(3)):
        ref = sum(p[b, q, k] * masks[b, q].sigmoid() for q in range(4))
        torch.testing.assert_close(out[b, k], ref)


def _probs_to_logits(p):
    return torch.tensor(p).log()


def _sig_to_logits(s):
    s = torch.tensor(s)
    return (s / (1 - s)).log()


def test_panoptic_inference_on_a_hand_case():
    # 3 queries over 2 classes + no object, 4 pixels in a row; query 2 predicts no object and is dropped.
    logits = _probs_to_logits([[0.9, 0.05, 0.05], [0.05, 0.85, 0.1], [0.1, 0.1, 0.8]])
    masks = _sig_to_logits([[0.9, 0.6, 0.2, 0.1], [0.3, 0.8, 0.9, 0.4], [0.9, 0.9, 0.9, 0.9]])[:, None]
    # p * sigmoid: q0 [.81, .54, .18, .09], q1 [.255, .68, .765, .34] -> winners [0, 1, 1, 1]; q1 keeps only its
    # own pixels (sigmoid >= 0.5), so pixel 3 is void. q0 wins 1 of its 2 own pixels (ratio 0.5).
    ids, segs = panoptic_inference(logits, masks, thing_classes={0}, score_threshold=0.5, overlap_threshold=0.4)
    assert ids[0].tolist() == [1, 2, 2, 0]
    assert [(s["id"], s["category"], s["isthing"], s["area"]) for s in segs] == [(1, 0, True, 1), (2, 1, False, 2)]
    ids, segs = panoptic_inference(logits, masks, thing_classes={0}, score_threshold=0.5, overlap_threshold=0.8)
    assert ids[0].tolist() == [0, 1, 1, 0] and [s["category"] for s in segs] == [1]
    ids, segs = panoptic_inference(logits, masks, score_threshold=0.87)  # only q0 (p 0.9) is confident enough
    assert ids[0].tolist() == [1, 1, 0, 0] and segs[0]["area"] == 2


def test_panoptic_inference_merges_a_stuff_class_and_keeps_things_apart():
    logits = _probs_to_logits([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05]])
    masks = _sig_to_logits([[0.9, 0.9, 0.1, 0.1], [0.1, 0.1, 0.9, 0.9]])[:, None]
    ids, segs = panoptic_inference(logits, masks, thing_classes=(), score_threshold=0.5)
    assert ids[0].tolist() == [1, 1, 1, 1] and len(segs) == 1 and segs[0]["area"] == 4
    ids, segs = panoptic_inference(logits, masks, thing_classes={0}, score_threshold=0.5)
    assert ids[0].tolist() == [1, 1, 2, 2] and len(segs) == 2


def test_semantic_targets_and_bad_targets(tiny):
    label_map = torch.tensor([[0, 0, 2], [255, 2, 2]])
    t = semantic_targets(label_map, num_classes=3)
    assert t["labels"].tolist() == [1, 3]
    assert t["masks"].int().tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 1, 1]]]
    x = torch.rand(2, 3, 64, 64, generator=_gen())
    bad = _targets()
    bad[0] = {"masks": bad[0]["masks"], "labels": torch.tensor([0, 3])}  # label 0: labels are 1..K
    with pytest.raises(ConfigError, match="1..5"):
        tiny(x, bad)


def test_a_few_training_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = create_model("maskformer_tiny", dropout=0.0).train()
    x = torch.rand(2, 3, 64, 64, generator=_gen(9))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = sum(model(x, _targets()).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
