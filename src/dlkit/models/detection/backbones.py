"""The backbone of a detector: a classification network read through the feature contract at chosen strides
(Notes: 002 §4.3.3: detectors reuse classifiers as feature extractors)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from ...errors import ConfigError
from ...nn.frozen_batchnorm import freeze_batchnorm
from ...registry import create_model
from ..backbone import Backbone, FeatureExtractor, FeatureInfo


def detector_backbone(backbone, in_chans: int, out_indices, pretrained, frozen_bn: bool,
                      backbone_kwargs: Mapping | None, strides: Sequence[int] = (8, 16, 32)) -> nn.Module:
    """The backbone's maps at `strides` (or `out_indices`) as a module with `feature_info`: a registered
    classifier's name or module through the feature contract (batch norms frozen with `frozen_bn`), or a feature
    extractor. Notes: 002 §4.3.3."""
    if isinstance(backbone, str):
        model = create_model(backbone, pretrained=pretrained, in_chans=in_chans, **dict(backbone_kwargs or {}))
    elif isinstance(backbone, nn.Module):
        model = backbone
    else:
        raise ConfigError(f"backbone must be a registered classifier's name or a module; got {type(backbone).__name__}")
    if frozen_bn:
        freeze_batchnorm(model)
    if isinstance(model, Backbone):
        indices = out_indices if out_indices is not None else model.feature_info.last_at(tuple(strides))
        return FeatureExtractor(model, indices, name=backbone if isinstance(backbone, str) else None)
    if not isinstance(getattr(model, "feature_info", None), FeatureInfo):
        raise ConfigError(f"a detector's backbone gives feature maps with `feature_info` (a classifier through "
                          f"dlkit's feature contract, or create_model(name, features_only=True)); got "
                          f"{type(model).__name__}")
    return model
