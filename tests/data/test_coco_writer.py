import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from pycocotools.coco import COCO

from dlkit.data.coco import read_coco, read_coco_categories
from dlkit.data.coco_writer import coco_dict, write_coco
from dlkit.errors import ConfigError

# pycocotools' annToMask passes copy=False to numpy 2 (its own warning, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _records():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 30, 40), np.uint8)
    masks[0, 2:10, 3:20] = 1
    masks[1, 15:29, 0:40] = 1  # touches the left and right border
    masks[2] = rng.random((30, 40)) < 0.3  # many runs
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return [
        {"file_name": "a.png", "height": 30, "width": 40, "boxes": torch.tensor(boxes, dtype=torch.float32),
         "labels": torch.tensor([1, 2, 2]), "masks": torch.from_numpy(masks)},
        {"file_name": "b.png", "height": 20, "width": 25, "boxes": np.array([[1.5, 2.0, 11.5, 7.0]]),
         "labels": np.array([3]), "iscrowd": np.array([1]), "polygons": [[[1.5, 2, 11.5, 2, 11.5, 7]]]},
        {"file_name": "empty.png", "height": 8, "width": 8, "boxes": np.zeros((0, 4)), "labels": np.zeros(0)},
    ], masks


def test_written_file_loads_in_pycocotools_with_its_masks_areas_and_boxes(tmp_path):
    records, masks = _records()
    path = write_coco(tmp_path / "ann.json", records, ["circle", "square", "triangle"])
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2, 3] and len(coco.getAnnIds()) == 4
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["circle", "square", "triangle"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=1))
    for ann, m in zip(anns, masks):
        ref = mask_utils.encode(np.asfortranarray(m))
        assert ann["segmentation"]["counts"] == ref["counts"].decode()  # our RLE string is pycocotools'
        assert np.array_equal(coco.annToMask(ann), m)
        assert ann["area"] == float(mask_utils.area(ref)) == m.sum()
        np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(ref))  # box of the mask, xywh
    (crowd,) = coco.loadAnns(coco.getAnnIds(imgIds=2))
    assert crowd["iscrowd"] == 1 and crowd["bbox"] == [1.5, 2.0, 10.0, 5.0] and crowd["area"] == 50.0
    assert crowd["segmentation"] == [[1.5, 2, 11.5, 2, 11.5, 7]]
    assert coco.getAnnIds(imgIds=3) == []


def test_read_coco_gives_the_written_records_back(tmp_path):
    records, masks = _records()
    path = write_coco(tmp_path / "ann.json", records, {1: "circle", 2: "square", 3: "triangle"})
    back = read_coco(path)
    assert [r["file_name"] for r in back] == ["a.png", "b.png", "empty.png"]
    for rec, orig in zip(back, records):
        np.testing.assert_allclose(rec["boxes"], np.asarray(orig["boxes"], np.float32).reshape(-1, 4))
        assert rec["category_ids"].tolist() == np.asarray(orig["labels"]).astype(int).tolist()
        assert (rec["height"], rec["width"]) == (orig["height"], orig["width"])
    np.testing.assert_allclose(back[0]["area"], masks.reshape(3, -1).sum(1))
    assert back[1]["iscrowd"].tolist() == [True]
    assert read_coco_categories(path) == {1: "circle", 2: "square", 3: "triangle"}


def test_same_records_same_bytes_and_bad_records_are_refused(tmp_path):
    records, _ = _records()
    a = write_coco(tmp_path / "a.json", records, ["c", "s", "t"]).read_bytes()
    assert a == write_coco(tmp_path / "b.json", records, ["c", "s", "t"]).read_bytes()
    assert json.loads(a) == coco_dict(records, ["c", "s", "t"])
    with pytest.raises(ConfigError, match="not category ids"):
        coco_dict(records, ["c", "s"])
    bad = dict(records[0], labels=torch.tensor([1, 2]))
    with pytest.raises(ConfigError, match="labels"):
        coco_dict([bad], ["c", "s", "t"])
    with pytest.raises(ConfigError, match="category"):
        coco_dict(records, [])
