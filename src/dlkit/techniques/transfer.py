"""Transfer learning, fine-tuning and convolutionalisation of a trained classifier (Notes: 003 §3.3.2, 000 §3.6,
000 §3.11.1, 003 §4.1).

A CNN is a general feature extractor followed by a task-specific classifier. Transfer learning keeps the
pretrained features frozen and trains only a new head (`freeze`, `replace_head`); fine-tuning trains everything
(or part of it) from the pretrained weights with lower learning rates (`unfreeze`, `param_groups`). Parameters
are selected by shell patterns (fnmatch) on their names or on any of their module prefixes, so "features" selects
every parameter below `features` and "layer[12]" those of layer1 and layer2.

Few-shot transfer needs a task split by class and a handful of labelled samples per class (`select_classes`,
`few_shot_indices`); a frozen pretrained network is also a feature extractor for a linear classifier
(`lite0_features`, `linear_probe_accuracy`: the linear probe).

Convolutionalisation turns the dense layers of a classifier into convolutions so that it takes images of any
size and returns a map of class scores (`convolutionalize`, `fully_convolutional`). The notes (000 §3.11.1) say
1x1 kernels: that is exact only for a dense layer on a 1x1 map (after global pooling, or the later dense layers);
a dense layer on a flattened C x H x W map becomes a convolution with an H x W kernel, as implemented here.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..models.backbone import Backbone, layer_like
from ..models.backbone import flatten as backbone_flatten


def _as_patterns(patterns: str | Iterable[str]) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


def matches(name: str, patterns: str | Iterable[str]) -> bool:
    """Whether the parameter `name` or one of its module prefixes ("a", "a.b" of "a.b.weight") fits a pattern."""
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(p, pat) for pat in _as_patterns(patterns) for p in prefixes)


def _set_trainable(model: nn.Module, patterns, flag: bool) -> list[str]:
    patterns = _as_patterns(patterns)
    names = [n for n, _ in model.named_parameters()]
    unused = [pat for pat in patterns if not any(matches(n, pat) for n in names)]
    if unused:
        raise ConfigError(f"patterns {unused} match no parameter of {type(model).__name__}; names look like "
                          f"{names[:4]} (patterns match a name or a module prefix such as 'features')")
    chosen = []
    for name, p in model.named_parameters():
        if matches(name, patterns):
            p.requires_grad_(flag)
            chosen.append(name)
    return chosen


def freeze(model: nn.Module, patterns: str | Iterable[str] = "*") -> list[str]:
    """Stop training the matching parameters (requires_grad = False); returns their names. Notes: 000 §3.6.

    Transfer learning: `freeze(model); unfreeze(model, "classifier")` trains the head only. Batch-norm running
    statistics still update in train mode; put those modules in eval mode to keep them fixed too.
    """
    return _set_trainable(model, patterns, False)


def unfreeze(model: nn.Module, patterns: str | Iterable[str] = "*") -> list[str]:
    """Train the matching parameters again (requires_grad = True); returns their names. Notes: 003 §3.3.2."""
    return _set_trainable(model, patterns, True)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameter entries, sum of numel."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _last_layer(module: nn.Module, owner: nn.Module, name: str):
    """(owner, attribute, layer) of the last Linear/Conv2d of `module` (a layer itself or nested Sequentials)."""
    if isinstance(module, nn.Linear | nn.Conv2d):
        return owner, name, module
    if isinstance(module, nn.Sequential):
        for key, child in reversed(list(module.named_children())):
            found = _last_layer(child, module, key)
            if found is not None:
                return found
    return None


def replace_head(model: nn.Module, num_classes: int, attr: str | None = None) -> nn.Module:
    """Replace the final classification layer by a new one with `num_classes` outputs; returns the new layer.

    Notes: 003 §3.3.2 (a new task-specific classifier on pretrained features). A dlkit classifier follows the
    backbone contract, so this is `model.reset_classifier(num_classes)` (the new layer keeps its input size,
    kernel and bias setting, gets PyTorch's default initialisation, on the old layer's device and dtype) and the
    new layer is `model.get_classifier()`. Any other module names its head: `attr` is the attribute holding the
    last Linear or Conv2d layer (or a Sequential ending in one), replaced the same way.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an integer >= 1; got {num_classes!r}")
    if attr is None:
        if not isinstance(model, Backbone):
            raise ConfigError(f"replace_head found no Linear/Conv2d head to replace: {type(model).__name__} does "
                              f"not follow the backbone contract (reset_classifier); pass attr= naming its head")
        model.reset_classifier(num_classes)
        return model.get_classifier()
    module = getattr(model, attr, None)
    found = _last_layer(module, model, attr) if isinstance(module, nn.Module) else None
    if found is None:
        raise ConfigError(f"replace_head found no Linear/Conv2d head in {type(model).__name__}.{attr}; expected "
                          f"attr to name a Linear or Conv2d layer or a Sequential ending in one")
    owner, key, old = found
    new = layer_like(old, num_classes)
    setattr(owner, key, new)
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    return new


def param_groups(model: nn.Module, rules: Mapping[str, float | Mapping], default_lr: float | None = None,
                 trainable_only: bool = True) -> list[dict]:
    """Optimizer parameter groups with their own learning rates: `{pattern: lr or {option: value}}`.

    Notes: 003 §3.3.2 ("lower learning rates are used in fine tuning"). Each parameter joins the group of the
    first pattern it matches (see `matches`); the rest form a last group with `default_lr` (or the optimizer's
    lr when None). Frozen parameters are left out unless `trainable_only=False`. Each group carries its pattern
    under "name". Example: `SGD(param_groups(net, {"features": 1e-4}, default_lr=1e-2))`.
    """
    buckets: dict[str, list] = {pat: [] for pat in rules}
    rest = []
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        pat = next((pat for pat in rules if matches(name, pat)), None)
        (buckets[pat] if pat is not None else rest).append(p)
    empty = [pat for pat, ps in buckets.items() if not ps]
    if empty:
        raise ConfigError(f"param_groups patterns {empty} match no {'trainable ' if trainable_only else ''}"
                          f"parameter (or an earlier pattern took them all); names look like "
                          f"{[n for n, _ in model.named_parameters()][:4]}")
    groups = []
    for pat, ps in buckets.items():
        opts = dict(rules[pat]) if isinstance(rules[pat], Mapping) else {"lr": float(rules[pat])}
        groups.append({"params": ps, "name": pat, **opts})
    if rest:
        groups.append({"params": rest, "name": "default", **({} if default_lr is None else {"lr": default_lr})})
    return groups


def convolutionalize(linear: nn.Linear, in_chans: int | None = None, height: int = 1, width: int = 1) -> nn.Conv2d:
    """The convolution equal to a dense layer on a flattened C x H x W map: kernel H x W, weight W.view(out, C, H, W).

    Notes: 000 §3.11.1, 003 §4.1. y_o = b_o + sum_{c,i,j} W[o, c H W + i W + j] x[c, i, j] is the convolution
    with kernel K[o, c, i, j] = W[o, c H W + i W + j] at one position; on a larger map it slides, giving the
    dense output for every H x W window. With the default H = W = 1 it is the notes' 1x1 convolution (exact for
    a dense layer on a 1x1 map). The notes' "always 1x1" is only right in that case.
    """
    if not isinstance(linear, nn.Linear):
        raise ConfigError(f"convolutionalize expects an nn.Linear; got {type(linear).__name__}")
    c = linear.in_features // (height * width) if in_chans is None else in_chans
    if c * height * width != linear.in_features:
        raise ConfigError(f"the dense layer has {linear.in_features} inputs, not C x H x W = {c} x {height} x "
                          f"{width} = {c * height * width}; pass the shape of the map it was flattened from")
    conv = nn.Conv2d(c, linear.out_features, (height, width), bias=linear.bias is not None,
                     device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, c, height, width))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    conv.requires_grad_(linear.weight.requires_grad)
    return conv


def _chain(model: nn.Module) -> list[nn.Module]:
    def flat(m):
        return [leaf for child in m for leaf in flat(child)] if type(m) is nn.Sequential else [m]

    if isinstance(model, nn.Sequential):
        return flat(model)
    if isinstance(model, Backbone):  # forward = its feature path, its head path, its classifier (VGG, AlexNet...)
        steps = [s for _, s in model.feature_path()] + list(model.head_path()) + [model.get_classifier()]
        steps = [nn.Flatten() if s is backbone_flatten else s for s in steps]
        if all(isinstance(s, nn.Module) for s in steps):
            return [leaf for s in steps for leaf in flat(s)]
    if isinstance(getattr(model, "features", None), nn.Module) and isinstance(getattr(model, "classifier", None),
                                                                              nn.Module):
        return flat(model.features) + flat(model.classifier)
    raise ConfigError(f"fully_convolutional needs an nn.Sequential or a model computing classifier(features(x)); "
                      f"{type(model).__name__} is neither: wrap its layers in an nn.Sequential")


def _convert(m: nn.Module, shape: torch.Size, pending: tuple | None):
    """The fully convolutional replacement of one layer given its input shape at the native size."""
    if isinstance(m, nn.Flatten):
        if len(shape) != 4 or m.start_dim != 1:
            raise ConfigError(f"fully_convolutional handles Flatten(start_dim=1) of [N, C, H, W] maps; got input "
                              f"{tuple(shape)} and start_dim {m.start_dim}")
        return nn.Identity(), tuple(shape[1:])
    if isinstance(m, nn.Linear):
        if len(shape) != 2:
            raise ConfigError(f"fully_convolutional handles dense layers on [N, features]; got input {tuple(shape)}")
        return convolutionalize(m, *(pending or ())), None
    if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and len(shape) == 4:
        out = m(torch.zeros(shape, device="meta")).shape
        if out == shape:  # identity at the native size (VGG's 7x7 pool): dropped so larger inputs give larger maps
            return nn.Identity(), pending
    if isinstance(m, nn.Softmax | nn.LogSoftmax) and len(shape) == 2 and m.dim in (1, -1):
        return type(m)(dim=1), pending
    if isinstance(m, nn.BatchNorm1d) and len(shape) == 2:
        bn = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        bn.load_state_dict(m.state_dict())
        bn.to(_first_tensor(m).device)
        return bn, pending
    return copy.deepcopy(m), pending


def _first_tensor(m: nn.Module) -> torch.Tensor:
    return next(iter(list(m.parameters()) + list(m.buffers())), torch.zeros(()))


@torch.no_grad()
def fully_convolutional(model: nn.Module, input_shape: tuple[int, int, int] | None = None,
                        atol: float = 1e-4) -> nn.Sequential:
    """Convolutionalise a classifier: an equivalent nn.Sequential of convolutions (Notes: 000 §3.11.1, 003 §4.1).

    `model` is an nn.Sequential or computes classifier(features(x)). Layers are traced on `input_shape`
    (default `model.default_input_shape`): Flatten becomes the identity, the first dense layer after it a
    convolution with the flattened map's H x W kernel, later dense layers 1x1 convolutions, softmax acts on
    channels, adaptive pools that are the identity at the native size are dropped. On the native size the result
    returns the original scores as [N, K, 1, 1] (checked here; ConfigError if not); on a larger input a map of
    class scores, one per window. The original model is not changed.
    """
    shape = input_shape or getattr(model, "default_input_shape", None)
    if shape is None:
        raise ConfigError(f"fully_convolutional needs input_shape=(C, H, W): {type(model).__name__} has no "
                          f"default_input_shape")
    chain = _chain(model)
    ref = _first_tensor(model)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0)).to(ref.device, ref.dtype)
    was_training = model.training
    model.eval()
    try:
        expected, h, shapes = model(x), x, []
        try:
            for m in chain:
                shapes.append(h.shape)
                h = m(h)
        except RuntimeError:
            h = None
        if h is None or h.shape != expected.shape or not torch.allclose(h, expected, atol=atol):
            raise ConfigError(f"{type(model).__name__}.forward is not the chain of its layers (features then "
                              f"classifier); wrap the layers it applies in an nn.Sequential")
        layers, pending = [], None
        for m, s in zip(chain, shapes):
            new, pending = _convert(m, s, pending)
            layers.append(new)
        fcn = nn.Sequential(*layers).eval()
        out = fcn(x)
        if out.shape[-2:] != (1, 1) or not torch.allclose(out.flatten(1), expected.flatten(1), atol=atol):
            raise ConfigError(f"the convolutionalised {type(model).__name__} does not reproduce its scores on "
                              f"{tuple(shape)}: a layer works differently on [N, C, 1, 1] maps than on vectors")
    finally:
        model.train(was_training)
    return fcn.train(was_training)


def is_fully_convolutional(model: nn.Module) -> bool:
    """Whether the model has no dense (nn.Linear) layer, so it accepts any input size (Notes: 003 §3.2.5)."""
    return not any(isinstance(m, nn.Linear) for m in model.modules())


# -- few-shot data and linear probes ---------------------------------------------------------------------------------

def select_classes(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples whose label is in `classes`, relabelled 0..len(classes)-1 in the order given (a new task made of
    some classes of a data set, e.g. digits 5-9 of MNIST). Notes: 000 §3.6."""
    if len(set(classes)) != len(classes) or any(c < 0 for c in classes):
        raise ConfigError(f"classes must be distinct non-negative labels; got {list(classes)}")
    lookup = torch.full((max(int(y.max()), *classes) + 1,), -1, dtype=torch.long)
    lookup[torch.as_tensor(list(classes))] = torch.arange(len(classes))
    new = lookup[y]
    keep = new >= 0
    return x[keep], new[keep]


def few_shot_indices(y: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of `per_class` samples of every label in `y`, drawn without replacement with a fixed seed (sorted).
    Notes: 000 §3.6 (transfer learning when the new task has few labelled samples).

    Raises ConfigError when a class has fewer samples than asked for."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < per_class:
            raise ConfigError(f"few_shot_indices: class {c} has {len(idx)} samples, fewer than per_class="
                              f"{per_class}; lower per_class")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


@torch.no_grad()
def lite0_features(model: nn.Module, images: torch.Tensor, size: int, batch_size: int = 64) -> list[torch.Tensor]:
    """Frozen EfficientNet-Lite0 features of uint8 grey images [N, H, W] or [N, 1, H, W]: the globally average-
    pooled map of every stage after the stem (`feature_info`: the seven MBConv stages and the 1x1 head), a list
    of [N, C_s] (the last is the 1280-d penultimate feature). Each batch is scaled to [0, 1], resized to
    size x size (bilinear), repeated to 3 channels and normalised with `lite0_normalize`. Notes: 003 §3.3.2 (a
    pretrained CNN as feature extractor)."""
    from ..data.transforms import Resize
    from ..models.classification.pretrained import lite0_normalize

    if not isinstance(model, Backbone):
        raise ConfigError(f"lite0_features needs a classification backbone (feature_info); got {type(model).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    resize = Resize((size, size))
    stages = range(1, len(model.feature_info))
    was = model.training
    model.eval()
    outputs: list[list[torch.Tensor]] = []
    for xb in images.split(batch_size):
        x = resize(xb.float().div(255.0)).clamp_(0.0, 1.0).expand(-1, 3, -1, -1)
        maps = model.feature_maps(lite0_normalize(x).contiguous(memory_format=torch.channels_last), stages)
        outputs.append([h.mean((2, 3)) for h in maps])
    model.train(was)
    return [torch.cat(parts) for parts in zip(*outputs)]


def linear_probe_accuracy(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                          cs: Sequence[float] = (0.01, 0.03, 0.1), folds: int = 3, max_iter: int = 1000
                          ) -> tuple[float, float]:
    """(test accuracy, chosen C) of multinomial logistic regression (scikit-learn) on standardised inputs, its L2
    strength 1/C chosen from `cs` by `folds`-fold cross-validated accuracy on the training set only.
    Notes: 003 §3.3.2 (a new linear classifier on frozen features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not cs:
        raise ConfigError("linear_probe_accuracy needs at least one inverse L2 strength C in cs; got none")

    def make(c):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))

    best = list(cs)[0]
    if len(cs) > 1:
        scores = [cross_val_score(make(c), f_train, y_train, cv=folds).mean() for c in cs]
        best = list(cs)[int(np.argmax(scores))]
    clf = make(best).fit(f_train, y_train)
    return float(clf.score(f_test, y_test)), float(best)
