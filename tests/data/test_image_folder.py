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


def test_stratified_split_holds_out_each_class_in_proportion_like_sklearn():
    from sklearn.model_selection import train_test_split

    from dlkit.data.image_folder import stratified_split

    targets = [0] * 50 + [1] * 30 + [2] * 20 + [3] * 7
    kept, held = stratified_split(targets, 0.2, seed=3)
    assert sorted(kept + held) == list(range(len(targets))) and not set(kept) & set(held)
    _, ref = train_test_split(np.arange(len(targets)), test_size=0.2, stratify=targets, random_state=0)
    for c in range(4):
        mine = sum(targets[i] == c for i in held)
        assert mine == round(0.2 * targets.count(c)) and abs(mine - sum(targets[i] == c for i in ref)) <= 1
    assert stratified_split(targets, 0.2, seed=3) == (kept, held) and stratified_split(targets, 0.2, seed=4) != (
        kept, held)
    kept, held = stratified_split([0, 0, 1], 0.1)  # a class of two keeps one of each; a single image trains
    assert held == [0] or held == [1]
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        stratified_split(targets, 0.0)


def _write(root, classes, n=4, size=(6, 6)):
    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / c / f"{k}.png")


def test_a_val_folder_uses_the_training_class_ids(tmp_path):
    from dlkit.data.image_folder import split_folders

    _write(tmp_path / "train", ["ant", "bee", "cat"])
    _write(tmp_path / "val", ["bee", "cat"])
    assert split_folders(tmp_path) == {"train": tmp_path / "train", "val": tmp_path / "val"}
    train = ImageFolder(tmp_path / "train")
    val = ImageFolder(tmp_path / "val", classes=train.classes)
    assert val.classes == ["ant", "bee", "cat"] and sorted(set(val.targets)) == [1, 2]  # no 'ant': ids kept
    _write(tmp_path / "val", ["dog"])
    with pytest.raises(ConfigError, match=r"class folders \['dog'\] that the training folder lacks"):
        ImageFolder(tmp_path / "val", classes=train.classes)
    assert split_folders(tmp_path / "train") == {"train": tmp_path / "train"}  # ROOT/CLASS layout


def test_an_empty_class_folder_is_refused_in_training_and_allowed_in_validation(tmp_path):
    _write(tmp_path / "train", ["ant", "bee"])
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataNotFoundError, match=r"class folder\(s\) \['cat'\] .* hold no images.*2 of 3 classes"):
        ImageFolder(tmp_path / "train")  # a class the model would have to output but never sees
    (tmp_path / "val" / "ant").mkdir(parents=True)
    _write(tmp_path / "val", ["bee"])
    val = ImageFolder(tmp_path / "val", classes=["ant", "bee", "cat"])  # a class missing from val is fine
    assert val.classes == ["ant", "bee", "cat"] and set(val.targets) == {1}


def test_loaders_normalise_like_the_eager_reader_and_workers_give_the_same_batches(tmp_path):
    from dlkit.data.image_folder import image_folder_loaders

    _write(tmp_path, ["a", "b", "c"], n=10, size=(9, 7))
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]
    x, y, _ = load_image_folder(tmp_path, size=(4, 4))
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    kw = dict(size=4, mean=mean, std=std, batch_size=4, val_fraction=0.3, seed=0)
    data = image_folder_loaders(tmp_path, **kw)
    assert data.classes == ["a", "b", "c"] and data.sizes == {"train": 21, "val": 9} and data.test is None
    held = data.val.dataset.indices
    xv, yv = next(iter(data.val))
    assert torch.allclose(xv, ref[held], atol=1e-6) and torch.equal(yv, y[held])
    assert sorted(yv.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # stratified: 3 of each class
    data.train.sampler.set_epoch(1)
    serial = [b for b in data.train]
    parallel = image_folder_loaders(tmp_path, **kw, num_workers=2)
    parallel.train.sampler.set_epoch(1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(serial, parallel.train))
    assert len(serial) == 5  # 21 images in batches of 4, the last partial batch dropped
    ranks = [image_folder_loaders(tmp_path, **kw, rank=r, world_size=2) for r in (0, 1)]
    halves = [list(r.train.sampler) for r in ranks]  # two DDP ranks read the halves of one permutation
    assert len(halves[0]) == len(halves[1]) == 11 and set(halves[0] + halves[1]) == set(range(21))  # 1 repeated
    with pytest.raises(ConfigError, match="one value per channel"):
        image_folder_loaders(tmp_path, **{**kw, "mean": [0.5]})


def test_16_bit_grey_images_are_scaled_to_8_bits_as_torchvision_scales_them(tmp_path):
    from torchvision.transforms.v2.functional import to_dtype

    from dlkit.data.files import read_image

    pixels = np.random.default_rng(0).integers(0, 65536, (5, 7), dtype=np.uint16)
    pixels[0, :3] = [0, 4095, 65535]
    Image.fromarray(pixels).save(tmp_path / "deep.png")  # a 16-bit PNG (PIL mode I;16)
    expected = to_dtype(torch.from_numpy(pixels.astype(np.int32)).to(torch.uint16)[None], torch.uint8, scale=True)
    assert torch.equal(read_image(tmp_path / "deep.png", "L"), expected)  # PIL's convert("L") clips at 255
    assert torch.equal(read_image(tmp_path / "deep.png", "RGB"), expected.expand(3, -1, -1))


def test_a_float_image_is_refused_in_one_line_instead_of_read_as_black(tmp_path):
    from dlkit.data.files import read_image
    from dlkit.errors import ConfigError

    Image.fromarray(np.random.default_rng(0).random((5, 7), dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ConfigError, match=r"32-bit floating-point pixels \(PIL mode F\).*convert the image to 8 or "
                                          r"16 bits"):
        read_image(tmp_path / "float.tif", "L")


def test_a_missing_image_file_is_not_said_to_need_deleting(tmp_path):
    from dlkit.data.files import read_image
    from dlkit.errors import DataError

    with pytest.raises(DataError, match=r"missing.png: file not found. Put the file there \(copy or download it "):
        read_image(tmp_path / "missing.png")
