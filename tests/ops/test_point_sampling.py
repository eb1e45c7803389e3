"""Point sampling for Mask2Former's losses (Notes: 002 §5.3.3): values at pixel centres and midpoints, equality
with bilinear upsampling, and importance sampling that picks the uncertain points."""

import torch
import torch.nn.functional as F

from dlkit.ops.point_sampling import pixel_centres, point_sample, uncertain_points


def test_point_sample_at_pixel_centres_and_a_midpoint():
    maps = torch.arange(12.0).reshape(1, 1, 3, 4)
    centres = pixel_centres(3, 4)
    torch.testing.assert_close(point_sample(maps, centres[None])[0, 0], torch.arange(12.0))
    # halfway between pixels (0, 0) = 0 and (0, 1) = 1, and between rows 0 and 1 (4, 5): the mean 2.5
    torch.testing.assert_close(point_sample(maps, torch.tensor([[[0.25, 1 / 3]]])), torch.tensor([[[2.5]]]))


def test_point_sample_at_a_finer_grids_centres_is_bilinear_upsampling():
    maps = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    pts = pixel_centres(20, 24)[None].expand(2, -1, -1)
    up = F.interpolate(maps, size=(20, 24), mode="bilinear", align_corners=False).flatten(2)
    torch.testing.assert_close(point_sample(maps, pts), up)


def test_importance_sampling_takes_the_uncertain_points():
    torch.manual_seed(0)
    logits = torch.full((3, 1, 1, 8), 10.0)
    logits[..., :4] = 0.0  # uncertain left half (x < 0.5); values are exactly 0 for x <= 0.4375
    pts = uncertain_points(logits, 40, oversample=3, importance=0.75)
    assert pts.shape == (3, 40, 2) and (pts >= 0).all() and (pts <= 1).all()
    assert (pts[:, :30, 0] <= 0.4375 + 1e-6).all()
    assert (pts[:, 30:, 0] > 0.5).any()  # the uniform rest covers the certain half too
