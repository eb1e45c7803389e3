"""A one-line description of the machine a result was measured on (CPU model, cores, SIMD level, GPU).

Speeds and the wall time of a recipe depend on it far more than on the code (the 2-core machines of this
project have been Xeons with AVX-512/AMX and EPYCs with AVX2 only, a 2-3x difference), so verify records and
benchmark headers carry it.
"""

from __future__ import annotations

import os
import platform

import torch

from ..errors import ConfigError


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine() -> str:
    """E.g. 'AMD EPYC, 2 cores, torch CPU capability AVX512, native bf16, 2 threads' (+ the GPU's name when CUDA
    is visible). "native bf16" is there when the CPU has it: it turns on the recipes' `bf16=auto`, which runs their
    convolutions about twice as fast, so it explains most of the gap between two machines' records."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bf16 = ", native bf16" if cpu_has_native_bf16() else ""
    text = (f"{cpu_model()}, {cores} cores, torch CPU capability {torch.backends.cpu.get_cpu_capability()}{bf16}, "
            f"{torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16), read from /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(value, device: str) -> bool:
    """The recipe option bf16 as a bool: true/false as given; "auto" means on where bf16 is native (a CUDA GPU
    that supports it, a CPU with AVX512-BF16/AMX), where it runs dense convolutions about twice as fast as fp32,
    and off elsewhere (emulated bf16 is 7-13x slower than fp32 on an AVX2 CPU: benchmarks/RESULTS.md)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    if text != "auto":
        raise ConfigError(f"bf16 must be true, false or auto; got {value!r}")
    if str(device).startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()
