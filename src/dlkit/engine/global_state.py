"""Process-wide torch settings a training run may change, saved on entry and restored on exit.

The Trainer sets the CPU thread count, may turn on deterministic algorithms or cuDNN autotuning and
the float32 matmul precision; a caller (a notebook, a test, a Study that trains several networks)
must find them as they were afterwards, whether training returned or raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def snapshot() -> dict:
    """The current values of every setting `restored` puts back."""
    return {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "grad_enabled": torch.is_grad_enabled(),
    }


def restore(state: dict) -> None:
    """Put back what `snapshot` returned."""
    if torch.get_num_threads() != state["threads"]:
        torch.set_num_threads(state["threads"])
    torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["deterministic_warn_only"])
    torch.backends.cudnn.benchmark = state["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = state["cudnn_deterministic"]
    torch.set_float32_matmul_precision(state["matmul_precision"])
    torch.set_grad_enabled(state["grad_enabled"])


@contextlib.contextmanager
def restored() -> Iterator[dict]:
    """Run the body, then restore the settings of `snapshot` (also when it raises)."""
    state = snapshot()
    try:
        yield state
    finally:
        restore(state)
