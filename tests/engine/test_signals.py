"""Nothing lost: SIGTERM and SIGINT stop training at the next step boundary with a checkpoint (exit 143 / 130 from
the command line) and --resume continues bit-exactly; the NaN guard names a checkpoint that exists (step 0 when the
first epoch diverges) and resuming it with a lower learning rate continues the run."""

import json
import shutil
import signal
import threading

import pytest
import torch
import torch.nn.functional as F
from test_subprocess import DLKIT, interrupted_run, resume_gives_the_same_weights, run_ok
from torch import nn
from toy import ToyClassifier, differences, final_state, toy_data, toy_loaders, toy_model

from dlkit.data.loader import TensorLoader
from dlkit.engine.callbacks import Callback
from dlkit.engine.checkpoint import list_checkpoints
from dlkit.engine.preemption import Preempted
from dlkit.engine.task import Task
from dlkit.engine.trainer import Trainer, TrainerConfig
from dlkit.errors import TrainingDiverged


@pytest.fixture(autouse=True)
def default_sigint():
    """Python's own Ctrl-C handler during each test: a shell starts background jobs (CI, nohup) with SIGINT ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)



class SignalAt(Callback):
    """Sends this process `sig` after optimizer step `step` (as a scheduler or Ctrl-C would, from outside)."""

    def __init__(self, step, sig=signal.SIGTERM, times=1):
        self.step, self.sig, self.times = step, sig, times

    def on_step_end(self, trainer, outputs):
        if trainer.step == self.step:
            for _ in range(self.times):
                signal.raise_signal(self.sig)


def toy_trainer(run_dir, callbacks=(), **cfg):
    torch.manual_seed(123)
    train, val = toy_loaders()
    return Trainer(ToyClassifier(toy_model()), train, val, TrainerConfig(progress=False, tensorboard=False,
                                                                         checkpoint_every_minutes=None, **cfg),
                   run_dir=run_dir, callbacks=[*callbacks, SignalAt(None)])


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_at_the_step_boundary_and_resume_is_bit_exact(tmp_path, sig, code):
    toy_trainer(tmp_path / "full", epochs=3).fit()
    stopped = toy_trainer(tmp_path / "run", epochs=3)
    stopped.callbacks = [SignalAt(7, sig)]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"recipe": "toy-recipe", "config": {"lr": 0.01}}))
    with pytest.raises(Preempted) as info:
        stopped.fit()
    assert info.value.exit_code == code and stopped.step == 7
    assert isinstance(info.value, KeyboardInterrupt) == (sig == signal.SIGINT)  # Ctrl-C: `except KeyboardInterrupt`
    ckpt = tmp_path / "run" / "checkpoints" / "step_000000007.json"
    assert ckpt.is_file() and list_checkpoints(tmp_path / "run" / "checkpoints")[-1] == ckpt
    assert str(info.value) == (f"stopped by {sig.name} after step 7; checkpoint saved in {ckpt}; continue with "
                               f"dlkit run toy-recipe --resume {tmp_path / 'run'}")
    resumed = toy_trainer(tmp_path / "run", epochs=3)
    resumed.fit(resume=tmp_path / "run")
    assert resumed.step == 18 and differences(final_state(tmp_path / "full"), final_state(tmp_path / "run")) == []


def test_a_signal_at_the_step_where_early_stopping_fires_resumes_to_the_same_stop(tmp_path):
    def trainer(run_dir, at=None):  # val/loss falls, so watched with mode max early stopping fires at step 14
        torch.manual_seed(123)
        train, val = toy_loaders()
        cfg = TrainerConfig(epochs=8, eval_every_steps=2, early_stopping_patience=6, monitor_mode="max",
                            progress=False, tensorboard=False)
        return Trainer(ToyClassifier(toy_model(), lr=0.3), train, val, cfg, run_dir=run_dir, callbacks=[SignalAt(at)])

    full = trainer(tmp_path / "full")
    full.fit()
    with pytest.raises(Preempted):
        trainer(tmp_path / "run", at=14).fit()
    resumed = trainer(tmp_path / "run")
    resumed.fit(resume=tmp_path / "run")
    assert full.step == resumed.step == 14 and resumed.stop_reason == full.stop_reason != ""
    assert differences(final_state(tmp_path / "full"), final_state(tmp_path / "run")) == []


def test_handlers_are_installed_only_while_fit_runs_and_restored_after(tmp_path):
    def mine(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        seen = []
        probe = Callback()
        probe.on_step_end = lambda trainer, out: seen.append(signal.getsignal(signal.SIGTERM))
        toy_trainer(None, [probe], max_steps=2).fit()
        assert seen[0] is not mine and signal.getsignal(signal.SIGTERM) is mine  # restored on return
        trainer = toy_trainer(None, max_steps=20)
        trainer.callbacks = [SignalAt(3)]
        with pytest.raises(Preempted, match="after step 3; this headless training keeps no checkpoint"):
            trainer.fit()
        assert signal.getsignal(signal.SIGTERM) is mine  # restored on raise
    finally:
        signal.signal(signal.SIGTERM, before)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_interrupts_at_once_and_fit_in_a_thread_installs_nothing(tmp_path):
    trainer = toy_trainer(None, max_steps=20)
    trainer.callbacks = [SignalAt(3, signal.SIGINT, times=2)]
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.step == 3
    errors = []
    thread = threading.Thread(target=lambda: errors.append(toy_trainer(None, max_steps=3).fit()))
    thread.start()
    thread.join()
    assert len(errors) == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


class Regression(Task):
    """Least squares on a linear model with plain SGD: too large a learning rate makes it blow up geometrically."""

    def __init__(self, lr):
        super().__init__(nn.Linear(8, 1))
        self.lr = lr

    def configure_optimizers(self, plan):
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 20, 0.5)]

    def training_step(self, model, batch, ctx):
        x, y = batch
        return {"loss": F.mse_loss(model(x).squeeze(1), y)}

    def evaluate(self, model, loader):
        return {"loss": sum(F.mse_loss(model(x).squeeze(1), y, reduction="sum").item() for x, y in loader) / loader.n}


def regression_trainer(run_dir, lr):
    torch.manual_seed(0)
    x, _ = toy_data()
    y = x @ torch.linspace(-1, 1, 8)
    cfg = TrainerConfig(epochs=3, progress=False, tensorboard=False)
    return Trainer(Regression(lr), TensorLoader(x, y, batch_size=8, seed=1), TensorLoader(x, y, batch_size=96), cfg,
                   run_dir=run_dir)


def test_a_divergence_in_the_first_epoch_points_at_the_step_0_checkpoint_and_resumes_with_a_lower_lr(tmp_path):
    tmp_path.joinpath("config.json").write_text(json.dumps({"recipe": "toy-regression", "config": {"lr": 100.0}}))
    with pytest.raises(TrainingDiverged) as info:
        regression_trainer(tmp_path, lr=100.0).fit()
    ckpt = tmp_path / "checkpoints" / "step_000000000.json"
    message = str(info.value)
    assert "at step " in message and "(epoch 1)" in message and list_checkpoints(tmp_path / "checkpoints") == [ckpt]
    assert f"the last good checkpoint is {ckpt}" in message
    assert f"dlkit run toy-regression --resume {tmp_path} --set lr=10" in message
    trainer = regression_trainer(tmp_path, lr=100.0)
    metrics = trainer.fit(resume=tmp_path, lr=0.2)
    assert trainer.step == 36 and metrics["val/loss"] < 1e-6  # it continued from step 0 and converged (3.28 there)
    group = trainer.optimizers[0].param_groups[0]
    assert group["initial_lr"] == 0.2 and group["lr"] == pytest.approx(0.2 * 0.5)  # StepLR halved it at step 20
    assert trainer.schedulers[0].base_lrs == [0.2]


@pytest.mark.parametrize(("schedule", "keys"), [("cosine", ("initial_lr",)), ("onecycle", ("max_lr",)),
                                                ("none", ("lr",))])
def test_resume_with_a_new_lr_rescales_the_optimizer_and_its_schedule(tmp_path, schedule, keys):
    def trainer(run_dir):
        torch.manual_seed(123)
        train, val = toy_loaders()
        task = ToyClassifier(toy_model(), lr=0.01, optim={"optimizer": "sgd", "momentum": 0.9, "schedule": schedule})
        return Trainer(task, train, val, TrainerConfig(epochs=3, progress=False, tensorboard=False,
                                                       checkpoint_every_steps=5), run_dir=run_dir)

    stopped = trainer(tmp_path / "a")
    stopped.cfg.max_steps = 7  # stopped after step 7: the newest checkpoint is step 7
    stopped.fit()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    plain, rescaled = trainer(tmp_path / "a"), trainer(tmp_path / "b")
    plain.resume(tmp_path / "a")
    rescaled.resume(tmp_path / "b", lr=0.004)  # 0.4 x the run's lr of 0.01
    g, r = rescaled.optimizers[0].param_groups[0], plain.optimizers[0].param_groups[0]
    assert all(g[k] == 0.004 for k in keys) and g["lr"] == pytest.approx(0.4 * r["lr"])
    for _ in range(3):  # the schedule continues from the new base
        for sch in (*plain.schedulers, *rescaled.schedulers):
            sch.step()
        assert g["lr"] == pytest.approx(0.4 * r["lr"]) and g["lr"] != r["lr"]
    assert [sch.get_last_lr() for sch in rescaled.schedulers] == [[g["lr"]] for _ in rescaled.schedulers]
    plain.fit(resume=tmp_path / "a")
    rescaled.fit(resume=tmp_path / "b", lr=0.004)
    g, r = rescaled.optimizers[0].param_groups[0], plain.optimizers[0].param_groups[0]
    assert rescaled.step == plain.step == 18 and g["lr"] == pytest.approx(0.4 * r["lr"])
    assert not torch.equal(rescaled.model[0].weight, plain.model[0].weight)


def test_sigterm_of_dlkit_run_exits_143_with_one_line_and_resume_is_bit_exact(tmp_path):
    opts = ["--set", "epochs=3", "--set", "checkpoint_every_steps=10", "--set", "log_every=5"]
    run_ok(DLKIT + ["run", "mlp-digits", "--out", str(tmp_path / "full"), *opts])
    out = tmp_path / "stopped"
    proc = interrupted_run("mlp-digits", opts, out, checkpoints=2, sig=signal.SIGTERM)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("dlkit:")]
    assert proc.returncode == 143 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("dlkit: stopped by SIGTERM after step ")
    assert lines[0].endswith(f"continue with dlkit run mlp-digits --resume {out}")
    resume_gives_the_same_weights("mlp-digits", tmp_path / "full", out)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_the_command_line_turns_preemption_into_one_line_and_exit_128_plus_the_signal(monkeypatch, capsys, sig, code):
    import dlkit.recipes
    from dlkit.cli import main

    def preempted(*args, **kwargs):
        raise Preempted(f"stopped by {sig.name} after step 5; checkpoint saved in X; continue with Y", sig)

    monkeypatch.setattr(dlkit.recipes, "run_recipe", preempted)
    assert main(["run", "mlp-digits"]) == code
    err = capsys.readouterr().err
    assert err == f"dlkit: stopped by {sig.name} after step 5; checkpoint saved in X; continue with Y\n"
