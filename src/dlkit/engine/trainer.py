"""The Trainer: the training loop of the notes (Notes: 000 §2.1) for every task.

Repeat: take a mini-batch, forward, loss, backward, step (w <- w - lr * grad, or whatever the
optimizer's rule is). The loop counts in epochs over a sized loader or in optimizer steps
(`max_steps`, also over an endless iterable such as random text windows), and evaluates and
checkpoints every N epochs or every N steps. Around it: gradient clipping, LR schedules, bf16
autocast, torch.compile, channels-last, EMA of weights, DDP under torchrun, callbacks (early
stopping is one), a NaN/Inf guard, metrics to CSV/TensorBoard, and atomic checkpoints at epoch
ends and every few minutes, from which a run resumes bit-exactly. `fit()` is the headless form
(no run folder) that a comparison of several trainings calls once per sub-training.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..data.loader import to_device
from ..errors import ConfigError
from ..metrics.meter import ranks_synced
from . import checkpoint as ckpt
from . import global_state
from .callbacks import Callback, EarlyStopping, finite_or_raise
from .distributed import DistInfo, init_distributed
from .ema import ModelEMA
from .logger import MetricLogger, Progress, echo
from .machine import resolve_bf16
from .seeding import get_rng_state, set_rng_state
from .task import StepContext, Task, TrainingPlan

EPOCH_CHECKPOINT_MIN_SECONDS = 10.0  # an epoch-end checkpoint is skipped when the newest one is younger


@dataclass
class TrainerConfig:
    """Options of the training loop (every recipe that trains through the Trainer accepts them as --set)."""

    epochs: int = 1                       # passes over a sized training set (ignored for endless data)
    max_steps: int | None = None          # stop after this many optimizer steps (None: run all epochs)
    device: str = "cpu"                   # cpu, cuda or cuda:N
    grad_clip_norm: float | None = None   # clip the global L2 norm of the gradients
    grad_clip_value: float | None = None  # clip each gradient entry to [-v, v]
    bf16: bool | str = False              # bf16 autocast for forward and loss: true, false or auto (where native)
    compile: bool = False                 # torch.compile the model
    channels_last: bool = False           # NHWC memory format for 4-D inputs
    ema_decay: float | None = None        # evaluate an exponential moving average of the weights
    early_stopping_patience: int | None = None  # evaluations without improvement of `monitor` before stopping
    monitor: str = "val/loss"             # metric watched by early stopping and plateau schedules
    monitor_mode: str = "min"
    eval_every_epochs: int | None = 1     # epochs between evaluations (None: none at epoch ends)
    eval_every_steps: int | None = None   # optimizer steps between evaluations
    checkpoint_every_steps: int | None = None     # optimizer steps between checkpoints
    checkpoint_every_minutes: float | None = 5.0  # minutes of training between checkpoints (also at epoch ends)
    keep_checkpoints: int = 3
    log_every: int = 50                   # steps between logged training means (the only host reads of the loss)
    progress: bool = True
    tensorboard: bool = True
    threads: int | None = None            # CPU intra-op threads (None: torch's default, one per core)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def types(cls) -> dict[str, str]:
        return {f.name: str(f.type) for f in fields(cls)}

    def validate(self) -> None:
        """Refuse values the loop cannot run with, before anything runs (expected versus got)."""
        def positive(name, allow_none=True, kind=int):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, kind if kind is float else int) or not v > 0 or \
                    (kind is float and not math.isfinite(v)):
                what = "a positive number" if kind is float else "a positive whole number"
                raise ConfigError(f"{name} must be {what}{' or null' if allow_none else ''}; got {v!r}")

        for name in ("max_steps", "eval_every_epochs", "eval_every_steps", "checkpoint_every_steps", "threads",
                     "early_stopping_patience"):
            positive(name)
        for name in ("epochs", "log_every"):
            positive(name, allow_none=False)
        for name in ("grad_clip_norm", "grad_clip_value", "checkpoint_every_minutes"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not v > 0
                                  or not math.isfinite(v)):
                raise ConfigError(f"{name} must be a positive number or null; got {v!r}")
        d = self.ema_decay
        if d is not None and (isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 < d < 1.0):
            raise ConfigError(f"ema_decay must be a number in (0, 1) or null; got {self.ema_decay!r}")
        if not isinstance(self.keep_checkpoints, int) or isinstance(self.keep_checkpoints, bool) \
                or self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be a whole number >= 1; got {self.keep_checkpoints!r}")
        if self.monitor_mode not in ("min", "max"):
            raise ConfigError(f"monitor_mode must be 'min' or 'max'; got {self.monitor_mode!r}")
        dev = str(self.device)
        if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"device must be cpu, cuda or cuda:N; got {self.device!r}")
        resolve_bf16(self.bf16, dev)  # raises on anything but true, false or auto


@dataclass
class FitResult:
    """What the headless `fit()` returns: the last validation metrics and the trained model."""

    metrics: dict[str, float]
    model: torch.nn.Module
    steps: int
    seconds: float
    stop_reason: str


class Trainer:
    """Trains `task.model` on `train_data`, evaluating on `val_data`, writing to `run_dir` (None: headless)."""

    def __init__(self, task: Task, train_data, val_data=None, config: TrainerConfig | None = None,
                 run_dir: str | Path | None = None, dist: DistInfo | None = None,
                 callbacks: list[Callback] | tuple = (), val_prefix: str = "val"):
        self.cfg = cfg = config or TrainerConfig()
        cfg.validate()
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {cfg.device!r} was asked for but no CUDA GPU is visible; use --device cpu")
        self.task, self.train_data, self.val_data = task, train_data, val_data
        self.val_prefix = val_prefix  # "test" when the recipe evaluates on its test split during training
        self.dist = dist or init_distributed(cfg.device)
        self.device = torch.device(cfg.device if not cfg.device.startswith("cuda") or not self.dist.enabled
                                   else f"cuda:{self.dist.local_rank}")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step = 0            # optimizer steps done
        self.epoch = 0           # current epoch (always 0 for endless data)
        self.batch_in_epoch = 0  # batches of the current epoch already trained
        self.last_metrics: dict[str, float] = {}
        self.stop_reason = ""
        self._stop = False
        self._saved_step: int | None = None
        self._evaluated_step: int | None = None
        self.train_seconds = 0.0
        self.callbacks = list(callbacks)
        if cfg.early_stopping_patience is not None:
            self.callbacks.append(EarlyStopping(cfg.monitor, cfg.monitor_mode, cfg.early_stopping_patience))
        self.sized = hasattr(train_data, "__len__")
        if not self.sized and cfg.max_steps is None:
            raise ConfigError("the training data is an endless iterable (it has no length), so the run must be "
                              "counted in steps: set max_steps")
        self.plan = self._plan()
        model = task.model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizers, self.schedulers = task.configure_optimizers(self.plan)
        self.ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay else None
        train_model = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            train_model = DDP(model, device_ids=ids)
        if cfg.compile:
            train_model = torch.compile(train_model)
        self.train_model = train_model
        self.bf16 = resolve_bf16(cfg.bf16, self.device.type)

    def _plan(self) -> TrainingPlan:
        cfg = self.cfg
        if not self.sized:
            return TrainingPlan(total_steps=cfg.max_steps, steps_per_epoch=None, epochs=None)
        per_epoch = len(self.train_data)
        if per_epoch == 0:
            raise ConfigError("the training data has no batches (an empty data set, or fewer samples than one batch "
                              "with drop_last); give it more samples or a smaller batch_size")
        total = cfg.epochs * per_epoch
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        return TrainingPlan(total_steps=total, steps_per_epoch=per_epoch, epochs=cfg.epochs)

    # -- what a step may use ----------------------------------------------------------------------
    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and saved: the EMA's when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate `loss` (Notes: 000 §2.2)."""
        loss.backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradients of `optimizer`'s parameters, take its step and zero its gradients."""
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.cfg.grad_clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.cfg.grad_clip_value)
        if self.cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip_norm, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def context(self) -> StepContext:
        return StepContext(step=self.step, epoch=self.epoch, device=self.device, optimizers=self.optimizers,
                           schedulers=self.schedulers, autocast=self.autocast, backward=self.backward,
                           optimizer_step=self.optimizer_step, rank=self.dist.rank, world_size=self.dist.world_size)

    def request_stop(self, reason: str) -> None:
        """End training after the current step (callbacks call this)."""
        self._stop, self.stop_reason = True, reason

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng_tensors, rng_values = get_rng_state()
        state = {
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "trainer": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                        "config": asdict(self.cfg), "evaluated_step": self._evaluated_step},
            "callbacks": [c.state_dict() for c in self.callbacks],
            "rng": rng_tensors, "rng_values": rng_values,
        }
        if hasattr(self.train_data, "state_dict"):
            state["data"] = self.train_data.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state["schedulers"], strict=True):
            sch.load_state_dict(s)
        t = state["trainer"]
        self.step, self.epoch, self.batch_in_epoch = t["step"], t["epoch"], t["batch_in_epoch"]
        self._evaluated_step = t.get("evaluated_step")
        for c, s in zip(self.callbacks, state.get("callbacks", []), strict=False):
            c.load_state_dict(s)
        if "data" in state and hasattr(self.train_data, "load_state_dict"):
            self.train_data.load_state_dict(state["data"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"], state["rng_values"])

    def save(self) -> Path | None:
        """Write a checkpoint of everything needed to continue bit-exactly (rank 0 only)."""
        self._last_save = time.perf_counter()
        if self.run_dir is None or not self.dist.is_main or self._saved_step == self.step:
            return None
        self._saved_step = self.step
        return ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step, self.state_dict(),
                                    keep=self.cfg.keep_checkpoints)

    def resume(self, run_dir: str | Path) -> Path:
        """Continue from the newest intact checkpoint in `run_dir` (or its checkpoints/ folder)."""
        run_dir = Path(run_dir)
        folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
        state, path = ckpt.load_latest_checkpoint(folder)
        self.load_state_dict(state)
        self._saved_step = self.step
        return path

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, data, prefix: str) -> dict[str, float]:
        """Run the task's evaluation on `data` with the weights of `eval_model`; names get `prefix/`. Under DDP
        every rank must call it (metric states are summed over the ranks)."""
        model = self.eval_model
        was = model.training
        model.eval()
        try:
            with torch.no_grad(), self.autocast(), ranks_synced(self.dist.enabled):
                metrics = self.task.evaluate(model, data)
        finally:
            model.train(was)
        return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}

    def _validate(self, logger: MetricLogger) -> None:
        if self.val_data is None or self._evaluated_step == self.step:
            return
        metrics = self.evaluate(self.val_data, self.val_prefix)
        self._evaluated_step = self.step
        self.last_metrics.update(metrics)
        logger.log(self.step, self.epoch + 1, metrics)
        epoch = min(self.epoch + 1, self.cfg.epochs)  # after the last epoch the counter has already moved on
        where = f"epoch {epoch}/{self.cfg.epochs}, " if self.sized and self.cfg.max_steps is None else ""
        echo(f"{where}step {self.step}/{self.plan.total_steps}: "
             + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()),
             self.dist.is_main and (self.cfg.progress or self.run_dir is not None))  # headless fit(): quiet
        for s in self.schedulers:
            if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                s.step(metrics.get(self.cfg.monitor, float("nan")))
        for c in self.callbacks:
            c.on_eval_end(self, metrics)

    # -- the loop ---------------------------------------------------------------------------------
    def _prepare(self, batch):
        batch = to_device(batch, self.device)
        if self.cfg.channels_last and isinstance(batch, tuple | list) and isinstance(batch[0], torch.Tensor) \
                and batch[0].dim() == 4:
            batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
        return batch

    def _train_step(self, batch) -> dict[str, torch.Tensor]:
        ctx = self.context()
        if self.task.automatic_optimization:
            with self.autocast():
                out = self.task.training_step(self.train_model, batch, ctx)
            if not isinstance(out, dict) or "loss" not in out:
                raise ConfigError("training_step must return a dict with a 'loss' when automatic_optimization "
                                  f"is on; got {sorted(out) if isinstance(out, dict) else type(out).__name__}")
            self.backward(out["loss"])
            for opt in self.optimizers:
                self.optimizer_step(opt)
        else:
            out = self.task.training_step(self.train_model, batch, ctx)  # the task enters ctx.autocast() itself
        for s in self.schedulers:
            if not isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                s.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return out

    def _epoch_batches(self):
        data = self.train_data
        if not self.sized:
            if self.batch_in_epoch and not hasattr(data, "load_state_dict"):
                return _skip(iter(data), self.batch_in_epoch)  # no saved stream state: replay the stream
            return iter(data)
        if hasattr(data, "set_epoch"):
            data.set_epoch(self.epoch)
        elif hasattr(getattr(data, "sampler", None), "set_epoch"):
            data.sampler.set_epoch(self.epoch)
        return data.iter_from(self.batch_in_epoch) if hasattr(data, "iter_from") else \
            _skip(iter(data), self.batch_in_epoch)

    def _finished(self) -> bool:
        if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps:
            self.stop_reason = self.stop_reason or f"reached max_steps={self.cfg.max_steps}"
            return True
        return self._stop

    def fit(self, resume: str | Path | None = None) -> dict[str, float]:
        """Train until the epochs or `max_steps` are done (or a callback stops it); return the last metrics.
        Every process-wide torch setting it changes (threads, deterministic flags) is restored on return."""
        with global_state.restored():
            if self.cfg.threads is not None:
                torch.set_num_threads(self.cfg.threads)  # on a busy machine 1 avoids threads spinning on each other
            return self._fit(resume)

    def _fit(self, resume) -> dict[str, float]:
        cfg, main = self.cfg, self.dist.is_main
        if resume is not None:
            path = self.resume(resume)
            echo(f"resumed from {path} (step {self.step}, epoch {self.epoch + 1})", main)
        logger = MetricLogger(self.run_dir, enabled=main, tensorboard=cfg.tensorboard,
                              resume_step=self.step if resume is not None else None)
        self.model.train()
        t0 = self._last_save = time.perf_counter()
        for c in self.callbacks:
            c.on_train_start(self)
        try:
            while not self._finished() and (not self.sized or self.epoch < cfg.epochs):
                self._run_epoch(logger)
                if self._finished() or not self.sized:
                    break
                if cfg.eval_every_epochs and (self.epoch + 1) % cfg.eval_every_epochs == 0:
                    self._validate(logger)
                self.epoch += 1
                self.batch_in_epoch = 0
                if not self._stop and time.perf_counter() - self._last_save >= EPOCH_CHECKPOINT_MIN_SECONDS:
                    self.save()  # at epoch ends, unless the newest checkpoint is only seconds old (tiny epochs)
            if not self._stop:
                self._validate(logger)  # the final weights are always scored
        finally:
            logger.close()
        self.train_seconds = time.perf_counter() - t0
        for c in self.callbacks:
            c.on_fit_end(self)
        self._saved_step = None  # callbacks may have changed the weights (early stopping restores the best)
        self.save()
        if self.stop_reason:
            echo(self.stop_reason, main)
        return dict(self.last_metrics)

    def _run_epoch(self, logger: MetricLogger) -> None:
        cfg = self.cfg
        total = self.plan.steps_per_epoch or self.plan.total_steps
        bar = Progress(total, self.epoch, cfg.epochs if self.sized else 1, enabled=self.dist.is_main and cfg.progress,
                       every=cfg.log_every)
        running: dict[str, list[torch.Tensor]] = {}  # the step's scalars since the last log, read on the host there
        cpu = self.device.type == "cpu"
        try:
            for batch in self._epoch_batches():
                out = self._train_step(self._prepare(batch))
                self.step += 1
                self.batch_in_epoch += 1
                if cpu and not _all_finite(out):  # no host sync to avoid: name the exact step (else at log time)
                    finite_or_raise(out, f"at step {self.step} (epoch {self.epoch + 1}){self._where()}")
                for k, v in out.items():
                    if isinstance(v, torch.Tensor) and v.numel() == 1:
                        running.setdefault(k, []).append(v.detach())
                end_of_epoch = self.sized and self.batch_in_epoch == self.plan.steps_per_epoch
                if self.step % cfg.log_every == 0 or end_of_epoch or self._finished():
                    means = _means(running)
                    finite_or_raise(means, f"by step {self.step} (epoch {self.epoch + 1}){self._where()}")
                    vals = {f"train/{k}": v.item() for k, v in means.items()}
                    vals["lr"] = self.optimizers[0].param_groups[0]["lr"] if self.optimizers else 0.0
                    logger.log(self.step, self.epoch + 1, vals)
                    bar.update(self.step, vals)
                    running = {}
                else:
                    bar.update(self.step)
                for c in self.callbacks:
                    c.on_step_end(self, out)
                if cfg.eval_every_steps and self.step % cfg.eval_every_steps == 0:
                    self._validate(logger)
                if self._checkpoint_due():
                    finite_or_raise(_means(running), f"by step {self.step} (epoch {self.epoch + 1}){self._where()}")
                    self.save()
                if self._finished():
                    break
        finally:
            bar.close()

    def _checkpoint_due(self) -> bool:
        cfg = self.cfg
        if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
            return True
        return bool(cfg.checkpoint_every_minutes) and \
            time.perf_counter() - self._last_save >= 60.0 * cfg.checkpoint_every_minutes

    def _where(self) -> str:
        return f" (last good checkpoint in {self.run_dir / 'checkpoints'})" if self.run_dir else ""


def _all_finite(values: dict) -> bool:
    """Whether every scalar tensor in `values` is finite: one host read each (cheap on the CPU, where it is used)."""
    return all(math.isfinite(v.item()) for v in values.values() if isinstance(v, torch.Tensor) and v.numel() == 1)


def _means(running: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each logged scalar's values since the last log (on the device: no host read)."""
    return {k: torch.stack(vs).float().mean() for k, vs in running.items() if vs}


def _skip(it, n: int):
    for _ in range(n):
        next(it, None)
    return it


def fit(task: Task, train_data, val_data=None, config: TrainerConfig | None = None,
        callbacks: list[Callback] | tuple = (), dist: DistInfo | None = None) -> FitResult:
    """Headless training: no run folder, no checkpoint, no report. A comparison of several trainings (an
    optimizer race, transfer against scratch) calls this once per sub-training."""
    cfg = config or TrainerConfig(progress=False, tensorboard=False)
    trainer = Trainer(task, train_data, val_data, cfg, run_dir=None, dist=dist, callbacks=callbacks)
    metrics = trainer.fit()
    return FitResult(metrics=metrics, model=trainer.eval_model, steps=trainer.step, seconds=trainer.train_seconds,
                     stop_reason=trainer.stop_reason)
