"""The Trainer counted in steps: endless data, evaluation and checkpoints every N steps or minutes, callbacks,
the headless fit(), global state restored, and a run killed before its first checkpoint restarting."""

import contextlib
import json

import pytest
import torch
from toy import Stream, ToyClassifier, toy_data, toy_loaders, toy_model

from dlkit.engine.callbacks import Callback, LambdaCallback
from dlkit.engine.checkpoint import list_checkpoints
from dlkit.engine.trainer import Trainer, TrainerConfig, fit
from dlkit.errors import ConfigError


def quiet(**kw):
    return TrainerConfig(progress=False, tensorboard=False, **kw)


def make_trainer(run_dir=None, data=None, callbacks=(), **kw):
    torch.manual_seed(7)
    return Trainer(ToyClassifier(toy_model()), data if data is not None else Stream(), toy_loaders()[1], quiet(**kw),
                   run_dir=run_dir, callbacks=callbacks)


def test_endless_data_needs_max_steps():
    with pytest.raises(ConfigError, match="endless iterable.*set max_steps"):
        make_trainer()


def test_endless_data_runs_max_steps_and_evaluates_every_n_steps(tmp_path):
    seen = []
    trainer = make_trainer(tmp_path, max_steps=25, eval_every_steps=10, log_every=5,
                           callbacks=[LambdaCallback(on_eval_end=lambda t, m: seen.append(t.step))])
    trainer.fit()
    assert trainer.step == 25 and trainer.train_data.drawn == 25
    assert seen == [10, 20, 25]  # every 10 steps, and the final weights
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert sum(",val/loss," in r for r in rows) == 3 and sum(",train/loss," in r for r in rows) == 5


def test_endless_data_resumes_bit_exactly_from_a_step_checkpoint(tmp_path):
    full = make_trainer(tmp_path / "full", max_steps=30)
    full.fit()
    part = make_trainer(tmp_path / "part", max_steps=30, checkpoint_every_steps=12)
    part.cfg.max_steps = 17  # "killed" after step 17: the newest checkpoint is at step 12
    part.fit()
    assert [int(p.stem.split("_")[1]) for p in list_checkpoints(tmp_path / "part" / "checkpoints")] == [0, 12, 17]
    for p in list_checkpoints(tmp_path / "part" / "checkpoints"):
        if int(p.stem.split("_")[1]) > 12:
            p.unlink()
    torch.manual_seed(999)
    resumed = make_trainer(tmp_path / "part", max_steps=30)
    resumed.fit(resume=tmp_path / "part")
    assert resumed.step == 30
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()))


def test_checkpoints_are_written_every_few_minutes_of_training(tmp_path, monkeypatch):
    import dlkit.engine.trainer as trainer_module

    clock = iter(range(0, 10_000, 40))  # each reading of the clock is 40 s later
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(next(clock)))
    trainer = make_trainer(tmp_path, max_steps=12, checkpoint_every_minutes=2.0, log_every=100)
    trainer.fit()
    steps = [int(p.stem.split("_")[1]) for p in list_checkpoints(tmp_path / "checkpoints")]
    assert len(steps) == 3 and steps[-1] == 12 and steps[0] < 12  # time-based ones before the final one


def test_epochs_and_max_steps_and_eval_every_epochs(tmp_path):
    train, val = toy_loaders()  # 6 batches an epoch
    evals = []
    torch.manual_seed(0)
    trainer = Trainer(ToyClassifier(toy_model()), train, val, quiet(epochs=4, eval_every_epochs=2),
                      callbacks=[LambdaCallback(on_eval_end=lambda t, m: evals.append(t.step))])
    trainer.fit()
    assert trainer.step == 24 and evals == [12, 24]
    torch.manual_seed(0)
    trainer = Trainer(ToyClassifier(toy_model()), train, val, quiet(epochs=4, max_steps=9))
    trainer.fit()
    assert trainer.step == 9 and trainer.plan.total_steps == 9 and "max_steps" in trainer.stop_reason


def test_callback_hooks_run_in_order_and_can_stop_training():
    calls = []

    class Probe(Callback):
        def on_train_start(self, trainer):
            calls.append("start")

        def on_step_end(self, trainer, outputs):
            calls.append(("step", trainer.step, round(outputs["loss"].item(), 6) == round(outputs["loss"].item(), 6)))
            if trainer.step == 7:
                trainer.request_stop("probe says stop")

        def on_eval_end(self, trainer, metrics):
            calls.append(("eval", sorted(metrics)))

        def on_fit_end(self, trainer):
            calls.append("end")

    trainer = make_trainer(max_steps=100, callbacks=[Probe()])
    trainer.fit()
    assert calls[0] == "start" and calls[-1] == "end" and trainer.step == 7
    assert [c[1] for c in calls if c[0] == "step"] == list(range(1, 8))
    assert trainer.stop_reason == "probe says stop"


def test_headless_fit_writes_nothing_and_returns_the_trained_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(3)
    task = ToyClassifier(toy_model())
    train, val = toy_loaders()
    before = task.evaluate(task.model.eval(), val)["loss"]
    result = fit(task, train, val, quiet(epochs=5))
    assert result.steps == 30 and result.model is task.model and list(tmp_path.iterdir()) == []
    assert result.metrics["val/loss"] < before


def test_global_state_is_restored_when_training_returns_and_when_it_raises():
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.is_grad_enabled())
    make_trainer(max_steps=3, threads=1).fit()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.is_grad_enabled()) == before

    class Boom(Callback):
        def on_step_end(self, trainer, outputs):
            torch.use_deterministic_algorithms(True)
            torch.set_grad_enabled(False)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(max_steps=3, threads=1, callbacks=[Boom()]).fit()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.is_grad_enabled()) == before


def test_early_stopping_on_a_metric_the_task_never_logs_is_a_clear_error():
    with pytest.raises(ConfigError, match="'val/accuracy', which the task does not log.*val/loss"):
        make_trainer(max_steps=4, eval_every_steps=2, early_stopping_patience=2, monitor="val/accuracy").fit()


def test_resume_of_a_run_killed_before_its_first_checkpoint_restarts_it(tmp_path, capsys):
    from dlkit.recipes import run_recipe

    out = tmp_path / "run"
    out.mkdir()
    config = {"recipe": "mlp-digits", "smoke": True, "config": {"epochs": 1, "subset": 256, "progress": False,
                                                                 "tensorboard": False, "lr": 0.01}}
    (out / "config.json").write_text(json.dumps(config))  # what a run writes before its first step
    summary = run_recipe("mlp-digits", resume=out)
    assert "restarting it from step 0 with its saved configuration" in capsys.readouterr().err
    assert summary["steps"] == 8 and summary["smoke"] and (out / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == 0.01


class _Draws(torch.utils.data.IterableDataset):
    """Endless random batches drawn from torch's global generator, as a user's IterableDataset often does."""

    def __iter__(self):
        x, y = toy_data()
        while True:
            idx = torch.randint(0, len(x), (16,))
            yield x[idx], y[idx]


def test_a_dataloader_over_an_endless_iterable_dataset_trains_in_steps_and_resumes_bit_exactly(tmp_path):
    from torch.utils.data import DataLoader

    def trainer(run_dir, steps):
        return make_trainer(run_dir, data=DataLoader(_Draws(), batch_size=None), max_steps=steps)

    full = trainer(tmp_path / "full", 12)
    full.fit()  # a DataLoader has __len__, but over this dataset len() raises TypeError: the data is endless
    assert full.step == 12 and not full.sized
    trainer(tmp_path / "part", 7).fit()
    torch.manual_seed(999)
    resumed = trainer(tmp_path / "part", 12)
    resumed.fit(resume=tmp_path / "part")  # the stream is replayed from the random state it started with
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()))


@pytest.mark.parametrize("stop_at", [3, 6, 8])  # mid-epoch, at the end of the first epoch, mid second epoch
def test_resume_with_a_shuffling_torch_dataloader_is_bit_exact(tmp_path, stop_at):
    from torch.utils.data import DataLoader, TensorDataset

    def trainer(run_dir, steps):  # 6 batches an epoch, shuffled by torch's global generator at each epoch
        return make_trainer(run_dir, data=DataLoader(TensorDataset(*toy_data()), batch_size=16, shuffle=True),
                            epochs=3, max_steps=steps)

    full = trainer(tmp_path / "full", None)
    full.fit()
    trainer(tmp_path / "part", stop_at).fit()
    torch.manual_seed(999)
    resumed = trainer(tmp_path / "part", None)
    resumed.fit(resume=tmp_path / "part")
    assert resumed.step == full.step == 18
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()))


def test_a_new_run_in_a_folder_holding_another_runs_checkpoints_is_refused_and_keeps_them(tmp_path):
    make_trainer(tmp_path, data=toy_loaders()[0], epochs=2).fit()
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()}
    second = make_trainer(tmp_path, data=toy_loaders()[0], epochs=1)
    with pytest.raises(ConfigError, match=r"already holds the checkpoints of a run \(newest: step_000000012.json\); "
                                          r"continue it with fit\(resume="):
        second.fit()
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()} == before
    second.fit(resume=tmp_path)  # continuing it is what the message offers
    assert second.step == 12


def test_fit_returns_the_metrics_of_the_weights_it_returns(tmp_path):
    def score(trainer):
        return trainer.evaluate(trainer.val_data, "val")["val/loss"]

    # early stopping restores the best weights: their metrics, not the last evaluation's, are the result
    torch.manual_seed(7)  # large steps (lr 0.5): the validation loss soon stops falling
    trainer = Trainer(ToyClassifier(toy_model(), lr=0.5), toy_loaders()[0], toy_loaders()[1],
                      quiet(epochs=40, early_stopping_patience=1))
    metrics = trainer.fit()
    assert trainer.callbacks[0].stopped and trainer.step < 240
    assert metrics["val/loss"] == pytest.approx(score(trainer), abs=1e-6) == pytest.approx(trainer.callbacks[0].best)
    # a callback's stop between evaluations: the final weights are scored
    stopper = LambdaCallback(on_step_end=lambda t, out: t.request_stop("enough") if t.step == 7 else None)
    trainer = make_trainer(data=toy_loaders()[0], epochs=3, callbacks=[stopper])
    metrics = trainer.fit()
    assert trainer.step == 7 and metrics["val/loss"] == pytest.approx(score(trainer), abs=1e-6)


def test_fit_trains_with_gradients_in_float32_inside_a_callers_no_grad_or_autocast():
    seen = []
    record = LambdaCallback(on_step_end=lambda t, out: seen.append(out["loss"].dtype))
    for outer in (torch.no_grad(), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16)):
        trainer = make_trainer(data=toy_loaders()[0], epochs=1, callbacks=[record])
        with outer:
            trainer.fit()
        assert trainer.step == 6 and set(seen) == {torch.float32}
    assert torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("hook, returned, match", [
    ("configure_optimizers", "optimizer", r"configure_optimizers must return \(optimizers, schedules\).*got SGD"),
    ("configure_optimizers", "list", r"configure_optimizers must return \(optimizers, schedules\).*got list of 1"),
    ("configure_optimizers", "schedule name", r"a list of torch LR schedulers .*got \(\['SGD'\], \['str'\]\)"),
    ("configure_optimizers", "nothing", r"configure_optimizers returned no optimizer, so training would update "),
    ("training_step", "vector", r"'loss' must be a one-element tensor \(reduce it, e.g. loss.mean\(\)\); got a tensor "
                                r"of shape \[16\]"),
    ("training_step", "float", r"'loss' must be a one-element tensor .*got float"),
    ("training_step", "detached", r"'loss' does not depend on any trainable parameter"),
    ("evaluate", "none", r"evaluate must return a dict of metric name -> number .*got NoneType"),
    ("evaluate", "vector", r"evaluate must return a dict .*got \{'loss': 'Tensor'\}"),
])
def test_a_custom_tasks_wrong_return_value_is_named_in_one_line(hook, returned, match):
    import torch.nn.functional as F

    class Wrong(ToyClassifier):
        def configure_optimizers(self, plan):
            opt = torch.optim.SGD(self.model.parameters(), 0.1)
            if hook == "configure_optimizers":
                return {"optimizer": opt, "list": [opt], "schedule name": ([opt], ["cosine"]),
                        "nothing": ([], [])}[returned]
            return [opt], []

        def training_step(self, model, batch, ctx):
            x, y = batch
            loss = F.cross_entropy(model(x), y, reduction="none")
            if hook == "training_step":
                return {"loss": {"vector": loss, "float": 1.0, "detached": loss.mean().detach()}[returned]}
            return {"loss": loss.mean()}

        def evaluate(self, model, loader):
            return None if returned == "none" else {"loss": torch.ones(3)}

    with pytest.raises(ConfigError, match=match):
        Trainer(Wrong(toy_model()), toy_loaders()[0], toy_loaders()[1], quiet(epochs=1)).fit()


def test_a_config_or_callbacks_of_the_wrong_kind_are_named_in_one_line():
    with pytest.raises(ConfigError, match=r"config must be a TrainerConfig.*got dict \(for a dict d: "):
        Trainer(ToyClassifier(toy_model()), toy_loaders()[0], config={"epochs": 1})
    with pytest.raises(ConfigError, match=r"callbacks must be a list of .*Callback objects; got LambdaCallback"):
        Trainer(ToyClassifier(toy_model()), toy_loaders()[0], callbacks=LambdaCallback())
    with pytest.raises(ConfigError, match=r"must be a list .*got \['LambdaCallback', 'builtin_function_or_method'\]"):
        Trainer(ToyClassifier(toy_model()), toy_loaders()[0], callbacks=[LambdaCallback(), print])


def test_bf16_training_equals_a_hand_loop_under_autocast_also_inside_a_callers_autocast():
    """Each step's forward sees the weights the previous step updated (autocast's cache of bf16 weight copies is
    emptied after every region, also when fit() runs inside a caller's own autocast)."""
    import torch.nn.functional as F

    def by_hand():
        torch.manual_seed(7)
        model, loader = toy_model(), toy_loaders()[0]
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        sched = torch.optim.lr_scheduler.StepLR(opt, 5, 0.5)
        for x, y in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        return model

    want = by_hand()
    for outer in (contextlib.nullcontext(), torch.autocast("cpu", dtype=torch.bfloat16)):
        trainer = make_trainer(data=toy_loaders()[0], epochs=1, bf16=True)
        with outer:
            trainer.fit()
        assert all(torch.equal(a, b) for a, b in zip(want.state_dict().values(), trainer.model.state_dict().values()))


def test_the_default_monitor_follows_the_validation_split_a_recipe_names_test():
    trainer = Trainer(ToyClassifier(toy_model(), lr=0.5), toy_loaders()[0], toy_loaders()[1],
                      quiet(epochs=40, early_stopping_patience=1), val_prefix="test")
    metrics = trainer.fit()  # "val/loss" would be refused: this run logs test/loss
    assert trainer.callbacks[0].monitor == "test/loss" and trainer.callbacks[0].stopped
    assert metrics["test/loss"] == trainer.callbacks[0].best
    with pytest.raises(ConfigError, match="early stopping watches 'test/accuracy', which the task does not log"):
        Trainer(ToyClassifier(toy_model()), toy_loaders()[0], toy_loaders()[1],
                quiet(early_stopping_patience=1, monitor="test/accuracy"), val_prefix="test").fit()


def test_resuming_with_max_steps_below_the_runs_step_is_refused(tmp_path):
    make_trainer(tmp_path, data=toy_loaders()[0], epochs=2).fit()  # 12 steps
    with pytest.raises(ConfigError, match=r"resumed at step 12 .*past max_steps=5; pass a larger max_steps"):
        make_trainer(tmp_path, data=toy_loaders()[0], epochs=2, max_steps=5).fit(resume=tmp_path)


def test_a_run_that_ends_before_max_steps_says_why():
    sized = make_trainer(data=toy_loaders()[0], max_steps=100)  # epochs=1: 6 steps
    sized.fit()
    assert sized.step == 6 and sized.stop_reason == ("finished the 1 epoch(s) of 6 steps before max_steps=100; raise "
                                                      "epochs to train longer")
    short = make_trainer(data=iter(list(toy_loaders()[0])), max_steps=100)  # a finite stream of 6 batches
    short.fit()
    assert short.step == 6 and short.stop_reason == "the training data ran out after 6 steps, before max_steps=100"


def test_a_resumed_run_counts_the_seconds_of_every_segment(tmp_path):
    import csv

    first = make_trainer(tmp_path, data=toy_loaders()[0], epochs=4, max_steps=12, log_every=1)
    first.fit()
    resumed = make_trainer(tmp_path, data=toy_loaders()[0], epochs=4, log_every=1)
    resumed.fit(resume=tmp_path)
    assert resumed.train_seconds > first.train_seconds > 0
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["name"] == "train/loss"]
    walls = [float(r["wall_time"]) for r in rows]
    assert [int(r["step"]) for r in rows] == list(range(1, 25)) and walls == sorted(walls)  # rising across the resume
    assert walls[12] >= walls[11]


@pytest.mark.parametrize("patience", [0, 2.5, "3", True])
def test_early_stopping_patience_must_be_a_whole_number(patience):
    from dlkit.engine.callbacks import EarlyStopping

    with pytest.raises(ConfigError, match="early_stopping_patience must be a whole number >= 1"):
        EarlyStopping(patience=patience)
