"""Object localisation: a CNN with a classification head and a box regression head (Notes: 002 §4.3.1, 003 §5).

Localisation is the part of detection where every image holds exactly one object: find its class and its box. A
classification network serves as the feature extractor (the feature contract, `create_model(name,
features_only=True)`); its last map is average-pooled to a fixed `pool_size` grid and flattened (a grid, not one
vector: global average pooling would keep little of where the object is), shared dense layers follow (AlexNet's
fc6-fc7 in the notes' Fig. 4.6), and two heads read the result: C class scores and the 4 box numbers. Training is
the notes' multi-task loss (002 §4.3.1):

    L = L_CE(softmax(scores), 1[c]) + lambda * L_MSE(BB_hat, BB)

The box is (centre x / W, centre y / H, width / W, height / H), each through a sigmoid, so a prediction lies in
the unit square whatever the image size. The notes leave this open ([5-01], an erratum: 003 writes the box
(x, y, h, w) in one line and [x, y, w, h] in the next and never says whether (x, y) is a corner or the centre); we
fix the centre and (w, h), the order of 002 §4's `BB = [x, y, w, h]`. 003 §5 regresses the unsquared Euclidean
norm `||[x', y', w', h'] - [x, y, w, h]||_2` where 002 uses the MSE: `box_loss` chooses ("mse", the default;
"l2", 003's norm per image averaged over the batch; "smooth_l1", Fast R-CNN's, an extension).

The detector contract (`dlkit.tasks.detection`): images [B, C, H, W] in [0, 1] (normalised here by `image_mean`,
`image_std`); in training `model(images, targets)` -> {loss_classifier, loss_box_reg} and every target must hold
exactly one box; in eval `model(images)` -> per image one box, scored by the class probability, labelled argmax + 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.boxes import box_convert, clip_boxes_to_image
from ...registry import create_model, register_model
from .images import IMAGENET_MEAN, IMAGENET_STD, batch_images, channel_stats, weights_dtype
from .targets import check_targets

BOX_LOSSES = ("mse", "l2", "smooth_l1")


class Localiser(nn.Module):
    """CNN for object localisation: feature extractor -> pooled grid -> shared dense layers -> class and box heads.

    Notes: 002 §4.3.1, 003 §5. `backbone` is a registered classification model's name (built with `in_chans` and
    `backbone_kwargs`) or a feature extractor (`feature_info`, forward -> list of maps); the last map is read.
    `hidden` are the widths of the shared dense layers (each Dropout(`dropout`) -> Linear -> ReLU, as AlexNet's
    head); `box_weight` is the notes' lambda; `box_loss` is "mse" (002), "l2" (003) or "smooth_l1".
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, backbone: str | nn.Module = "vgg_tiny_fashion",
                 backbone_kwargs: Mapping | None = None, pool_size: int = 4, hidden: Sequence[int] = (256,),
                 dropout: float = 0.0, box_weight: float = 1.0, box_loss: str = "mse",
                 image_mean: float | Sequence[float] | None = None, image_std: float | Sequence[float] | None = None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"Localiser needs num_classes >= 1 (the object classes, no background); got "
                              f"{num_classes!r}")
        if box_loss not in BOX_LOSSES:
            raise ConfigError(f"box_loss must be one of {BOX_LOSSES}; got {box_loss!r}")
        if box_weight < 0 or pool_size < 1:
            raise ConfigError(f"Localiser needs box_weight >= 0 and pool_size >= 1; got {box_weight}, {pool_size}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.box_weight, self.box_loss = float(box_weight), box_loss
        if isinstance(backbone, str):
            backbone = create_model(backbone, features_only=True, out_indices=(-1,), in_chans=in_chans,
                                    **dict(backbone_kwargs or {}))
        elif backbone_kwargs:
            raise ConfigError("backbone_kwargs configure a backbone built by name; this one is already built")
        info = getattr(backbone, "feature_info", None)
        if info is None or not hasattr(info, "channels"):
            raise ConfigError(f"the localiser's backbone must be a registered classifier's name or a feature "
                              f"extractor with feature_info (create_model(name, features_only=True)); got "
                              f"{type(backbone).__name__}")
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        width = info.channels()[-1] * pool_size * pool_size
        layers: list[nn.Module] = [nn.Flatten(1)]
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.neck = nn.Sequential(*layers)
        self.cls_head = nn.Linear(width, num_classes)
        self.box_head = nn.Linear(width, 4)
        self.register_buffer("image_mean", channel_stats(image_mean, IMAGENET_MEAN, in_chans, "image_mean"),
                             persistent=False)
        self.register_buffer("image_std", channel_stats(image_std, IMAGENET_STD, in_chans, "image_std"),
                             persistent=False)

    def _batch(self, images) -> Tensor:
        """Images [B, C, H, W] (or a list of equally sized [C, H, W]) in [0, 1], normalised."""
        images = batch_images(images, self.in_chans, "the localiser", weights_dtype(self))
        return (images - self.image_mean) / self.image_std

    def forward_heads(self, images) -> tuple[Tensor, Tensor]:
        """Class scores [B, C] (logits) and boxes [B, 4] (cx/W, cy/H, w/W, h/H, in (0, 1) by a sigmoid)."""
        z = self.neck(self.pool(self.backbone(self._batch(images))[-1]))
        return self.cls_head(z), torch.sigmoid(self.box_head(z))

    def forward(self, images, targets: Sequence[Mapping[str, Tensor]] | None = None):
        """Training: {loss_classifier, loss_box_reg (lambda already applied)}; eval: one detection per image."""
        if self.training and targets is None:
            raise ConfigError("in training mode the localiser needs targets: model(images, targets), one dict "
                              "{boxes [1, 4], labels [1]} per image; call model.eval() to localise")
        logits, boxes = self.forward_heads(images)
        size = tuple(images.shape[-2:] if isinstance(images, Tensor) else images[0].shape[-2:])
        if self.training:
            labels, true_boxes = self.encode_targets(targets, len(logits), size)
            return {"loss_classifier": F.cross_entropy(logits, labels),
                    "loss_box_reg": self.box_weight * self.regression_loss(boxes, true_boxes)}
        return self.postprocess(logits, boxes, size)

    def encode_targets(self, targets, batch: int, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Class indices [B] (label - 1) and normalised boxes [B, 4] (cx/W, cy/H, w/W, h/H) of one-object targets."""
        check_targets(targets, batch, self.num_classes, "the localiser")
        for i, t in enumerate(targets):
            n = len(t["boxes"])
            if n != 1 or tuple(t["boxes"].shape) != (1, 4) or len(t["labels"]) != 1:
                raise ConfigError(f"localisation needs exactly one object per image; image {i} of the batch has "
                                  f"{n} boxes (labels {t['labels'].tolist()}). Use scenes with one object "
                                  f"(objects=(1, 1)) or a detector for several")
        labels = torch.cat([t["labels"].reshape(1) for t in targets]).long()  # in 1..C: check_targets
        height, width = size
        scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=labels.device)
        boxes = torch.cat([t["boxes"].float().reshape(1, 4) for t in targets])
        return labels - 1, box_convert(boxes, "xyxy", "cxcywh") / scale

    def regression_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The box term before lambda: MSE over the 4 numbers and the batch (002), the per-image Euclidean norm
        averaged over the batch (003), or smooth L1 (beta 1/9 in the normalised units, Fast R-CNN's 1 pixel at 9)."""
        if self.box_loss == "mse":
            return F.mse_loss(pred, target)
        if self.box_loss == "l2":
            return torch.linalg.vector_norm(pred - target, dim=1).mean()
        return F.smooth_l1_loss(pred, target, beta=1.0 / 9)

    def postprocess(self, logits: Tensor, boxes: Tensor, size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """One detection per image: the box in pixels (xyxy, clipped), the top class's probability and label."""
        height, width = size
        scale = boxes.new_tensor([width, height, width, height])
        xyxy = clip_boxes_to_image(box_convert(boxes * scale, "cxcywh", "xyxy"), size)
        scores, classes = logits.softmax(dim=1).max(dim=1)
        return [{"boxes": xyxy[i:i + 1], "scores": scores[i:i + 1], "labels": classes[i:i + 1] + 1}
                for i in range(len(logits))]


@register_model(task="detection", input_size=(3, 224, 224), num_params=61_117_228,
                params_source="hand-derived: alexnet's 61,100,840 (torchvision) + the box head 4,096 x 4 + 4")
def localiser_alexnet(**kw) -> Localiser:
    """The notes' Fig. 4.6 localiser: AlexNet's convolutions, its 6x6 pool and fc6-fc7 (4096, 4096, dropout 0.5),
    then a 1000-way class head and a 4-number box head. Notes: 002 §4.3.1."""
    kw = {"num_classes": 1000, "in_chans": 3, "backbone": "alexnet", "pool_size": 6, "hidden": (4096, 4096),
          "dropout": 0.5, **kw}
    model = Localiser(**kw)
    model.default_input_shape = (kw["in_chans"], 224, 224)
    return model


@register_model(task="detection", input_size=(1, 64, 64), num_params=326_574,
                params_source="hand-derived: vgg_tiny_fashion's convolutions and BN 60,576 + dense 1,024 x 256 + "
                              "256 + class head 256 x 10 + 10 + box head 256 x 4 + 4")
def localiser_tiny(**kw) -> Localiser:
    """A CPU-sized localiser for one MNIST digit on a 64x64 canvas: the tiny VGG's convolutions (16 | 32 | 64, 64,
    BN), a 4x4 pool and one dense layer of 256 before the heads. Notes: 002 §4.3.1, 003 §5.

    Parameters: convolutions 1x3x3x16 + 16, 16x3x3x32 + 32, 32x3x3x64 + 64, 64x3x3x64 + 64 = 60,224, BN 2 x (16 +
    32 + 64 + 64) = 352 (60,576 together); dense 64 x 4 x 4 -> 256: 262,400; heads 2,570 + 1,028; total 326,574.
    """
    kw = {"num_classes": 10, "in_chans": 1, "backbone": "vgg_tiny_fashion", "pool_size": 4, "hidden": (256,), **kw}
    model = Localiser(**kw)
    model.default_input_shape = (kw["in_chans"], 64, 64)
    return model
