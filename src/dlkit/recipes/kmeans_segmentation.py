"""The unsupervised baseline of semantic segmentation: k-means pixel clusters on CamVid (Notes: 003 §4, 002 §5.1).

No labels are used to form the segments. k = 11 (CamVid's classes) clusters of the pixels' (r, g, b, y, x) features
are fitted once over the test images (data-set protocol: one set of clusters for every image, fitted on a uniform
sample of their pixels, transductively as in unsupervised-segmentation benchmarks), every test pixel goes to its
nearest centre, and the clusters are given classes by one Hungarian matching on the test confusion (the most
pixels on the diagonal). The metric is the mIoU of the matched map over the test set (void ignored): the floor
that the trained networks (unet-camvid, fcn8s-camvid, deeplabv3-camvid) are measured against. `per_image=True`
clusters each image on its own and matches each image separately, a per-image oracle that scores higher.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.camvid import CAMVID_CLASSES, CAMVID_VOID, load_camvid
from ..metrics.segmentation import iou_per_class, mean_iou, pixel_accuracy, segmentation_confusion
from ..report.figures import plot_segmentations
from ..techniques.kmeans_segmentation import (
    cluster_confusion,
    kmeans_segmentation,
    match_clusters_to_classes,
    relabel,
)
from .registry import Recipe, Study, register_recipe


def _kmeans_camvid(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        images, masks = load_camvid("test", cfg.data_dir, size=(cfg.height, cfg.width))
        if cfg.subset:
            images, masks = images[:cfg.subset], masks[:cfg.subset]
        masks = masks.long()
        k = num_classes = len(CAMVID_CLASSES)
        clusters = kmeans_segmentation(images, k, cfg.features, per_image=cfg.per_image, xy_weight=cfg.xy_weight,
                                       sample=cfg.sample, max_iter=cfg.max_iter, seed=cfg.seed)
        if cfg.per_image:  # cluster ids differ per image: one matching per image
            mappings = [match_clusters_to_classes(cluster_confusion(c, m, k, num_classes, CAMVID_VOID))
                        for c, m in zip(clusters, masks)]
            pred = torch.stack([relabel(c, mp) for c, mp in zip(clusters, mappings)])
        else:
            mapping = match_clusters_to_classes(cluster_confusion(clusters, masks, k, num_classes, CAMVID_VOID))
            pred = relabel(clusters, mapping)
        conf = segmentation_confusion(pred, masks, num_classes, ignore_index=CAMVID_VOID)
        metrics = {"test/miou": mean_iou(conf), "test/pixel_accuracy": pixel_accuracy(conf),
                   "steps": len(images)}
        ious = iou_per_class(conf)
        metrics.update({f"test/iou_{name}": float(v) for name, v in zip(CAMVID_CLASSES, ious)})
        if not cfg.per_image:
            (run_dir / "cluster_to_class.json").write_text(json.dumps(
                {f"cluster{j}": CAMVID_CLASSES[c] if c >= 0 else None for j, c in enumerate(mapping.tolist())},
                indent=2))
        show = torch.arange(min(4, len(images)))
        plot_segmentations(images[show], masks[show], pred[show], CAMVID_CLASSES,
                           run_dir / "figures" / "kmeans_segmentations.png", ignore_index=CAMVID_VOID)
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="kmeans-camvid", task="segmentation", notes="003 §4, 002 §5.1",
    description="Unsupervised baseline: k-means (k-means++ seeding, Lloyd) on the rgbxy features of CamVid's test "
                "pixels, k = 11 clusters shared by all images, Hungarian cluster-to-class matching, test mIoU",
    build=_kmeans_camvid, metric="test/miou", threshold=0.17, budget_s=600, study=True, datasets=("camvid",),
    defaults=dict(features="rgbxy", xy_weight=1.0, per_image=False, height=180, width=240, sample=100_000,
                  max_iter=100, subset=None),
    smoke=dict(height=45, width=60, sample=5_000, subset=16),
    types={"threads": "int | None", "subset": "int | None"},
))
