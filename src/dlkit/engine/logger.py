"""Metric logging: a long-format CSV (step, epoch, wall_time, name, value), TensorBoard when installed,
and progress as a tqdm bar on a terminal or plain log lines otherwise."""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterable
from pathlib import Path

HEADER = ["step", "epoch", "wall_time", "name", "value"]


class MetricLogger:
    """Appends scalars to `metrics.csv` (and TensorBoard); on resume drops rows past the checkpoint."""

    def __init__(self, run_dir: Path | None, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None, seconds: float = 0.0, replacing: Iterable[str] = ()):
        """`seconds`: the wall_time already spent (a resumed run's earlier segments), so wall_time keeps rising;
        `replacing`: names about to be logged again at `resume_step`, whose rows there are dropped (a run resumed
        after its final scores were logged logs them once)."""
        self.enabled = enabled and run_dir is not None
        self.t0 = time.perf_counter() - seconds
        self._tb = None
        if not self.enabled:
            return
        self.path = Path(run_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                replacing = set(replacing)
                rows = [r for r in csv.DictReader(f) if int(r["step"]) < resume_step
                        or (int(r["step"]) == resume_step and r["name"] not in replacing)]
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, HEADER)
                w.writeheader()
                w.writerows(rows)
        else:
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(HEADER)
        self._file = open(self.path, "a", newline="")
        self._csv = csv.writer(self._file)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        t = round(time.perf_counter() - self.t0, 3)
        for name, value in values.items():
            value = float(value)
            self._csv.writerow([step, epoch, t, name, repr(value)])
            if self._tb is not None:
                self._tb.add_scalar(name, value, step)
        self._file.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A tqdm bar over an epoch's steps on a terminal; one plain line every `every` steps otherwise."""

    def __init__(self, total: int, epoch: int, epochs: int, enabled: bool = True, every: int = 50):
        self.enabled, self.every, self.total = enabled, every, total
        self.epoch, self.epochs, self.i = epoch, epochs, 0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)

    def update(self, step: int, postfix: dict[str, float] | None = None) -> None:
        self.i += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if postfix and self.i % 10 == 0:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        elif postfix and (self.i % self.every == 0 or self.i == self.total):
            vals = " ".join(f"{k}={v:.4g}" for k, v in postfix.items())
            print(f"epoch {self.epoch + 1}/{self.epochs} step {self.i}/{self.total} (global {step}) {vals}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def echo(msg: str, enabled: bool = True) -> None:
    """Print a progress message on stderr (rank 0 only)."""
    if enabled:
        print(msg, file=sys.stderr, flush=True)
