import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.augment import RandomRotation
from dlkit.errors import ConfigError
from dlkit.techniques.tta import TTAModel, crop, tta_predict, tta_views


def _small_cnn(pool: bool):
    """A conv net; with global average pooling it is invariant to flips (GAP of a mirrored conv map)."""
    conv = nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():  # a mirror-symmetric kernel makes the conv commute with flips
        conv.weight.copy_((conv.weight + conv.weight.flip(-1) + conv.weight.flip(-2) + conv.weight.flip(-1, -2)) / 4)
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if pool else [nn.Flatten()]
    return nn.Sequential(conv, nn.ReLU(), *head, nn.Linear(8 if pool else 8 * 8 * 8, 5))


def test_flip_tta_of_a_flip_invariant_model_equals_the_plain_prediction():
    model = _small_cnn(pool=True).eval()
    x = torch.randn(4, 3, 8, 8)
    plain = torch.softmax(model(x), 1)
    torch.testing.assert_close(tta_predict(model, x, ("identity", "hflip", "vflip", "rot180")), plain)
    torch.testing.assert_close(tta_predict(model, x, ("identity",)), plain)


def test_hflip_tta_is_the_average_of_the_two_softmax_predictions():
    model = _small_cnn(pool=False).eval()
    x = torch.randn(4, 3, 8, 8)
    by_hand = (F.softmax(model(x), 1) + F.softmax(model(torch.flip(x, dims=[3])), 1)) / 2
    p = tta_predict(model, x, ("identity", "hflip"))
    torch.testing.assert_close(p, by_hand)
    torch.testing.assert_close(p.sum(1), torch.ones(4))
    assert not torch.allclose(p, F.softmax(model(x), 1))  # the model is not flip invariant: TTA changes it
    raw = tta_predict(model, x, ("identity", "hflip"), activation=None)
    torch.testing.assert_close(raw, (model(x) + model(x.flip(-1))) / 2)


def test_ten_crop_tta_averages_five_crops_and_their_mirrors():
    model = _small_cnn(pool=True).eval()
    x = torch.randn(2, 3, 12, 12)
    mean, views = tta_predict(model, x, ("identity", "hflip"), crops=8, return_views=True)
    assert views.shape == (10, 2, 5)
    crops = [x[..., 2:10, 2:10], x[..., :8, :8], x[..., :8, 4:], x[..., 4:, :8], x[..., 4:, 4:]]
    by_hand = torch.stack([F.softmax(model(v), 1) for c in crops for v in (c, c.flip(-1))]).mean(0)
    torch.testing.assert_close(mean, by_hand)
    assert torch.equal(crop(x, (8, 6), "center"), x[..., 2:10, 3:9])


def test_tta_with_random_views_is_reproducible_and_restores_train_mode():
    model = nn.Sequential(nn.Dropout(0.5), _small_cnn(pool=True)).train()
    x = torch.randn(2, 3, 8, 8)
    rot = RandomRotation(30)
    views = tta_views(x, [rot, rot, "identity"], generator=torch.Generator().manual_seed(0))
    assert len(views) == 3 and not torch.equal(views[0], views[1]) and torch.equal(views[2], x)
    p1 = tta_predict(model, x, [rot] * 3, generator=torch.Generator().manual_seed(1))
    p2 = tta_predict(model, x, [rot] * 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(p1, p2) and model.training  # eval mode inside (no dropout noise), train mode restored


def test_tta_model_returns_log_probabilities_of_the_average():
    model = _small_cnn(pool=False)
    x = torch.randn(3, 3, 8, 8)
    wrapped = TTAModel(model, ("identity", "hflip"))
    torch.testing.assert_close(wrapped(x).exp(), tta_predict(model, x))
    y = torch.tensor([0, 1, 2])
    torch.testing.assert_close(F.cross_entropy(wrapped(x), y), -tta_predict(model, x)[torch.arange(3), y].log().mean())


def test_bad_tta_arguments_raise_config_errors():
    model, x = _small_cnn(pool=True), torch.randn(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="unknown TTA transform"):
        tta_predict(model, x, ("identity", "mirror"))
    with pytest.raises(ConfigError):
        tta_predict(model, x, crops=10)
    with pytest.raises(ConfigError):
        tta_predict(model, x, activation="relu")


def test_tta_views_equal_torchvision_flips_rotations_and_ten_crop():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(2, 3, 8, 8)
    names = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270")
    want = [x, TF.hflip(x), TF.vflip(x), *(TF.rotate(x, a) for a in (90.0, 180.0, 270.0))]
    for name, view, ref in zip(names, tta_views(x, names), want, strict=True):
        torch.testing.assert_close(view, ref, rtol=0, atol=1e-5, msg=name)
    # ten-crop: v2 crops the image and its mirror; the mirror's crops are the mirrored crops, in another order
    x = torch.rand(2, 3, 10, 12)
    ours = tta_views(x, ("identity", "hflip"), crops=(6, 8))
    tv = TF.ten_crop(x, [6, 8])
    assert len(ours) == len(tv) == 10
    for v in tv:
        assert sum(torch.equal(v, o) for o in ours) == 1
