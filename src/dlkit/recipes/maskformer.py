"""MaskFormer and Mask2Former recipes (Notes: 002 §5.3.2, §5.3.3).

maskformer-camvid: semantic segmentation of CamVid by mask classification (the data and options of the CamVid
recipes, `recipes.segmentation`; task `MaskClassificationSegmentationTask`), its test mIoU compared in the report
with the U-Net's: the `unet-camvid` record of `dlkit verify` (compare_unet='record'), or the U-Net trained after the
run on the same data and epochs (compare_unet='train').

maskformer-shapes, mask2former-shapes: panoptic segmentation of the generated shape scenes of panoptic-fpn-shapes
(things: the five shapes; stuff: the background, one class) by mask classification (`models.segmentation.maskformer`,
`.mask2former`), on the data of `recipes.detection`, scored by panoptic quality.

The scene targets {boxes, labels, masks, semantic} become the model's {masks, labels}: one mask per segment of
`panoptic_ground_truth` (the instances, labels 1..C, and the background as one stuff mask of label C + 1), so the
model has K = C + 1 classes (`mask_classification_targets`). Each test image's prediction is `MaskFormer.panoptic`
(its class indices 0..K-1 are the categories 1..K), scored against `panoptic_ground_truth` by
`MaskFormerPanopticQuality` (all three in `dlkit.tasks.panoptic`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..data.camvid import CAMVID_CLASSES, CAMVID_VOID
from ..engine.distributed import DistInfo
from ..engine.seeding import seed_everything
from ..errors import ConfigError
from ..registry import MODELS, create_model, list_models
from ..report.figures import plot_bars
from ..report.status import read_record
from ..tasks.panoptic import MaskFormerPanopticTask
from ..tasks.segmentation import MaskClassificationSegmentationTask
from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .options import Config, with_model_kwargs
from .registry import Recipe, Setup, get_recipe, register_recipe
from .runner import fit_baseline
from .segmentation import SEG_DEFAULTS, SEG_SMOKE, build_camvid


def _check_mask_classifier(model: str, recipe: str) -> None:
    """Refuse, before any data is read, a model that is not a mask-classification model (MaskFormer, Mask2Former)."""
    families = ("maskformer", "mask2former")
    if MODELS.get(model).meta["family"] not in families:
        raise ConfigError(f"{recipe} trains a mask-classification model; got model={model!r}. Choose one of "
                          f"{', '.join(n for f in families for n in list_models(family=f))}")


def build_maskformer(cfg, dist) -> Setup:
    """`build_detection` on shape scenes with semantic maps, the model `cfg.model` with K = C + 1 classes (the
    background last), trained and scored by `MaskFormerPanopticTask`. Notes: 002 §5.3."""
    if cfg.data != "shapes" or not dict(cfg.scene).get("semantic") or cfg.flip:
        raise ConfigError(f"the mask-classification shape recipes need data='shapes', scene={{'semantic': true}} "
                          f"and flip=false (the semantic map is not flipped); got data={cfg.data!r}, "
                          f"scene={dict(cfg.scene)}, flip={cfg.flip}")
    _check_mask_classifier(cfg.model, "the mask-classification shape recipes")
    for key in ("score_threshold", "overlap_threshold"):
        if not 0 <= getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be in [0, 1); got {getattr(cfg, key)}")

    def make_model(cfg, train_set, num_classes: int, in_chans: int):
        kwargs = with_model_kwargs({"num_classes": num_classes + 1, "in_chans": in_chans}, cfg.model_kwargs)
        return create_model(cfg.model, **kwargs), kwargs

    setup = build_detection(cfg, dist, make_model=make_model)
    old = setup.task
    setup.task = MaskFormerPanopticTask(old.model, cfg, len(old.class_names), old.class_names, cfg.score_threshold,
                                        cfg.overlap_threshold)
    setup.model_spec["class_names"] = [*old.class_names, "background"]  # the K = C + 1 classes, the stuff last
    return setup


SHAPES_DEFAULTS = {**DET_DEFAULTS, "data": "shapes", "image_size": 128, "scene": {"semantic": True}, "n_train": 1000,
                   "n_test": 300, "epochs": 12, "batch_size": 8, "lr": 2e-3, "monitor": "val/pq",
                   "score_threshold": 0.5, "overlap_threshold": 0.8}

register_recipe(Recipe(
    name="maskformer-shapes", task="detection", notes="002 §5.3.2",
    description="A small MaskFormer (maskformer_tiny: one-block ResNet, pixel decoder and mask embeddings of 32, two "
                "decoder layers, 10 queries) on the 128x128 panoptic shape scenes of panoptic-fpn-shapes (five thing "
                "classes, the background as one stuff class); panoptic quality PQ of MaskFormer's panoptic "
                "inference on test scenes (over the 5 thing classes and the stuff class, and each part)",
    # measured (dlkit verify, 2 threads, 409 s): test PQ 0.229 (things 0.081, stuff 0.972; SQ 0.729, RQ 0.262); one
    # thread beside another training: 0.240 (things 0.094); batch 16 and lr 1e-3 (half the steps; dlkit verify,
    # 349 s): 0.183 (things 0.028): the stuff is learnt first, the instances slowly (few thing segments pass
    # score_threshold 0.5, below MaskFormer's 0.8 for this small model)
    build=build_maskformer, metric="test/pq", threshold=0.21, budget_s=600,
    defaults={**SHAPES_DEFAULTS, "model": "maskformer_tiny"}, smoke={**DET_SMOKE}, datasets=(),
))

register_recipe(Recipe(
    name="mask2former-shapes", task="detection", notes="002 §5.3.3",
    description="A small Mask2Former (mask2former_tiny: maskformer_tiny's backbone and pixel decoder, three "
                "masked-attention layers reading the strides 32, 16 and 8 in turn, 10 queries, mask losses on 256 "
                "sampled points) on the panoptic shape scenes of maskformer-shapes; panoptic quality PQ of its "
                "panoptic inference on test scenes",
    # measured (dlkit verify, 2 threads, 388 s): test PQ 0.350 (things 0.223, stuff 0.983; SQ 0.812, RQ 0.403); one
    # thread beside another training (433 s): 0.358 (things 0.233), above Panoptic FPN's 0.302 and MaskFormer's 0.229
    # on the same scenes; 12 epochs (215 s, one thread): 0.291 (things 0.153), against MaskFormer's 0.240 (things
    # 0.094) in the same epochs and conditions: masked attention learns the instances faster, as its paper reports
    build=build_maskformer, metric="test/pq", threshold=0.32, budget_s=600,
    defaults={**SHAPES_DEFAULTS, "model": "mask2former_tiny", "epochs": 24}, smoke={**DET_SMOKE}, datasets=(),
))


def _unet_comparison(cfg):
    """The report's baseline of maskformer-camvid: {"unet/miou", ...} from the U-Net record (compare_unet='record')
    or from the unet-camvid recipe's U-Net trained on this run's data, size, epochs and seed (headless `fit()`,
    compare_unet='train'), and a bar chart of both test mIoU. Notes: 000 §3.11.2, 002 §5.3.2."""
    def compare(run_dir: Path, metrics: dict) -> dict[str, float]:
        if cfg.compare_unet == "record":
            record = read_record(Path(cfg.unet_record))
            if record is None or record.get("metric") != "test/miou":
                print(f"note: no U-Net record at {cfg.unet_record} (`dlkit verify unet-camvid` writes one); the "
                      f"report has no U-Net comparison", file=sys.stderr)
                return {}
            unet = {"unet/miou": float(record["value"])}
            label = f"U-Net (record {record['commit']}, {str(record.get('date', ''))[:10]})"
        else:
            defaults = get_recipe("unet-camvid").defaults
            keys = ("model", "model_kwargs", "optimizer", "lr", "weight_decay", "schedule", "drop_last")
            unet_cfg = Config({**cfg, **{k: defaults[k] for k in keys}}).freeze()
            seed_everything(cfg.seed)
            unet = fit_baseline(build_camvid(unet_cfg, DistInfo()), unet_cfg, "unet")
            label = f"U-Net {unet_cfg.model} (trained after this run)"
        plot_bars({f"MaskFormer {cfg.model}": metrics.get("test/miou", float("nan")), label: unet["unet/miou"]},
                  run_dir / "figures" / "maskformer_vs_unet.png", "mIoU on the CamVid test frames",
                  f"{cfg.width}x{cfg.height}, {cfg.epochs} epochs")
        return unet
    return compare


def build_maskformer_camvid(cfg, dist) -> Setup:
    """`build_camvid` with the mask-classification model `cfg.model` (K = 11 classes, fed the loaders' normalised
    images: its own normalisation is the identity) trained by `MaskClassificationSegmentationTask`, and the U-Net
    comparison of `compare_unet`. Notes: 002 §5.3.2."""
    if cfg.compare_unet not in ("record", "train", "none"):
        raise ConfigError(f"compare_unet must be 'record' (the unet-camvid record at unet_record), 'train' (train "
                          f"the U-Net after the run) or 'none'; got {cfg.compare_unet!r}")
    if cfg.class_balance != "none" or cfg.dice_weight:
        raise ConfigError(f"maskformer-camvid trains by mask classification: class_balance and dice_weight (terms of "
                          f"the per-pixel loss) do not apply; got {cfg.class_balance!r}, {cfg.dice_weight}")
    _check_mask_classifier(cfg.model, "maskformer-camvid")
    identity = {"image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0]}
    setup = build_camvid(cfg, dist, model_kwargs=identity)
    setup.task = MaskClassificationSegmentationTask(setup.task.model, cfg, CAMVID_CLASSES, CAMVID_VOID,
                                                    show=setup.task.show)
    if cfg.compare_unet != "none":
        setup.comparison = _unet_comparison(cfg)
    return setup


register_recipe(Recipe(
    name="maskformer-camvid", task="segmentation", notes="002 §5.3.2, 000 §3.11",
    description="A small MaskFormer (maskformer_tiny with 20 queries: one-block ResNet 16-128, pixel decoder and "
                "mask embeddings of 32, two decoder layers) trained from scratch on CamVid at 128x96 by mask "
                "classification (one mask per class present); test mIoU of the semantic inference, compared in the "
                "report with the U-Net record (unet/miou, maskformer_vs_unet.png)",
    # measured (dlkit verify, 2 threads, 489 s): test mIoU 0.337, pixel accuracy 0.762 (val 0.396); one thread
    # beside another training, 715 s: 0.325 (lr 1e-3: 0.318), whose per-class IoU follows. The U-Net record (483k
    # parameters against 421k) is 0.401; per class
    # (MaskFormer / U-Net) road 0.772 / 0.869, pavement 0.342 / 0.628, car 0.442 / 0.619, building 0.589 / 0.700,
    # and both miss the thin classes (pole 0.002 / 0.000, sign 0.004 / 0.051)
    build=build_maskformer_camvid, metric="test/miou", threshold=0.3, budget_s=600,
    defaults={**SEG_DEFAULTS, "model": "maskformer_tiny", "model_kwargs": {"num_queries": 20},
              "compare_unet": "record", "unet_record": "results/verify/unet-camvid.json"},
    smoke={**SEG_SMOKE, "compare_unet": "none"}, datasets=("camvid",),
))
