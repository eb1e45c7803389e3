import numpy as np
import pytest

from dlkit.data.voc import VOC_CLASSES, read_voc_xml
from dlkit.errors import ConfigError, DataError, DataNotFoundError

XML = """<annotation>
  <folder>VOC2007</folder><filename>000005.jpg</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>chair</name><pose>Rear</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object>
  <object><name>chair</name><truncated>1</truncated><difficult>1</difficult>
    <bndbox><xmin>5</xmin><ymin>244</ymin><xmax>67.5</xmax><ymax>374</ymax></bndbox></object>
  <object><name>person</name>
    <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>
</annotation>"""


def test_voc_annotation_fields_match_the_file(tmp_path):
    (tmp_path / "a.xml").write_text(XML)
    ann = read_voc_xml(tmp_path / "a.xml")
    assert ann["filename"] == "000005.jpg" and ann["size"] == (375, 500, 3)
    assert ann["boxes"].dtype == np.float32
    np.testing.assert_array_equal(ann["boxes"], [[263, 211, 324, 339], [5, 244, 67.5, 374], [1, 2, 3, 4]])
    assert ann["labels"] == ["chair", "chair", "person"]
    assert ann["difficult"].tolist() == [False, True, False]  # absent <difficult> means 0
    assert ann["truncated"].tolist() == [False, True, False]
    assert all(lab in VOC_CLASSES for lab in ann["labels"]) and len(VOC_CLASSES) == 20


def test_image_without_objects_has_empty_boxes(tmp_path):
    (tmp_path / "e.xml").write_text("<annotation><filename>e.jpg</filename></annotation>")
    ann = read_voc_xml(tmp_path / "e.xml")
    assert ann["boxes"].shape == (0, 4) and ann["labels"] == [] and ann["difficult"].shape == (0,)


def test_malformed_annotations_are_reported(tmp_path):
    (tmp_path / "b.xml").write_text("<annotation><object><name>cat</name><bndbox><xmin>1</xmin></bndbox>"
                                    "</object></annotation>")
    with pytest.raises(ConfigError, match="ymin"):
        read_voc_xml(tmp_path / "b.xml")
    (tmp_path / "c.xml").write_text("<annotation>")
    with pytest.raises(DataError, match="not valid XML"):
        read_voc_xml(tmp_path / "c.xml")
    with pytest.raises(DataNotFoundError):
        read_voc_xml(tmp_path / "none.xml")
