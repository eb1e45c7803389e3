"""Mask2Former (Notes: 002 §5.3.3): shapes (one prediction per layer plus the queries'), the point-sampled loss
with every pixel equal to MaskFormer's full-resolution loss, and a few training steps."""

import pytest
import torch

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.segmentation.maskformer import MaskFormer


def _targets():
    a = torch.zeros(2, 64, 64, dtype=torch.bool)
    a[0, :32] = True
    a[1, 32:] = True
    b = torch.zeros(2, 64, 64, dtype=torch.bool)
    b[0, :, :20] = True
    b[1, :, 20:] = True
    return [{"masks": a, "labels": torch.tensor([1, 3])}, {"masks": b, "labels": torch.tensor([2, 5])}]


def test_shapes_and_levels():
    torch.manual_seed(0)
    model = create_model("mask2former_tiny")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    logits, masks, _ = model.head_outputs(x)
    assert logits.shape == (4, 2, 10, 6) and masks.shape == (4, 2, 10, 16, 16)
    assert model(x).shape == (2, 5, 64, 64)
    assert set(model(x, _targets())) == {"loss_ce", "loss_mask", "loss_dice"}
    with pytest.raises(ConfigError, match="num_levels"):
        create_model("mask2former_tiny", num_levels=4)


def test_the_point_sampled_loss_with_every_pixel_equals_the_full_loss():
    torch.manual_seed(0)
    model = create_model("mask2former_tiny", num_points=None)
    logits, masks, size = model.head_outputs(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    points = model.loss(logits, masks, _targets(), size)
    full = MaskFormer.loss(model, logits, masks, _targets(), size)  # bilinear upsampling, every pixel
    assert MaskFormer.match_and_score is not type(model).match_and_score
    for k in points:
        torch.testing.assert_close(points[k], full[k])


def test_a_few_training_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = create_model("mask2former_tiny").train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = sum(model(x, _targets()).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
