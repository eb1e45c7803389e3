import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dlkit.data.image_folder import ImageFolder, load_image_folder
from dlkit.errors import ConfigError, DataNotFoundError


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    ref = []
    for cls in ("zebra", "cat"):  # classes sorted: cat=0, zebra=1
        (tmp_path / cls).mkdir()
        for k in range(3):
            img = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / cls / f"{k}.png")
            ref.append((cls, k, img))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    return tmp_path, ref


def test_classes_are_sorted_folder_names_and_pixels_are_exact(folder):
    root, ref = folder
    x, y, classes = load_image_folder(root)
    assert classes == ["cat", "zebra"] and x.shape == (6, 3, 8, 10) and x.dtype == torch.uint8
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    want = {(c, k): img for c, k, img in ref}
    assert torch.equal(x[4], torch.from_numpy(want[("zebra", 1)]).permute(2, 0, 1))
    assert torch.equal(x[0], torch.from_numpy(want[("cat", 0)]).permute(2, 0, 1))


def test_resize_equals_antialiased_bilinear_interpolation(folder):
    root, ref = folder
    x, _, _ = load_image_folder(root, size=(4, 5))
    src = torch.from_numpy(ref[3][2]).permute(2, 0, 1)[None].float()  # cat/0
    want = F.interpolate(src, size=(4, 5), mode="bilinear", align_corners=False, antialias=True)
    assert (x[0].float() - want[0]).abs().max() <= 0.5 + 1e-4


def test_lazy_dataset_matches_eager_loader(folder):
    root, _ = folder
    x, y, classes = load_image_folder(root, mode="L")
    ds = ImageFolder(root, mode="L", transform=lambda t: t.float() / 255)
    assert len(ds) == 6 and ds.classes == classes and ds.class_to_idx == {"cat": 0, "zebra": 1}
    img, label = ds[5]
    assert x.shape[1] == 1 and label == y[5] and torch.allclose(img, x[5].float() / 255)


def test_mixed_sizes_need_size_and_empty_folders_are_reported(tmp_path):
    for i, shape in enumerate([(4, 4, 3), (5, 4, 3)]):
        (tmp_path / f"c{i}").mkdir()
        Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / f"c{i}" / "a.jpg")
    with pytest.raises(ConfigError, match="size="):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, size=3)[0].shape == (2, 3, 3, 3)
    with pytest.raises(DataNotFoundError, match="no images"):
        load_image_folder(tmp_path, extensions=[".bmp"])
    with pytest.raises(DataNotFoundError):
        ImageFolder(tmp_path / "missing")
