"""The second stage of Fast and Faster R-CNN: per-region class scores and class-specific box corrections (Notes:
002 §4.3.2, 003 §6).

Training: the ground-truth boxes join the proposals; a proposal is foreground when its IoU with a box is >= 0.5
(labelled with that box's class), background below; 512 proposals per image are sampled with at most a quarter
foreground. The multi-task loss is the cross-entropy of the C + 1 class scores plus the smooth-L1 (beta 1/9) of the
corrections predicted for the true class of each foreground region (weights 10, 10, 5, 5 on dx, dy, dw, dh), divided
by the number of sampled regions.

Evaluation: every region's C class-specific boxes are decoded and clipped, scored by the softmax; pairs scoring
<= 0.05, smaller than 0.01 pixel or of the background are dropped, then NMS at IoU 0.5 per class and the 100 best.
These choices are torchvision's; the tests compare this head with its RoIHeads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.box_coder import BoxCoder
from ...ops.boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from ...ops.multiscale_roi_align import MultiScaleRoIAlign
from ...ops.nms import batched_nms
from .matcher import Matcher
from .rpn import balanced_sample


class TwoMLPHead(nn.Module):
    """Flatten the pooled region, then two fully connected layers with ReLU (fc6, fc7)."""

    def __init__(self, in_features: int, width: int = 1024):
        super().__init__()
        self.fc6, self.fc7 = nn.Linear(in_features, width), nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    """C + 1 class scores and 4 (C + 1) class-specific box corrections per region."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class RoIHeads(nn.Module):
    """Pool each proposal from the pyramid, score it and correct its box (module docstring). `num_classes`
    counts the background (class 0)."""

    def __init__(self, box_roi_pool: MultiScaleRoIAlign, box_head: nn.Module, box_predictor: nn.Module,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 smooth_l1_beta: float = 1 / 9):
        super().__init__()
        self.box_roi_pool, self.box_head, self.box_predictor = box_roi_pool, box_head, box_predictor
        self.smooth_l1_beta = smooth_l1_beta  # torchvision's 1/9; Fast R-CNN's Huber loss (the notes'): 1
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.box_coder = BoxCoder(tuple(bbox_reg_weights))
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        # a further head on the same regions (Mask R-CNN's mask branch, Notes: 002 §5.2.1), or None: called as
        # region_head(features, image_sizes, detections, sampled, targets) -> its losses in training (sampled =
        # {regions, labels, matches} per image), in evaluation it adds its outputs to the detections
        self.region_head: nn.Module | None = None

    def forward(self, features: Sequence[Tensor], proposals: Sequence[Tensor], image_sizes: Sequence[Sequence[int]],
                targets: Sequence[Mapping[str, Tensor]] | None = None
                ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """(detections per image, losses): in training the losses {loss_classifier, loss_box_reg} and no
        detections; in evaluation the detections {boxes, scores, labels} and no losses."""
        proposals = list(proposals)
        if self.training:
            if targets is None:
                raise ConfigError("the RoI heads in training mode need targets: one {boxes [M, 4], labels [M]} per "
                                  "image")
            proposals, labels, goals, matches = self.sample(proposals, targets, with_matches=True)
        batch_size = (max(s[0] for s in image_sizes), max(s[1] for s in image_sizes))
        pooled = self.box_roi_pool(features, proposals, batch_size)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        if self.training:
            losses = self.loss(class_logits, box_regression, torch.cat(labels), torch.cat(goals))
            if self.region_head is not None:
                sampled = {"regions": proposals, "labels": labels, "matches": matches}
                losses.update(self.region_head(features, image_sizes, [], sampled, targets))
            return [], losses
        detections = self.postprocess(class_logits, box_regression, proposals, image_sizes)
        if self.region_head is not None:
            self.region_head(features, image_sizes, detections, None, None)
        return detections, {}

    def sample(self, proposals: list[Tensor], targets: Sequence[Mapping[str, Tensor]], with_matches: bool = False):
        """Per image: the sampled regions (proposals and ground truth, in index order), their labels and the
        corrections that lead them to their boxes (`with_matches`: and the index of each region's ground-truth box,
        0 for a region matching none)."""
        regions, labels, goals, matches = [], [], [], []
        for props, t in zip(proposals, targets):
            gt, gt_labels = t["boxes"].to(props.dtype), t["labels"].long()
            props = torch.cat([props, gt])
            if len(gt) == 0:
                label = torch.zeros(len(props), dtype=torch.long, device=props.device)
                matched_boxes, matched = torch.zeros_like(props), torch.zeros_like(label)
            else:
                matched = self.matcher(box_iou(gt, props))
                label = gt_labels[matched.clamp(min=0)]
                label[matched == Matcher.BELOW_LOW] = 0
                label[matched == Matcher.BETWEEN] = -1
                matched_boxes = gt[matched.clamp(min=0)]
            pos, neg = balanced_sample(label, self.batch_size_per_image, self.positive_fraction)
            keep = torch.cat([pos, neg]).sort().values
            regions.append(props[keep])
            labels.append(label[keep])
            goals.append(self.box_coder.encode(matched_boxes[keep], props[keep]))
            matches.append(matched[keep].clamp(min=0))
        return (regions, labels, goals, matches) if with_matches else (regions, labels, goals)

    def loss(self, class_logits: Tensor, box_regression: Tensor, labels: Tensor, goals: Tensor) -> dict[str, Tensor]:
        """Fast R-CNN's multi-task loss: cross-entropy plus smooth-L1 of the true class's corrections."""
        positive = torch.nonzero(labels > 0).squeeze(1)
        deltas = box_regression.reshape(len(box_regression), -1, 4)[positive, labels[positive]]
        box = F.smooth_l1_loss(deltas, goals[positive], beta=self.smooth_l1_beta, reduction="sum")
        box = box / max(labels.numel(), 1)
        return {"loss_classifier": F.cross_entropy(class_logits, labels), "loss_box_reg": box}

    def postprocess(self, class_logits: Tensor, box_regression: Tensor, proposals: Sequence[Tensor],
                    image_sizes: Sequence[Sequence[int]]) -> list[dict[str, Tensor]]:
        """Class-specific boxes, softmax scores, background and weak pairs dropped, NMS per class."""
        num_classes = class_logits.shape[-1]
        counts = [len(p) for p in proposals]
        boxes = self.box_coder.decode(box_regression.reshape(len(box_regression), -1, 4), torch.cat(proposals)[:, None])
        scores = class_logits.softmax(-1)
        out = []
        for bx, sc, size in zip(boxes.split(counts), scores.split(counts), image_sizes):
            bx = clip_boxes_to_image(bx, tuple(size))
            labels = torch.arange(num_classes, device=bx.device).expand_as(sc)
            bx, sc, labels = bx[:, 1:].reshape(-1, 4), sc[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            keep = torch.nonzero(sc > self.score_thresh).squeeze(1)
            bx, sc, labels = bx[keep], sc[keep], labels[keep]
            keep = remove_small_boxes(bx, 1e-2)
            bx, sc, labels = bx[keep], sc[keep], labels[keep]
            keep = batched_nms(bx, sc, labels, self.nms_thresh)[:self.detections_per_img]
            out.append({"boxes": bx[keep], "scores": sc[keep], "labels": labels[keep]})
        return out
