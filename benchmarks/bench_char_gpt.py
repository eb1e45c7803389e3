"""Tokens per second of one training step of nanoGPT's CPU character GPT, in variants of dlkit's implementation.

The model and step are those of the `char-gpt-shakespeare` recipe: 4 layers, 4 heads, 128 wide, block 64, batch
12 (768 tokens a step), no biases, dropout 0; forward, loss, backward, gradient clipping at norm 1, an AdamW step
(weight decay 0.1 on the matrices) and the warm-up + cosine learning rate. The headline is **the recipe's step as
the Trainer runs it** (`LanguageModelTask` on `RandomWindows`, torch's fused AdamW, the loss read on the host every
10 steps) over **nanoGPT's train.py loop** in the same run (goal <= 0.80). Other variants, each against the bare
eager step (SDPA attention, torch's fused AdamW, no Trainer) in the same run:

- the Trainer reading the loss on the host at every step (the host reads the recipe avoids), with `bf16=true`
  (autocast), and with `compile=true` (torch.compile of the model);
- explicit attention: softmax(Q K^T / sqrt(d) + M) V step by step (MultiHeadAttention's `explicit` flag);
- dlkit's own AdamW with `_foreach` ops instead of torch's fused kernel;
- a nanoGPT-layout model (one fused QKV projection per block; otherwise the same computation);
- the reference: that model driven as nanoGPT's train.py drives it on a CPU (a batch gathered from a fresh
  np.memmap of the uint16 token file at every step, the lr set in every group at every step, torch's AdamW with
  its CPU default (the per-tensor loop; fused and foreach are GPU defaults there), and the loss read with .item()
  at every step for logging);
- `torch.compile` (skipped with --quick or --no-compile; compile times are reported, a failure is caught): of the
  loss (forward and backward through AOTAutograd); of the loss plus the update (clipping and AdamW's single-tensor
  rule in one compiled function, the lr a tensor so the schedule causes no recompilation; inductor fuses the
  update into one loop); and of the whole step (forward, backward through compiled autograd, clipping, update).
  Each is checked against the eager step (the largest loss difference over 10 steps from the same start).

It also times the step's matrix products alone (every forward and backward product of one step, as isolated
`torch.mm` calls): the floor no implementation of this configuration can go below on the machine in float32.

Random token ids stand in for the text (the speed does not depend on them). Implementations are interleaved and
the median of several repeats is taken; the script prints ms/step, tokens/s and each variant's speed-up. On a
shared machine `--threads 1 --cpu-time` times the work of each step (process CPU time) rather than the turns the
scheduler gives it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.char_lm import RandomWindows
from dlkit.engine.machine import describe_machine
from dlkit.engine.trainer import Trainer, TrainerConfig
from dlkit.models.sequence.gpt import GPT
from dlkit.nn.attention import MultiHeadAttention
from dlkit.optim import WarmupCosineLR, create_optimizer
from dlkit.tasks.language_model import LanguageModelTask

V, BLOCK, BATCH, LAYERS, HEADS, WIDTH = 65, 64, 12, 4, 4, 128


class _NanoBlock(nn.Module):
    """A pre-norm GPT block laid out as nanoGPT's: one Linear gives Q, K and V together."""

    def __init__(self, d: int, h: int):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.fc2 = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(C, 2))
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x))))


class _NanoGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, WIDTH), nn.Parameter(torch.randn(BLOCK, WIDTH) * 0.02)
        self.blocks = nn.Sequential(*(_NanoBlock(WIDTH, HEADS) for _ in range(LAYERS)))
        self.ln = nn.LayerNorm(WIDTH, bias=False)

    def loss(self, x, y):
        logits = F.linear(self.ln(self.blocks(self.wte(x) + self.wpe[: x.shape[1]])), self.wte.weight)
        return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))

    def param_groups(self, weight_decay):
        ps = list(self.parameters())
        return [{"params": [p for p in ps if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0}]


def _ids() -> torch.Tensor:
    return torch.randint(0, V, (200_000,), generator=torch.Generator().manual_seed(0))


def _gpt(explicit: bool = False) -> GPT:
    torch.manual_seed(0)
    model = GPT(V, BLOCK, LAYERS, HEADS, WIDTH, dropout=0.0, bias=False)
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.explicit = explicit
    return model


def _nanogpt_lr(it: int, lr: float = 1e-3, warmup: int = 100, decay: int = 2000, min_lr: float = 1e-4) -> float:
    """nanoGPT train.py's get_lr: linear warm-up, cosine decay to min_lr (the recipe's schedule)."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / (decay - warmup))) * (lr - min_lr)


class _NanoLoopVariant:
    """The reference step: the nanoGPT-layout model with the per-step host work of nanoGPT's train.py loop."""

    def __init__(self, ids: torch.Tensor, path: str):
        torch.manual_seed(0)
        self.model = _NanoGPT()
        ids.numpy().astype(np.uint16).tofile(path)
        self.path, self.params = path, list(self.model.parameters())
        self.opt = torch.optim.AdamW(self.model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.99))
        self.it = 0

    def get_batch(self):
        data = np.memmap(self.path, dtype=np.uint16, mode="r")  # re-opened each call, as train.py does
        ix = torch.randint(len(data) - BLOCK, (BATCH,))
        x = torch.stack([torch.from_numpy(data[i:i + BLOCK].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + BLOCK].astype(np.int64)) for i in ix])
        return x, y

    def step(self) -> torch.Tensor:
        lr = _nanogpt_lr(self.it)  # train.py sets every group's lr at each iteration
        for group in self.opt.param_groups:
            group["lr"] = lr
        x, y = self.get_batch()
        loss = self.model.loss(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss.item()  # train.py logs the loss of every iteration (log_interval=1 in the CPU command)
        self.it += 1
        return loss.detach()

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()


class Variant:
    """A model, its optimizer, the recipe's schedule and its loss function; `step()` is one full training step."""

    def __init__(self, model, fused: bool = True, compile: bool = False):
        self.model = model
        self.opt = create_optimizer("adamw", model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.99), fused=fused)
        self.sched = WarmupCosineLR(self.opt, warmup_steps=100, total_steps=2000, eta_min=1e-4)
        self.params = list(model.parameters())
        self.loss_fn = torch.compile(model.loss) if compile else model.loss
        self.batches = RandomWindows(_ids(), BATCH, BLOCK, seed=0)

    def step(self) -> torch.Tensor:
        x, y = next(self.batches)
        loss = self.loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        return loss.detach()

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()


class CompiledUpdateVariant(Variant):
    """torch.compile of the loss and, separately, of the update: clipping and AdamW's single-tensor rule in one
    function (inductor fuses them into one loop over the parameters). The lr is a tensor that the schedule fills,
    so a new lr causes no recompilation."""

    def __init__(self):
        model = _gpt()
        self.model, self.params = model, list(model.parameters())
        self.opt = torch.optim.AdamW(model.param_groups(0.1), lr=torch.tensor(1e-3), betas=(0.9, 0.99),
                                     foreach=False)
        self.sched = WarmupCosineLR(self.opt, warmup_steps=100, total_steps=2000, eta_min=1e-4)
        self.loss_fn = torch.compile(model.loss)
        self.batches = RandomWindows(_ids(), BATCH, BLOCK, seed=0)

        @torch.compile
        def update():
            torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
            self.opt.step()

        self.update = update

    def step(self) -> torch.Tensor:
        x, y = next(self.batches)
        loss = self.loss_fn(x, y)
        loss.backward()
        self.update()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        return loss.detach()


class WholeStepVariant(CompiledUpdateVariant):
    """One torch.compile over the whole step: forward, backward (compiled autograd), clipping, AdamW update."""

    def __init__(self):
        super().__init__()

        def train_step(x, y):
            loss = self.model.loss(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            return loss.detach()

        self.train_step = torch.compile(train_step)

    def step(self) -> torch.Tensor:
        x, y = next(self.batches)
        with torch._dynamo.config.patch(compiled_autograd=True):
            loss = self.train_step(x, y)
        self.sched.step()
        return loss


class TrainerVariant:
    """The recipe as it runs: `LanguageModelTask` through `Trainer.fit` on `RandomWindows` (torch's fused AdamW
    over the parameter groups, warm-up + cosine schedule, clipping at norm 1, the loss read every 10 steps, the
    NaN guard, callbacks and checkpoint timer). `run(n)` continues the same Trainer for n more steps."""

    def __init__(self, log_every: int = 10, compile: bool = False, bf16: bool = False):
        task = LanguageModelTask(_gpt(), block_size=BLOCK, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1,
                                 warmup_steps=100, lr_decay_steps=2000, min_lr=1e-4)
        cfg = TrainerConfig(max_steps=1, grad_clip_norm=1.0, log_every=log_every, progress=False, tensorboard=False,
                            checkpoint_every_minutes=None, compile=compile, bf16=bf16)
        self.trainer = Trainer(task, RandomWindows(_ids(), BATCH, BLOCK, seed=0), None, cfg)

    def run(self, steps: int) -> None:
        self.trainer.cfg.max_steps = self.trainer.step + steps
        with contextlib.redirect_stderr(io.StringIO()):  # "reached max_steps" at the end of every fit
            self.trainer.fit()

    def step(self) -> None:
        self.run(1)


def matmul_floor(repeats: int = 20, clock=time.perf_counter) -> tuple[float, float]:
    """GFLOP of one step's matrix products and the seconds they take alone (median of `repeats`).

    Per layer the forward products are x W for W of QKV (d x 3d), the output projection (d x d) and the two MLP
    matrices (d x 4d, 4d x d); the tied LM head is x E^T (d x V). Backward adds, for each, grad-input (dY W^T)
    and grad-weight (X^T dY): three products of the same size. Tokens M = batch x block.
    """
    m, d = BATCH * BLOCK, WIDTH
    shapes = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)] * LAYERS + [(d, V)]
    ops = []
    for k, n in shapes:  # forward X(m,k) W(k,n); backward dY(m,n) W^T(n,k) and X^T(k,m) dY(m,n)
        ops += [(torch.randn(m, k), torch.randn(k, n)), (torch.randn(m, n), torch.randn(n, k)),
                (torch.randn(k, m), torch.randn(m, n))]
    gflop = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in ops) / 1e9
    times = []
    for _ in range(repeats + 3):
        t = clock()
        for a, b in ops:
            torch.mm(a, b)
        times.append(clock() - t)
    return gflop, statistics.median(times[3:])


def _losses(make, steps: int = 10) -> torch.Tensor:
    v = make()
    return torch.stack([v.step() for _ in range(steps)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and no torch.compile (< 30 s in all)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (median taken)")
    ap.add_argument("--steps", type=int, default=None, help="steps timed per repeat")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU time instead of wall time: with --threads 1 it counts the "
                         "work done and not the waits for other processes' turns on a shared machine")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, steps = args.repeats or (3 if args.quick else 7), args.steps or (10 if args.quick else 25)
    print(f"char GPT {LAYERS}x{HEADS}x{WIDTH}, block {BLOCK}, batch {BATCH} ({BATCH * BLOCK} tokens/step), float32, "
          f"{describe_machine()}, torch {torch.__version__}; median of {repeats} x "
          f"{steps} steps, {'process CPU time' if args.cpu_time else 'wall time'}; load average "
          f"{os.getloadavg()[0]:.1f} (wall times are noisy when other processes share the CPU)")
    tmp_dir = tempfile.TemporaryDirectory()  # the reference's token file; removed at exit
    tmp = tmp_dir.name
    base, recipe, ref = ("dlkit: SDPA + fused AdamW (bare step)", "dlkit recipe step (Trainer)",
                         "reference: nanoGPT train.py loop")
    variants = {base: Variant(_gpt()),
                recipe: TrainerVariant(),
                "Trainer, loss read every step": TrainerVariant(log_every=1),
                "Trainer, bf16=true (autocast)": TrainerVariant(bf16=True),
                "explicit attention": Variant(_gpt(explicit=True)),
                "dlkit AdamW (foreach)": Variant(_gpt(), fused=False),
                "nanoGPT layout (fused QKV)": Variant(_NanoGPT()),
                ref: _NanoLoopVariant(_ids(), os.path.join(tmp, "train.bin"))}
    checked = [base, "explicit attention", "dlkit AdamW (foreach)"]
    first = {k: float(variants[k].step()) for k in checked}  # same init and batch: equal first losses
    assert max(abs(v - first[base]) for v in first.values()) < 1e-4, first
    if not (args.quick or args.no_compile):
        eager = _losses(lambda: Variant(_gpt()))
        t = time.perf_counter()
        variants["recipe step (Trainer, compile=true)"] = compiled_recipe = TrainerVariant(compile=True)
        compiled_recipe.run(2)
        print(f"recipe step (Trainer, compile=true): first two steps (compilation) took "
              f"{time.perf_counter() - t:.1f} s")
        for name, make in (("compiled loss", lambda: Variant(_gpt(), compile=True)),
                           ("compiled loss + compiled update", CompiledUpdateVariant),
                           ("compiled whole step", WholeStepVariant)):
            try:
                torch._dynamo.utils.counters.clear()
                t = time.perf_counter()
                v = make()
                v.step()
                v.step()
                breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
                print(f"{name}: first two steps (compilation) took {time.perf_counter() - t:.1f} s, {breaks} graph "
                      f"break(s); max |loss - eager loss| over 10 steps from the same start "
                      f"{float((_losses(make) - eager).abs().max()):.1e}")
                variants[name] = v
            except Exception as e:  # noqa: BLE001 -- any backend failure is reported, not fatal
                print(f"{name} unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    for v in variants.values():  # warm-up
        v.run(3)
    times: dict[str, list[float]] = {k: [] for k in variants}
    clock = time.process_time if args.cpu_time else time.perf_counter
    for _ in range(repeats):
        for name, v in variants.items():
            t = clock()
            v.run(steps)
            times[name].append((clock() - t) / steps)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    gflop, floor = matmul_floor(clock=clock)
    print(f"{'variant':<38} {'ms/step':>8} {'tokens/s':>9} {'it/s':>6} {'2000 it (s)':>11} {'speed vs bare step':>19}")
    for name, t in ms.items():
        print(f"{name:<38} {t:>8.1f} {BATCH * BLOCK / t * 1e3:>9.0f} {1e3 / t:>6.1f} {2 * t:>11.0f} "
              f"{ms[base] / t:>19.2f}")
    print(f"ratios: SDPA / explicit attention speed {ms['explicit attention'] / ms[base]:.2f}x; fused / foreach AdamW "
          f"{ms['dlkit AdamW (foreach)'] / ms[base]:.2f}x; bare / nanoGPT layout "
          f"{ms['nanoGPT layout (fused QKV)'] / ms[base]:.2f}x; Trainer / bare step {ms[recipe] / ms[base]:.3f}; "
          f"Trainer reading the loss every step / every 10 steps "
          f"{ms['Trainer, loss read every step'] / ms[recipe]:.3f}; "
          f"Trainer bf16 / fp32 {ms['Trainer, bf16=true (autocast)'] / ms[recipe]:.3f}"
          + "".join(f"; {k} / bare step {ms[k] / ms[base]:.3f}" for k in ms if "compile" in k))
    print(f"RECIPE STEP TIME / REFERENCE LOOP: {ms[recipe] / ms[ref]:.3f} (goal <= 0.80; 2000 steps: recipe "
          f"{2 * ms[recipe]:.0f} s, reference {2 * ms[ref]:.0f} s)"
          + "".join(f"; {k} / reference {ms[k] / ms[ref]:.3f}" for k in ms if "compile" in k))
    print(f"matrix products alone: {gflop:.2f} GFLOP a step in {1e3 * floor:.1f} ms ({gflop / floor:.0f} GFLOP/s): a "
          f"float32 floor of {2000 * floor:.0f} s for 2000 steps on this machine ({100 * 1e3 * floor / ms[base]:.0f} "
          f"% of the bare step)")


if __name__ == "__main__":
    main()
