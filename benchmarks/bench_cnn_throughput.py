"""CPU training throughput of ResNet-50 and MobileNetV2 at 224x224: memory format, bf16 autocast, torch.compile.

Each configuration runs full training steps (forward, cross-entropy, backward, SGD step) on a fixed random batch
and reports images/s as the median over the timed steps after warm-up steps (compilation happens in warm-up).
Every ratio is against fp32, contiguous (NCHW), eager on the same model in the same run; the configurations of a
model are interleaved round by round so that a change of machine load hits all of them alike. torchvision's model of
the same name runs in the same rounds (fp32, channels-last, eager: the layout dlkit's recipes train in), and the
last table gives dlkit's images/s over torchvision's (issue 13 asks for >= 0.98).

    python benchmarks/bench_cnn_throughput.py --quick            # 3 timed steps per configuration
    python benchmarks/bench_cnn_throughput.py --out benchmarks/RESULTS_cnn.md
    python benchmarks/bench_cnn_throughput.py --no-compile --only-fp32-channels-last --steps 15   # vs torchvision
    python benchmarks/bench_cnn_throughput.py --models resnet_cifar20 --size 32 --batch 128 --no-reference
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

    def __init__(self, channels_last: bool, bf16: bool, compiled: bool, torchvision: bool = False):
        self.channels_last, self.bf16, self.compiled = channels_last, bf16, compiled
        self.torchvision = torchvision  # torchvision's model of the same name instead of dlkit's

    @property
    def name(self) -> str:
        return (f"{'torchvision ' if self.torchvision else ''}{'bf16' if self.bf16 else 'fp32'} "
                f"{'channels-last' if self.channels_last else 'contiguous'} {'compiled' if self.compiled else 'eager'}")

    @property
    def is_baseline(self) -> bool:
        return not (self.channels_last or self.bf16 or self.compiled or self.torchvision)


def build(model_name: str, torchvision: bool) -> torch.nn.Module:
    """dlkit's registered model, or torchvision's model of the same name (random weights, 1000 classes)."""
    if not torchvision:
        return create_model(model_name)
    import torchvision.models

    return torchvision.models.get_model(model_name, weights=None)


class Runner:
    """A model, optimizer and batch prepared for one configuration; `step()` times one training step."""

    def __init__(self, model_name: str, cfg: Config, batch: int, size: int):
        torch.manual_seed(0)
        self.cfg = cfg
        model = build(model_name, cfg.torchvision)
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

    def step(self, clock=time.perf_counter) -> float:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.cfg.bf16 else contextlib.nullcontext()
        t = clock()
        with ctx:
            loss = F.cross_entropy(self.fn(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return clock() - t


def bench_model(model_name: str, configs: list[Config], batch: int, size: int, warmup: int, steps: int,
                clock=time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each timed training step of every configuration (warm-up excluded; the timed steps are
    interleaved across configurations, round by round)."""
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
            times[name].append(r.step(clock))
    return times


def images_per_s(times: dict[str, list[float]], batch: int) -> dict[str, float]:
    """Median images/s of every configuration."""
    return {name: batch / statistics.median(ts) for name, ts in times.items()}


def table(results: dict[str, dict[str, float]], configs: list[Config]) -> str:
    """Markdown table of images/s and the ratio to fp32 contiguous eager of the same model."""
    base = next(c.name for c in configs if c.is_baseline)
    lines = ["| model | configuration | images/s | ratio to fp32 contiguous eager |", "|---|---|---:|---:|"]
    for model, res in results.items():
        for c in configs:
            lines.append(f"| {model} | {c.name} | {res[c.name]:.2f} | {res[c.name] / res[base]:.2f} |")
    return "\n".join(lines)


def reference_table(times: dict[str, dict[str, list[float]]], batch: int) -> str:
    """Markdown table of dlkit's images/s over torchvision's for the same configuration: the median over rounds of
    the ratio of the two step times of a round (a load change between rounds cancels), with its range."""
    lines = ["| model | configuration | dlkit images/s | torchvision images/s | dlkit / torchvision (min-max) |",
             "|---|---|---:|---:|---:|"]
    for model, ts in times.items():
        ips = images_per_s(ts, batch)
        for name, mine in ts.items():
            ref = ts.get(f"torchvision {name}")
            if ref is not None:
                ratios = [r / m for m, r in zip(mine, ref)]
                lines.append(f"| {model} | {name} | {ips[name]:.2f} | {ips['torchvision ' + name]:.2f} | "
                             f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")
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
    ap.add_argument("--no-reference", action="store_true", help="skip torchvision's model (for dlkit-only models)")
    ap.add_argument("--only-fp32-channels-last", action="store_true",
                    help="time only fp32 channels-last eager, dlkit's against torchvision's (the reference check)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time steps in process CPU time (with --threads 1: robust to other load on the machine)")
    ap.add_argument("--out", help="also write the table (markdown) to this file")
    args = ap.parse_args()
    warmup, steps = (2, 3) if args.quick else (3, 7)
    warmup = warmup if args.warmup is None else args.warmup
    steps = steps if args.steps is None else args.steps
    if warmup < 1 or steps < 1:
        ap.error(f"--warmup and --steps must be >= 1 (got {warmup} and {steps}); compilation happens in warm-up")
    compiled = (False,) if args.no_compile else (False, True)
    configs = [Config(cl, bf, co) for co, bf, cl in itertools.product(compiled, (False, True), (False, True))]
    if args.only_fp32_channels_last:
        configs = [Config(True, False, False)]
    if not args.no_reference:
        configs.append(Config(True, False, False, torchvision=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    header = (f"torch {torch.__version__}, {describe_machine()}, "
              f"{'process CPU time' if args.cpu_time else 'wall time'}"
              f"; batch {args.batch}, {args.size}x{args.size}, warm-up {warmup} + {steps} timed steps, "
              f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(header, flush=True)
    times = {m: bench_model(m, configs, args.batch, args.size, warmup, steps, clock) for m in args.models}
    results = {m: images_per_s(ts, args.batch) for m, ts in times.items()}
    text = table(results, configs) if any(c.is_baseline for c in configs) else ""
    if not args.no_reference:
        text += ("\n\n" if text else "") + reference_table(times, args.batch)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"{header}\n\n{text}\n")


if __name__ == "__main__":
    main()
