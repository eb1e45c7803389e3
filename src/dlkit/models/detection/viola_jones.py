"""The Viola-Jones detector: Haar-like features, AdaBoost, the attentional cascade, the multi-scale sliding window
and NMS (Notes: 002 §4.2).

- Features (002 §4.2.1): the five Haar-like families of `dlkit.ops.HAAR_FEATURES` at every position and size of
  the 24 x 24 window (162,336 features). A feature is 2 to 4 equal cells, each with a sign (white +1, black -1).
  Windows are variance-normalised (zero mean, unit standard deviation) as Viola and Jones do, so that a feature is
  `f = sum_c sign_c * A_c * (mean of the normalised window over cell c)`, with A_c the cell's area at 24 x 24.
  Computed from the integral image (002 §4.2.2), the mean over a cell is four look-ups whatever its size, so a
  window of side 24 s uses the features scaled by s (cells rounded to whole pixels), not a resized image.
- Weak learner (002 §4.2.1): a decision stump on one feature, `WL(x) = 1 if s f(x) >= s rho else -1`, polarity
  s in {+1, -1} and threshold rho chosen to minimise the weighted error. For all features at once: sort each
  feature's values once, then one cumulative sum of the signed weights (+w for a face, -w for a non-face) gives
  the error of every split: `e(s=+1) = W_neg + c_k`, `e(s=-1) = W_pos - c_k`. Thresholds are midpoints between
  consecutive distinct values. Training draws a random subset of the features for each stage (`features_per_stage`,
  6,000-12,000 of the 162,336) to fit a 2-core budget.
- AdaBoost (002 §4.2.1): `eps_j` = weighted error, `beta_j = (1 - eps_j) / eps_j`, the misclassified weights are
  multiplied by beta_j, then renormalised; `SL(x) = sum_j ln(beta_j) WL_j(x) >= Theta`. Viola and Jones start from
  class-balanced weights 1/(2m) and 1/(2l) (m non-faces, l faces; the notes' 1/N is `balanced=False`), and write
  the update as "correct weights times eps/(1-eps)", equal after renormalisation. Tie rule (notes' erratum: `> 0`
  in the definition, `>= 0` in the example): a stage accepts `score >= Theta`, the example's form.
- Cascade (002 §4.2.3): stages of growing strong classifiers; a window is rejected by the first stage that says
  no. Each stage adds weak learners until its false-positive rate on validation non-faces is at most `f`, its
  threshold Theta lowered (from 0) until at least a fraction `d` of the validation faces pass. The negatives of
  stage i+1 are false positives of stages 1..i, mined by scanning face-free images. Windows with a standard
  deviation of at most `min_std` grey levels (10, OpenCV's rule) are rejected before the first stage.
- Detection: multi-scale sliding window (scales 1, r, r^2, ..., a step of `step * scale` pixels), then NMS
  (002 §4.2.4, `dlkit.ops.nms`) with the last stage's score as confidence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError
from ...ops import HAAR_FEATURES, haar_positions, integral_image, nms
from ...ops.sliding_windows import sliding_windows, window_scales

WINDOW = 24


@dataclass
class HaarFeatureSet:
    """Haar-like features of a `window` x `window` patch as cells (Notes: 002 §4.2.1): `cells` [F, 4, 4] holds
    (y, x, h, w) of up to 4 equal cells, `signs` [F, 4] their sign (0 for an unused cell), `kinds` [F] the index
    of the family in `HAAR_FEATURES`."""

    cells: Tensor
    signs: Tensor
    kinds: Tensor
    window: int = WINDOW

    def __len__(self) -> int:
        return len(self.cells)

    def subset(self, index: Tensor) -> HaarFeatureSet:
        return HaarFeatureSet(self.cells[index], self.signs[index], self.kinds[index], self.window)

    def describe(self, j: int) -> str:
        kind = list(HAAR_FEATURES)[int(self.kinds[j])]
        y, x = self.cells[j, 0, :2].tolist()
        n = int((self.signs[j] != 0).sum())
        h = int(self.cells[j, :n, 0].max() + self.cells[j, :n, 2].max() - y) if n else 0
        w = int(self.cells[j, :n, 1].max() + self.cells[j, :n, 3].max() - x) if n else 0
        return f"{kind} at (y={y}, x={x}), {h}x{w}"


def haar_features(window: int = WINDOW, kinds: tuple[str, ...] | None = None) -> HaarFeatureSet:
    """Every Haar-like feature of the families `kinds` (default: all five) in a `window` x `window` patch, as
    cells (Notes: 002 §4.2.1). The five families in 24 x 24 give 162,336 features."""
    kinds = tuple(HAAR_FEATURES) if kinds is None else tuple(kinds)
    cells, signs, kind_ids = [], [], []
    for kind in kinds:
        if kind not in HAAR_FEATURES:
            raise ConfigError(f"kinds must be among {tuple(HAAR_FEATURES)}; got {kind!r}")
        cols, rows, sgn = HAAR_FEATURES[kind]
        pos = haar_positions(kind, window)  # [F, 4] (y, x, h, w)
        ch, cw = pos[:, 2] // rows, pos[:, 3] // cols
        c = torch.zeros(len(pos), 4, 4, dtype=torch.long)
        s = torch.zeros(len(pos), 4)
        for i, sign in enumerate(sgn):
            r, q = divmod(i, cols)
            c[:, i] = torch.stack([pos[:, 0] + r * ch, pos[:, 1] + q * cw, ch, cw], dim=1)
            s[:, i] = sign
        cells.append(c)
        signs.append(s)
        kind_ids.append(torch.full((len(pos),), list(HAAR_FEATURES).index(kind)))
    return HaarFeatureSet(torch.cat(cells), torch.cat(signs), torch.cat(kind_ids), window)


def window_features(ii: Tensor, ii2: Tensor, features: HaarFeatureSet, ys: Tensor, xs: Tensor,
                    scale: float = 1.0) -> Tensor:
    """Feature values [W, F] of the variance-normalised windows of side `round(window * scale)` with top-left
    corners (ys, xs) [W], from the integral images of the image and of its square `ii`, `ii2` [H+1, W+1]
    (Notes: 002 §4.2.2): the cells are scaled by `scale` and each cell's mean is four look-ups."""
    side = round(features.window * scale)
    ys, xs = ys.long(), xs.long()
    n = side * side
    total = _box(ii, ys, xs, side, side)
    mean = total / n
    var = (_box(ii2, ys, xs, side, side) / n - mean * mean).clamp_min(0)
    std = var.sqrt().clamp_min(1e-6)
    c = features.cells
    cy = (c[..., 0] * scale).round().long()
    cx = (c[..., 1] * scale).round().long()
    ch = (c[..., 2] * scale).round().long().clamp_min(1)
    cw = (c[..., 3] * scale).round().long().clamp_min(1)
    ch = torch.minimum(ch, side - cy)
    cw = torch.minimum(cw, side - cx)
    area0 = (c[..., 2] * c[..., 3]).to(ii.dtype)
    y0, x0 = ys[:, None, None] + cy, xs[:, None, None] + cx  # [W, F, 4]
    sums = _box(ii, y0, x0, ch, cw)
    cell_mean = (sums / (ch * cw).to(ii.dtype) - mean[:, None, None]) / std[:, None, None]
    return (cell_mean * area0 * features.signs.to(ii.dtype)).sum(-1)


def _box(ii: Tensor, y: Tensor, x: Tensor, h: Tensor | int, w: Tensor | int) -> Tensor:
    """Rectangle sums from an integral image [H+1, W+1] (any broadcastable index shapes, no bounds check)."""
    stride = ii.shape[-1]
    flat = ii.reshape(-1)
    y2, x2 = y + h, x + w
    return flat[y2 * stride + x2] - flat[y * stride + x2] - flat[y2 * stride + x] + flat[y * stride + x]


def integral_images(image: Tensor) -> tuple[Tensor, Tensor]:
    """The integral images of a grey image [H, W] and of its square, in float64 (Notes: 002 §4.2.2)."""
    if image.dim() != 2:
        raise ConfigError(f"expected a grey image [H, W]; got shape {tuple(image.shape)}")
    img = image.double()
    return integral_image(img), integral_image(img * img)


def patch_features(patches: Tensor, features: HaarFeatureSet, chunk: int = 4096) -> Tensor:
    """Feature values [N, F] (float32) of `window` x `window` patches [N, window, window], each variance-normalised
    (Notes: 002 §4.2.1-4.2.2). Equals `window_features` at scale 1 on each patch."""
    k = features.window
    if patches.dim() != 3 or patches.shape[1:] != (k, k):
        raise ConfigError(f"patches must be [N, {k}, {k}]; got {tuple(patches.shape)}")
    p = patches.double()
    p = (p - p.mean((1, 2), keepdim=True)) / p.std((1, 2), unbiased=False, keepdim=True).clamp_min(1e-6)
    ii = integral_image(p).reshape(len(p), -1).float()  # [N, (k+1)^2]; |values| < 600, float32 is plenty
    coef = _corner_matrix(features)
    out = torch.empty(len(p), len(features), dtype=torch.float32)
    for s in range(0, len(features), chunk):
        out[:, s:s + chunk] = ii @ coef[:, s:s + chunk]
    return out


def _corner_matrix(features: HaarFeatureSet) -> Tensor:
    """[(k+1)^2, F] coefficients of each feature on the flattened integral image: each cell adds +-1 at its four
    corners (II(A) - II(B) - II(C) + II(D), 002 §4.2.2)."""
    k1 = features.window + 1
    c, s = features.cells, features.signs
    y, x, h, w = c.unbind(-1)
    f = torch.arange(len(features))[:, None].expand_as(y)
    coef = torch.zeros(len(features), k1 * k1, dtype=torch.float32)
    for dy, dx, sign in ((1, 1, 1.0), (0, 1, -1.0), (1, 0, -1.0), (0, 0, 1.0)):
        idx = (y + dy * h) * k1 + (x + dx * w)
        coef.index_put_((f.reshape(-1), idx.reshape(-1)), (sign * s).reshape(-1), accumulate=True)
    return coef.T.contiguous()


# ---- weak learners and AdaBoost (002 §4.2.1) ----

@dataclass
class Stump:
    """A weak learner on one feature: `WL(x) = 1 if polarity * f(x) >= polarity * threshold else -1`, with its
    AdaBoost weight alpha = ln(beta) (Notes: 002 §4.2.1)."""

    feature: int
    threshold: float
    polarity: int
    alpha: float = 0.0
    error: float = 0.0

    def predict(self, values: Tensor) -> Tensor:
        """+1 / -1 [N] from the values [N] of this stump's feature."""
        p = self.polarity
        return torch.where(p * values >= p * self.threshold, 1.0, -1.0)


class SortedFeatures:
    """Feature values [N, F] sorted once per feature, for the stump search of every AdaBoost round."""

    def __init__(self, values: Tensor):
        if values.dim() != 2:
            raise ConfigError(f"feature values must be [N samples, F features]; got {tuple(values.shape)}")
        self.values = values
        v = values.numpy()
        self.order = np.argsort(v, axis=0, kind="stable").astype(np.int32)
        self.sorted = np.take_along_axis(v, self.order, axis=0)
        # a split before sorted position k (0 < k < N) is valid only between distinct values
        self.distinct = self.sorted[1:] != self.sorted[:-1]


def best_stump(data: SortedFeatures, labels: Tensor, weights: Tensor, chunk: int = 2048,
               dtype: type = np.float64) -> Stump:
    """The stump (feature, threshold, polarity) with the least weighted error over all features (Notes: 002 §4.2.1).

    `labels` are 1 (face) / 0; `weights` [N] sum to 1. For polarity +1 the error of the split before sorted
    position k is `W_neg + c_k`, for polarity -1 it is `W_pos - c_k`, where c is the cumulative sum of the signed
    weights (+w faces, -w non-faces) in sorted order. Ties go to the first feature, then the first split.
    `dtype` np.float32 halves the work (the cascade's training uses it; the chosen stump's error is then
    recomputed exactly by `adaboost_update`)."""
    y = labels.numpy().astype(bool)
    w = weights.double().numpy()
    signed = np.where(y, w, -w).astype(dtype)
    w_pos, w_neg = w[y].sum(), w[~y].sum()
    n, f = data.sorted.shape
    best = (math.inf, 0, 0, 1)
    for s in range(0, f, chunk):
        order = data.order[:, s:s + chunk]
        c = np.zeros((n + 1, order.shape[1]), dtype=dtype)
        np.cumsum(signed[order], axis=0, out=c[1:])
        e_pos, e_neg = w_neg + c, w_pos - c
        e = np.minimum(e_pos, e_neg)
        e[1:n][~data.distinct[:, s:s + chunk]] = np.inf
        k = np.argmin(e, axis=0)
        col = np.arange(len(k))
        ek = e[k, col]
        j = int(np.argmin(ek))
        if ek[j] < best[0]:
            pol = 1 if e_pos[k[j], j] <= e_neg[k[j], j] else -1
            best = (float(ek[j]), s + j, int(k[j]), pol)
    err, feat, k, pol = best
    v = data.sorted[:, feat].astype(np.float64)
    thr = v[0] - 1.0 if k == 0 else v[-1] + 1.0 if k == n else 0.5 * (v[k - 1] + v[k])
    return Stump(feat, float(thr), pol, error=max(err, 0.0))


def adaboost_update(weights: Tensor, wrong: Tensor) -> tuple[float, float, Tensor]:
    """AdaBoost's reweighting (Notes: 002 §4.2.1): `eps = sum of the misclassified weights`,
    `beta = (1 - eps) / eps`, the misclassified weights times beta, then all renormalised to sum 1. Returns eps,
    beta and the new weights (eps is clamped to [1e-10, 1 - 1e-10] for beta)."""
    w = weights.double()
    eps = float(w[wrong].sum())
    e = min(max(eps, 1e-10), 1 - 1e-10)
    beta = (1 - e) / e
    new = torch.where(wrong, w * beta, w)
    return eps, beta, new / new.sum()


def adaboost_round(data: SortedFeatures, labels: Tensor, weights: Tensor) -> tuple[Stump, Tensor]:
    """One AdaBoost round (Notes: 002 §4.2.1): fit the best stump on the weighted data, then `adaboost_update`.
    Returns the stump (alpha = ln beta, its weighted error) and the new weights."""
    stump = best_stump(data, labels, weights, dtype=np.float32)
    pred = stump.predict(data.values[:, stump.feature].double())
    eps, beta, new = adaboost_update(weights, pred != (2.0 * labels.double() - 1))
    stump.error, stump.alpha = eps, math.log(beta)
    return stump, new


def initial_weights(labels: Tensor, balanced: bool = True) -> Tensor:
    """AdaBoost's starting weights: 1/(2l) for each of the l faces and 1/(2m) for each of the m non-faces (Viola
    and Jones), or the notes' uniform 1/N with `balanced=False` (Notes: 002 §4.2.1)."""
    labels = labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not balanced:
        return torch.full((len(labels),), 1.0 / len(labels), dtype=torch.float64)
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"balanced AdaBoost needs faces and non-faces; got {n_pos} faces, {n_neg} non-faces")
    return torch.where(labels, 0.5 / n_pos, 0.5 / n_neg).double()


# ---- the cascade (002 §4.2.3) ----

@dataclass
class Stage:
    """One stage: a boosted strong classifier `sum_j alpha_j WL_j(x) >= threshold` (Notes: 002 §4.2.3)."""

    stumps: list[Stump]
    threshold: float = 0.0

    def score(self, values: Tensor) -> Tensor:
        """sum_j alpha_j WL_j(x) [N] from feature values [N, F] of the cascade's features."""
        out = torch.zeros(len(values), dtype=torch.float64)
        for s in self.stumps:
            out += s.alpha * s.predict(values[:, s.feature].double())
        return out


def stage_threshold(scores_pos: Tensor, d: float) -> float:
    """The highest threshold <= 0 that at least a fraction `d` of the faces' stage scores reach (Notes: 002 §4.2.3:
    the threshold is lowered from the strong classifier's 0 until the detection rate is at least d)."""
    s = torch.sort(scores_pos.double()).values
    k = int(math.floor((1 - d) * len(s) + 1e-9))  # at most k faces may fall below
    return min(0.0, float(s[min(k, len(s) - 1)]))


class ViolaJones:
    """A trained Viola-Jones cascade over Haar-like features of a 24 x 24 window (Notes: 002 §4.2).

    `stages[i].stumps[j].feature` indexes `features`. Windows whose standard deviation is at most `min_std` grey
    levels are rejected before the first stage (variance normalisation would only amplify their noise; OpenCV's
    evaluator does the same with 10). `detect` scans an image at several scales and applies NMS."""

    def __init__(self, features: HaarFeatureSet, stages: list[Stage], min_std: float = 10.0):
        self.features, self.stages, self.min_std = features, stages, min_std

    def compact(self) -> ViolaJones:
        """The same cascade over only the features its stumps use (re-indexed copies of the stumps)."""
        used = sorted({s.feature for st in self.stages for s in st.stumps})
        col = {f: i for i, f in enumerate(used)}
        stages = [Stage([Stump(col[s.feature], s.threshold, s.polarity, s.alpha, s.error) for s in st.stumps],
                        st.threshold) for st in self.stages]
        return ViolaJones(self.features.subset(torch.tensor(used, dtype=torch.long)), stages, self.min_std)

    def stage_scores(self, values: Tensor) -> Tensor:
        """Scores [N, S] of every stage on values [N, F] of `features` (ignoring early rejection)."""
        if not self.stages:
            return torch.zeros(len(values), 0, dtype=torch.float64)
        return torch.stack([st.score(values) for st in self.stages], 1)

    def passed_stages(self, patches: Tensor) -> Tensor:
        """How many stages in a row accept each 24 x 24 patch [N, 24, 24] (all of them: a detection; 002 §4.2.3);
        0 for a flat patch."""
        if not self.stages:
            return torch.zeros(len(patches), dtype=torch.long)
        small = self.compact()
        scores = small.stage_scores(patch_features(patches, small.features))
        ok = scores >= torch.tensor([st.threshold for st in small.stages], dtype=torch.float64)
        ok &= (patches.double().std((1, 2), unbiased=False) > self.min_std)[:, None]
        return ok.long().cumprod(1).sum(1)

    def scan(self, image: Tensor, scale_factor: float = 1.25, step: float = 1.5, min_size: int = WINDOW,
             max_size: int | None = None, chunk: int = 32768) -> tuple[Tensor, Tensor]:
        """Windows of `image` [H, W] that every stage accepts: boxes xyxy [K, 4] and the last stage's score [K].
        Window sides round(24 r^i) (r = scale_factor) from min_size to max_size, top-left corners every
        max(1, round(step * r^i)) pixels (`dlkit.ops.window_scales` and `dlkit.ops.sliding_windows`); the features
        are scaled, not the image (002 §4.2.2). Each stage only sees the windows all earlier stages accepted (the
        attentional cascade, 002 §4.2.3)."""
        if scale_factor <= 1:
            raise ConfigError(f"scale_factor must be > 1; got {scale_factor}")
        image = torch.as_tensor(image)
        ii, ii2 = integral_images(image)
        h, w = image.shape
        k = self.features.window
        per_stage = [ViolaJones(self.features, [st]).compact() for st in self.stages]  # each with its own features
        max_size = min(h, w) if max_size is None else min(max_size, h, w)
        boxes, scores = [], []
        for scale in window_scales(k, scale_factor, min_size, max_size):
            side = round(k * scale)
            windows = sliding_windows((h, w), [side], stride=max(1, round(step * scale)), dtype=torch.long)
            for s in range(0, len(windows), chunk):
                ys, xs = windows[s:s + chunk, 1], windows[s:s + chunk, 0]
                n = side * side
                mean = _box(ii, ys, xs, side, side) / n
                std = (_box(ii2, ys, xs, side, side) / n - mean * mean).clamp_min(0).sqrt()
                ys, xs = ys[std > self.min_std], xs[std > self.min_std]
                score = torch.zeros(len(ys), dtype=torch.float64)
                for one in per_stage:
                    if len(ys) == 0:
                        break
                    score = one.stages[0].score(window_features(ii, ii2, one.features, ys, xs, scale))
                    keep = score >= one.stages[0].threshold
                    ys, xs, score = ys[keep], xs[keep], score[keep]
                boxes.append(torch.stack([xs, ys, xs + side, ys + side], 1).double())
                scores.append(score)
        if not boxes:
            return torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        return torch.cat(boxes), torch.cat(scores)

    def detect(self, image: Tensor, scale_factor: float = 1.25, step: float = 1.5, iou_threshold: float = 0.3,
               min_size: int = WINDOW, max_size: int | None = None) -> tuple[Tensor, Tensor]:
        """Detections (boxes xyxy [K, 4], scores [K]): the multi-scale sliding window, then NMS of the windows
        with IoU > iou_threshold (Notes: 002 §4.2.2, §4.2.4)."""
        boxes, scores = self.scan(image, scale_factor, step, min_size, max_size)
        keep = nms(boxes, scores, iou_threshold) if len(boxes) else torch.zeros(0, dtype=torch.long)
        return boxes[keep], scores[keep]


def train_cascade(features: HaarFeatureSet, pos_train: Tensor, pos_val: Tensor,
                  negatives: Callable[[ViolaJones, int, torch.Generator], Tensor], n_neg: int, n_val_neg: int,
                  d: float = 0.99, f: float = 0.5, target_fpr: float = 1e-3, max_stages: int = 10,
                  max_weak: tuple[int, ...] = (3, 6, 10, 20, 30, 40, 50), features_per_stage: int = 12000,
                  balanced: bool = True, min_std: float = 10.0, seed: int = 0,
                  log: Callable[[str], None] | None = None) -> tuple[ViolaJones, list[dict]]:
    """Train the attentional cascade (Notes: 002 §4.2.1, §4.2.3; Viola and Jones 2001, Table 2).

    pos_train, pos_val: face patches [N, 24, 24]. `negatives(cascade, n, generator)` returns n non-face patches
    that the cascade so far accepts (random face-free windows for the empty cascade, its false positives later),
    fewer when the face-free images have no more. A stage adds AdaBoost rounds on `features_per_stage` features
    drawn at random (a new draw per stage: the full 162,336 would not fit a 2-core budget) until, with its
    threshold lowered to keep a fraction d of the validation faces, its false-positive rate on validation
    non-faces is at most f (or it has max_weak[i] weak learners). Non-face windows with a standard deviation of at
    most `min_std` are left out (the cascade rejects them before its first stage). Stages are added until the
    overall validation false-positive rate is at most target_fpr, max_stages is reached, or no false positive is
    left to train on.
    Returns the cascade and one dict per stage (weak learners, threshold, stage and overall rates)."""
    g = torch.Generator().manual_seed(seed)
    cascade = ViolaJones(features, [], min_std)
    history: list[dict] = []
    overall_fpr, overall_det = 1.0, 1.0
    for i in range(max_stages):
        neg = negatives(cascade, n_neg + n_val_neg, g)
        if len(neg):
            neg = neg[neg.double().std((1, 2), unbiased=False) > min_std]  # flat windows never reach a stage
        if len(neg) < 20:
            if log:
                log(f"stage {i + 1}: only {len(neg)} false positives left in the face-free images; stopping")
            break
        n_val = min(n_val_neg, len(neg) // 3)
        neg_val, neg_train = neg[:n_val], neg[n_val:]
        alive = cascade.passed_stages(pos_train) == len(cascade.stages)  # faces the cascade still accepts
        alive_val = cascade.passed_stages(pos_val) == len(cascade.stages)
        sub = torch.randperm(len(features), generator=g)[:features_per_stage].sort().values
        fs = features.subset(sub)
        x = patch_features(torch.cat([pos_train[alive], neg_train]), fs)
        labels = torch.cat([torch.ones(int(alive.sum())), torch.zeros(len(neg_train))])
        xv_pos, xv_neg = patch_features(pos_val[alive_val], fs), patch_features(neg_val, fs)
        data = SortedFeatures(x)
        weights = initial_weights(labels, balanced)
        stage = Stage([])
        limit = max_weak[min(i, len(max_weak) - 1)]
        det = fpr = 1.0
        while len(stage.stumps) < limit:
            stump, weights = adaboost_round(data, labels, weights)
            stage.stumps.append(stump)
            stage.threshold = stage_threshold(stage.score(xv_pos), d)
            det = float((stage.score(xv_pos) >= stage.threshold).double().mean())
            fpr = float((stage.score(xv_neg) >= stage.threshold).double().mean())
            if fpr <= f:
                break
        for s in stage.stumps:  # index the stage's stumps by the full feature set
            s.feature = int(sub[s.feature])
        cascade.stages.append(stage)
        overall_fpr *= fpr
        overall_det *= det
        row = {"stage": i + 1, "weak_learners": len(stage.stumps), "threshold": stage.threshold,
               "val_detection_rate": det, "val_false_positive_rate": fpr, "val_overall_detection_rate": overall_det,
               "val_overall_false_positive_rate": overall_fpr, "train_negatives": len(neg_train)}
        history.append(row)
        if log:
            log(f"stage {i + 1}: {len(stage.stumps)} weak learners, threshold {stage.threshold:.3f}, val detection "
                f"{det:.3f}, val FP {fpr:.3f} (overall {overall_det:.3f} / {overall_fpr:.2e})")
        if overall_fpr <= target_fpr:
            break
    return cascade, history
