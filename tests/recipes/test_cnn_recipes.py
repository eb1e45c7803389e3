"""Helpers of the CNN-family recipes on Fashion-MNIST, and the transfer-learning recipes (their helpers are tested in
tests/techniques/test_transfer.py)."""

import itertools

import numpy as np
import pytest
import torch

from dlkit import create_model
from dlkit.data.transforms import pad_images
from dlkit.errors import ConfigError
from dlkit.recipes import get_recipe
from dlkit.recipes.cnn_fashion import (
    FASHION_MEAN,
    FASHION_STD,
    load_fashion_padded,
    train_augmentation,
)

CNN_RECIPES = ("resnet20-fashion", "se-resnet20-fashion", "wrn-16-2-fashion", "resnext-tiny-fashion",
               "vgg-tiny-fashion", "googlenet-tiny-fashion", "nin-fashion", "mobilenetv2-tiny-fashion",
               "efficientnet-tiny-fashion", "regnet-tiny-fashion")


# -- Fashion-MNIST CNN recipes --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "before", "after"), [(32, 2, 2), (31, 1, 2), (28, 0, 0)])
def test_pad_images_matches_numpy_pad(size, before, after):
    x = torch.randn(3, 1, 28, 28)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (before, after), (before, after)), constant_values=-0.5)
    np.testing.assert_array_equal(pad_images(x, size, fill=-0.5).numpy(), ref)


def test_pad_images_adds_the_channel_axis_and_rejects_shrinking():
    assert pad_images(torch.zeros(2, 28, 28), 32).shape == (2, 1, 32, 32)
    with pytest.raises(ConfigError, match="smaller"):
        pad_images(torch.zeros(2, 1, 28, 28), 24)


def _shifted(img: np.ndarray, dy: int, dx: int, pad: int, fill: float, flip: bool) -> np.ndarray:
    h, w = img.shape[-2:]
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    out = padded[:, pad + dy: pad + dy + h, pad + dx: pad + dx + w]
    return out[:, :, ::-1] if flip else out


def test_train_augmentation_is_a_shift_within_the_padding_then_maybe_a_flip():
    x = torch.randn(24, 1, 8, 8)
    aug = train_augmentation(8, crop_padding=2, flip=True, fill=-1.0)
    out = aug(x, generator=torch.Generator().manual_seed(0)).numpy()
    seen = set()
    for i in range(len(x)):
        found = [(dy, dx, f) for dy, dx, f in itertools.product(range(-2, 3), range(-2, 3), (False, True))
                 if np.array_equal(out[i], _shifted(x[i].numpy(), dy, dx, 2, -1.0, f))]
        assert found, f"sample {i} is not a shift of at most 2 pixels (optionally flipped) of its input"
        seen.add(found[0])
    assert len(seen) > 5  # drawn per sample, not one shift for the batch
    again = aug(x, generator=torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_array_equal(out, again)


def test_train_augmentation_is_none_when_switched_off():
    assert train_augmentation(32, crop_padding=0, flip=False) is None


@pytest.mark.parametrize("name", CNN_RECIPES)
def test_cnn_recipe_is_registered_within_the_cpu_budget(name):
    recipe = get_recipe(name)
    assert recipe.metric == "test/accuracy" and 0.85 <= recipe.threshold < 1.0
    assert recipe.budget_s <= 600 and recipe.datasets == ("fashion-mnist",)
    model = create_model(recipe.defaults["model"], in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert get_recipe("resnet20-fashion").threshold >= 0.92  # the task's bar for ResNet-20


@pytest.mark.data
def test_fashion_is_standardised_then_padded_with_the_background_value(data_root):
    class Cfg:
        data_dir = str(data_root)

    x_tr, y_tr, x_te, y_te = load_fashion_padded(Cfg(), 32)
    assert x_tr.shape == (60000, 1, 32, 32) and x_te.shape == (10000, 1, 32, 32) and len(y_tr) == 60000
    background = -FASHION_MEAN / FASHION_STD
    border = torch.cat([x_te[..., :2, :].flatten(), x_te[..., -2:, :].flatten(), x_te[..., :2].flatten()])
    assert torch.allclose(border, torch.tensor(background))
    interior = x_tr[..., 2:30, 2:30]
    assert abs(interior.mean().item()) < 0.01 and abs(interior.std().item() - 1.0) < 0.01


# -- transfer learning ------------------------------------------------------------------------------------------------

def test_transfer_recipes_are_registered_with_their_metrics():
    tr = get_recipe("transfer-mnist-digits")
    assert tr.metric == "test/finetune_gain" and tr.defaults["per_class"] == 100
    probe = get_recipe("lite0-linear-probe-fashion")
    assert probe.metric == "test/probe_gain" and probe.datasets == ("fashion-mnist",)
