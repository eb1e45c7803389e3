"""The Trainer: bit-exact resume, NaN guard, early stopping, EMA, clipping, bf16, compile, channels-last,
manual optimisation (a toy GAN) and variable-size detection batches."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy import ToyClassifier, toy_loaders, toy_model

from dlkit.data.loader import TensorLoader
from dlkit.engine.checkpoint import list_checkpoints, load_checkpoint_file
from dlkit.engine.task import Task
from dlkit.engine.trainer import Trainer, TrainerConfig
from dlkit.errors import CheckpointError, ConfigError, TrainingDiverged


def train(run_dir, resume=None, **cfg):
    torch.manual_seed(123)
    task = ToyClassifier(toy_model())
    train_loader, val_loader = toy_loaders()
    trainer = Trainer(task, train_loader, val_loader, TrainerConfig(progress=False, tensorboard=False, **cfg),
                      run_dir=run_dir)
    trainer.fit(resume=resume)
    return trainer


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("stop_at", [3, 6, 10])
def test_resume_is_bit_exact(tmp_path, stop_at):
    full = train(tmp_path / "full", epochs=3)
    train(tmp_path / "part", epochs=3, max_steps=stop_at)
    torch.manual_seed(999)  # the resumed run must not depend on the RNG state of the new process
    resumed = train(tmp_path / "part", resume=tmp_path / "part", epochs=3)
    assert resumed.step == full.step == 18
    assert same_weights(full.model, resumed.model)
    opt_a, opt_b = full.optimizers[0].state_dict(), resumed.optimizers[0].state_dict()
    for k in opt_a["state"]:
        assert torch.equal(opt_a["state"][k]["exp_avg_sq"], opt_b["state"][k]["exp_avg_sq"])
    assert full.optimizers[0].param_groups[0]["lr"] == resumed.optimizers[0].param_groups[0]["lr"]


def test_resume_with_ema_and_early_stopping_state_is_bit_exact(tmp_path):
    kw = dict(epochs=4, ema_decay=0.9, early_stopping_patience=10)
    full = train(tmp_path / "a", **kw)
    train(tmp_path / "b", max_steps=7, **kw)
    resumed = train(tmp_path / "b", resume=tmp_path / "b", **kw)
    assert same_weights(full.ema.module, resumed.ema.module)
    assert full.callbacks[0].best == resumed.callbacks[0].best is not None


def test_resume_onto_a_model_built_differently_is_refused_in_one_line_and_keeps_the_checkpoint(tmp_path):
    train(tmp_path / "run", epochs=3, max_steps=4)  # the model outputs 3 classes
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()}
    torch.manual_seed(0)
    wider = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4))  # the data gained a class
    trainer = Trainer(ToyClassifier(wider), *toy_loaders(), TrainerConfig(epochs=3, progress=False, tensorboard=False),
                      run_dir=tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"step_000000004.json does not fit the model this run builds now "
                                              r"\(shapes differ: 3.weight \[3, 16\] in the checkpoint, \[4, 16\] now"):
        trainer.fit(resume=tmp_path / "run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()} == before


def test_resume_with_another_kind_of_optimizer_is_refused_in_one_line(tmp_path):
    train(tmp_path / "run", epochs=3, max_steps=4)  # torch's Adam

    class WithSGD(ToyClassifier):
        def configure_optimizers(self, plan):
            return [torch.optim.SGD(self.model.parameters(), 0.1)], []

    trainer = Trainer(WithSGD(toy_model()), *toy_loaders(), TrainerConfig(epochs=3, progress=False,
                                                                          tensorboard=False), run_dir=tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"holds the state of optimizer\(s\) \['Adam'\], and this run builds "
                                              r"\['SGD'\]"):
        trainer.fit(resume=tmp_path / "run")


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    task = ToyClassifier(toy_model(), nan_at_step=9)
    train_loader, _ = toy_loaders()
    trainer = Trainer(task, train_loader, None, TrainerConfig(epochs=5, checkpoint_every_steps=4, progress=False,
                                                              tensorboard=False), run_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 9.*last good checkpoint"):
        trainer.fit()
    steps = [int(p.stem.split("_")[1]) for p in list_checkpoints(tmp_path / "checkpoints")]
    assert max(steps) == 8
    state = load_checkpoint_file(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


class Scripted(ToyClassifier):
    """Evaluation returns the scripted losses in turn and keeps a snapshot of the weights it scored."""

    def __init__(self, model, scores):
        super().__init__(model)
        self.scores, self.snapshots = iter(scores), []

    def evaluate(self, model, loader):
        self.snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"loss": next(self.scores)}


def _fit_scripted(scores, epochs, patience):
    torch.manual_seed(0)
    task = Scripted(toy_model(), scores)
    train_loader, val_loader = toy_loaders()
    trainer = Trainer(task, train_loader, val_loader,
                      TrainerConfig(epochs=epochs, early_stopping_patience=patience, progress=False,
                                    tensorboard=False))
    return task, trainer, trainer.fit()


def test_early_stopping_restores_best_weights(tmp_path):
    task, trainer, _ = _fit_scripted([3.0, 1.0, 2.0, 2.5, 0.5], epochs=5, patience=2)  # best after epoch 2
    assert len(task.snapshots) == 4 and trainer.epoch == 4
    assert "early stopping" in trainer.stop_reason
    assert all(torch.equal(v, task.snapshots[1][k]) for k, v in trainer.model.state_dict().items())


def test_early_stopping_restores_the_best_weights_also_when_the_fit_runs_its_length_past_them():
    task, trainer, metrics = _fit_scripted([3.0, 1.0, 2.0], epochs=3, patience=5)  # ends after epoch 3, unstopped
    assert len(task.snapshots) == 3 and not trainer.stop_reason and metrics["val/loss"] == 1.0
    assert all(torch.equal(v, task.snapshots[1][k]) for k, v in trainer.model.state_dict().items())


def test_ema_follows_its_formula():
    from dlkit.engine.ema import ModelEMA

    model = nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.9)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, 0.9 * w0 + 0.1 * (w0 + 1.0))


class ClipProbe(ToyClassifier):
    """Records the gradients the optimizer sees (after the Trainer's clipping)."""

    def configure_optimizers(self, plan):
        self.seen = []
        opt = torch.optim.SGD(self.model.parameters(), lr=0.0)
        step = opt.step
        opt.step = lambda *a, **k: (self.seen.append(torch.cat([p.grad.flatten() for p in self.model.parameters()])),
                                    step(*a, **k))[1]
        return [opt], []


@pytest.mark.parametrize("key,limit", [("grad_clip_norm", 1e-3), ("grad_clip_value", 1e-4)])
def test_gradient_clipping_by_norm_and_value_is_applied(key, limit):
    task = ClipProbe(toy_model())
    Trainer(task, toy_loaders()[0], None, TrainerConfig(max_steps=1, progress=False, tensorboard=False,
                                                        **{key: limit})).fit()
    grad = task.seen[0]
    if key == "grad_clip_norm":
        torch.testing.assert_close(torch.linalg.vector_norm(grad), torch.tensor(limit), rtol=1e-4, atol=0)
    else:
        assert grad.abs().max() <= limit and (grad.abs() == limit).any()


def test_bf16_autocast_trains_on_cpu():
    trainer = train(None, epochs=4, bf16=True)
    before = ToyClassifier(toy_model()).evaluate(toy_model().eval(), toy_loaders()[1])["loss"]
    after = trainer.evaluate(toy_loaders()[1], "val")["val/loss"]
    assert after < before


def test_channels_last_and_compile_give_the_same_training_as_eager():
    class Conv(ToyClassifier):
        def training_step(self, model, batch, ctx):
            x, y = batch
            return {"loss": F.cross_entropy(model(x), y)}

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 2, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    results = []
    for opts in [{}, {"channels_last": True}, {"compile": True}]:
        task = Conv(make())
        Trainer(task, TensorLoader(x, y, batch_size=8), None,
                TrainerConfig(epochs=2, progress=False, tensorboard=False, **opts)).fit()
        results.append(task.model.state_dict())
    for other in results[1:]:
        for k in results[0]:
            torch.testing.assert_close(other[k].contiguous(), results[0][k], atol=1e-5, rtol=1e-4)


class ToyGAN(Task):
    """A 2-D GAN with two optimizers stepped by hand (Notes: 000 §4 GAN)."""

    automatic_optimization = False

    def __init__(self):
        torch.manual_seed(0)
        gen = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        disc = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        super().__init__(nn.ModuleDict({"generator": gen, "discriminator": disc}))

    def configure_optimizers(self, plan):
        g = torch.optim.Adam(self.model["generator"].parameters(), 2e-3, betas=(0.5, 0.999))
        d = torch.optim.Adam(self.model["discriminator"].parameters(), 2e-3, betas=(0.5, 0.999))
        return [g, d], []

    def training_step(self, model, batch, ctx):
        (real,) = batch
        opt_g, opt_d = ctx.optimizers
        gen, disc = model["generator"], model["discriminator"]
        fake = gen(torch.randn_like(real))
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        d_loss = F.binary_cross_entropy_with_logits(disc(real), ones) + \
            F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros)
        ctx.backward(d_loss)
        ctx.optimizer_step(opt_d)
        g_loss = F.binary_cross_entropy_with_logits(disc(fake), ones)
        ctx.backward(g_loss)
        opt_d.zero_grad(set_to_none=True)
        ctx.optimizer_step(opt_g)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}


def test_toy_gan_trains_with_two_optimizers_through_the_trainer(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2048, 2, generator=g) * 0.5 + torch.tensor([3.0, -2.0])
    task = ToyGAN()
    with torch.no_grad():
        start = (task.model["generator"](torch.randn(4096, 2)).mean(0) - real.mean(0)).norm().item()
    Trainer(task, TensorLoader(real, batch_size=64), None,
            TrainerConfig(epochs=15, progress=False, tensorboard=False), run_dir=tmp_path).fit()
    with torch.no_grad():
        end = (task.model["generator"](torch.randn(4096, 2)).mean(0) - real.mean(0)).norm().item()
    assert start > 3.0 and end < 0.5, (start, end)
    rows = (tmp_path / "metrics.csv").read_text()
    assert "train/d_loss" in rows and "train/g_loss" in rows


class BoxCounter(Task):
    """Regresses the number of boxes and their mean centre from an image; targets vary in size."""

    def configure_optimizers(self, plan):
        return [torch.optim.Adam(self.model.parameters(), 1e-2)], []

    def training_step(self, model, batch, ctx):
        images, targets = batch
        out = model(images)
        goal = torch.stack([torch.cat([torch.tensor([len(t["boxes"])], dtype=torch.float32),
                                       t["boxes"].mean(0)[:2] if len(t["boxes"]) else torch.zeros(2)])
                            for t in targets])
        return {"loss": F.mse_loss(out, goal)}


def toy_scenes(n=64, size=16):
    g = torch.Generator().manual_seed(0)
    images, targets = torch.zeros(n, 1, size, size), []
    for i in range(n):
        k = int(torch.randint(0, 4, (1,), generator=g))
        xy = torch.randint(0, size - 4, (k, 2), generator=g).float()
        boxes = torch.cat([xy, xy + 4], 1)
        for x0, y0, _, _ in boxes.long().tolist():
            images[i, 0, y0:y0 + 4, x0:x0 + 4] = 1.0
        targets.append({"boxes": boxes, "labels": torch.zeros(k, dtype=torch.long)})
    return images, targets


def test_detection_batches_with_variable_box_counts_collate_and_train():
    images, targets = toy_scenes()
    loader = TensorLoader(images, targets, batch_size=16, seed=0)
    batch = next(iter(loader))
    assert batch[0].shape == (16, 1, 16, 16) and isinstance(batch[1], list) and len(batch[1]) == 16
    assert len({len(t["boxes"]) for t in batch[1]}) > 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(128, 3))
    task = BoxCounter(model)
    first = task.training_step(model, batch, None)["loss"].item()
    Trainer(task, loader, None, TrainerConfig(epochs=30, progress=False, tensorboard=False)).fit()
    last = task.training_step(model, batch, None)["loss"].item()
    assert last < 0.2 * first


def test_collate_detection_stacks_images_and_keeps_targets():
    from dlkit.data.loader import collate_detection

    images, targets = toy_scenes(4)
    x, t = collate_detection(list(zip(images, targets)))
    assert torch.equal(x, images) and t == targets
    with pytest.raises(ConfigError, match="share one shape"):
        collate_detection([(torch.zeros(1, 4, 4), {}), (torch.zeros(1, 5, 5), {})])


def test_metrics_csv_has_long_format_rows(tmp_path):
    train(tmp_path, epochs=2, log_every=2)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,wall_time,name,value"
    names = {line.split(",")[3] for line in lines[1:]}
    assert {"train/loss", "val/loss", "lr"} <= names
    assert all(math.isfinite(float(line.split(",")[4])) for line in lines[1:])


def test_a_plateau_schedule_watching_a_metric_the_task_never_logs_is_a_config_error():
    train, val = toy_loaders()
    task = ToyClassifier(toy_model(), optim=dict(optimizer="adam", schedule="plateau"))
    cfg = TrainerConfig(epochs=1, progress=False, monitor="val/accuracy")  # the toy task logs only val/loss
    with pytest.raises(ConfigError, match=r"plateau schedule watches monitor 'val/accuracy'.*it logs val/loss"):
        Trainer(task, train, val, cfg).fit()


def test_an_error_while_evaluating_keeps_the_training_done_so_far(tmp_path):
    from dlkit.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    cfg = TrainerConfig(epochs=3, eval_every_epochs=None, progress=False, tensorboard=False)
    empty = TensorLoader(x[:0], y[:0], batch_size=16, shuffle=False)
    trainer = Trainer(ClassificationTask(nn.Linear(4, 3), {"optimizer": "sgd", "lr": 0.1}),
                      TensorLoader(x, y, batch_size=4, shuffle=False), empty, cfg, run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^evaluating the validation data at step 48: Mean.compute\(\) before any "
                                          r"update.*the training up to step 48 is checkpointed in"):
        trainer.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")][-1] == "step_000000048.json"
    trained = trainer.model.weight.detach().clone()
    again = Trainer(ClassificationTask(nn.Linear(4, 3), {"optimizer": "sgd", "lr": 0.1}),
                    TensorLoader(x, y, batch_size=4, shuffle=False), TensorLoader(x, y, batch_size=16, shuffle=False),
                    cfg, run_dir=tmp_path)
    metrics = again.fit(resume=tmp_path)  # the cause fixed: resumed at its end, scored, nothing retrained
    assert again.step == 48 and torch.equal(again.model.weight, trained) and "val/accuracy" in metrics

    class Broken(ClassificationTask):
        def evaluate(self, model, data, ctx=None):
            raise TypeError("my evaluate has a bug")

    headless = Trainer(Broken(nn.Linear(4, 3), None), TensorLoader(x, y, batch_size=4), empty, cfg)
    with pytest.raises(TypeError, match="my evaluate has a bug") as info:
        headless.fit()
    assert "raised while evaluating the validation data at step 48" in "".join(info.value.__notes__)


def test_callback_states_follow_their_kind_when_the_callback_list_changes_on_resume(tmp_path):
    from dlkit.engine.callbacks import EarlyStopping, LambdaCallback
    from dlkit.engine.preemption import Preempted
    from dlkit.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    cfg = TrainerConfig(epochs=3, early_stopping_patience=3, progress=False, tensorboard=False)

    def trainer(callbacks):
        return Trainer(ClassificationTask(nn.Linear(4, 3), None), TensorLoader(x, y, batch_size=8, shuffle=False),
                       TensorLoader(x, y, batch_size=16, shuffle=False), cfg, run_dir=tmp_path, callbacks=callbacks)

    def stop_at_12(t, out):
        if t.step == 12:
            t._signals.received = 15  # as a SIGTERM after step 12 (epoch 2)

    first = trainer([LambdaCallback(on_step_end=stop_at_12)])
    with pytest.raises(Preempted):
        first.fit()
    best = next(c for c in first.callbacks if isinstance(c, EarlyStopping)).state_dict()
    assert best  # epoch 1 was scored: a best to keep
    resumed = trainer([])  # the debugging callback dropped: early stopping must take its own state back
    resumed.fit(resume=tmp_path)
    early = next(c for c in resumed.callbacks if isinstance(c, EarlyStopping))
    assert early.best_metrics is not None and resumed.step == 24
