"""Faster R-CNN's region proposal network (Notes: 002 §4.3.2, 003 §6).

Head: on every feature level a shared 3x3 convolution (+ ReLU), then two sibling 1x1 convolutions: an objectness
logit and four box corrections (the R-CNN parametrisation, weights 1) for each of the A anchors of a location (9 in
the paper: 3 scales x 3 aspect ratios).

Training: an anchor is positive when its IoU with some ground-truth box is >= 0.7, or when it is a box's
best-overlapping anchor (the rescue rule, so that every box has at least one positive), negative when its best IoU
is < 0.3, and ignored in between. Per image, 256 anchors are sampled, at most half positives (filled with negatives
when there are fewer); the loss is the binary cross-entropy of their objectness plus the smooth-L1 (beta 1/9) of the
positives' corrections, both divided by the number sampled.

Proposals: per level the `pre_nms_top_n` anchors of highest objectness, decoded, clipped to the image, boxes
smaller than 1e-3 dropped, non-maximum suppression at IoU 0.7 within each level, then the `post_nms_top_n` best.
These choices are torchvision's; the tests compare this network with its RegionProposalNetwork.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.anchors import AnchorGenerator
from ...ops.box_coder import BoxCoder
from ...ops.boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from ...ops.nms import batched_nms
from .matcher import Matcher


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to A objectness logits and 4A box corrections per location."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        hidden = [F.relu(self.conv(f)) for f in features]
        return [self.cls_logits(h) for h in hidden], [self.bbox_pred(h) for h in hidden]


def flatten_levels(maps: Sequence[Tensor], width: int) -> Tensor:
    """Per-level maps [B, A * width, H, W] as one [B, sum_l H W A, width] in (H, W, A) order, the order of the
    anchor generator's anchors."""
    out = []
    for m in maps:
        b, _, h, w = m.shape
        out.append(m.view(b, -1, width, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, width))
    return torch.cat(out, dim=1)


def balanced_sample(labels: Tensor, batch_size: int, positive_fraction: float) -> tuple[Tensor, Tensor]:
    """Indices of the sampled positives (label >= 1) and negatives (label 0) of one image's anchors (RPN) or
    proposals (RoI heads): at most batch_size * positive_fraction positives, negatives for the rest, each chosen by
    torch.randperm (in that order, as torchvision's sampler, so that the same generator state draws the same ones)."""
    positive = torch.nonzero(labels >= 1).squeeze(1)
    negative = torch.nonzero(labels == 0).squeeze(1)
    num_pos = min(int(batch_size * positive_fraction), positive.numel())
    num_neg = min(batch_size - num_pos, negative.numel())
    pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
    neg = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
    return pos, neg


class RegionProposalNetwork(nn.Module):
    """Proposals [<= post_nms_top_n, 4] per image from feature maps, and in training the RPN losses (module
    docstring). Notes: 002 §4.3.2."""

    def __init__(self, anchor_generator: AnchorGenerator, head: RPNHead, fg_iou_thresh: float = 0.7,
                 bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: Mapping[str, int] | None = None, post_nms_top_n: Mapping[str, int] | None = None,
                 nms_thresh: float = 0.7, score_thresh: float = 0.0, min_size: float = 1e-3):
        super().__init__()
        if not 0 <= bg_iou_thresh <= fg_iou_thresh <= 1:
            raise ConfigError(f"RPN thresholds need 0 <= bg_iou_thresh <= fg_iou_thresh <= 1; got {bg_iou_thresh}, "
                              f"{fg_iou_thresh}")
        self.anchor_generator, self.head = anchor_generator, head
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.pre_nms_top_n = dict(pre_nms_top_n or {"training": 2000, "testing": 1000})
        self.post_nms_top_n = dict(post_nms_top_n or {"training": 2000, "testing": 1000})
        self.nms_thresh, self.score_thresh, self.min_size = nms_thresh, score_thresh, min_size

    def _mode(self) -> str:
        return "training" if self.training else "testing"

    def forward(self, images: Tensor, features: Sequence[Tensor],
                targets: Sequence[Mapping[str, Tensor]] | None = None,
                image_sizes: Sequence[Sequence[int]] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        """(proposals per image, losses): losses {loss_objectness, loss_rpn_box_reg} in training (targets needed),
        {} in evaluation. `images` [B, C, H, W] (padded) give the anchors' strides, `image_sizes` the (H, W) each
        image's proposals are clipped to (default: the batch's size); `features` the levels' maps."""
        objectness, deltas = self.head(features)
        anchors = self.anchor_generator(images, features)
        per_level = [o[0].numel() for o in objectness]  # A H W anchors per level
        logits, corrections = flatten_levels(objectness, 1).squeeze(-1), flatten_levels(deltas, 4)
        boxes = self.box_coder.decode(corrections.detach(), anchors)
        sizes = image_sizes if image_sizes is not None else [tuple(images.shape[-2:])] * len(images)
        proposals = self.filter_proposals(boxes, logits.detach(), sizes, per_level)
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ConfigError("the RPN in training mode needs targets: one {boxes [M, 4] xyxy} per image")
            losses = self.loss(logits, corrections, anchors, targets)
        return proposals, losses

    def filter_proposals(self, boxes: Tensor, logits: Tensor, image_sizes: Sequence[Sequence[int]],
                         per_level: Sequence[int]) -> list[Tensor]:
        """The best `pre_nms_top_n` anchors of each level, clipped, small boxes removed, NMS per level, the best
        `post_nms_top_n` (boxes [B, A_total, 4], logits [B, A_total])."""
        top = self.pre_nms_top_n[self._mode()]
        chosen, start = [], 0
        for n in per_level:
            chosen.append(logits[:, start:start + n].topk(min(top, n), dim=1).indices + start)
            start += n
        index = torch.cat(chosen, dim=1)
        levels = torch.cat([torch.full((i.shape[1],), k, device=logits.device) for k, i in enumerate(chosen)])
        out = []
        for b in range(len(logits)):
            bx = clip_boxes_to_image(boxes[b, index[b]], tuple(image_sizes[b]))
            scores = torch.sigmoid(logits[b, index[b]])
            keep = remove_small_boxes(bx, self.min_size)
            keep = keep[scores[keep] >= self.score_thresh]
            kept = batched_nms(bx[keep], scores[keep], levels[keep], self.nms_thresh)
            out.append(bx[keep][kept[:self.post_nms_top_n[self._mode()]]])
        return out

    def loss(self, logits: Tensor, corrections: Tensor, anchors: Tensor,
             targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Objectness BCE and smooth-L1 (beta 1/9) box loss over the sampled anchors of every image."""
        labels, goals = [], []
        for t in targets:
            gt = t["boxes"].to(anchors.dtype)
            if len(gt) == 0:
                labels.append(torch.zeros(len(anchors), device=anchors.device))
                goals.append(torch.zeros_like(anchors))
                continue
            matched = self.matcher(box_iou(gt, anchors))
            label = (matched >= 0).to(anchors.dtype)
            label[matched == Matcher.BETWEEN] = -1.0
            labels.append(label)
            goals.append(self.box_coder.encode(gt[matched.clamp(min=0)], anchors))
        pos, neg = [], []
        for b, label in enumerate(labels):
            p, n = balanced_sample(label, self.batch_size_per_image, self.positive_fraction)
            pos.append(p + b * len(anchors))
            neg.append(n + b * len(anchors))
        pos, neg = torch.cat(pos), torch.cat(neg)
        sampled = torch.cat([pos, neg])
        flat_labels, flat_goals = torch.cat(labels), torch.cat(goals)
        box = F.smooth_l1_loss(corrections.reshape(-1, 4)[pos], flat_goals[pos], beta=1 / 9, reduction="sum")
        objectness = F.binary_cross_entropy_with_logits(logits.reshape(-1)[sampled], flat_labels[sampled])
        return {"loss_objectness": objectness, "loss_rpn_box_reg": box / max(sampled.numel(), 1)}
