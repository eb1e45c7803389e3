"""First classification recipes: an MLP on 8x8 digits, LeNet-5 on MNIST, an MLP on Fashion-MNIST
(Notes: 000 §1.2 MLP, §2.1 mini-batch SGD, §3 CNNs; 004 CNN)."""

from __future__ import annotations

from ..data.digits import load_digits_split
from ..data.mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_fashion_mnist, load_mnist
from ..data.splits import in_memory_splits
from ..data.transforms import normalise_images
from ..registry import create_model
from ..runs import model_spec
from ..tasks.classification import ClassificationTask
from ..tasks.optimization import OPTIMIZER_OPTIONS
from .registry import Recipe, Setup, register_recipe


def _mlp_digits(cfg, dist):
    x_tr, y_tr, x_te, y_te = load_digits_split(test_size=0.2, seed=0)
    splits = in_memory_splits(x_tr, y_tr, x_te, y_te, batch_size=cfg.batch_size, seed=cfg.seed, dist=dist,
                              subset=cfg.subset)
    kwargs = {"hidden": cfg.hidden, "dropout": cfg.dropout}
    model = create_model("mlp_digits", **kwargs)
    classes = [str(i) for i in range(10)]
    task = ClassificationTask(model, cfg, class_names=classes, image_shape=(1, 8, 8))
    # pixels 0..16 scaled to [0, 1] are x / 255 of an 8-bit file: mean 0, std 1 (white ink on black)
    spec = model_spec("mlp_digits", kwargs, class_names=classes, channels=1, size=8, mean=0.0, std=1.0)
    return Setup(task, splits.train, splits.val, splits.test, val_name=splits.val_name,
                 extra={"parameters": sum(p.numel() for p in model.parameters())}, model_spec=spec)


register_recipe(Recipe(
    name="mlp-digits", task="classification", notes="000 §1.2, §2.1",
    description="MLP 64-128-64-10 on scikit-learn's 8x8 digits (fixed stratified 80/20 split)",
    build=_mlp_digits, metric="test/accuracy", threshold=0.97, budget_s=30,
    defaults=dict(OPTIMIZER_OPTIONS, epochs=40, batch_size=32, lr=2e-3, optimizer="adam", weight_decay=1e-4,
                  schedule="cosine", hidden=[128, 64], dropout=0.1, subset=0, log_every=20),
    smoke=dict(epochs=1, subset=256),
))


def _mnist_like(loader, classes, mean, std):
    def build(cfg, dist):
        x_tr, y_tr = loader("train", data_dir=cfg.data_dir)
        x_te, y_te = loader("test", data_dir=cfg.data_dir)
        x_tr, x_te = normalise_images(x_tr, mean, std), normalise_images(x_te, mean, std)
        splits = in_memory_splits(x_tr, y_tr, x_te, y_te, batch_size=cfg.batch_size, seed=cfg.seed, dist=dist,
                                  val_size=cfg.val_size, subset=cfg.subset)
        kw = {"hidden": cfg.hidden, "dropout": cfg.dropout} if cfg.model == "mlp" else {}
        model = create_model(cfg.model, **kw)
        task = ClassificationTask(model, cfg, class_names=classes, label_smoothing=cfg.label_smoothing)
        spec = model_spec(cfg.model, kw, class_names=classes, channels=1, size=28, mean=mean, std=std)
        return Setup(task, splits.train, splits.val, splits.test, val_name=splits.val_name,
                     extra={"parameters": sum(p.numel() for p in model.parameters())}, model_spec=spec)
    return build


register_recipe(Recipe(
    name="lenet5-mnist", task="classification", notes="004 CNN, 000 §3",
    description="LeNet-5 (ReLU, max pooling) on MNIST, 60k train / 10k test, in-memory batches",
    build=_mnist_like(load_mnist, MNIST_CLASSES, 0.1307, 0.3081), metric="test/accuracy", threshold=0.99,
    budget_s=60,
    defaults=dict(OPTIMIZER_OPTIONS, model="lenet5", epochs=3, batch_size=256, lr=8e-3, optimizer="adam",
                  weight_decay=0.0, schedule="onecycle", label_smoothing=0.0, val_size=0, subset=0, hidden=[],
                  dropout=0.0,
                  channels_last=True, log_every=50),  # quiet 2 cores: 99.06% after 5.5 s, 99.23% after 8.7 s;
    # on a busy machine add --set threads=1 (15 s), as two threads then spin on each other (72 s measured)
    smoke=dict(epochs=1, subset=512), datasets=("mnist",),
))

register_recipe(Recipe(
    name="mlp-fashion-mnist", task="classification", notes="000 §1.2, §2.1",
    description="MLP 784-256-128-10 with dropout on Fashion-MNIST",
    build=_mnist_like(load_fashion_mnist, FASHION_MNIST_CLASSES, 0.2860, 0.3530), metric="test/accuracy",
    threshold=0.88, budget_s=120,
    defaults=dict(OPTIMIZER_OPTIONS, model="mlp", epochs=12, batch_size=128, lr=1e-3, optimizer="adam",
                  weight_decay=1e-4, schedule="cosine", label_smoothing=0.0, val_size=5000, subset=0, hidden=[256, 128],
                  dropout=0.2, log_every=100),
    smoke=dict(epochs=1, subset=512), datasets=("fashion-mnist",),
))
