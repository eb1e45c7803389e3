import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.data.box_transforms import Letterbox
from dlkit.data.files import read_image
from dlkit.data.loader import collate_detection
from dlkit.data.voc import VOCDetection, raccoon_detection, voc_boxes_0based
from dlkit.errors import DataError, DataNotFoundError


def _voc_folder(root, objects_per_image):
    """A tiny VOC folder: image i is 20x30 with the given (name, xmin, ymin, xmax, ymax, difficult) objects."""
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    ids = []
    for i, objects in enumerate(objects_per_image):
        image_id = f"img{i}"
        ids.append(image_id)
        Image.fromarray(np.full((20, 30, 3), 10 * i, np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        objs = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                       f"<xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>" for n, a, b, c, e, d in objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>30</width><height>20</height>"
            f"<depth>3</depth></size>{objs}</annotation>")
    return ids


def test_voc_dataset_reads_a_split_with_0_based_boxes_and_shared_class_ids(tmp_path):
    ids = _voc_folder(tmp_path, [[("dog", 1, 1, 30, 20, 0), ("cat", 5, 6, 7, 8, 1)], [("bird", 2, 3, 4, 5, 0)]])
    (tmp_path / "ImageSets/Main/train.txt").write_text(ids[0] + "\n")
    (tmp_path / "ImageSets/Main/val.txt").write_text(ids[1] + "\n\n")
    train, val = VOCDetection(tmp_path, "train"), VOCDetection(tmp_path, "val")
    assert train.classes == val.classes == ("bird", "cat", "dog")  # from every split, sorted
    image, target = train[0]
    assert image.shape == (3, 20, 30) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    # VOC's pixel 1..30 inclusive is the continuous [0, 30): the whole image
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0, 30, 20], [4, 5, 7, 8]]))
    assert target["labels"].tolist() == [3, 2] and target["difficult"].tolist() == [False, True]
    assert target["image_id"] == "img0" and target["orig_size"] == (20, 30)
    assert val.target(0)["labels"].tolist() == [1]
    with pytest.raises(DataNotFoundError, match="found splits"):
        VOCDetection(tmp_path, "test")
    (tmp_path / "ImageSets/Main/test.txt").write_text("img9\n")  # a test split without annotations, as VOC's
    assert VOCDetection(tmp_path, "train").classes == ("bird", "cat", "dog")


@pytest.mark.data
def test_raccoon_has_its_published_split_and_every_box_inside_its_image(data_root):
    train, val = raccoon_detection("train", data_root), raccoon_detection("val", data_root)
    assert (len(train), len(val)) == (160, 40) and train.classes == val.classes == ("raccoon",)
    ids = [r["image_id"] for r in train.records + val.records]
    assert len(set(ids)) == 200
    n_boxes = 0
    for ds in (train, val):
        for i, rec in enumerate(ds.records):
            t = ds.target(i)
            # the XML read independently: 1-based pixel corners
            root = ET.parse(data_root / "raccoon" / "Annotations" / f"{rec['image_id']}.xml").getroot()
            want = [[float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
                    for o in root.iter("object")]
            torch.testing.assert_close(t["boxes"], torch.tensor(want) - torch.tensor([1.0, 1, 0, 0]))
            assert (t["labels"] == 1).all()
            with Image.open(rec["image_path"]) as im:  # the JPEG's own size, not only the XML's
                w, h = im.size
            b = t["boxes"]
            assert (b[:, :2] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
            assert (b[:, 2:] > b[:, :2]).all()
            n_boxes += len(b)
    assert n_boxes == 217


@pytest.mark.data
def test_raccoon_items_batch_through_a_letterbox(data_root):
    ds = raccoon_detection("val", data_root, transform=lambda im, t: Letterbox(128)(im, t))
    images, targets = collate_detection([ds[i] for i in range(4)])
    assert images.shape == (4, 3, 128, 128)
    raw = read_image(ds.records[0]["image_path"]).float() / 255
    h, w = raw.shape[1:]
    r = min(128 / h, 128 / w)
    box = voc_boxes_0based(ds.records[0]["boxes"])[0]
    sx, sy, left, top = targets[0]["letterbox"].tolist()
    assert abs(sx - r) < 0.01 and abs(sy - r) < 0.01
    np.testing.assert_allclose(targets[0]["boxes"][0].numpy(), box * [sx, sy, sx, sy] + [left, top, left, top],
                               rtol=1e-6, atol=1e-4)


def test_missing_raccoon_and_damaged_split_file_are_reported(tmp_path):
    with pytest.raises(DataNotFoundError, match="raccoon"):
        raccoon_detection("train", tmp_path)
    ids = _voc_folder(tmp_path / "raccoon", [[("raccoon", 1, 1, 5, 5, 0)]])
    (tmp_path / "raccoon/ImageSets/Main/train.txt").write_text(ids[0])
    (tmp_path / "raccoon/Annotations/img0.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match="not valid XML.*datitran"):
        raccoon_detection("train", tmp_path)
