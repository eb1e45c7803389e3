"""The Trainer: the training loop of the notes (Notes: 000 §2.1) for every task.

Repeat: take a mini-batch, forward, loss, backward, step (w <- w - lr * grad, or whatever the
optimizer's rule is). The loop counts in epochs over a sized loader or in optimizer steps
(`max_steps`, also over an endless iterable such as random text windows), and evaluates and
checkpoints every N epochs or every N steps. Around it: gradient clipping, LR schedules, bf16
autocast, torch.compile, channels-last, EMA of weights, DDP under torchrun, callbacks (early
stopping is one), a NaN/Inf guard, metrics to CSV/TensorBoard, and atomic checkpoints at epoch
ends and every few minutes, from which a run resumes bit-exactly. `fit()` is the headless form
(no run folder) that a comparison of several trainings calls once per sub-training. SIGTERM and SIGINT
during `Trainer.fit` stop the run at the next step boundary with a checkpoint (engine/preemption.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as tdist

from ..data.loader import to_device
from ..errors import ConfigError, DlkitError, TrainingDiverged
from ..metrics.meter import ranks_synced
from . import checkpoint as ckpt
from . import global_state
from .callbacks import DIVERGED_ADVICE, Callback, EarlyStopping, finite_or_raise
from .distributed import DistInfo, barrier, init_distributed
from .ema import ModelEMA
from .logger import MetricLogger, Progress, echo
from .machine import resolve_bf16
from .preemption import SignalWatch, signal_name, stopped_by
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
    monitor: str = "val/loss"             # metric watched by early stopping and plateau schedules ("val/": the
    #                                       validation split, also where a recipe names it "test")
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

    MAX_COUNT = 2**31 - 1  # the largest whole-number option (steps, epochs, intervals): what int32 counters take
    MAX_THREADS = 1024     # more intra-op threads than any CPU has cores only oversubscribes it

    def validate(self) -> None:
        """Refuse values the loop cannot run with, before anything runs (what is wrong, what was expected, how to
        fix it)."""
        import re

        def fix(name, example="null"):
            default = getattr(TrainerConfig, name, None)
            return f" (e.g. --set {name}={example if default is None else default})"

        def whole(name, allow_none=True):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= self.MAX_COUNT:
                raise ConfigError(f"{name} must be a positive whole number (at most {self.MAX_COUNT})"
                                  f"{' or null' if allow_none else ''}; got {v!r}{fix(name, 10)}")

        def number(name, low, high, text):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                                  or not low < v < high):
                raise ConfigError(f"{name} must be {text} or null; got {v!r}{fix(name)}")

        for name in ("max_steps", "eval_every_epochs", "eval_every_steps", "checkpoint_every_steps", "threads",
                     "early_stopping_patience"):
            whole(name)
        for name in ("epochs", "log_every"):
            whole(name, allow_none=False)
        if self.threads is not None and self.threads > self.MAX_THREADS:
            raise ConfigError(f"threads must be at most {self.MAX_THREADS} (CPU threads of one process); got "
                              f"{self.threads}{fix('threads', 1)}")
        for name in ("grad_clip_norm", "grad_clip_value", "checkpoint_every_minutes"):
            number(name, 0.0, math.inf, "a positive number")
        number("ema_decay", 0.0, 1.0, "a number in (0, 1), such as 0.999,")
        k = self.keep_checkpoints
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.MAX_COUNT:
            raise ConfigError(f"keep_checkpoints must be a whole number >= 1 (the newest checkpoints kept); got "
                              f"{k!r}{fix('keep_checkpoints')}")
        if self.monitor_mode not in ("min", "max"):
            raise ConfigError(f"monitor_mode must be 'min' or 'max'; got {self.monitor_mode!r}{fix('monitor_mode')}")
        m = self.monitor
        if not (isinstance(m, str) and len(m.split("/")) >= 2 and all(m.split("/")) and m.strip() == m):
            raise ConfigError(f"monitor must name a logged metric as SPLIT/NAME, such as val/loss or val/accuracy; "
                              f"got {m!r}")
        dev = self.device
        if not (isinstance(dev, str) and (dev in ("cpu", "cuda") or re.fullmatch(r"cuda:[0-9]{1,4}", dev))):
            raise ConfigError(f"device must be cpu, cuda or cuda:N (N: a GPU index); got {dev!r} (--device cpu)")
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
        if config is not None and not isinstance(config, TrainerConfig):
            raise ConfigError(f"config must be a TrainerConfig, e.g. TrainerConfig(epochs=3); got "
                              f"{type(config).__name__} (for a dict d: TrainerConfig(**d))")
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
        # another run's checkpoints, which a new fit() refuses to mix with its own (fit(resume=...) continues them);
        # listed before DDP's first collective, so that every rank sees the folder before rank 0 writes to it
        self._previous_run = ckpt.list_checkpoints(self.run_dir / "checkpoints") if self.run_dir else []
        self.step = 0            # optimizer steps done
        self.epoch = 0           # current epoch (always 0 for endless data)
        self.batch_in_epoch = 0  # batches of the current epoch already trained
        self.last_metrics: dict[str, float] = {}
        self.stop_reason = ""
        self._stop = False
        self._saved_step: int | None = None
        self._last_checkpoint: Path | None = None  # the newest checkpoint written or resumed from
        self._signals = SignalWatch()  # entered by fit(): SIGTERM/SIGINT stop at the next step boundary
        self._evaluated_step: int | None = None
        self._epoch_rng: tuple | None = None  # the random state the current epoch's iterator was created with
        self.train_seconds = 0.0
        self._seconds_before, self._t0 = 0.0, None  # training seconds of earlier segments; this segment's start
        if not isinstance(callbacks, list | tuple) or not all(isinstance(c, Callback) for c in callbacks):
            got = [type(c).__name__ for c in callbacks] if isinstance(callbacks, list | tuple) else \
                type(callbacks).__name__
            raise ConfigError(f"callbacks must be a list of dlkit.engine.callbacks.Callback objects; got {got}")
        self.callbacks = list(callbacks)
        split, _, name = cfg.monitor.partition("/")  # "val/..." names the validation split, whatever it is called
        self.monitor = f"{val_prefix}/{name}" if split == "val" else cfg.monitor
        if cfg.early_stopping_patience is not None:
            self.callbacks.append(EarlyStopping(self.monitor, cfg.monitor_mode, cfg.early_stopping_patience))
        self.sized = has_length(train_data)
        if not self.sized and cfg.max_steps is None:
            raise ConfigError("the training data is an endless iterable (it has no length), so the run must be "
                              "counted in steps: set max_steps")
        self.plan = self._plan()
        model = task.model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizers, self.schedulers = _optimizers_and_schedules(task, task.configure_optimizers(self.plan))
        self._check_monitors()
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

    def _check_monitors(self) -> None:
        """Refuse, before training, a metric watched by early stopping or a plateau schedule that the task declares
        it never logs (tasks that cannot name their metrics before evaluating are checked at the first evaluation)."""
        if self.val_data is None:
            return
        names = self._declared_metrics(self.val_data)
        if names is None:
            return
        watched = [(f"early stopping watches '{c.monitor}'", c.monitor) for c in self.callbacks
                   if isinstance(c, EarlyStopping)]
        watched += [(f"the plateau schedule watches monitor '{self.monitor}'", self.monitor)
                    for s in self.schedulers if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau)]
        logged = [f"{self.val_prefix}/{n}" for n in names]
        for what, metric in watched:
            if metric not in logged:
                raise ConfigError(f"{what}, which the task does not log; it logs {', '.join(sorted(logged))}. Set "
                                  "monitor to one of them")

    def _declared_metrics(self, data) -> tuple[str, ...] | None:
        """The metric names the task declares for `data` (None: not known before evaluating)."""
        names_for = getattr(self.task, "metric_names_for", None)
        return names_for(data) if names_for is not None else getattr(self.task, "metric_names", None)

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
        """The precision of a step or an evaluation: bf16 autocast when `bf16`, else float32 even inside a caller's
        own `torch.autocast` (which this turns off)."""
        return _bf16_autocast(self.device.type) if self.bf16 else torch.autocast(self.device.type, enabled=False)

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
                        "config": asdict(self.cfg), "evaluated_step": self._evaluated_step,
                        "seconds": self.seconds_trained(),  # of training, over every segment of a resumed run
                        "optimizer_kinds": [type(o).__name__ for o in self.optimizers],
                        "stop_reason": self.stop_reason if self._stop else None},  # a callback's request_stop
            "callbacks": [c.state_dict() for c in self.callbacks],
            "callback_kinds": [type(c).__name__ for c in self.callbacks],  # states are matched by kind on resume
            "rng": rng_tensors, "rng_values": rng_values,
        }
        if hasattr(self.train_data, "state_dict"):
            state["data"] = self.train_data.state_dict()
        if self._epoch_rng is not None:
            state["epoch_rng"], state["epoch_rng_values"] = self._epoch_rng
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
            _state_in_param_layout(o)
        for sch, s in zip(self.schedulers, state["schedulers"], strict=True):
            sch.load_state_dict(s)
        t = state["trainer"]
        self.step, self.epoch, self.batch_in_epoch = t["step"], t["epoch"], t["batch_in_epoch"]
        self._evaluated_step = t.get("evaluated_step")
        self._seconds_before = float(t.get("seconds", 0.0))
        if t.get("stop_reason"):
            self._stop, self.stop_reason = True, t["stop_reason"]
        for c, s in _callback_states(self.callbacks, state):
            c.load_state_dict(s)
        if "data" in state and hasattr(self.train_data, "load_state_dict"):
            self.train_data.load_state_dict(state["data"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"], state["rng_values"])
        self._epoch_rng = (state["epoch_rng"], state["epoch_rng_values"]) if "epoch_rng" in state else None

    def _keep_before_raising(self) -> str:
        """Checkpoint the training done so far before an error ends the fit; the sentence that says so (or '')."""
        if self.run_dir is None:
            return ""
        try:
            self.save()
        except DlkitError:  # weights no longer finite: the previous checkpoint stands
            return ""
        return (f" (the training up to step {self.step} is checkpointed in {self.run_dir}: fix the cause, then "
                "resume it)")

    def save(self) -> Path | None:
        """Write a checkpoint of everything needed to continue bit-exactly (rank 0 only). Weights that are no longer
        finite are never saved: that raises TrainingDiverged, pointing at the previous checkpoint."""
        self._last_save = time.perf_counter()
        if self.run_dir is None or not self.dist.is_main or self._saved_step == self.step:
            return None
        params = [p.detach() for p in self.model.parameters() if p.is_floating_point()]
        if params and not torch.stack([torch.isfinite(p).all() for p in params]).all().item():
            raise TrainingDiverged(f"the weights are no longer finite at step {self.step} (epoch {self.epoch + 1}): "
                                   f"training stopped{self._divergence_remedy()}")
        self._saved_step = self.step
        self._last_checkpoint = ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step, self.state_dict(),
                                                     keep=self.cfg.keep_checkpoints)
        return self._last_checkpoint

    def resume(self, run_dir: str | Path, lr: float | None = None) -> Path:
        """Continue from the newest intact checkpoint in `run_dir` (or its checkpoints/ folder). With `lr` (say,
        lower after a divergence), every learning rate of the run is scaled by lr / its base lr (the first param
        group's `max_lr`, else `initial_lr`, else `lr`): the param groups' lr, initial_lr and max_lr and each
        schedule's base_lrs, so the schedule continues from the new base and groups keep their ratios."""
        run_dir = Path(run_dir)
        folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
        state, path = ckpt.load_latest_checkpoint(folder)
        ckpt.check_weights_fit(state["model"], self.model.state_dict(), path)
        ckpt.check_optimizers_fit(state["trainer"].get("optimizer_kinds"), self.optimizers, path)
        self.load_state_dict(state)
        if lr is not None:
            self._rescale_lr(lr)
        self._saved_step = self.step
        self._last_checkpoint = path
        return path

    def seconds_trained(self) -> float:
        """Seconds of training so far: the earlier segments' (a resumed run) and this one's."""
        return self._seconds_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def _rescale_lr(self, lr: float) -> None:
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"the learning rate to resume with must be a positive number; got {lr!r}")
        if not self.optimizers:
            raise ConfigError("lr was given on resume, but the task has no optimizer whose learning rate could change; "
                              "resume without --set lr")
        first = self.optimizers[0].param_groups[0]
        old = float(first.get("max_lr", first.get("initial_lr", first["lr"])))
        if not old > 0:
            raise ConfigError(f"cannot rescale the learning rate to {lr}: the run's base learning rate is {old}; "
                              "resume without --set lr")
        factor = lr / old
        for opt in self.optimizers:
            for group in opt.param_groups:
                for key in ("lr", "initial_lr", "max_lr"):
                    if key in group:
                        group[key] = lr if group[key] == old else group[key] * factor
        for sch in self.schedulers:
            if hasattr(sch, "base_lrs"):
                sch.base_lrs = [lr if b == old else b * factor for b in sch.base_lrs]
            sch._last_lr = [group["lr"] for group in sch.optimizer.param_groups]

    def _resume_command(self, lower_lr: bool = False) -> str:
        """The command that continues this run (the recipe's name and lr from the run folder's config.json)."""
        recipe, lr = "RECIPE", None
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            meta = json.loads((self.run_dir / "config.json").read_text())
            recipe, lr = str(meta["recipe"]), meta.get("config", {}).get("lr")
        cmd = f"dlkit run {shlex.quote(recipe)} --resume {shlex.quote(str(self.run_dir))}"
        if lower_lr:
            good = isinstance(lr, int | float) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0
            cmd += f" --set lr={lr / 10:g}" if good else " --set lr=LOWER"
        return cmd

    def _divergence_remedy(self) -> str:
        """What the NaN guard tells a user to do: resume from the newest checkpoint (which exists) with a lower lr."""
        if self._last_checkpoint is None or not self._last_checkpoint.is_file():
            return DIVERGED_ADVICE
        return (f"; the last good checkpoint is {self._last_checkpoint}. Continue from it with a lower learning rate: "
                f"{self._resume_command(lower_lr=True)} (or enable gradient clipping: --set grad_clip_norm=1.0)")

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
        if not isinstance(metrics, dict) or not all(_is_number(v) for v in metrics.values()):
            got = {k: type(v).__name__ for k, v in metrics.items()} if isinstance(metrics, dict) else \
                type(metrics).__name__
            raise ConfigError(f"{type(self.task).__name__}.evaluate must return a dict of metric name -> number (a "
                              f"float or a one-element tensor); got {got}")
        declared = self._declared_metrics(data)
        if declared is not None and not set(metrics) <= set(declared):  # a task bug: its declaration must hold
            raise RuntimeError(f"{type(self.task).__name__}.metric_names declares {sorted(declared)} but evaluate "
                               f"returned {sorted(metrics)}")
        return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}

    def _validate(self, logger: MetricLogger) -> None:
        if self.val_data is None or self._evaluated_step == self.step:
            return
        try:
            metrics = self.evaluate(self.val_data, self.val_prefix)
        except Exception as e:  # the training so far is kept: checkpointed before the error goes up
            where = f"evaluating the validation data at step {self.step}: "
            kept = self._keep_before_raising()
            if isinstance(e, DlkitError):
                e.args = (f"{where}{e}{kept}",)
            else:
                e.add_note(f"dlkit: raised while {where.rstrip(': ')}{kept}")
            raise
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
                if self.monitor not in metrics:
                    raise ConfigError(f"the plateau schedule watches monitor '{self.monitor}', which the task does "
                                      f"not log; it logs {', '.join(sorted(metrics))}. Set monitor to one of them")
                s.step(metrics[self.monitor])
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
            _check_loss(out["loss"], type(self.task).__name__)
            self.backward(out["loss"])
            for opt in self.optimizers:
                self.optimizer_step(opt)
        else:
            out = self.task.training_step(self.train_model, batch, ctx)  # the task enters ctx.autocast() itself
            if not isinstance(out, dict):
                raise ConfigError(f"{type(self.task).__name__}.training_step (manual optimisation) must return a dict "
                                  f"of the step's scalars to log (may be empty); got {type(out).__name__}")
        for s in self.schedulers:
            if not isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                s.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return out

    def _epoch_batches(self):
        """The iterator of this epoch's batches (of the stream, for endless data), past the `batch_in_epoch`
        batches a resumed run has already trained. Data that cannot start mid-way (no `iter_from`, no stream
        state) is replayed: its iterator is created again from the random state the original was created with
        (a torch DataLoader draws its shuffle order and worker seeds there), the trained batches are drawn and
        dropped, and the random state of the checkpoint is put back, so the run continues bit-exactly."""
        data = self.train_data
        if self.sized:
            if hasattr(data, "set_epoch"):
                data.set_epoch(self.epoch)
            elif hasattr(getattr(data, "sampler", None), "set_epoch"):
                data.sampler.set_epoch(self.epoch)
            if hasattr(data, "iter_from"):
                return data.iter_from(self.batch_in_epoch)
        elif hasattr(data, "load_state_dict"):  # a stream that saved its own position
            return iter(data)
        if not self.batch_in_epoch:
            self._epoch_rng = get_rng_state()
            return iter(data)
        now = get_rng_state()
        if self._epoch_rng is not None:  # None: a checkpoint of an older dlkit, which did not save it
            set_rng_state(*self._epoch_rng)
        it = _skip(iter(data), self.batch_in_epoch)
        set_rng_state(*now)
        return it

    def _finished(self) -> bool:
        if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps:
            self.stop_reason = self.stop_reason or f"reached max_steps={self.cfg.max_steps}"
            return True
        return self._stop

    def fit(self, resume: str | Path | None = None, lr: float | None = None) -> dict[str, float]:
        """Train until the epochs or `max_steps` are done (or a callback stops it); return the last metrics.
        `resume`: a run folder to continue from (`lr`: a new base learning rate for it, see `resume`).
        Every process-wide torch setting it changes (threads, deterministic flags) is restored on return, and so
        are the SIGTERM/SIGINT handlers: while it runs, either signal stops training at the next step boundary
        with a checkpoint and raises `Preempted` (exit code 143 or 130 on the command line)."""
        with global_state.restored(), SignalWatch() as signals, _gradients_on():
            self._signals = signals
            if self.cfg.threads is not None:
                torch.set_num_threads(self.cfg.threads)  # on a busy machine 1 avoids threads spinning on each other
            return self._fit(resume, lr)

    def _fit(self, resume, lr=None) -> dict[str, float]:
        cfg, main = self.cfg, self.dist.is_main
        previous_run, self._previous_run = self._previous_run, []  # a later fit() continues this Trainer's run
        if resume is not None:
            path = self.resume(resume, lr)
            if cfg.max_steps is not None and cfg.max_steps < self.step:
                raise ConfigError(f"the run resumed at step {self.step} (from {path}), past max_steps={cfg.max_steps}; "
                                  f"pass a larger max_steps to train on, or leave it as the run had it")
            at_lr = f", lr scaled to {lr:g}" if lr is not None else ""
            echo(f"resumed from {path} (step {self.step}, epoch {self.epoch + 1}{at_lr})", main)
        elif lr is not None:
            raise ConfigError("lr= is for resuming a run (fit(resume=..., lr=...)); set the learning rate of a new "
                              "run in its task")
        elif previous_run:
            raise ConfigError(f"{self.run_dir} already holds the checkpoints of a run (newest: {previous_run[-1].name}"
                              f"); continue it with fit(resume={str(self.run_dir)!r}), or give this run an empty "
                              "folder (or delete that run's files first): the two runs would mix")
        logger = MetricLogger(self.run_dir, enabled=main, tensorboard=cfg.tensorboard,
                              resume_step=self.step if resume is not None else None, seconds=self._seconds_before)
        self.model.train()
        self._t0 = self._last_save = time.perf_counter()
        for c in self.callbacks:
            c.on_train_start(self)
        if resume is None:
            self.save()  # step 0: a divergence or a signal before the first periodic checkpoint can still resume
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
            if cfg.max_steps is not None and self.step < cfg.max_steps and not self._stop:
                self.stop_reason = (f"finished the {cfg.epochs} epoch(s) of {self.plan.steps_per_epoch} steps before "
                                    f"max_steps={cfg.max_steps}; raise epochs to train longer" if self.sized else
                                    f"the training data ran out after {self.step} steps, before max_steps="
                                    f"{cfg.max_steps}")
            self._validate(logger)  # the final weights are always scored (a no-op where they just were)
        finally:
            logger.close()
        self.train_seconds = self.seconds_trained()
        for c in self.callbacks:
            c.on_fit_end(self)
        self._saved_step = None  # callbacks may have changed the weights (early stopping restores the best)
        self.save()
        if self.stop_reason:
            echo(self.stop_reason, main and (cfg.progress or self.run_dir is not None))  # headless fit(): quiet
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
                    finite_or_raise(out, f"at step {self.step} (epoch {self.epoch + 1})",
                                    self._divergence_remedy)
                for k, v in out.items():
                    if isinstance(v, torch.Tensor) and v.numel() == 1:
                        running.setdefault(k, []).append(v.detach())
                end_of_epoch = self.sized and self.batch_in_epoch == self.plan.steps_per_epoch
                if self.step % cfg.log_every == 0 or end_of_epoch or self._finished():
                    means = _means(running)
                    finite_or_raise(means, f"by step {self.step} (epoch {self.epoch + 1})",
                                    self._divergence_remedy)
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
                    finite_or_raise(_means(running), f"by step {self.step} (epoch {self.epoch + 1})",
                                    self._divergence_remedy)
                    self.save()
                signum = self._signal_received()
                if signum:
                    self._preempt(signum, running)
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

    def _signal_received(self) -> int:
        """The number of the SIGTERM/SIGINT received since fit() began (0: none). Under DDP the ranks agree: the
        flag is all-reduced (max) at every step boundary, so all of them stop after the same step."""
        signum = self._signals.received or 0
        if self.dist.enabled:
            on = self.device if tdist.get_backend() == "nccl" else torch.device("cpu")
            flag = torch.tensor([signum], dtype=torch.int32, device=on)
            tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
            signum = int(flag.item())
        return signum

    def _preempt(self, signum: int, running: dict) -> None:
        """Checkpoint this step (unless the loss diverged) and raise Preempted, on every rank."""
        where = f"by step {self.step} (epoch {self.epoch + 1})"
        finite_or_raise(_means(running), where, self._divergence_remedy)
        self.save()
        barrier(self.dist)  # the other ranks wait until rank 0 has written the checkpoint
        name = signal_name(signum)
        if self.run_dir is None:
            raise stopped_by(signum, f"stopped by {name} after step {self.step}; this headless training keeps no "
                                     "checkpoint")
        saved = self._last_checkpoint if self.dist.is_main else self.run_dir / "checkpoints"
        raise stopped_by(signum, f"stopped by {name} after step {self.step}; checkpoint saved in {saved}; continue "
                                 f"with {self._resume_command()}")


def _all_finite(values: dict) -> bool:
    """Whether every scalar tensor in `values` is finite: one host read each (cheap on the CPU, where it is used)."""
    return all(math.isfinite(v.item()) for v in values.values() if isinstance(v, torch.Tensor) and v.numel() == 1)


def _state_in_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each optimizer state tensor shaped like its parameter the parameter's memory layout.

    A checkpoint stores tensors contiguous, and `Optimizer.load_state_dict` keeps that layout, so after a resume
    the moments of a channels-last weight were contiguous while the weight and its gradient were not. torch's
    fused CPU kernels (`_fused_adam_`, `_fused_sgd_`, ...) walk the raw memory of all of them in step, so they
    then paired each moment with another element of the weight: the resumed run silently trained differently."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            for key, value in (state or {}).items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _means(running: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each logged scalar's values since the last log (on the device: no host read)."""
    return {k: torch.stack(vs).float().mean() for k, vs in running.items() if vs}


def _optimizers_and_schedules(task, returned) -> tuple[list, list]:
    """What `configure_optimizers` returned, checked: (a list of optimizers, a list of schedules)."""
    ok = isinstance(returned, tuple | list) and len(returned) == 2 and all(isinstance(r, list | tuple)
                                                                           for r in returned)
    schedule_kinds = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if not ok or not all(isinstance(o, torch.optim.Optimizer) for o in returned[0]) \
            or not all(isinstance(sch, schedule_kinds) for sch in returned[1]):
        got = (f"({[type(o).__name__ for o in returned[0]]}, {[type(x).__name__ for x in returned[1]]})" if ok else
               type(returned).__name__ + (f" of {len(returned)}" if isinstance(returned, tuple | list) else ""))
        raise ConfigError(f"{type(task).__name__}.configure_optimizers must return (optimizers, schedules): a list "
                          f"of torch optimizers and a list of torch LR schedulers (may be empty), e.g. ([opt], []); "
                          f"got {got}")
    if not returned[0] and task.automatic_optimization:
        raise ConfigError(f"{type(task).__name__}.configure_optimizers returned no optimizer, so training would "
                          "update nothing; return ([optimizer], []) (does the model have trainable parameters?)")
    return list(returned[0]), list(returned[1])


def _callback_states(callbacks: list, state: dict) -> list[tuple]:
    """(callback, its saved state) pairs: the n-th callback of a kind takes the n-th saved state of that kind, so a
    callback added or removed between a run and its resume takes no other's state (one added starts fresh).
    Checkpoints without kinds pair by position."""
    saved = state.get("callbacks", [])
    kinds = state.get("callback_kinds")
    if kinds is None:
        return list(zip(callbacks, saved, strict=False))
    by_kind: dict[str, list] = {}
    for kind, s in zip(kinds, saved, strict=True):
        by_kind.setdefault(kind, []).append(s)
    pairs = []
    for c in callbacks:
        left = by_kind.get(type(c).__name__)
        if left:
            pairs.append((c, left.pop(0)))
    return pairs


def _check_loss(loss, task: str) -> None:
    """The loss a training step backpropagates: a one-element tensor that depends on the parameters."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = f"a tensor of shape {list(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ConfigError(f"{task}.training_step's 'loss' must be a one-element tensor (reduce it, e.g. "
                          f"loss.mean()); got {got}")
    if not loss.requires_grad:
        raise ConfigError(f"{task}.training_step's 'loss' does not depend on any trainable parameter (no grad_fn): "
                          "compute it from the model's output inside training_step, without .item() or .detach()")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) or \
        isinstance(value, torch.Tensor) and value.numel() == 1


@contextlib.contextmanager
def _gradients_on():
    """Training computes gradients whatever the caller's context: a `torch.no_grad()` or `torch.inference_mode()`
    around fit() does not reach into it (the precision is each step's `Trainer.autocast`)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def _bf16_autocast(device_type: str):
    """bf16 autocast whose cached bf16 copies of the weights never outlive it: autocast empties its cache only
    when its outermost region ends, so inside a caller's own autocast the next step would reuse copies of the
    weights from before this step's update."""
    try:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield
    finally:
        torch.clear_autocast_cache()


def has_length(data) -> bool:
    """Whether `data` has a length: a DataLoader always has `__len__`, but over an IterableDataset without one,
    `len()` raises TypeError, and such data is endless (counted in steps)."""
    try:
        len(data)
    except TypeError:
        return False
    return True


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
