"""RetinaNet recipes (Notes: 002 §4.3.4): generated MNIST digit scenes, and the real Raccoon photos on the
ImageNet-trained EfficientNet-Lite0; data and task from `recipes.detection`."""

from __future__ import annotations

from pathlib import Path

from ..engine.distributed import DistInfo
from ..engine.seeding import seed_everything
from ..report.figures import plot_bars
from .detection import DET_DEFAULTS, DET_SMOKE, build_detection, pretrained_detector
from .options import Config
from .registry import Recipe, register_recipe
from .runner import fit_baseline


def _from_scratch(cfg):
    """The comparison of the pretrained run: the same network, data and schedule from random weights (headless
    `fit()`, one process), its metrics as scratch/..., and a bar chart of both mAP@0.5. Notes: 003 §3.3.2."""
    def compare(run_dir: Path, metrics: dict) -> dict[str, float]:
        scratch_cfg = Config({**cfg, "pretrained": False}).freeze()
        seed_everything(cfg.seed)  # the pretrained run's seed: the same heads, order of batches and flips
        setup = build_detection(scratch_cfg, DistInfo(), make_model=pretrained_detector)
        scratch = fit_baseline(setup, cfg, "scratch")
        plot_bars({"ImageNet-pretrained Lite0": metrics.get("test/map_50", float("nan")),
                   "from scratch": scratch.get("scratch/map_50", float("nan"))},
                  run_dir / "figures" / "pretrained_vs_scratch.png",
                  f"mAP@0.5 on the {len(setup.test.dataset)} test photos", f"{cfg.model}, {cfg.epochs} epochs each")
        return scratch
    return compare


def build_raccoon(cfg, dist):
    """`build_detection` with the Lite0 RetinaNet built by `pretrained_detector` (option `pretrained`); with
    `pretrained` and `compare_scratch`, the same network is then trained from scratch for the report."""
    setup = build_detection(cfg, dist, make_model=pretrained_detector)
    if cfg.pretrained and cfg.compare_scratch:
        setup.comparison = _from_scratch(cfg)
    return setup


register_recipe(Recipe(
    name="retinanet-mnistdet", task="detection", notes="002 §4.3.4",
    description="A small RetinaNet (ResNet basic blocks 16-128, 64-wide FPN on C3-C5, class and box subnets of 4 "
                "convolutions, 9 anchors per location, focal loss) trained from scratch on 128x128 scenes of MNIST "
                "digits; COCO mAP@0.5 and mAP on test scenes built from MNIST's test digits",
    # measured (16 epochs, one thread beside another training, 514 s of training): test mAP@0.5 0.544 (val 0.518,
    # still rising in the annealing phase); lr 1e-3 for 8 epochs gave 0.171
    build=build_detection, metric="test/map_50", threshold=0.5, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "mnist", "model": "retinanet_tiny", "image_size": 128, "n_train": 2000,
              "epochs": 16, "lr": 4e-3},
    smoke={**DET_SMOKE}, datasets=("mnist",),
))

register_recipe(Recipe(
    name="retinanet-raccoon", task="detection", notes="002 §4.3.4, 003 §3.3.2",
    description="RetinaNet on the ImageNet-trained EfficientNet-Lite0 (C3-C5, FPN with P6/P7, frozen batch norms) "
                "fine-tuned on the 160 Raccoon training photos letterboxed to 256x256; mAP@0.5 on the 40 validation "
                "photos, then the same network trained from scratch for the comparison in the report (scratch/..., "
                "pretrained_vs_scratch.png; compare_scratch=false skips it, pretrained=false trains only that)",
    # measured (dlkit verify, 2 threads, quiet machine, 459 s for both trainings): mAP@0.5 0.941, mAP 0.459 on the
    # 40 validation photos; the same network from scratch 0.471 (mAP 0.133). On one thread: 0.960 against 0.403
    build=build_raccoon, metric="test/map_50", threshold=0.9, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "raccoon", "model": "retinanet_lite0", "pretrained": True, "image_size": 256,
              "flip": True, "epochs": 10, "batch_size": 8, "lr": 1e-3, "compare_scratch": True},
    smoke={**DET_SMOKE}, datasets=("raccoon",),
))
