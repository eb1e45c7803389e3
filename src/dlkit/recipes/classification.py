"""First classification recipes: an MLP on 8x8 digits, LeNet-5 on MNIST, an MLP on Fashion-MNIST
(Notes: 000 §1.2 MLP, §2.1 mini-batch SGD, §3 CNNs; 004 CNN)."""

from __future__ import annotations

import torch

from ..data.digits import load_digits_split
from ..data.loader import TensorLoader
from ..data.mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_fashion_mnist, load_mnist
from ..registry import create_model
from .base import Recipe, Setup, register_recipe
from .tasks.classification import ClassificationTask


def in_memory_splits(x_train, y_train, x_test, y_test, cfg, dist, val_size: int = 0):
    """Train/val/test TensorLoaders over in-memory tensors; `cfg.subset` keeps the first N (smoke mode).

    The validation set is the last `val_size` training samples (held out, never trained on).
    """
    if cfg.get("subset"):
        x_train, y_train = x_train[: cfg.subset], y_train[: cfg.subset]
        x_test, y_test = x_test[: cfg.subset], y_test[: cfg.subset]
        val_size = min(val_size, len(x_train) // 5)
    if val_size:
        x_val, y_val = x_train[-val_size:], y_train[-val_size:]
        x_train, y_train = x_train[:-val_size], y_train[:-val_size]
    else:
        x_val, y_val = x_test, y_test
    eval_bs = max(cfg.batch_size, 1000)
    train = TensorLoader(x_train, y_train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                         drop_last=cfg.get("drop_last", False), rank=dist.rank, world_size=dist.world_size)
    val = TensorLoader(x_val, y_val, batch_size=eval_bs, shuffle=False)
    test = TensorLoader(x_test, y_test, batch_size=eval_bs, shuffle=False)
    return train, val, test


def normalise_images(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images to float32, standardised: (x / 255 - mean) / std."""
    return (images.float().div_(255.0) - mean).div_(std)


def _mlp_digits(cfg, dist):
    x_tr, y_tr, x_te, y_te = load_digits_split(test_size=0.2, seed=0)
    train, val, test = in_memory_splits(x_tr, y_tr, x_te, y_te, cfg, dist)
    model = create_model("mlp_digits", hidden=cfg.hidden, dropout=cfg.dropout)
    task = ClassificationTask(model, cfg, class_names=[str(i) for i in range(10)], image_shape=(1, 8, 8))
    return Setup(task, train, val, test, extra={"parameters": sum(p.numel() for p in model.parameters())})


register_recipe(Recipe(
    name="mlp-digits", task="classification", notes="000 §1.2, §2.1",
    description="MLP 64-128-64-10 on scikit-learn's 8x8 digits (fixed stratified 80/20 split)",
    build=_mlp_digits, metric="test/accuracy", threshold=0.97, budget_s=30,
    defaults=dict(epochs=40, batch_size=32, lr=2e-3, optimizer="adam", weight_decay=1e-4, schedule="cosine",
                  hidden=[128, 64], dropout=0.1, subset=0, log_every=20),
    smoke=dict(epochs=1, subset=256),
))


def _mnist_like(loader, classes, mean, std):
    def build(cfg, dist):
        x_tr, y_tr = loader("train", data_dir=cfg.data_dir)
        x_te, y_te = loader("test", data_dir=cfg.data_dir)
        x_tr, x_te = normalise_images(x_tr, mean, std), normalise_images(x_te, mean, std)
        train, val, test = in_memory_splits(x_tr, y_tr, x_te, y_te, cfg, dist, val_size=cfg.val_size)
        kw = {"hidden": cfg.hidden, "dropout": cfg.dropout} if cfg.model == "mlp" else {}
        model = create_model(cfg.model, **kw)
        task = ClassificationTask(model, cfg, class_names=classes, label_smoothing=cfg.label_smoothing)
        return Setup(task, train, val, test, extra={"parameters": sum(p.numel() for p in model.parameters())})
    return build


register_recipe(Recipe(
    name="lenet5-mnist", task="classification", notes="004 CNN, 000 §3",
    description="LeNet-5 (ReLU, max pooling) on MNIST, 60k train / 10k test, in-memory batches",
    build=_mnist_like(load_mnist, MNIST_CLASSES, 0.1307, 0.3081), metric="test/accuracy", threshold=0.99,
    budget_s=60,
    defaults=dict(model="lenet5", epochs=3, batch_size=256, lr=8e-3, optimizer="adam", weight_decay=0.0,
                  schedule="onecycle", label_smoothing=0.0, val_size=0, subset=0, hidden=[], dropout=0.0,
                  channels_last=True, log_every=50),  # quiet 2 cores: 99.06% after 5.5 s, 99.23% after 8.7 s;
    # on a busy machine add --set threads=1 (15 s), as two threads then spin on each other (72 s measured)
    smoke=dict(epochs=1, subset=512), datasets=("mnist",),
))

register_recipe(Recipe(
    name="mlp-fashion-mnist", task="classification", notes="000 §1.2, §2.1",
    description="MLP 784-256-128-10 with dropout on Fashion-MNIST",
    build=_mnist_like(load_fashion_mnist, FASHION_MNIST_CLASSES, 0.2860, 0.3530), metric="test/accuracy",
    threshold=0.88, budget_s=120,
    defaults=dict(model="mlp", epochs=12, batch_size=128, lr=1e-3, optimizer="adam", weight_decay=1e-4,
                  schedule="cosine", label_smoothing=0.0, val_size=5000, subset=0, hidden=[256, 128],
                  dropout=0.2, log_every=100),
    smoke=dict(epochs=1, subset=512), datasets=("fashion-mnist",),
))
