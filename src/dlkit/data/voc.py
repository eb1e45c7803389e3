"""Pascal VOC detection annotations: one XML file per image (Notes: 000 §3.12, object detection).

Boxes are read as written, `(xmin, ymin, xmax, ymax)` in VOC's 1-based pixel coordinates; objects
marked `difficult` are kept and flagged so that evaluation can ignore them, as VOC's protocol does.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFoundError
from .files import DEFAULT_FIX, damaged, read_bytes

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")


def _num(node: ET.Element | None, tag: str, path: Path, default: float | None = None) -> float:
    child = None if node is None else node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise ConfigError(f"{path}: VOC annotation lacks <{tag}>")
    try:
        return float(child.text)
    except ValueError:
        raise ConfigError(f"{path}: <{tag}> must be a number, got {child.text!r}") from None


def read_voc_xml(path: str | os.PathLike, fix: str = DEFAULT_FIX) -> dict:
    """One VOC annotation: dict(filename, size=(height, width, depth), boxes float32 [K, 4] xyxy,
    labels list[str], difficult bool [K], truncated bool [K]). A file that is not XML (truncated, damaged) raises
    DataError naming it, with `fix` saying how to repair it; its images are read with `files.read_image`."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"VOC annotation not found: {path}")
    try:
        root = ET.fromstring(read_bytes(path, fix))
    except ET.ParseError as e:
        raise damaged(path, f"not valid XML, the file is truncated or damaged ({e})", fix) from None
    if root.tag != "annotation":
        raise ConfigError(f"{path}: expected a VOC <annotation> root element, got <{root.tag}>")
    size = root.find("size")
    hwd = tuple(int(_num(size, t, path, 0)) for t in ("height", "width", "depth"))
    boxes, labels, difficult, truncated = [], [], [], []
    for obj in root.iter("object"):
        name = obj.findtext("name")
        if not name or not name.strip():
            raise ConfigError(f"{path}: an <object> has no <name>")
        bb = obj.find("bndbox")
        box = [_num(bb, t, path) for t in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] < box[0] or box[3] < box[1]:
            raise ConfigError(f"{path}: box of '{name}' has xmax < xmin or ymax < ymin: {box}")
        boxes.append(box)
        labels.append(name.strip())
        difficult.append(bool(int(_num(obj, "difficult", path, 0))))
        truncated.append(bool(int(_num(obj, "truncated", path, 0))))
    return {
        "filename": (root.findtext("filename") or "").strip(),
        "size": hwd,
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": labels,
        "difficult": np.asarray(difficult, dtype=bool),
        "truncated": np.asarray(truncated, dtype=bool),
    }
