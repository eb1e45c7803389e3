"""External region proposals for R-CNN and Fast R-CNN: a region proposal algorithm run on every image (selective
search by default), its boxes cached per image (Notes: 002 §4.3.2 "region proposals should have a high recall").

A proposer is any callable `proposer(image [C, H, W] float in [0, 1]) -> [K, 4]` float boxes xyxy in pixels, best
first (`dlkit.ops.selective_search.SelectiveSearch` is one). Its boxes are clipped to the image, boxes without area
are dropped, the first `max_proposals` kept, and an image without any box gets the whole image as its one region
(selective search's last merge is the whole image anyway). Proposals are the expensive step of both detectors, so
each image's boxes are kept in a bounded least-recently-used cache keyed by a hash of the image's bytes: a training
image runs the proposer once per run, not once per epoch. `ProposalDetector` is what the two detectors share around
it: the proposals, the input normalisation and the forward through `RoIHeads`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.boxes import clip_boxes_to_image
from .images import IMAGENET_MEAN, IMAGENET_STD, batch_images, channel_stats, normalize_and_pad, weights_dtype
from .targets import check_targets


class ExternalProposals:
    """Per-image proposals of `proposer` (None: selective search in `mode` with the further `options` of
    `SelectiveSearch`, e.g. {"min_size": 10}, imported when first used), at most `max_proposals` per image, cached
    for `cache_size` images (module docstring). Notes: 002 §4.3.2."""

    def __init__(self, proposer: Callable[[Tensor], Tensor] | None = None, max_proposals: int = 2000,
                 mode: str = "fast", cache_size: int = 4096, options: Mapping | None = None):
        if proposer is not None and not callable(proposer):
            raise ConfigError(f"proposer must be a callable image [C, H, W] -> boxes [K, 4] (e.g. "
                              f"dlkit.ops.selective_search.SelectiveSearch()); got {type(proposer).__name__}")
        if max_proposals < 1 or cache_size < 0:
            raise ConfigError(f"max_proposals must be >= 1 and cache_size >= 0; got {max_proposals}, {cache_size}")
        if proposer is not None and options:
            raise ConfigError("proposal options configure the default selective search; this proposer is built")
        self.proposer, self.max_proposals, self.mode, self.cache_size = proposer, max_proposals, mode, cache_size
        self.options = dict(options or {})
        self.calls = 0  # how many times the proposer ran (the cache's misses)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

    def _proposer(self) -> Callable[[Tensor], Tensor]:
        if self.proposer is None:
            from ...ops.selective_search import SelectiveSearch

            self.proposer = SelectiveSearch(mode=self.mode, max_proposals=self.max_proposals, **self.options)
        return self.proposer

    @staticmethod
    def key(image: Tensor) -> str:
        """A hash of the image's shape, dtype and bytes."""
        data = image.detach().cpu().contiguous()
        digest = hashlib.blake2b(f"{tuple(data.shape)}{data.dtype}".encode(), digest_size=16)
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        return digest.hexdigest()

    def propose(self, image: Tensor) -> Tensor:
        """The proposals [K, 4] (K >= 1) of one image [C, H, W], from the cache when it holds them."""
        if image.is_meta:
            raise RuntimeError("region proposals need pixel values, which a tensor on the meta device does not "
                               "hold; pass proposals= to the detector")
        key = self.key(image)
        boxes = self._cache.get(key)
        if boxes is not None:
            self._cache.move_to_end(key)
            return boxes.to(image.device)
        h, w = image.shape[-2:]
        got = self._proposer()(image.detach().cpu())
        self.calls += 1
        if not isinstance(got, Tensor) or got.dim() != 2 or got.shape[1] != 4:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise ConfigError(f"the proposer must return boxes [K, 4] xyxy in pixels; got {shape}")
        boxes = clip_boxes_to_image(got.float(), (h, w))
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])][:self.max_proposals]
        if len(boxes) == 0:
            boxes = torch.tensor([[0.0, 0.0, float(w), float(h)]])
        if self.cache_size:
            self._cache[key] = boxes
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return boxes.to(image.device)

    def __call__(self, images: Tensor) -> list[Tensor]:
        """One [K_i, 4] float tensor per image of the batch [B, C, H, W] (in [0, 1])."""
        return [self.propose(image) for image in images]

    def __getstate__(self) -> dict:  # a copy (checkpoint, DDP, deepcopy) starts with an empty cache
        return {**self.__dict__, "_cache": OrderedDict()}


class ProposalDetector(nn.Module):
    """A detector on external proposals (R-CNN, Fast R-CNN): `model(images, targets)` in training returns
    {loss_classifier, loss_box_reg}, `model(images)` in evaluation one {boxes, scores, labels} per image;
    `proposals=` (one [K, 4] tensor per image) skips the proposer. A subclass builds `self.roi_heads` (`RoIHeads`)
    and says in `features` what its regions are cut from (R-CNN: the normalised images; Fast R-CNN: the backbone's
    shared map). `num_classes` counts the object classes (labels 1..C). Notes: 002 §4.3.2."""

    display_name = "the detector"

    def __init__(self, num_classes: int, in_chans: int, proposer: Callable[[Tensor], Tensor] | None,
                 max_proposals: int, proposal_mode: str, proposal_cache: int, proposal_kwargs: Mapping | None,
                 image_mean: Sequence[float] | float | None, image_std: Sequence[float] | float | None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"{self.display_name} num_classes is the number of object classes (labels 1..C, >= 1; "
                              f"the heads add the background); got {num_classes!r}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.proposer = ExternalProposals(proposer, max_proposals, proposal_mode, proposal_cache, proposal_kwargs)
        self.register_buffer("image_mean", channel_stats(image_mean, IMAGENET_MEAN, in_chans, "image_mean"),
                             persistent=False)
        self.register_buffer("image_std", channel_stats(image_std, IMAGENET_STD, in_chans, "image_std"),
                             persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """Images in [0, 1] normalised by the model's mean and std."""
        return normalize_and_pad(images, self.image_mean, self.image_std, 1)

    def features(self, images: Tensor) -> Tensor:
        """The map [B, C, H', W'] the regions are cut from, for images in [0, 1]."""
        raise NotImplementedError

    @torch.no_grad()
    def proposals(self, images) -> list[Tensor]:
        """The region proposals [K_i, 4] xyxy (pixels) of every image in [0, 1], cached per image."""
        return self.proposer(batch_images(images, self.in_chans, self.display_name, weights_dtype(self)))

    def forward(self, images, targets: Sequence[Mapping[str, Tensor]] | None = None,
                proposals: Sequence[Tensor] | None = None):
        images = batch_images(images, self.in_chans, self.display_name, weights_dtype(self))
        if self.training:
            check_targets(targets, len(images), self.num_classes, self.display_name)
        if proposals is None:
            proposals = self.proposals(images)
        elif len(proposals) != len(images):
            raise ConfigError(f"proposals= needs one [K, 4] tensor per image ({len(images)}); got {len(proposals)}")
        sizes = [tuple(images.shape[-2:])] * len(images)
        fmap = self.features(images)
        detections, losses = self.roi_heads([fmap], [p.to(fmap.dtype) for p in proposals], sizes, targets)
        return losses if self.training else detections
