"""CPU training throughput of ResNet-50 and MobileNetV2 at 224x224: memory format, bf16 autocast, torch.compile.

Each configuration runs full training steps (forward, cross-entropy, backward, SGD step) on a fixed random batch
and reports images/s as the median over the timed steps after warm-up steps (compilation happens in warm-up).
Every ratio is against fp32, contiguous (NCHW), eager on the same model in the same run; the configurations of a
model are interleaved round by round so that a change of machine load hits all of them alike.

    python benchmarks/bench_cnn_throughput.py --quick            # 3 timed steps per configuration
    python benchmarks/bench_cnn_throughput.py --out benchmarks/RESULTS_cnn.md
    python benchmarks/bench_cnn_throughput.py --models resnet_cifar20 --size 32 --batch 128   # recipe-sized
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import time

import torch
import torch.nn.functional as F

from dlkit import create_model
from dlkit.engine.machine import describe_machine

MODELS = ("resnet50", "mobilenet_v2")


class Config:
    """One way of running the training step."""

    def __init__(self, channels_last: bool, bf16: bool, compiled: bool):
        self.channels_last, self.bf16, self.compiled = channels_last, bf16, compiled

    @property
    def name(self) -> str:
        return (f"{'bf16' if self.bf16 else 'fp32'} {'channels-last' if self.channels_last else 'contiguous'} "
                f"{'compiled' if self.compiled else 'eager'}")

    @property
    def is_baseline(self) -> bool:
        return not (self.channels_last or self.bf16 or self.compiled)


class Runner:
    """A model, optimizer and batch prepared for one configuration; `step()` times one training step."""

    def __init__(self, model_name: str, cfg: Config, batch: int, size: int):
        torch.manual_seed(0)
        self.cfg = cfg
        model = create_model(model_name)
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            classes = model.eval()(x[:2]).shape[1]
        self.y = torch.randint(0, classes, (batch,))
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.x, self.model = x, model.train()
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.fn = torch.compile(model) if cfg.compiled else model

    def step(self) -> float:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.cfg.bf16 else contextlib.nullcontext()
        t = time.perf_counter()
        with ctx:
            loss = F.cross_entropy(self.fn(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t


def bench_model(model_name: str, configs: list[Config], batch: int, size: int, warmup: int, steps: int
                ) -> dict[str, float]:
    """Median images/s of every configuration (warm-up excluded; timed steps interleaved across configs)."""
    runners = {}
    for cfg in configs:
        r = Runner(model_name, cfg, batch, size)
        t = time.perf_counter()
        for _ in range(warmup):
            r.step()
        print(f"  {model_name:12s} {cfg.name:34s} warm-up {time.perf_counter() - t:6.1f} s", flush=True)
        runners[cfg.name] = r
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(steps):
        for name, r in runners.items():
            times[name].append(r.step())
    return {name: batch / statistics.median(ts) for name, ts in times.items()}


def table(results: dict[str, dict[str, float]], configs: list[Config]) -> str:
    """Markdown table of images/s and the ratio to fp32 contiguous eager of the same model."""
    base = next(c.name for c in configs if c.is_baseline)
    lines = ["| model | configuration | images/s | ratio to fp32 contiguous eager |", "|---|---|---:|---:|"]
    for model, res in results.items():
        for c in configs:
            lines.append(f"| {model} | {c.name} | {res[c.name]:.2f} | {res[c.name] / res[base]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 warm-up + 3 timed steps per configuration (default 3 + 7)")
    ap.add_argument("--warmup", type=int, help="warm-up steps per configuration (overrides --quick)")
    ap.add_argument("--steps", type=int, help="timed steps per configuration (overrides --quick)")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile configurations")
    ap.add_argument("--out", help="also write the table (markdown) to this file")
    args = ap.parse_args()
    warmup, steps = (2, 3) if args.quick else (3, 7)
    warmup = warmup if args.warmup is None else args.warmup
    steps = steps if args.steps is None else args.steps
    if warmup < 1 or steps < 1:
        ap.error(f"--warmup and --steps must be >= 1 (got {warmup} and {steps}); compilation happens in warm-up")
    compiled = (False,) if args.no_compile else (False, True)
    configs = [Config(cl, bf, co) for co, bf, cl in itertools.product(compiled, (False, True), (False, True))]
    header = (f"torch {torch.__version__}, {describe_machine()}"
              f"; batch {args.batch}, {args.size}x{args.size}, warm-up {warmup} + {steps} timed steps, "
              f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(header, flush=True)
    results = {m: bench_model(m, configs, args.batch, args.size, warmup, steps) for m in args.models}
    text = table(results, configs)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"{header}\n\n{text}\n")


if __name__ == "__main__":
    main()
