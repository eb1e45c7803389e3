import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from pycocotools.coco import COCO
from torchvision.ops import masks_to_boxes

from dlkit.data.detection_scenes import (
    DIGIT_CLASSES,
    SHAPE_CLASSES,
    Canvas,
    mnist_scenes,
    shape_mask,
    shapes_scenes,
    write_scenes,
)
from dlkit.data.loader import collate_detection
from dlkit.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools'


def _fake_digits(n=50):
    """Bars of varying aspect ratio with a soft edge, labels 0..9 (stands in for MNIST without data)."""
    rng = np.random.default_rng(0)
    digits = np.zeros((n, 28, 28), np.uint8)
    for k in range(n):
        h, w = rng.integers(8, 21, 2)
        digits[k, 4:4 + h, 6:6 + w] = 255
        digits[k, 3, 6:6 + w] = 40  # a faint row: below the ink threshold
    return digits, np.arange(n) % 10


def _check_scene_targets(ds, n_classes, sizes):
    for i in range(len(ds)):
        image, t = ds[i]
        s = ds.scene(i)
        k = len(t["labels"])
        assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
        assert t["masks"].shape == (k, *image.shape[1:]) and t["boxes"].shape == (k, 4)
        assert ((1 <= t["labels"]) & (t["labels"] <= n_classes)).all()
        assert t["masks"].sum(0).max() <= 1  # visible parts are disjoint
        # boxes are the masks' tight boxes; torchvision's masks_to_boxes gives the last pixel, we the edge after it
        if k:
            torch.testing.assert_close(t["boxes"], masks_to_boxes(t["masks"]) + torch.tensor([0.0, 0, 1, 1]))
            side = (t["boxes"][:, 2:] - t["boxes"][:, :2]).max(1).values
            assert side.max() <= sizes[1] + 1
        assert torch.equal(t["area"], t["masks"].flatten(1).sum(1).float())
        assert np.array_equal(s.masks(), t["masks"].numpy())


def test_shapes_scenes_have_boxes_of_their_visible_masks():
    ds = shapes_scenes(12, seed=3, height=96, width=128, sizes=(10, 48))
    assert ds.class_names == SHAPE_CLASSES
    _check_scene_targets(ds, len(SHAPE_CLASSES), (10, 48))
    labels = torch.cat([ds[i][1]["labels"] for i in range(len(ds))])
    assert len(labels.unique()) == len(SHAPE_CLASSES) and len(labels) >= 24  # several classes, 2..8 per scene
    images, targets = collate_detection([ds[i] for i in range(4)])
    assert images.shape == (4, 3, 96, 128) and len(targets) == 4


def test_same_seed_same_bytes_other_seed_differs_and_scene_i_is_independent_of_n(tmp_path):
    a = write_scenes(tmp_path / "a", shapes_scenes(4, seed=7, height=64, width=64, sizes=(8, 32)))
    b = write_scenes(tmp_path / "b", shapes_scenes(4, seed=7, height=64, width=64, sizes=(8, 32)))
    c = write_scenes(tmp_path / "c", shapes_scenes(4, seed=8, height=64, width=64, sizes=(8, 32)))
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    for name in ("000001.png", "000004.png"):
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
        assert (tmp_path / "a/images" / name).read_bytes() != (tmp_path / "c/images" / name).read_bytes()
    long = shapes_scenes(10, seed=7, height=64, width=64, sizes=(8, 32), cache=False)
    short = shapes_scenes(4, seed=7, height=64, width=64, sizes=(8, 32))
    assert np.array_equal(long.scene(3).image, short.scene(3).image)


def test_written_scenes_round_trip_through_pycocotools(tmp_path):
    ds = shapes_scenes(5, seed=1, height=64, width=80, sizes=(8, 40))
    coco = COCO(str(write_scenes(tmp_path, ds)))
    assert len(coco.getImgIds()) == 5 and [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    assert len(coco.getAnnIds()) == sum(len(ds[i][1]["labels"]) for i in range(5))
    for i in range(5):
        _, t = ds[i]
        info = coco.loadImgs(i + 1)[0]
        assert (tmp_path / info["file_name"]).is_file() and (info["height"], info["width"]) == (64, 80)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=i + 1))
        assert [a["category_id"] for a in anns] == t["labels"].tolist()
        for a, m, box in zip(anns, t["masks"].numpy(), t["boxes"].numpy()):
            assert np.array_equal(coco.annToMask(a), m)
            assert a["area"] == mask_utils.area(a["segmentation"]) == m.sum()
            np.testing.assert_allclose(mask_utils.toBbox(a["segmentation"]), [*box[:2], *(box[2:] - box[:2])])


def test_canvas_keeps_earlier_objects_visible_and_masks_their_visible_part():
    canvas = Canvas(np.zeros((20, 20, 3), np.uint8), min_visible=0.5)
    square = np.ones((10, 10), bool)
    red, green = np.full((10, 10, 3), (255, 0, 0), np.uint8), np.full((10, 10, 3), (0, 255, 0), np.uint8)
    assert canvas.paste(0, 0, square, red, 1)
    assert not canvas.paste(2, 2, square, green, 2)  # would hide 64 of the first square's 100 pixels
    assert canvas.paste(6, 5, square, green, 2)  # hides rows 6..9, cols 5..9: 20 pixels
    scene = canvas.scene()
    assert scene.labels.tolist() == [1, 2]
    np.testing.assert_array_equal(scene.boxes, [[0, 0, 10, 10], [5, 6, 15, 16]])  # first box: its visible L shape
    assert scene.masks()[0].sum() == 80 and scene.masks()[1].sum() == 100
    assert (scene.image[7, 7] == (0, 255, 0)).all() and (scene.image[2, 2] == (255, 0, 0)).all()


def test_shape_masks_by_hand():
    assert shape_mask("square", 10, 0.0).all()  # an unrotated square fills its window
    circle = shape_mask("circle", 40, 0.3)
    assert abs(circle.sum() - np.pi * 20**2) / (np.pi * 20**2) < 0.02
    ring = shape_mask("ring", 40, 0.0)
    assert abs(ring.sum() - np.pi * (20**2 - 10**2)) / (np.pi * 300) < 0.03 and not ring[20, 20]
    tri = shape_mask("triangle", 60, 0.0)
    assert abs(tri.sum() - 3 * np.sqrt(3) / 4 * 30**2) / tri.sum() < 0.03  # equilateral, circumradius 30
    with pytest.raises(ConfigError, match="shape"):
        shape_mask("star", 10, 0.0)


def test_digit_scenes_from_given_digits_have_ink_boxes_in_the_size_range():
    digits, labels = _fake_digits()
    ds = mnist_scenes(10, seed=0, height=128, width=128, digits=digits, digit_labels=labels)
    assert ds.class_names == DIGIT_CLASSES
    _check_scene_targets(ds, 10, (12, 64))
    image, _ = ds[0]
    assert image.shape == (1, 128, 128)


@pytest.mark.data
def test_mnist_digit_scenes_on_real_digits(data_root):
    ds = mnist_scenes(20, seed=0, height=128, width=128, split="test", data_dir=data_root)
    _check_scene_targets(ds, 10, (12, 64))
    labels = torch.cat([ds[i][1]["labels"] for i in range(20)])
    assert len(labels.unique()) == 10
    sides = torch.cat([(ds[i][1]["boxes"][:, 2:] - ds[i][1]["boxes"][:, :2]).max(1).values for i in range(20)])
    assert sides.min() >= 6 and sides.max() <= 65 and sides.max() >= 40  # longer side 12..64 before occlusion


def test_bad_arguments_are_refused_at_construction():
    with pytest.raises(ConfigError, match="sizes"):
        shapes_scenes(3, height=32, width=32, sizes=(8, 64))
    with pytest.raises(ConfigError, match="objects"):
        shapes_scenes(3, objects=(3, 2))
    with pytest.raises(ConfigError, match="digits"):
        mnist_scenes(3, digits=np.zeros((4, 28)), digit_labels=np.zeros(4))


def test_coco_detection_reads_a_written_set_back_exactly(tmp_path):
    from dlkit.data.coco_detection import CocoDetection

    for make in (lambda: shapes_scenes(3, seed=4, height=48, width=64, sizes=(8, 32)),
                 lambda: mnist_scenes(3, seed=4, height=48, width=64, digits=_fake_digits()[0],
                                      digit_labels=_fake_digits()[1], sizes=(12, 40))):
        ds = make()
        folder = tmp_path / ds.class_names[0]
        back = CocoDetection(folder, write_scenes(folder, ds), masks=True)
        assert back.class_names == ds.class_names and len(back) == 3
        for i in range(3):
            (image, t), (ref_image, ref) = back[i], ds[i]
            assert torch.equal(image[:ref_image.shape[0]], ref_image)  # PNG is lossless; grey read as RGB
            for key in ("boxes", "labels", "masks", "area", "iscrowd"):
                assert torch.equal(t[key], ref[key]), key
            assert t["image_id"] == ref["image_id"]
