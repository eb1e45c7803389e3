"""Tokens per second of one training step of nanoGPT's CPU character GPT, in variants of dlkit's implementation.

The model and step are those of the `char-gpt-shakespeare` recipe: 4 layers, 4 heads, 128 wide, block 64, batch
12 (768 tokens a step), no biases, dropout 0; forward, loss, backward, gradient clipping at norm 1 and an AdamW
step (weight decay 0.1 on the matrices). Variants, each against the recipe's configuration (SDPA attention,
torch's fused AdamW, eager) in the same run:

- explicit attention: softmax(Q K^T / sqrt(d) + M) V step by step (MultiHeadAttention's `explicit` flag);
- dlkit's own AdamW with `_foreach` ops instead of torch's fused kernel;
- a nanoGPT-layout model (one fused QKV projection per block; otherwise the same computation);
- the reference: that model driven as nanoGPT's train.py drives it on a CPU (a batch gathered from a fresh
  np.memmap of the uint16 token file at every step, torch's AdamW with its default foreach kernels since fused
  is CUDA-only there, and the loss read with .item() at every step for logging);
- `torch.compile` of the loss (skipped with --quick; its compile time is reported, a failure is caught).

It also times the step's matrix products alone (every forward and backward product of one step, as isolated
`torch.mm` calls): the floor no implementation of this configuration can go below on the machine in float32.

Random token ids stand in for the text (the speed does not depend on them). Implementations are interleaved and
the median of several repeats is taken; the script prints ms/step, tokens/s and each variant's speed-up.
"""

from __future__ import annotations

import argparse
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
from dlkit.models.sequence.gpt import GPT
from dlkit.nn.attention import MultiHeadAttention
from dlkit.optim import create_optimizer

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


class _NanoLoopVariant:
    """The reference step: the nanoGPT-layout model with the per-step host work of nanoGPT's train.py loop."""

    def __init__(self, ids: torch.Tensor, path: str):
        torch.manual_seed(0)
        self.model = _NanoGPT()
        ids.numpy().astype(np.uint16).tofile(path)
        self.path, self.params = path, list(self.model.parameters())
        self.opt = torch.optim.AdamW(self.model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.99))

    def get_batch(self):
        data = np.memmap(self.path, dtype=np.uint16, mode="r")  # re-opened each call, as train.py does
        ix = torch.randint(len(data) - BLOCK, (BATCH,))
        x = torch.stack([torch.from_numpy(data[i:i + BLOCK].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + BLOCK].astype(np.int64)) for i in ix])
        return x, y

    def step(self) -> torch.Tensor:
        x, y = self.get_batch()
        loss = self.model.loss(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss.item()  # train.py logs the loss of every iteration (log_interval=1 in the CPU command)
        return loss.detach()


class Variant:
    """A model, its optimizer and its loss function; `step()` is one full training step."""

    def __init__(self, model, fused: bool = True, compile: bool = False):
        self.model = model
        self.opt = create_optimizer("adamw", model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.99), fused=fused)
        self.params = list(model.parameters())
        self.loss_fn = torch.compile(model.loss) if compile else model.loss
        self.batches = RandomWindows(_ids(), BATCH, BLOCK, seed=0)

    def step(self) -> torch.Tensor:
        x, y = next(self.batches)
        loss = self.loss_fn(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
        self.opt.step()
        return loss.detach()


def matmul_floor(repeats: int = 20) -> tuple[float, float]:
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
        t = time.perf_counter()
        for a, b in ops:
            torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return gflop, statistics.median(times[3:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and no torch.compile (< 20 s in all)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (median taken)")
    ap.add_argument("--steps", type=int, default=None, help="steps timed per repeat")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, steps = args.repeats or (3 if args.quick else 7), args.steps or (10 if args.quick else 25)
    print(f"char GPT {LAYERS}x{HEADS}x{WIDTH}, block {BLOCK}, batch {BATCH} ({BATCH * BLOCK} tokens/step), float32, "
          f"{describe_machine()}, torch {torch.__version__}; median of {repeats} x {steps} steps; load "
          f"average {os.getloadavg()[0]:.1f} (times are noisy when other processes share the CPU)")
    tmp_dir = tempfile.TemporaryDirectory()  # the reference's token file; removed at exit
    tmp = tmp_dir.name
    variants = {"dlkit: SDPA + fused AdamW (recipe)": Variant(_gpt()),
                "explicit attention": Variant(_gpt(explicit=True)),
                "dlkit AdamW (foreach)": Variant(_gpt(), fused=False),
                "nanoGPT layout (fused QKV)": Variant(_NanoGPT()),
                "reference: nanoGPT train.py loop": _NanoLoopVariant(_ids(), os.path.join(tmp, "train.bin"))}
    base = "dlkit: SDPA + fused AdamW (recipe)"
    first = {k: float(v.step()) for k, v in list(variants.items())[:3]}  # same init and batch: equal first losses
    assert max(abs(v - first[base]) for v in first.values()) < 1e-4, first
    if not (args.quick or args.no_compile):
        try:
            t = time.perf_counter()
            compiled = Variant(_gpt(), compile=True)
            compiled.step()
            compiled.step()
            print(f"torch.compile: first two steps (compilation) took {time.perf_counter() - t:.1f} s")
            variants["torch.compile (inductor)"] = compiled
        except Exception as e:  # noqa: BLE001 -- any backend failure is reported, not fatal
            print(f"torch.compile unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    for v in variants.values():  # warm-up
        for _ in range(3):
            v.step()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, v in variants.items():
            t = time.perf_counter()
            for _ in range(steps):
                v.step()
            times[name].append((time.perf_counter() - t) / steps)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    gflop, floor = matmul_floor()
    print(f"{'variant':<38} {'ms/step':>8} {'tokens/s':>9} {'it/s':>6} {'2000 it (s)':>11} {'speed-up vs recipe':>19}")
    for name, t in ms.items():
        print(f"{name:<38} {t:>8.1f} {BATCH * BLOCK / t * 1e3:>9.0f} {1e3 / t:>6.1f} {2 * t:>11.0f} "
              f"{ms[base] / t:>19.2f}")
    print(f"ratios: SDPA / explicit attention speed {ms['explicit attention'] / ms[base]:.2f}x; fused / foreach AdamW "
          f"{ms['dlkit AdamW (foreach)'] / ms[base]:.2f}x; recipe / nanoGPT layout "
          f"{ms['nanoGPT layout (fused QKV)'] / ms[base]:.2f}x; recipe / reference loop "
          f"{ms['reference: nanoGPT train.py loop'] / ms[base]:.2f}x (2000 steps: recipe {2 * ms[base]:.0f} s, "
          f"reference {2 * ms['reference: nanoGPT train.py loop']:.0f} s)"
          + (f"; compile / eager {ms[base] / ms['torch.compile (inductor)']:.2f}x"
             if "torch.compile (inductor)" in ms else ""))
    print(f"matrix products alone: {gflop:.2f} GFLOP a step in {1e3 * floor:.1f} ms ({gflop / floor:.0f} GFLOP/s): a "
          f"float32 floor of {2000 * floor:.0f} s for 2000 steps on this machine ({100 * 1e3 * floor / ms[base]:.0f} "
          f"% of the recipe's step)")


if __name__ == "__main__":
    main()
