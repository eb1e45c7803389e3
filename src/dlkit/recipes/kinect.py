"""Kinect body-part recognition on synthetic depth images (Notes: 002 §5.1.1).

The pipeline of the notes on generated data: depth images of articulated stick figures with the background removed
(`dlkit.data.depth_figures`), a per-pixel body-part classifier (a randomised decision forest written here, on
depth-comparison features of `offsets` random offset pairs), and joint proposals (each part's 3-D centre of mass of
the pixels predicted as that part). Training pixels: `pixels_per_image` random body pixels of each training image;
the test uses every body pixel of the test images. The recipe's metric is the test per-pixel accuracy over body
pixels; scikit-learn's RandomForestClassifier, trained on the same features with the same trees, depth and features
per node, gives the comparison accuracy. Figures: depth / true parts / predicted parts of a few test images, and
the per-part accuracies of both forests.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.depth_figures import BACKGROUND, PARTS, DepthFigures, render_figures
from ..models.segmentation.decision_forest import DecisionForest
from ..ops.depth_features import depth_features, random_offsets
from ..ops.joint_proposals import part_centres_of_mass
from ..report.figures import plot_bars, plot_segmentations
from .registry import Recipe, Study, register_recipe


def body_pixels(labels: np.ndarray, per_image: int | None, rng: np.random.Generator) -> np.ndarray:
    """(image, row, column) [M, 3] of the body pixels (label > 0) of labels [N, H, W]: at most `per_image` random
    ones per image (all when None)."""
    out = []
    for i, lab in enumerate(labels):
        p = np.argwhere(lab > 0)
        if per_image is not None and len(p) > per_image:
            p = p[np.sort(rng.choice(len(p), per_image, replace=False))]
        out.append(np.concatenate([np.full((len(p), 1), i), p], 1))
    return np.concatenate(out) if out else np.zeros((0, 3), np.int64)


def _kinect_bodyparts(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        rng = np.random.default_rng(cfg.seed)
        camera = dict(height=cfg.height, width=cfg.width, focal=cfg.focal)
        train = render_figures(cfg.train_images, seed=cfg.seed * 2 + 1, **camera)
        test = render_figures(cfg.test_images, seed=cfg.seed * 2 + 2, **camera)
        offsets = random_offsets(cfg.offsets, cfg.max_offset, rng)
        p_train, p_test = body_pixels(train.labels, cfg.pixels_per_image, rng), body_pixels(test.labels, None, rng)
        x_train = depth_features(train.depth, p_train, offsets, BACKGROUND)
        x_test = depth_features(test.depth, p_test, offsets, BACKGROUND)
        y_train, y_test = (f.labels[p[:, 0], p[:, 1], p[:, 2]] for f, p in ((train, p_train), (test, p_test)))
        forest_options = dict(max_depth=cfg.max_depth, min_samples_split=cfg.min_samples_split)
        start = time.perf_counter()
        forest = DecisionForest(cfg.trees, features_per_node=cfg.features_per_node, thresholds=cfg.thresholds,
                                seed=cfg.seed, **forest_options).fit(x_train, y_train, len(PARTS))
        fit_s = time.perf_counter() - start
        pred = forest.predict(x_test)
        metrics = {"test/pixel_accuracy": float((pred == y_test).mean()),
                   "train/pixel_accuracy": float((forest.predict(x_train) == y_train).mean()),
                   "forest_fit_s": fit_s, "train_pixels": float(len(y_train)), "test_pixels": float(len(y_test)),
                   "nodes_per_tree": float(np.mean([len(t.feature) for t in forest.estimators])),
                   "steps": cfg.trees}
        per_part = {name: float((pred[y_test == c] == c).mean()) for c, name in enumerate(PARTS) if c and
                    (y_test == c).any()}
        metrics["test/mean_part_accuracy"] = float(np.mean(list(per_part.values())))
        bars = {f"ours: {k}": v for k, v in per_part.items()}
        if cfg.sklearn:
            from sklearn.ensemble import RandomForestClassifier

            start = time.perf_counter()
            sk = RandomForestClassifier(cfg.trees, criterion="entropy", max_features=cfg.features_per_node,
                                        random_state=cfg.seed, n_jobs=1, **forest_options).fit(x_train, y_train)
            metrics["sklearn_fit_s"] = time.perf_counter() - start
            sk_pred = sk.predict(x_test)
            metrics["test/sklearn_pixel_accuracy"] = float((sk_pred == y_test).mean())
            bars.update({f"sklearn: {name}": float((sk_pred[y_test == c] == c).mean())
                         for c, name in enumerate(PARTS) if c and (y_test == c).any()})
        predicted = np.zeros_like(test.labels)
        predicted[p_test[:, 0], p_test[:, 1], p_test[:, 2]] = pred
        errors = joint_errors(test, predicted)
        metrics["test/joint_error_m"] = float(np.nanmean(errors))
        shown = min(cfg.figure_images, cfg.test_images)
        if shown:
            body = np.where(test.labels[:shown] > 0, test.depth[:shown], np.nan)
            far = np.nanmax(body, axis=(1, 2), keepdims=True)
            plot_segmentations(torch.from_numpy(np.where(np.isnan(body), far + 0.3, body)), list(test.labels[:shown]),
                               list(predicted[:shown]), list(PARTS), run_dir / "figures" / "predicted_parts.png")
        plot_bars(bars, run_dir / "figures" / "part_accuracy.png", "test pixel accuracy",
                  title="Per-part accuracy (body pixels of the test images)")
        return metrics
    return Study(run)


def joint_errors(figures: DepthFigures, predicted: np.ndarray) -> np.ndarray:
    """Distances [N, P] (metres) between each part's centre of mass from the predicted labels and the one from the
    true labels (the 3-D points of the part's visible pixels); NaN where the part is absent from either."""
    out = np.full((len(predicted), len(PARTS) - 1), np.nan)
    for i in range(len(predicted)):
        got = part_centres_of_mass(figures.depth[i], predicted[i], len(PARTS) - 1, figures.focal)
        want = part_centres_of_mass(figures.depth[i], figures.labels[i], len(PARTS) - 1, figures.focal)
        out[i] = np.linalg.norm(got - want, axis=1)
    return out


register_recipe(Recipe(
    name="kinect-bodyparts-synthetic", task="segmentation", notes="002 §5.1.1",
    description="Kinect body-part recognition: depth-comparison features and a randomised decision forest on "
                "synthetic depth images of articulated figures; per-pixel accuracy against scikit-learn's forest",
    build=_kinect_bodyparts, metric="test/pixel_accuracy", threshold=0.86, budget_s=600, study=True,
    defaults=dict(train_images=600, test_images=50, pixels_per_image=300, height=96, width=72, focal=110.0,
                  offsets=200, max_offset=80.0, trees=3, max_depth=20, features_per_node=20, thresholds=20,
                  min_samples_split=10, sklearn=True, figure_images=4),
    smoke=dict(train_images=20, test_images=3, pixels_per_image=100, offsets=40, trees=2, max_depth=8,
               figure_images=2),
    types={"threads": "int | None", "thresholds": "int | None"},
))
