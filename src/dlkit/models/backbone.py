"""One contract for every classification backbone, as timm's (Notes: 003 §3.3.2 "a CNN is a general feature
extractor followed by a task-specific classifier").

A classification network is `forward_head(forward_features(x))`:

- `forward_features(x)`: the last feature map before pooling [N, C, H/s, W/s] (ViT: the token sequence after the
  final norm, [N, 1 + patches, D]);
- `forward_head(x, pre_logits=False)`: global pooling (and dropout, and any hidden dense layers) then the
  classifier; `pre_logits=True` stops before the classifier and returns the pooled vector it reads;
- `get_classifier()` is that last layer, `reset_classifier(num_classes)` replaces it by a new one (num_classes=0:
  `nn.Identity`, so the network returns the pooled features);
- `feature_info` lists every stage: its output channels `num_chs`, its total stride `reduction` and the name of the
  `module` whose output it is; `feature_maps(x, indices)` computes the maps of the chosen stages, and
  `FeatureExtractor` (what `create_model(name, features_only=True, out_indices=...)` returns) is a module whose
  forward gives them, for FCN / U-Net / DeepLab decoders, detectors and CAM.

A family subclasses `Backbone` and says which modules compute the features (`feature_path`), which pool and
flatten before the classifier (`head_path`), the dotted name of the classifier (`classifier_name`) and which
top-level children only the head uses (`head_modules`, left out of a `FeatureExtractor`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError


def flatten(x: Tensor) -> Tensor:
    """[N, C, 1, 1] (or any [N, ...]) -> [N, C ...], torch.flatten(x, 1): the step between pooling and a dense head."""
    return torch.flatten(x, 1)


def named_steps(prefix: str, container: nn.Module, stop: int | None = None) -> list[tuple[str, nn.Module]]:
    """(f"{prefix}.{name}", child) for the first `stop` (default all) children of a container, in order: a
    Sequential's steps, named as in the state dict."""
    return [(f"{prefix}.{name}", child) for name, child in list(container.named_children())[:stop]]


class FeatureInfo(list):
    """The stages of a backbone in forward order: dicts with `num_chs`, `reduction` (total stride) and `module`
    (the dotted name of the module whose output the stage's map is), as timm's `feature_info`."""

    @staticmethod
    def entry(module: str, num_chs: int, reduction: int) -> dict:
        """One stage's record."""
        return {"num_chs": int(num_chs), "reduction": int(reduction), "module": module}

    def channels(self) -> list[int]:
        """Channels of every stage."""
        return [e["num_chs"] for e in self]

    def reductions(self) -> list[int]:
        """Total stride of every stage."""
        return [e["reduction"] for e in self]

    def module_names(self) -> list[str]:
        """Name of the module that outputs every stage's map."""
        return [e["module"] for e in self]

    def check_indices(self, indices: Iterable[int] | None, owner: str = "the backbone") -> tuple[int, ...]:
        """`indices` (negative ones count from the end; None: every stage) as sorted non-negative positions."""
        n = len(self)
        if indices is None:
            return tuple(range(n))
        if isinstance(indices, int):
            indices = (indices,)
        given = tuple(indices)
        bad = [i for i in given if not isinstance(i, int) or not -n <= i < n]
        stages = ", ".join(f"{i}: {e['module']} ({e['num_chs']} ch, stride {e['reduction']})"
                           for i, e in enumerate(self))
        if not given or bad:
            raise ConfigError(f"out_indices {list(given)} do not name stages of {owner}: expected indices in "
                              f"0..{n - 1} (or -{n}..-1) of its {n} stages [{stages}]")
        normalised = sorted({i % n for i in given})
        if len(normalised) != len(given):
            raise ConfigError(f"out_indices {list(given)} name a stage twice; each stage of {owner} once, in "
                              f"0..{n - 1} (or -{n}..-1)")
        return tuple(normalised)

    def last_at(self, reductions: Iterable[int]) -> tuple[int, ...]:
        """Index of the last stage at each total stride in `reductions` (e.g. (8, 16, 32): FCN's pool3-pool5)."""
        have = self.reductions()
        missing = [r for r in reductions if r not in have]
        if missing:
            raise ConfigError(f"this backbone has no stage at stride {missing}; its stages have strides {have}")
        return tuple(max(i for i, r in enumerate(have) if r == want) for want in reductions)

    def select(self, indices: Sequence[int]) -> FeatureInfo:
        """The records of the stages at `indices` (already checked)."""
        return FeatureInfo(self[i] for i in indices)


def _layer_spec(layer: nn.Module) -> dict | None:
    """How to build a layer like `layer` with other outputs (None unless it is a Linear or Conv2d)."""
    if isinstance(layer, nn.Conv2d):
        return {"kind": "conv", "in": layer.in_channels, "bias": layer.bias is not None,
                "conv": dict(kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding,
                             dilation=layer.dilation)}
    if isinstance(layer, nn.Linear):
        return {"kind": "linear", "in": layer.in_features, "bias": layer.bias is not None}
    return None


def _build_layer(spec: dict, out: int, like: Tensor | None) -> nn.Module:
    kw = {"device": like.device, "dtype": like.dtype} if like is not None else {}
    if spec["kind"] == "conv":
        return nn.Conv2d(spec["in"], out, **spec["conv"], bias=spec["bias"], **kw)
    return nn.Linear(spec["in"], out, bias=spec["bias"], **kw)


def layer_like(layer: nn.Linear | nn.Conv2d, out: int) -> nn.Module:
    """A new layer like `layer` (Linear, or Conv2d with its kernel, stride, padding, dilation) with `out` outputs:
    same input size and bias setting, PyTorch's default initialisation, on its device and dtype."""
    spec = _layer_spec(layer)
    if spec is None:
        raise ConfigError(f"layer_like copies a Linear or Conv2d layer; got {type(layer).__name__}")
    return _build_layer(spec, out, layer.weight)


class Backbone(nn.Module):
    """Base class of the classification families: the contract of the module docstring, shared.

    Notes: 003 §3.3.2. Subclasses define `feature_info`, `feature_path()`, `head_path()`, `classifier_name` and
    `head_modules`, and may override `check_input` (the shape test and its message), `stage_maps` (ViT) and
    `forward` (GoogLeNet's auxiliary heads in training). `forward(x)` is `forward_head(forward_features(x))`.
    """

    classifier_name: str = "fc"
    head_modules: tuple[str, ...] = ()
    feature_info: FeatureInfo

    def check_input(self, x: Tensor) -> None:
        """Raise ConfigError when `x` is not an input this network takes (default: accept anything)."""

    def feature_path(self) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
        """(dotted name, module) of every step of `forward_features`, in order; stage maps are outputs of some."""
        raise NotImplementedError

    def head_path(self) -> list[Callable[[Tensor], Tensor]]:
        """The steps of `forward_head` before the classifier: pooling, flattening, dropout, hidden dense layers."""
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map before pooling (the last stage's map)."""
        self.check_input(x)
        for _, step in self.feature_path():
            x = step(x)
        return x

    def stage_maps(self, x: Tensor) -> Iterator[Tensor]:
        """The map of every stage of `feature_info`, in order, computed lazily (stop iterating to stop early)."""
        self.check_input(x)
        taps = set(self.feature_info.module_names())
        for name, step in self.feature_path():
            x = step(x)
            if name in taps:
                yield x

    def feature_maps(self, x: Tensor, indices: Iterable[int] | None = None) -> list[Tensor]:
        """Maps of the stages at `indices` (default all), computing no stage after the last one asked for."""
        want = self.feature_info.check_indices(indices, type(self).__name__)
        out: list[Tensor] = []
        for i, fmap in enumerate(self.stage_maps(x)):
            if i in want:
                out.append(fmap)
            if i == want[-1]:
                break
        return out

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the feature map (and dropout), then classify; `pre_logits=True` returns the classifier's input."""
        for step in self.head_path():
            x = step(x)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits: forward_head(forward_features(x))."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The last layer of the head: the one `reset_classifier` replaces."""
        return self.get_submodule(self.classifier_name)

    @property
    def head_hidden_size(self) -> int:
        """Width of the pooled vector the classifier reads (what `forward_head(x, pre_logits=True)` returns)."""
        spec = self._classifier_layout()
        if spec is None:
            raise ConfigError(f"{type(self).__name__}'s classifier is a {type(self.get_classifier()).__name__}, "
                              f"not a Linear or Conv2d, and its width is unknown")
        return spec["in"]

    def _classifier_layout(self) -> dict | None:
        """The classifier's layout: the current layer's, else the one replaced by an Identity, else a dense layer on
        `num_features` (a network built with num_classes=0)."""
        spec = _layer_spec(self.get_classifier()) or getattr(self, "_classifier_spec", None)
        if spec is None and isinstance(getattr(self, "num_features", None), int):
            spec = {"kind": "linear", "in": self.num_features, "bias": True}
        return spec

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a new layer with `num_classes` outputs (PyTorch's default initialisation, on
        the old layer's device and dtype); 0 makes it `nn.Identity`, so the network returns pooled features.
        Notes: 003 §3.3.2 (a new task-specific classifier on pretrained features)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"num_classes must be an integer >= 0 (0: no classifier, the pooled features); "
                              f"got {num_classes!r}")
        old = self.get_classifier()
        spec = self._classifier_layout()
        if spec is None and num_classes:
            raise ConfigError(f"cannot size a new classifier for {type(self).__name__}: its classifier is a "
                              f"{type(old).__name__} and it never had a Linear or Conv2d one")
        self._classifier_spec = spec  # to rebuild the layer after a reset to 0 classes
        like = next(iter(old.parameters()), None)
        if like is None:
            like = next(iter(self.parameters()), None)
        new = nn.Identity() if num_classes == 0 else _build_layer(spec, num_classes, like)
        parent, _, leaf = self.classifier_name.rpartition(".")
        setattr(self.get_submodule(parent) if parent else self, leaf, new)
        self.num_classes = num_classes


class FeatureExtractor(nn.Module):
    """The feature maps of chosen stages of a `Backbone` (timm's `features_only`): forward(x) -> list of maps.

    Notes: 003 §3.3.2, 002 §5.1.3 (a classifier's stages as the encoder of a segmentation network). The backbone's
    classifier is removed (`reset_classifier(0)`) and its feature modules become children of the extractor under
    their own names, so its state dict is the backbone's without the head (`stem.*`, `stages.*`, ...): weights of
    the classifier load into it with `strict=False`, and it computes exactly the maps of `Backbone.feature_maps`.
    `feature_info` describes the chosen stages. `frozen_bn=True` keeps every BatchNorm2d in eval mode (running
    statistics fixed, scale and shift still trained) even while the extractor trains.
    """

    def __init__(self, model: Backbone, out_indices: Iterable[int] | None = None, frozen_bn: bool = False,
                 name: str | None = None):
        super().__init__()
        if not isinstance(model, Backbone):
            raise ConfigError(f"a feature extractor needs a classification backbone (forward_features, "
                              f"feature_info); got {type(model).__name__}")
        self.out_indices = model.feature_info.check_indices(out_indices, name or type(model).__name__)
        self.frozen_bn = frozen_bn
        model.reset_classifier(0)
        for child_name, child in model.named_children():
            if child_name not in model.head_modules:
                self.add_module(child_name, child)
        for pname, p in model.named_parameters(recurse=False):
            self.register_parameter(pname, p)
        for bname, b in model.named_buffers(recurse=False):
            self.register_buffer(bname, b, persistent=bname not in model._non_persistent_buffers_set)
        object.__setattr__(self, "_model", model)  # computes the maps; not a child (its head is left out)
        if hasattr(model, "default_input_shape"):
            self.default_input_shape = model.default_input_shape

    @property
    def model(self) -> Backbone:
        """The backbone whose stages this extracts (its head removed)."""
        return self._model

    @property
    def feature_info(self) -> FeatureInfo:
        """Records of the chosen stages (channels, stride, module), current (a dilated ResNet changes strides)."""
        return self._model.feature_info.select(self.out_indices)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The maps of the chosen stages, shallowest first."""
        return self._model.feature_maps(x, self.out_indices)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Train or eval mode (the backbone follows); with `frozen_bn` the batch norms stay in eval mode."""
        super().train(mode)
        self._model.training = mode
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # children are shared with the backbone; its own parameters and buffers (ViT's cls_token) follow ours
        self._model._parameters.update({k: v for k, v in self._parameters.items() if k in self._model._parameters})
        self._model._buffers.update({k: v for k, v in self._buffers.items() if k in self._model._buffers})
        return self
