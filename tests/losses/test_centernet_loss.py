"""CenterNet's loss (Notes: 002 §4.3.5): the penalty-reduced focal loss by hand and against the authors' clamped
probability form, the L1 (paper) and Huber (notes) box terms, and the normalisation by the number of objects."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.losses.centernet import CenterNetLoss, centernet_focal_loss, gather_at


def logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p) - torch.log1p(-p)


def test_focal_loss_on_a_2x2_heat_map_by_hand():
    pred = torch.tensor([[[[0.8, 0.3], [0.1, 0.5]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.25]]]], dtype=torch.float64)
    # Y = 1:    -(1 - 0.8)^2 ln 0.8                 = 0.008925742
    # Y = 0.5:  -(1 - 0.5)^4 0.3^2 ln(1 - 0.3)      = 0.002006297
    # Y = 0:    -(1 - 0)^4 0.1^2 ln(1 - 0.1)        = 0.001053605
    # Y = 0.25: -(1 - 0.25)^4 0.5^2 ln(1 - 0.5)     = 0.054829025
    # one object (N = 1): the sum, 0.066814669
    assert centernet_focal_loss(logit(pred), target).item() == pytest.approx(0.066814669, abs=1e-9)
    # N = 4 objects divide the sum by 4
    assert centernet_focal_loss(logit(pred), target, normalizer=4).item() == pytest.approx(0.066814669 / 4)


def test_equals_the_clamped_probability_form_of_the_authors():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64) * 3
    target = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64) ** 4
    target[0, 1, 2, 3] = target[1, 2, 4, 5] = target[1, 0, 0, 0] = 1.0
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)  # their _sigmoid; the logits here stay well inside it
    pos = target.eq(1)
    ref = -(((1 - p) ** 2 * p.log())[pos].sum() + ((1 - target) ** 4 * p ** 2 * (1 - p).log())[~pos].sum()) / 3
    torch.testing.assert_close(centernet_focal_loss(logits, target), ref, rtol=1e-3, atol=1e-6)


def test_near_centre_negatives_are_down_weighted_and_confident_truth_costs_nothing():
    logits = torch.tensor([[[[20.0, 2.0, 2.0]]]])
    far = centernet_focal_loss(logits, torch.tensor([[[[1.0, 0.0, 0.0]]]]))
    near = centernet_focal_loss(logits, torch.tensor([[[[1.0, 0.9, 0.9]]]]))
    positive = centernet_focal_loss(logits[..., :1], torch.ones(1, 1, 1, 1))
    assert positive.item() < 1e-8  # a confident correct peak
    assert (near - positive).item() == pytest.approx((far - positive).item() * 0.1 ** 4, rel=1e-5)  # (1 - Y)^4
    # gamma = 0, beta = 0: the plain binary cross-entropy summed over pixels, divided by the one positive
    t = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="sum")
    torch.testing.assert_close(centernet_focal_loss(logits, t, gamma=0, beta=0), bce)


def test_box_terms_are_l1_at_the_centres_divided_by_the_objects():
    size = torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).view(2, 2, 3, 3)
    offset = torch.full((2, 2, 3, 3), 0.5)
    centres = torch.tensor([[0, 1, 2], [1, 0, 0]])  # (batch, y, x)
    # gathered sizes: image 0 at (1, 2) -> (5, 14); image 1 at (0, 0) -> (18, 27)
    assert gather_at(size, centres).tolist() == [[5, 14], [18, 27]]
    size_t = torch.tensor([[4.0, 14.0], [20.0, 30.0]])
    off_t = torch.tensor([[0.25, 0.5], [0.5, 1.0]])
    heat = torch.full((2, 1, 3, 3), -20.0)
    heat_t = torch.zeros(2, 1, 3, 3)
    heat_t[0, 0, 1, 2] = heat_t[1, 0, 0, 0] = 1
    losses = CenterNetLoss()(heat, size, offset, heat_t, centres, size_t, off_t)
    # size: (|5 - 4| + 0 + |18 - 20| + |27 - 30|) / 2 objects = 3, x 0.1; offset: (0.25 + 0 + 0 + 0.5) / 2 = 0.375
    assert losses["loss_size"].item() == pytest.approx(0.3)
    assert losses["loss_offset"].item() == pytest.approx(0.375)
    # two positives predicted at probability sigmoid(-20): -(1 - p)^2 ln p each, divided by the two objects
    p = 1 / (1 + math.exp(20))
    assert losses["loss_heatmap"].item() == pytest.approx(-((1 - p) ** 2) * math.log(p), rel=1e-4)
    # the notes' variant: Huber (delta 1) summed over the coordinates, same normalisation
    huber = CenterNetLoss(box_loss="huber")(heat, size, offset, heat_t, centres, size_t, off_t)
    ref = F.huber_loss(gather_at(size, centres), size_t, reduction="sum", delta=1.0) / 2
    assert huber["loss_size"].item() == pytest.approx(0.1 * ref.item())


def test_no_objects_and_bad_options():
    heat = torch.zeros(1, 2, 4, 4)
    losses = CenterNetLoss()(heat, torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4),
                             torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 2), torch.zeros(0, 2))
    # every pixel a negative at p = 1/2: 32 x (1/2)^2 ln 2, divided by max(N, 1) = 1
    assert losses["loss_heatmap"].item() == pytest.approx(32 * 0.25 * math.log(2), rel=1e-6)
    assert losses["loss_size"].item() == 0 and losses["loss_offset"].item() == 0
    with pytest.raises(ConfigError, match="box_loss must be one of"):
        CenterNetLoss(box_loss="smooth")
    with pytest.raises(ConfigError, match="same shape"):
        centernet_focal_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 3, 3))
    with pytest.raises(ConfigError, match=r"\[N, 3\]"):
        gather_at(torch.zeros(1, 2, 3, 3), torch.zeros(2, 2, dtype=torch.long))
