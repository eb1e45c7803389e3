"""Pascal VOC detection annotations: one XML file per image (Notes: 000 §3.12, object detection).

Boxes are read as written, `(xmin, ymin, xmax, ymax)` in VOC's 1-based pixel coordinates; objects
marked `difficult` are kept and flagged so that evaluation can ignore them, as VOC's protocol does.

A VOC folder holds `JPEGImages/ID.jpg`, `Annotations/ID.xml` and `ImageSets/Main/SPLIT.txt` (one image id a
line). `read_voc_split` reads a split's annotations; `VOCDetection` serves (image, target) pairs in the detection
contract (`dlkit.tasks.detection`). Coordinates: VOC numbers pixels from 1 and its box covers pixels xmin..xmax
inclusive, so in the contract's continuous 0-based frame (pixel i covers [i, i + 1), as in torchvision and
COCO) the box is (xmin - 1, ymin - 1, xmax, ymax); its width xmax - xmin + 1 is the devkit's. The Raccoon set
(`dataset_dir("raccoon")`, 200 photos, one class) is read through the same code.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataNotFoundError
from .files import DEFAULT_FIX, damaged, read_bytes, read_image, read_text, repair_hint
from .root import ENV_VAR, dataset_dir

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


RACCOON_URL = "https://github.com/datitran/raccoon_dataset"


def _split_ids(root: Path, split: str, fix: str) -> list[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        found = voc_split_names(root)
        raise DataNotFoundError(
            f"VOC split '{split}' not found: expected {path} (one image id a line)"
            f"{f'; found splits {found}' if found else ''}. "
            f"Put a VOC folder (JPEGImages/, Annotations/, ImageSets/Main/) under the data root (--data-dir DIR "
            f"or {ENV_VAR}=DIR).")
    ids = [line.split()[0] for line in read_text(path, fix).splitlines() if line.strip()]
    if not ids:
        raise damaged(path, "empty split file, expected one image id a line", fix)
    return ids


def read_voc_split(root: str | os.PathLike, split: str = "train", fix: str = DEFAULT_FIX) -> list[dict]:
    """The annotations of the images listed in `ROOT/ImageSets/Main/SPLIT.txt`, in file order: `read_voc_xml`
    records plus `image_id` (the line's id) and `image_path` (`ROOT/JPEGImages/ID.jpg`, or the XML's filename)."""
    root = Path(root)
    records = []
    for image_id in _split_ids(root, split, fix):
        rec = read_voc_xml(root / "Annotations" / f"{image_id}.xml", fix)
        name = rec["filename"] or f"{image_id}.jpg"
        path = root / "JPEGImages" / name
        if not path.is_file() and (root / "JPEGImages" / f"{image_id}.jpg").is_file():
            path = root / "JPEGImages" / f"{image_id}.jpg"
        records.append({**rec, "image_id": image_id, "image_path": path})
    return records


def voc_class_names(records: list[dict]) -> tuple[str, ...]:
    """The sorted object names found in `records` (for the 20 VOC classes this is VOC_CLASSES)."""
    return tuple(sorted({name for r in records for name in r["labels"]}))


def voc_split_names(root: str | os.PathLike) -> list[str]:
    """The splits of a VOC folder: the `ImageSets/Main/*.txt` files without a class prefix (train, val, ...)."""
    return sorted(p.stem for p in (Path(root) / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)


def voc_boxes_0based(boxes: np.ndarray) -> np.ndarray:
    """VOC's 1-based inclusive pixel boxes (xmin, ymin, xmax, ymax) as continuous 0-based corners
    (xmin - 1, ymin - 1, xmax, ymax): the convention of the detection contract, torchvision and COCO."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, :2] -= 1.0
    return out


class VOCDetection(Dataset):
    """A split of a VOC-layout folder as (image float [3, H, W] in [0, 1], target) pairs (Notes: 002 §4).

    target: boxes float32 [M, 4] xyxy in 0-based pixels (`voc_boxes_0based`), labels int64 [M] in 1..C (the
    index in `classes` + 1; 0 is the background), difficult bool [M], image_id (the split's id string) and
    orig_size (H, W). `classes` defaults to the names found in every split of the folder, sorted, so that train
    and val share ids. `transform(image, target)` (e.g. `box_transforms.Compose`) is applied last.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", classes: tuple[str, ...] | None = None,
                 transform=None, fix: str = DEFAULT_FIX):
        self.root, self.split, self.fix, self.transform = Path(root), split, fix, transform
        self.records = read_voc_split(self.root, split, fix)
        if classes is None:  # the names in every split's annotations, each image read once; another split's
            seen = {r["image_id"] for r in self.records}  # images without annotations (VOC's test set) are skipped
            others = {i for s in voc_split_names(self.root) if s != split for i in _split_ids(self.root, s, fix)}
            xmls = [self.root / "Annotations" / f"{i}.xml" for i in sorted(others - seen)]
            classes = voc_class_names(self.records + [read_voc_xml(x, fix) for x in xmls if x.is_file()])
        self.classes = tuple(classes)
        index = {c: i + 1 for i, c in enumerate(self.classes)}
        for r in self.records:
            unknown = sorted(set(r["labels"]) - set(index))
            if unknown:
                raise ConfigError(f"{self.root}: image {r['image_id']} has objects {unknown} not in the class list "
                                  f"{list(self.classes)}; pass classes= with every name")
        self._labels = [np.asarray([index[n] for n in r["labels"]], dtype=np.int64) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def target(self, i: int) -> dict:
        """The target of item i without reading its image."""
        r = self.records[i]
        return {"boxes": torch.from_numpy(voc_boxes_0based(r["boxes"])),
                "labels": torch.from_numpy(self._labels[i].copy()),
                "difficult": torch.from_numpy(r["difficult"].copy()),
                "image_id": r["image_id"], "orig_size": (r["size"][0], r["size"][1])}

    def __getitem__(self, i: int):
        r = self.records[i]
        image = read_image(r["image_path"], "RGB", self.fix).float().div_(255.0)
        h, w = image.shape[1:]
        if r["size"][:2] != (0, 0) and (h, w) != tuple(r["size"][:2]):
            raise ConfigError(f"{r['image_path']}: image is {h}x{w} but its annotation says "
                              f"{r['size'][0]}x{r['size'][1]} (height x width); fix the <size> of its XML")
        target = self.target(i)
        target["orig_size"] = (h, w)
        return self.transform(image, target) if self.transform is not None else (image, target)


def raccoon_detection(split: str = "train", data_dir: str | os.PathLike | None = None, transform=None) -> VOCDetection:
    """The Raccoon photos (Dat Tran, MIT licence) from `DATA_ROOT/raccoon/` in VOC layout: 160 train / 40 val images,
    one class 'raccoon' (label 1), 217 boxes in all."""
    root = dataset_dir("raccoon", data_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"Raccoon data set not found: expected the VOC folder {root} (JPEGImages/, "
                                f"Annotations/, ImageSets/Main/train.txt, val.txt). Download {RACCOON_URL} and "
                                f"arrange it so, or point --data-dir / {ENV_VAR} at a data root that holds 'raccoon/'.")
    return VOCDetection(root, split, transform=transform, fix=repair_hint(RACCOON_URL, root))
