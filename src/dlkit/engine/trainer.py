"""The Trainer: the epoch loop of the notes (Notes: 000 §2.1) for every task.

For each epoch: shuffle, cut mini-batches, forward, loss, backward, step (w <- w - lr * grad,
or whatever the optimizer's rule is). Around it: gradient clipping, LR schedules, bf16
autocast, torch.compile, channels-last, EMA of weights, DDP under torchrun, early stopping
that restores the best weights, a NaN/Inf guard, metrics to CSV/TensorBoard and atomic,
bit-exact resumable checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..data.loader import to_device
from ..errors import ConfigError, TrainingDiverged
from . import checkpoint as ckpt
from .distributed import DistInfo, init_distributed
from .ema import ModelEMA
from .logger import MetricLogger, Progress, echo
from .seeding import get_rng_state, set_rng_state
from .task import Task


@dataclass
class TrainerConfig:
    """Options of the training loop (every recipe accepts them as `--set key=value`)."""

    epochs: int = 1
    max_steps: int | None = None          # stop after this many optimizer steps (None: run all epochs)
    device: str = "cpu"
    grad_clip_norm: float | None = None   # clip the global L2 norm of the gradients
    grad_clip_value: float | None = None  # clip each gradient entry to [-v, v]
    bf16: bool = False                    # bf16 autocast for forward and loss
    compile: bool = False                 # torch.compile the model
    channels_last: bool = False           # NHWC memory format for 4-D inputs
    ema_decay: float | None = None        # evaluate an exponential moving average of the weights
    early_stopping_patience: int | None = None
    monitor: str = "val/loss"             # metric watched by early stopping and best-weight keeping
    monitor_mode: str = "min"
    checkpoint_every: int | None = None   # steps between checkpoints (also one at every epoch end)
    keep_checkpoints: int = 3
    log_every: int = 50
    eval_every: int = 1                   # epochs between evaluations
    progress: bool = True
    tensorboard: bool = True
    threads: int | None = None            # CPU intra-op threads (None: torch's default, one per core)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class Trainer:
    """Trains `task.model` on `train_loader`, evaluating on `val_loader`, writing to `run_dir`."""

    def __init__(self, task: Task, train_loader, val_loader=None, config: TrainerConfig | None = None,
                 run_dir: str | Path | None = None, dist: DistInfo | None = None):
        self.cfg = config or TrainerConfig()
        if self.cfg.monitor_mode not in ("min", "max"):
            raise ConfigError(f"monitor_mode must be 'min' or 'max'; got {self.cfg.monitor_mode!r}")
        if self.cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu")
        self.task, self.train_loader, self.val_loader = task, train_loader, val_loader
        self.dist = dist or init_distributed(self.cfg.device)
        self.device = torch.device(self.cfg.device if not self.cfg.device.startswith("cuda") or not self.dist.enabled
                                   else f"cuda:{self.dist.local_rank}")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step = 0           # optimizer steps done
        self.epoch = 0          # current epoch
        self.batch_in_epoch = 0  # batches of the current epoch already trained
        self.best: float | None = None
        self.bad_evals = 0
        self.best_state: dict | None = None
        self.last_metrics: dict[str, float] = {}
        self.stop_reason = ""
        self._saved_step: int | None = None
        if self.cfg.threads is not None:
            if self.cfg.threads < 1:
                raise ConfigError(f"threads must be >= 1; got {self.cfg.threads}")
            torch.set_num_threads(self.cfg.threads)  # on a busy machine 1 avoids threads spinning on each other
        task.trainer = self
        model = task.model.to(self.device)
        if self.cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizers, self.schedulers = task.configure_optimizers()
        self.ema = ModelEMA(model, self.cfg.ema_decay) if self.cfg.ema_decay else None
        train_model = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            train_model = DDP(model, device_ids=ids)
        if self.cfg.compile:
            train_model = torch.compile(train_model)
        self.train_model = train_model
        self._autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.cfg.bf16
                          else contextlib.nullcontext())

    # -- helpers a manual-optimisation task calls -------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate `loss` (Notes: 000 §2.2)."""
        self._check_finite({"loss": loss})
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

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng_tensors, rng_values = get_rng_state()
        state = {
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "trainer": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                        "best": self.best, "bad_evals": self.bad_evals, "config": asdict(self.cfg)},
            "rng": rng_tensors, "rng_values": rng_values,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.best_state is not None:
            state["best_model"] = self.best_state
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state["schedulers"], strict=True):
            sch.load_state_dict(s)
        t = state["trainer"]
        self.step, self.epoch, self.batch_in_epoch = t["step"], t["epoch"], t["batch_in_epoch"]
        self.best, self.bad_evals = t["best"], t["bad_evals"]
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.best_state = state.get("best_model")
        set_rng_state(state["rng"], state["rng_values"])

    def save(self) -> Path | None:
        """Write a checkpoint of everything needed to continue bit-exactly (rank 0 only)."""
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
        return path

    # -- the loop -------------------------------------------------------------------------------
    def _check_finite(self, values: dict) -> None:
        for name, v in values.items():
            if isinstance(v, torch.Tensor) and v.numel() == 1 and not torch.isfinite(v.detach()).item():
                where = f" (last good checkpoint in {self.run_dir / 'checkpoints'})" if self.run_dir else ""
                raise TrainingDiverged(
                    f"{name} became {v.item()} at step {self.step + 1}, epoch {self.epoch + 1}: training stopped"
                    f"{where}. Lower the learning rate or enable gradient clipping (--set grad_clip_norm=1.0).")

    def _prepare(self, batch):
        batch = to_device(batch, self.device)
        if self.cfg.channels_last and isinstance(batch, tuple | list) and isinstance(batch[0], torch.Tensor) \
                and batch[0].dim() == 4:
            batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
        return batch

    def _train_step(self, batch) -> dict[str, torch.Tensor]:
        with self._autocast:
            out = self.task.training_step(self.train_model, batch)
        if self.task.automatic_optimization:
            if "loss" not in out:
                raise ConfigError("training_step must return a dict with a 'loss' when automatic_optimization "
                                  f"is on; got keys {sorted(out)}")
            self.backward(out["loss"])
            for opt in self.optimizers:
                self.optimizer_step(opt)
        else:
            self._check_finite(out)
        for s in self.schedulers:
            if not isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                s.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return out

    def _improved(self, value: float) -> bool:
        if self.best is None or math.isnan(self.best):
            return True
        return value < self.best if self.cfg.monitor_mode == "min" else value > self.best

    def evaluate(self, loader, prefix: str) -> dict[str, float]:
        """Run the task's evaluation on `loader`, with the EMA weights when EMA is on."""
        model = self.ema.module if self.ema is not None else self.model
        was = model.training
        model.eval()
        with torch.no_grad(), self._autocast:
            metrics = self.task.evaluate(model, loader)
        model.train(was)
        return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}

    def _after_epoch(self, logger: MetricLogger) -> bool:
        """Evaluate, log, step plateau schedules, track the best weights; True when training should stop."""
        if self.val_loader is None or (self.epoch + 1) % self.cfg.eval_every:
            return False
        metrics = self.evaluate(self.val_loader, "val")
        self.last_metrics.update(metrics)
        logger.log(self.step, self.epoch + 1, metrics)
        for s in self.schedulers:
            if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                s.step(metrics.get(self.cfg.monitor, float("nan")))
        if self.cfg.early_stopping_patience is None or self.cfg.monitor not in metrics:
            return False
        value = metrics[self.cfg.monitor]
        if self._improved(value):
            self.best, self.bad_evals = value, 0
            src = self.ema.module if self.ema is not None else self.model
            self.best_state = {k: v.detach().clone() for k, v in src.state_dict().items()}
            return False
        self.bad_evals += 1
        if self.bad_evals >= self.cfg.early_stopping_patience:
            self.stop_reason = (f"early stopping: {self.cfg.monitor} did not improve for {self.bad_evals} evaluations "
                                f"(best {self.best:.5g}); restored the best weights")
            return True
        return False

    def fit(self, resume: str | Path | None = None) -> dict[str, float]:
        """Train until the epochs or `max_steps` are done (or early stopping); return the last metrics."""
        cfg, main = self.cfg, self.dist.is_main
        if resume is not None:
            path = self.resume(resume)
            echo(f"resumed from {path} (step {self.step}, epoch {self.epoch + 1})", main)
        logger = MetricLogger(self.run_dir, enabled=main, tensorboard=cfg.tensorboard,
                              resume_step=self.step if resume is not None else None)
        self.model.train()
        t0 = time.perf_counter()
        stop = False
        try:
            while self.epoch < cfg.epochs and not stop:
                loader = self.train_loader
                if hasattr(loader, "set_epoch"):
                    loader.set_epoch(self.epoch)
                elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
                    loader.sampler.set_epoch(self.epoch)
                it = loader.iter_from(self.batch_in_epoch) if hasattr(loader, "iter_from") else \
                    _skip(iter(loader), self.batch_in_epoch)
                bar = Progress(len(loader), self.epoch, cfg.epochs, enabled=main and cfg.progress, every=cfg.log_every)
                running: dict[str, torch.Tensor] = {}
                n_run = 0
                for batch in it:
                    out = self._train_step(self._prepare(batch))
                    self.step += 1
                    self.batch_in_epoch += 1
                    for k, v in out.items():
                        if isinstance(v, torch.Tensor) and v.numel() == 1:
                            running[k] = running.get(k, 0.0) + v.detach().float()
                    n_run += 1
                    if self.step % cfg.log_every == 0 or self.batch_in_epoch == len(loader):
                        vals = {f"train/{k}": (v / n_run).item() for k, v in running.items()}
                        vals["lr"] = self.optimizers[0].param_groups[0]["lr"] if self.optimizers else 0.0
                        logger.log(self.step, self.epoch + 1, vals)
                        bar.update(self.step, vals)
                        running, n_run = {}, 0
                    else:
                        bar.update(self.step)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.save()
                    if cfg.max_steps is not None and self.step >= cfg.max_steps:
                        stop = True
                        self.stop_reason = f"reached max_steps={cfg.max_steps}"
                        break
                bar.close()
                if stop:
                    break
                stop = self._after_epoch(logger)
                self.epoch += 1
                self.batch_in_epoch = 0
                if not stop:
                    self.save()
        finally:
            logger.close()
        self.train_seconds = time.perf_counter() - t0
        if self.best_state is not None and self.stop_reason.startswith("early stopping"):
            target = self.ema.module if self.ema is not None else self.model
            target.load_state_dict(self.best_state)
            self._saved_step = None
        self.save()
        if self.stop_reason:
            echo(self.stop_reason, main)
        return dict(self.last_metrics)


def _skip(it, n: int):
    for _ in range(n):
        next(it, None)
    return it
