"""The Viola-Jones face detector trained on the ORL faces against face-free photos (Notes: 002 §4.2).

Faces: the ORL data set as stored under the data root (40 people x 10 grey images, here 23 x 28 pixels, the face
filling the frame). The face square is rows 6-23, columns 2-19 (eyebrows to chin, 18 x 18; the same crop for every
image), resized to 24 x 24; training adds one-pixel shifts and mirror images. Split (`split`): "photos" (default)
trains on photos 1-6 of every person, validates (stage thresholds and false-positive targets) on 7-8 and tests on
9-10; "people" trains on people 1-20, validates on 21-30 and tests on 31-40, unseen people, whose faces a cascade
tuned on 10 validation people generalises to less well (test detection about 0.8 at stage 1).

Non-faces: windows of face-free photos bundled with scikit-image and scikit-learn (no download): 12 images train
(random windows, then the cascade's false positives, mined by scanning them), 4 others (chelsea, rocket, china,
flower) are held out for the test. Every image is grey, its long side
reduced to at most `max_side` pixels.

Reported per stage: the test detection rate (faces accepted by stages 1..i) and false-positive rate (held-out
windows accepted by stages 1..i), with the validation rates the training saw; a figure draws the first selected
features on a face. The recipe's metric is the final cascade's test detection rate; its false-positive rate is
in the summary too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.faces import load_orl_faces
from ..errors import ConfigError
from ..models.detection.viola_jones import WINDOW, HaarFeatureSet, ViolaJones, haar_features, train_cascade
from ..ops import HAAR_FEATURES, roi_align
from ..report.figures import _save, plot_lines
from .registry import Recipe, Study, register_recipe

FACE_CROP = (6, 2, 18)  # top row, left column, side of the face square in the 23 x 28 ORL images
TRAIN_IMAGES = ("brick", "coffee", "coins", "grass", "gravel", "hubble_deep_field", "moon", "page", "text",
                "retina", "cell", "microaneurysms")
TEST_IMAGES = ("chelsea", "rocket", "china", "flower")


def face_patches(images: torch.Tensor, augment: bool = False) -> torch.Tensor:
    """24 x 24 face patches [N, 24, 24] (float, 0-255) from ORL images [N, 1, 28, 23]: the FACE_CROP square,
    bilinearly resized. With `augment` (training faces), the crops shifted by one pixel up, down, left and right
    and the left-right mirror images of all five follow (10 N patches)."""
    y, x, side = FACE_CROP
    shifts = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)) if augment else ((0, 0),)
    crops = torch.cat([images[:, :, y + dy:y + dy + side, x + dx:x + dx + side] for dy, dx in shifts]).float()
    out = F.interpolate(crops, size=(WINDOW, WINDOW), mode="bilinear", align_corners=False)[:, 0]
    return torch.cat([out, out.flip(-1)]) if augment else out


def face_split(labels: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean masks (train, validation, test) over the ORL images: by "photos" (photos 1-6 of every person train,
    7-8 validate, 9-10 test) or by "people" (people 1-20, 21-30, 31-40: the test faces are of unseen people)."""
    if split == "photos":
        photo = torch.arange(len(labels)) - torch.searchsorted(labels, labels)  # 0..9 within each person
        return photo < 6, (photo >= 6) & (photo < 8), photo >= 8
    if split == "people":
        return labels < 20, (labels >= 20) & (labels < 30), labels >= 30
    raise ConfigError(f"split must be 'photos' or 'people'; got {split!r}")


def face_free_images(names: tuple[str, ...], max_side: int) -> list[torch.Tensor]:
    """Grey float images [H, W] (0-255) of the named scikit-image / scikit-learn sample photos, each reduced so
    that its long side is at most max_side (area averaging)."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    out = []
    for name in names:
        img = load_sample_image(f"{name}.jpg") if name in ("china", "flower") else getattr(skimage.data, name)()
        a = torch.tensor(np.asarray(img), dtype=torch.float32)
        if a.dim() == 3:
            a = a[..., :3] @ torch.tensor([0.299, 0.587, 0.114])
        f = max(a.shape) / max_side
        if f > 1:
            size = (round(a.shape[0] / f), round(a.shape[1] / f))
            a = F.interpolate(a[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
        out.append(a)
    return out


def crop_windows(images: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
    """The xyxy windows `boxes[i]` [K_i, 4] of images[i], each resized to 24 x 24 (RoI align, the
    average of bilinear samples over each output pixel) -> [sum K_i, 24, 24]."""
    out = [roi_align(img[None, None].float(), [b.float()], output_size=WINDOW, aligned=True)[:, 0]
           for img, b in zip(images, boxes) if len(b)]
    return torch.cat(out) if out else torch.zeros(0, WINDOW, WINDOW)


def random_windows(images: list[torch.Tensor], n: int, g: torch.Generator) -> list[torch.Tensor]:
    """n random square windows spread over the images: sides log-uniform from 24 to half the short side."""
    per = np.bincount(torch.randint(len(images), (n,), generator=g).numpy(), minlength=len(images))
    boxes = []
    for img, k in zip(images, per):
        h, w = img.shape
        hi = max(WINDOW + 1, min(h, w) // 2)
        side = torch.exp(torch.empty(k).uniform_(np.log(WINDOW), np.log(hi), generator=g)).round()
        x = (torch.rand(k, generator=g) * (w - side + 1)).floor()
        y = (torch.rand(k, generator=g) * (h - side + 1)).floor()
        boxes.append(torch.stack([x, y, x + side, y + side], 1))
    return boxes


def mine_negatives(images: list[torch.Tensor], scale_factor: float, step: float):
    """The negatives source of `train_cascade`: random windows for the empty cascade, then windows of the images
    that the cascade accepts (scanned at every scale), keeping those whose 24 x 24 patch it accepts too."""
    def negatives(cascade: ViolaJones, n: int, g: torch.Generator) -> torch.Tensor:
        if not cascade.stages:
            return crop_windows(images, random_windows(images, n, g))
        boxes = [cascade.scan(img, scale_factor, step)[0] for img in images]
        which = torch.cat([torch.full((len(b),), i) for i, b in enumerate(boxes)])
        pick = torch.randperm(len(which), generator=g)[:2 * n]  # crop a random sample, not every window
        patches = crop_windows(images, [b[pick[which[pick] == i] - int((which < i).sum())]
                                        for i, b in enumerate(boxes)])
        patches = patches[cascade.passed_stages(patches) == len(cascade.stages)]
        return patches[torch.randperm(len(patches), generator=g)[:n]]
    return negatives


def plot_features_on_face(face: torch.Tensor, features: HaarFeatureSet, titles: list[str], path: Path) -> Path:
    """The selected Haar-like features drawn on a 24 x 24 face: white cells red, black cells blue."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(features)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6), squeeze=False)
    for j, ax in enumerate(axes[0]):
        ax.imshow(face.numpy(), cmap="gray")
        for (y, x, h, w), s in zip(features.cells[j].tolist(), features.signs[j].tolist()):
            if s != 0:
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, color="tab:red" if s > 0 else "tab:blue",
                                       alpha=0.45))
        ax.set_title(titles[j], fontsize=7)
        ax.axis("off")
    return _save(fig, path)


def _viola_jones_faces(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        g = torch.Generator().manual_seed(cfg.seed)
        images, labels = load_orl_faces(cfg.data_dir)
        train, val, test = face_split(labels, cfg.split)
        pos_train = face_patches(images[train], augment=True)
        pos_val, pos_test = face_patches(images[val]), face_patches(images[test])
        train_imgs = face_free_images(TRAIN_IMAGES, cfg.max_side)
        test_imgs = face_free_images(TEST_IMAGES, cfg.max_side)
        features = haar_features()
        log_lines: list[str] = []
        cascade, history = train_cascade(
            features, pos_train, pos_val, mine_negatives(train_imgs, cfg.scale_factor, cfg.step), cfg.negatives,
            cfg.val_negatives, d=cfg.stage_detection, f=cfg.stage_false_positive, target_fpr=cfg.target_fpr,
            max_stages=cfg.max_stages, max_weak=tuple(cfg.max_weak), features_per_stage=cfg.features_per_stage,
            min_std=cfg.min_std, seed=cfg.seed, log=log_lines.append)
        test_neg = crop_windows(test_imgs, random_windows(test_imgs, cfg.test_negatives, g))
        passed_pos, passed_neg = cascade.passed_stages(pos_test), cascade.passed_stages(test_neg)
        metrics: dict[str, float] = {}
        for row in history:
            i = row["stage"]
            row["test_detection_rate"] = float((passed_pos >= i).double().mean())
            row["test_false_positive_rate"] = float((passed_neg >= i).double().mean())
            for key in ("weak_learners", "test_detection_rate", "test_false_positive_rate"):
                metrics[f"stage{i}/{key}"] = float(row[key])
        n = len(history)
        metrics["test/detection_rate"] = float((passed_pos >= n).double().mean()) if n else 0.0
        metrics["test/false_positive_rate"] = float((passed_neg >= n).double().mean()) if n else 1.0
        metrics["stages"] = n
        metrics["weak_learners"] = sum(r["weak_learners"] for r in history)
        detections = [len(cascade.detect(img, cfg.scale_factor, cfg.step)[0]) for img in test_imgs]
        metrics["test/false_detections_per_image"] = float(np.mean(detections))
        metrics["steps"] = metrics["weak_learners"]
        (run_dir / "cascade_stages.json").write_text(json.dumps({"stages": history, "log": log_lines}, indent=2))
        stages = np.arange(1, n + 1)
        plot_lines({"test detection rate": (stages, [r["test_detection_rate"] for r in history]),
                    "test false-positive rate": (stages, [r["test_false_positive_rate"] for r in history]),
                    "validation false-positive rate": (stages, [r["val_overall_false_positive_rate"]
                                                                for r in history])},
                   run_dir / "figures" / "rates_per_stage.png", "stages 1..i", "rate", logy=True,
                   title="Viola-Jones: rates after each stage (held-out test)")
        first = cascade.stages[0].stumps[:4] if history else []
        if first:
            idx = torch.tensor([s.feature for s in first])
            titles = [f"{list(HAAR_FEATURES)[int(features.kinds[s.feature])]}\nalpha={s.alpha:.2f} "
                      f"s={s.polarity:+d}" for s in first]
            plot_features_on_face(pos_test.mean(0), features.subset(idx), titles,
                                  run_dir / "figures" / "first_features_on_face.png")
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="viola-jones-faces", task="detection", notes="002 §4.2, 002 §4.2.3",
    description="Viola-Jones cascade (Haar features, AdaBoost stumps, attentional cascade) on ORL faces against "
                "face-free sample photos; detection and false-positive rates per stage",
    build=_viola_jones_faces, metric="test/detection_rate", threshold=0.88, budget_s=600,
    study=True, datasets=("att_faces",),
    defaults=dict(stage_detection=0.995, stage_false_positive=0.4, target_fpr=1e-4, max_stages=8,
                  max_weak=[4, 8, 15, 25, 35, 45, 50, 50], features_per_stage=6000, negatives=1200,
                  val_negatives=500, test_negatives=50000, max_side=288, min_std=10.0, split="photos",
                  scale_factor=1.25, step=1.5),
    smoke=dict(max_stages=2, max_weak=[2, 3], features_per_stage=500, negatives=200, val_negatives=100,
               test_negatives=2000, max_side=96),
    types={"threads": "int | None"},
))
