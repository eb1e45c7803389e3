"""Load torchvision state dicts into dlkit models: one key table per family, strict and shape-checked.

dlkit builds every network itself (the curriculum); torchvision's implementations of the same architectures
are the reference its tests compare against (tests/models/test_torchvision_equal.py copies a torchvision
model's weights into the dlkit model and requires equal outputs). The same loader lets a user with a
torchvision checkpoint file on disk use it with a dlkit model, with no download at run time:

    state = load_weights_file("resnet50.pth")  # dlkit.models.weights_file: tensors only, no pickled code runs
    model = create_model("resnet50")
    load_torchvision_state_dict(model, state)

Each family has a table from torchvision's names to dlkit's, built from the dlkit model's own structure
(which blocks exist, whether a block has an expansion or a projection shortcut); no name is guessed at run
time. A table entry maps either a whole module (all of its tensors: weight, bias, BN statistics) or one tensor;
a `Chunks` entry splits one torchvision tensor along dim 0 (ViT's fused Q/K/V projection), a `Reshaped` entry
drops torchvision's leading batch axis of 1 (ViT's position table). Loading is strict: every torchvision key
must have a place, every dlkit tensor must receive exactly one value, and the shapes must agree; otherwise a
one-line `CheckpointError` names the first offending key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError
from ..nn.residual import Bottleneck
from .classification.alexnet import AlexNet
from .classification.efficientnet import EfficientNet
from .classification.googlenet import GoogLeNet
from .classification.mobilenet import MobileNetV2
from .classification.regnet import RegNet
from .classification.resnet import ResNet
from .classification.vgg import VGG
from .classification.vit import VisionTransformer
from .detection.faster_rcnn import FasterRCNN
from .detection.retinanet import RetinaNet
from .detection.ssd import SSD, VGGSSDTrunk
from .segmentation.deeplab import DeepLabV3
from .segmentation.mask_rcnn import MaskRCNN


class Chunks(NamedTuple):
    """One torchvision tensor split into len(keys) equal parts along dim 0, one per dlkit tensor."""

    keys: tuple[str, ...]


class Reshaped(NamedTuple):
    """One torchvision tensor reshaped to the dlkit tensor's shape (same number of elements)."""

    key: str


Target = str | Chunks | Reshaped
Table = dict[str, Target]  # torchvision module path or tensor key -> dlkit module path / tensor key / split


def _conv_bn(table: Table, tv: str, dl: str) -> None:
    """A torchvision (conv, BN) pair at tv.0 / tv.1 onto a dlkit ConvBNAct at dl.0 / dl.1."""
    table[f"{tv}.0"], table[f"{tv}.1"] = f"{dl}.0", f"{dl}.1"


def _identity_table(model: nn.Module) -> Table:
    """Families whose dlkit layout keeps torchvision's module names (AlexNet, VGG): every module onto itself."""
    own = {name.rpartition(".")[0] for name in model.state_dict()}
    return {name: name for name in own}


def _resnet_body(table: Table, stages: nn.Sequential, tv: str = "", dl: str = "") -> None:
    """torchvision's conv1/bn1/layerI.J.{convK,bnK,downsample} onto dlkit's stem.0/stages.(I-1).J.{convK,shortcut}."""
    table[f"{tv}conv1"], table[f"{tv}bn1"] = f"{dl}stem.0.0", f"{dl}stem.0.1"
    for i, stage in enumerate(stages):
        for j, block in enumerate(stage):
            src, dst = f"{tv}layer{i + 1}.{j}.", f"{dl}stages.{i}.{j}."
            for k in range(1, 4 if isinstance(block, Bottleneck) else 3):
                table[f"{src}conv{k}"], table[f"{src}bn{k}"] = f"{dst}conv{k}.0", f"{dst}conv{k}.1"
            if isinstance(block.shortcut, nn.Sequential):
                table[f"{src}downsample.0"], table[f"{src}downsample.1"] = f"{dst}shortcut.0", f"{dst}shortcut.1"


def _resnet_table(model: ResNet) -> Table:
    """ResNet, ResNeXt, Wide ResNet-50-2 (torchvision.models.resnet)."""
    table: Table = {}
    _resnet_body(table, model.stages)
    table["fc"] = "fc"
    return table


def _googlenet_table(model: GoogLeNet) -> Table:
    """GoogLeNet (torchvision.models.googlenet): BasicConv2d .conv/.bn onto ConvBNAct .0/.1, aux1/aux2 onto aux."""
    table: Table = {}
    stem_convs = [name for name, m in model.stem.named_children() if isinstance(m, nn.Sequential)]
    for k, name in enumerate(stem_convs, 1):
        table[f"conv{k}.conv"], table[f"conv{k}.bn"] = f"stem.{name}.0", f"stem.{name}.1"
    branches = {"branch1": "branch1", "branch2.0": "branch3.0", "branch2.1": "branch3.1", "branch3.0": "branch5.0",
                "branch3.1": "branch5.1", "branch4.1": "branch_pool.1"}
    for name in model.blocks:
        if name.startswith("inception"):
            for tv, dl in branches.items():
                table[f"{name}.{tv}.conv"], table[f"{name}.{tv}.bn"] = f"blocks.{name}.{dl}.0", f"blocks.{name}.{dl}.1"
    for k, name in enumerate(model.aux, 1):
        table[f"aux{k}.conv.conv"], table[f"aux{k}.conv.bn"] = f"aux.{name}.conv.0", f"aux.{name}.conv.1"
        table[f"aux{k}.fc1"], table[f"aux{k}.fc2"] = f"aux.{name}.fc1", f"aux.{name}.fc2"
    table["fc"] = "fc"
    return table


def _mobilenet_v2_table(model: MobileNetV2) -> Table:
    """MobileNetV2 (torchvision.models.mobilenetv2): features.0 stem, features.1..N blocks, features.N+1 head."""
    table: Table = {}
    _conv_bn(table, "features.0", "stem")
    blocks = [f"stages.{i}.{j}" for i, stage in enumerate(model.stages) for j in range(len(stage))]
    for k, (dl, block) in enumerate(zip(blocks, (b for s in model.stages for b in s)), 1):
        layers = ([f"{dl}.expand"] if block.expand is not None else []) + [f"{dl}.depthwise"]
        for n, layer in enumerate(layers):
            _conv_bn(table, f"features.{k}.conv.{n}", layer)
        n = len(layers)
        table[f"features.{k}.conv.{n}"], table[f"features.{k}.conv.{n + 1}"] = f"{dl}.project.0", f"{dl}.project.1"
    _conv_bn(table, f"features.{len(blocks) + 1}", "head")
    table["classifier.1"] = "classifier.1"
    return table


def _efficientnet_table(model: EfficientNet) -> Table:
    """EfficientNet B0-B7 (torchvision.models.efficientnet): features.S.J.block.[expand, dw, se, project]."""
    table: Table = {}
    _conv_bn(table, "features.0", "stem")
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            tv, dl, n = f"features.{i + 1}.{j}.block", f"stages.{i}.{j}", 0
            if block.expand is not None:
                _conv_bn(table, f"{tv}.{n}", f"{dl}.expand")
                n += 1
            _conv_bn(table, f"{tv}.{n}", f"{dl}.depthwise")
            n += 1
            if block.se is not None:
                table[f"{tv}.{n}.fc1"], table[f"{tv}.{n}.fc2"] = f"{dl}.se.fc1", f"{dl}.se.fc2"
                n += 1
            _conv_bn(table, f"{tv}.{n}", f"{dl}.project")
    _conv_bn(table, f"features.{len(model.stages) + 1}", "head")
    table["classifier.1"] = "classifier.1"
    return table


def _regnet_table(model: RegNet) -> Table:
    """RegNetX/Y (torchvision.models.regnet): trunk_output.blockI.blockI-J.{proj, f.a, f.b, f.se, f.c}."""
    table: Table = {}
    _conv_bn(table, "stem", "stem")
    for i, stage in enumerate(model.stages, 1):
        for j, block in enumerate(stage):
            tv, dl = f"trunk_output.block{i}.block{i}-{j}", f"stages.{i - 1}.{j}"
            for part in "abc":
                _conv_bn(table, f"{tv}.f.{part}", f"{dl}.{part}")
            if block.se is not None:
                table[f"{tv}.f.se.fc1"], table[f"{tv}.f.se.fc2"] = f"{dl}.se.fc1", f"{dl}.se.fc2"
            if block.shortcut is not None:
                _conv_bn(table, f"{tv}.proj", f"{dl}.shortcut")
    table["fc"] = "fc"
    return table


def _vit_table(model: VisionTransformer) -> Table:
    """ViT (torchvision.models.vision_transformer): fused in_proj split into Q, K, V; pos_embedding [1, L, D]."""
    table: Table = {"class_token": "cls_token", "conv_proj": "patch_embed.proj",
                    "encoder.pos_embedding": Reshaped("pos_embed.weight"), "encoder.ln": "encoder.norm",
                    "heads.head": "head"}
    for i in range(len(model.encoder.layers)):
        tv, dl = f"encoder.layers.encoder_layer_{i}", f"encoder.layers.{i}"
        table[f"{tv}.ln_1"], table[f"{tv}.ln_2"] = f"{dl}.norm1", f"{dl}.norm2"
        for kind in ("weight", "bias"):
            table[f"{tv}.self_attention.in_proj_{kind}"] = Chunks(tuple(f"{dl}.self_attn.{p}_proj.{kind}"
                                                                        for p in "qkv"))
        table[f"{tv}.self_attention.out_proj"] = f"{dl}.self_attn.out_proj"
        table[f"{tv}.mlp.0"], table[f"{tv}.mlp.3"] = f"{dl}.ffn.linear1", f"{dl}.ffn.linear2"
    return table


def _deeplabv3_table(model: DeepLabV3) -> Table:
    """DeepLab v3 (torchvision.models.segmentation.deeplabv3): backbone, classifier = ASPP + head, aux_classifier."""
    table: Table = {}
    _resnet_body(table, model.backbone.stages, "backbone.", "backbone.")
    aspp = "classifier.0"
    for k in range(len(model.aspp.rates) + 1):  # the 1x1 branch and the atrous branches
        _conv_bn(table, f"{aspp}.convs.{k}", f"aspp.branches.{k}")
    pool = len(model.aspp.rates) + 1
    if pool < len(model.aspp.branches):  # the image-pooling branch: (avgpool, conv, bn, relu)
        table[f"{aspp}.convs.{pool}.1"], table[f"{aspp}.convs.{pool}.2"] = (f"aspp.branches.{pool}.conv.0",
                                                                             f"aspp.branches.{pool}.conv.1")
    _conv_bn(table, f"{aspp}.project", "aspp.project.0")
    table["classifier.1"], table["classifier.2"], table["classifier.4"] = "head.0.0", "head.0.1", "head.1"
    if model.aux_head is not None:
        table["aux_classifier.0"], table["aux_classifier.1"] = "aux_head.0.0", "aux_head.0.1"
        table["aux_classifier.4"] = "aux_head.2"
    return table


def _resnet_fpn(model: RetinaNet | FasterRCNN, family: str) -> Table:
    """The backbone of torchvision's ResNet-FPN detectors: backbone.body (the ResNet) and backbone.fpn
    (inner_blocks.i.0 / layer_blocks.i.0 onto fpn.lateral.i / fpn.output.i)."""
    resnet = getattr(model.backbone, "model", None)
    if not isinstance(resnet, ResNet):
        raise ConfigError(f"torchvision's {family} has a ResNet backbone; this one's is "
                          f"{type(resnet or model.backbone).__name__}")
    table: Table = {}
    _resnet_body(table, resnet.stages, "backbone.body.", "backbone.")
    for i in range(len(model.fpn.lateral)):
        table[f"backbone.fpn.inner_blocks.{i}.0"] = f"fpn.lateral.{i}"
        table[f"backbone.fpn.layer_blocks.{i}.0"] = f"fpn.output.{i}"
    return table


def _faster_rcnn_table(model: FasterRCNN) -> Table:
    """Faster R-CNN-ResNet-FPN (torchvision.models.detection.faster_rcnn): the ResNet-FPN backbone, the RPN head
    (conv.0.0 onto conv; cls_logits, bbox_pred) and the box head and predictor (same names)."""
    table = _resnet_fpn(model, "Faster R-CNN")
    table["rpn.head.conv.0.0"] = "rpn.head.conv"
    for name in ("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_head.fc6", "roi_heads.box_head.fc7",
                 "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred"):
        table[name] = name
    return table


def _mask_rcnn_table(model: MaskRCNN) -> Table:
    """Mask R-CNN-ResNet-FPN (torchvision.models.detection.mask_rcnn): Faster R-CNN's table plus the mask head
    (roi_heads.mask_head.i.0, mask_predictor.conv5_mask / mask_fcn_logits onto roi_heads.region_head's)."""
    table = _faster_rcnn_table(model)
    branch = model.roi_heads.region_head
    for i in range(len(branch.mask_head)):
        table[f"roi_heads.mask_head.{i}.0"] = f"roi_heads.region_head.mask_head.{i}.0"
    for name in ("conv5_mask", "mask_fcn_logits"):
        table[f"roi_heads.mask_predictor.{name}"] = f"roi_heads.region_head.mask_predictor.{name}"
    return table


def _retinanet_table(model: RetinaNet) -> Table:
    """RetinaNet-ResNet-FPN (torchvision.models.detection.retinanet): the ResNet-FPN backbone, its extra levels
    (extra_blocks onto fpn.extra), and the heads (conv.i.0, cls_logits / bbox_reg onto the subnets' conv.i.0 /
    out)."""
    table = _resnet_fpn(model, "RetinaNet")
    for name in ("p6", "p7"):
        table[f"backbone.fpn.extra_blocks.{name}"] = f"fpn.extra.{name}"
    heads = (("classification_head", "cls_subnet", "cls_logits"), ("regression_head", "box_subnet", "bbox_reg"))
    for tv, dl, out in heads:
        for i in range(len(getattr(model, dl).conv)):
            table[f"head.{tv}.conv.{i}.0"] = f"{dl}.conv.{i}.0"
        table[f"head.{tv}.{out}"] = f"{dl}.out"
    return table


def _ssd_table(model: SSD) -> Table:
    """SSD300-VGG16 (torchvision.models.detection.ssd): backbone.features (conv1_1-conv4_3) onto the trunk's vgg,
    scale_weight onto l2norm, extra.0 (pool4, conv5, then pool5/fc6/fc7 nested) onto fc7, extra.1-4 onto extras,
    the heads' module_list onto cls_heads / box_heads."""
    if not isinstance(model.backbone, VGGSSDTrunk):
        raise ConfigError(f"torchvision's SSD has the VGG-16 trunk (ssd300_vgg16); this one's backbone is "
                          f"{type(model.backbone).__name__}")
    table: Table = {f"backbone.{name}": f"backbone.vgg.{name}" for name, m in model.backbone.vgg.features.named_modules(
        prefix="features") if isinstance(m, nn.Conv2d)}
    table["backbone.scale_weight"] = "backbone.l2norm.weight"
    for tv, dl in (("1", "1"), ("3", "3"), ("5", "5"), ("7.1", "8"), ("7.3", "10")):
        table[f"backbone.extra.0.{tv}"] = f"backbone.fc7.{dl}"
    for k, block in enumerate(model.extras):
        for name, _ in block.named_children():
            table[f"backbone.extra.{k + 1}.{name}"] = f"extras.{k}.{name}"
    for level in range(len(model.cls_heads)):
        table[f"head.classification_head.module_list.{level}"] = f"cls_heads.{level}"
        table[f"head.regression_head.module_list.{level}"] = f"box_heads.{level}"
    return table


# exact classes only: a subclass (DeepLabV3Plus) has another layout and no torchvision counterpart
TABLES: dict[type, Callable[[nn.Module], Table]] = {
    AlexNet: _identity_table, VGG: _identity_table, GoogLeNet: _googlenet_table, ResNet: _resnet_table,
    MobileNetV2: _mobilenet_v2_table, EfficientNet: _efficientnet_table, RegNet: _regnet_table,
    VisionTransformer: _vit_table, DeepLabV3: _deeplabv3_table, RetinaNet: _retinanet_table,
    SSD: _ssd_table, FasterRCNN: _faster_rcnn_table, MaskRCNN: _mask_rcnn_table,
}


def torchvision_key_table(model: nn.Module) -> Table:
    """The table from torchvision's module/tensor names to `model`'s, for the model's family."""
    fn = TABLES.get(type(model))
    if fn is None:
        families = ", ".join(sorted(cls.__name__ for cls in TABLES))
        raise ConfigError(f"no torchvision key table for {type(model).__name__}; torchvision counterparts exist for "
                          f"{families}")
    return fn(model)


def _lookup(table: Table, key: str) -> tuple[Target, str] | None:
    """The table entry for a torchvision tensor key: the key itself, or its module path plus the tensor name."""
    if key in table:
        return table[key], ""
    module, _, leaf = key.rpartition(".")
    if module in table and isinstance(table[module], str):
        return table[module], leaf
    return None


def convert_torchvision_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's `state_dict` renamed (and split/reshaped) to `model`'s keys; strict and shape-checked.

    Raises a one-line `CheckpointError` for a torchvision key with no place in the model, a shape that
    differs, or a model tensor the checkpoint does not provide.
    """
    name = type(model).__name__
    table = torchvision_key_table(model)
    own = model.state_dict()
    out: dict[str, Tensor] = {}

    def put(dl_key: str, value: Tensor, tv_key: str) -> None:
        if dl_key not in own:
            raise CheckpointError(f"torchvision key '{tv_key}' maps to '{dl_key}', which this {name} does not have; "
                                  f"the checkpoint is for another configuration (depth, width, aux heads): build the "
                                  f"model that matches it")
        if value.shape != own[dl_key].shape:
            raise CheckpointError(f"torchvision key '{tv_key}' has shape {tuple(value.shape)} but {name}'s "
                                  f"'{dl_key}' has {tuple(own[dl_key].shape)}; build the model with the checkpoint's "
                                  f"configuration (num_classes, depth, widths)")
        if dl_key in out:
            raise CheckpointError(f"torchvision key '{tv_key}' maps to '{dl_key}', which another key already filled")
        out[dl_key] = value

    for tv_key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"torchvision key '{tv_key}' holds a {type(value).__name__}, not a tensor; pass "
                                  f"the state dict itself (torch.load(path, weights_only=True))")
        entry = _lookup(table, tv_key)
        if entry is None:
            raise CheckpointError(f"torchvision key '{tv_key}' has no place in {name}; is the checkpoint for another "
                                  f"architecture or configuration? ({len(state_dict)} keys, the model has {len(own)})")
        target, leaf = entry
        if isinstance(target, Chunks):
            if value.shape[0] % len(target.keys):
                raise CheckpointError(f"torchvision key '{tv_key}' of shape {tuple(value.shape)} does not split into "
                                      f"{len(target.keys)} equal parts along dim 0")
            for dl_key, part in zip(target.keys, value.chunk(len(target.keys), 0)):
                put(dl_key, part, tv_key)
        elif isinstance(target, Reshaped):
            want = own.get(target.key)
            put(target.key, value.reshape(want.shape) if want is not None and value.numel() == want.numel() else value,
                tv_key)
        else:
            put(f"{target}.{leaf}" if leaf else target, value, tv_key)
    missing = [k for k in own if k not in out]
    if missing:
        raise CheckpointError(f"the torchvision state dict gives no value for {len(missing)} of {name}'s tensors, e.g. "
                              f"'{missing[0]}'; the checkpoint is for another configuration (aux heads, depth): "
                              f"build the model that matches it")
    return out


@torch.no_grad()
def load_torchvision_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], assign: bool = False) -> nn.Module:
    """Copy a torchvision model's state dict into the equivalent dlkit `model` (in place; returns the model).

    Families: AlexNet, VGG, GoogLeNet, ResNet/ResNeXt/Wide ResNet, MobileNetV2, EfficientNet, RegNet, ViT,
    DeepLab v3, RetinaNet, Faster R-CNN and Mask R-CNN (ResNet-FPN), SSD300 (VGG-16). Read checkpoint files with
    `dlkit.models.weights_file.load_weights_file(path)`.
    `assign=True` makes the model hold the checkpoint's tensors (their dtype and device) instead of copying
    into its own, so a model built on the meta device (`with torch.device("meta"): create_model(...)`) skips
    its random initialisation.
    """
    converted = convert_torchvision_state_dict(model, state_dict)
    model.load_state_dict(converted, strict=True, assign=assign)
    return model
