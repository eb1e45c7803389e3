"""Median-frequency class weights (Notes: 002 §4.3.4, 003 §4) by hand and against a numpy reference."""

import numpy as np
import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.losses.class_weights import median_frequency_weights


def test_median_frequency_weights_by_hand():
    # image 0: 3 px of class 0, 1 px of class 1; image 1: 2 px of class 1, 1 px of class 2, 1 void (9).
    # f_0 = 3/4 (only image 0 has class 0), f_1 = 3/7 (1 + 2 of the 4 + 3 valid pixels), f_2 = 1/3;
    # median = 3/7, so w = (3/7)/(3/4), 1, (3/7)/(1/3); class 3 is never seen: weight 0.
    masks = torch.tensor([[[0, 0], [0, 1]], [[1, 1], [2, 9]]], dtype=torch.uint8)
    w = median_frequency_weights(masks, 4, ignore_index=9)
    assert torch.allclose(w, torch.tensor([4 / 7, 1.0, 9 / 7, 0.0]))


def _numpy_reference(masks: np.ndarray, k: int, ignore: int) -> np.ndarray:
    freq = np.zeros(k)
    for c in range(k):
        pixels = total = 0
        for m in masks:
            valid = m[m != ignore]
            if (valid == c).any():
                pixels += (valid == c).sum()
                total += valid.size
        freq[c] = pixels / total if total else 0.0
    seen = freq > 0
    w = np.zeros(k)
    w[seen] = np.median(freq[seen]) / freq[seen]
    return w


@pytest.mark.parametrize("k", [5, 6])  # an odd and an even number of classes (the median of the middle two)
def test_median_frequency_weights_match_a_numpy_reference(k):
    rng = np.random.default_rng(k)
    masks = rng.choice(k + 1, size=(7, 9, 11), p=np.r_[np.linspace(1, 3, k), 1] / np.r_[np.linspace(1, 3, k), 1].sum())
    masks[masks == k] = 255  # void
    masks[0][masks[0] == 1] = 0  # class 1 missing from image 0: its frequency counts images 1..6 only
    w = median_frequency_weights(torch.from_numpy(masks), k, ignore_index=255)
    np.testing.assert_allclose(w.numpy(), _numpy_reference(masks, k, 255), rtol=1e-6)


def test_median_frequency_weights_explain_bad_labels():
    with pytest.raises(ConfigError, match="class indices 0..2"):
        median_frequency_weights(torch.tensor([[[0, 3]]]), 3)
    with pytest.raises(ConfigError, match=r"\[N, H, W\]"):
        median_frequency_weights(torch.tensor([1, 2]), 3)
