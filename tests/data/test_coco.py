import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from dlkit.data.coco import read_coco, read_coco_categories
from dlkit.errors import ConfigError, DataNotFoundError

DATA = {
    "images": [{"id": 7, "file_name": "b.png", "height": 40, "width": 50},
               {"id": 3, "file_name": "a.png", "height": 30, "width": 20},
               {"id": 9, "file_name": "empty.png", "height": 10, "width": 10}],
    "annotations": [
        {"id": 1, "image_id": 7, "category_id": 2, "bbox": [10, 5, 20.5, 8], "area": 100.0, "iscrowd": 0,
         "segmentation": [[10, 5, 30, 5, 30, 13]]},
        {"id": 2, "image_id": 3, "category_id": 1, "bbox": [0, 0, 4, 6], "area": 24.0, "iscrowd": 1,
         "segmentation": {"size": [30, 20], "counts": [0, 600]}},
        {"id": 5, "image_id": 7, "category_id": 1, "bbox": [1.5, 2, 3, 4], "area": 12.0, "iscrowd": 0,
         "segmentation": [[1.5, 2, 4.5, 2, 4.5, 6]]},
    ],
    "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
}


@pytest.fixture
def coco_file(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(DATA))
    return path


def test_records_match_pycocotools_load_anns(coco_file):
    records = read_coco(coco_file)
    ref = COCO(str(coco_file))
    assert [r["image_id"] for r in records] == sorted(ref.getImgIds())
    for rec in records:
        info = ref.loadImgs(rec["image_id"])[0]
        assert rec["file_name"] == info["file_name"] and (rec["height"], rec["width"]) == (info["height"],
                                                                                          info["width"])
        anns = ref.loadAnns(ref.getAnnIds(imgIds=rec["image_id"]))
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        want = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        assert rec["boxes"].dtype == np.float32 and rec["boxes"].shape == (len(anns), 4)
        np.testing.assert_allclose(rec["boxes"], want)
        assert rec["category_ids"].tolist() == [a["category_id"] for a in anns]
        assert rec["iscrowd"].tolist() == [bool(a["iscrowd"]) for a in anns]
        assert rec["ann_ids"].tolist() == [a["id"] for a in anns]
        assert rec["segmentations"] == [a["segmentation"] for a in anns]
    assert read_coco_categories(coco_file) == {c["id"]: c["name"] for c in ref.loadCats(ref.getCatIds())}


def test_box_corners_are_hand_computed(coco_file):
    rec = read_coco(coco_file)[1]  # image 7
    np.testing.assert_array_equal(rec["boxes"], np.array([[10, 5, 30.5, 13], [1.5, 2, 4.5, 6]], np.float32))


def test_bad_files_are_reported(tmp_path):
    (tmp_path / "x.json").write_text('{"images": []}')
    with pytest.raises(ConfigError, match="annotations"):
        read_coco(tmp_path / "x.json")
    bad = {"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 2, "bbox": [0, 0, 1, 1]}]}
    (tmp_path / "y.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="image_id"):
        read_coco(tmp_path / "y.json")
    with pytest.raises(DataNotFoundError):
        read_coco(tmp_path / "z.json")
