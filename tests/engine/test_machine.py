"""The machine description of verify records and the bf16 "auto" rule."""

from pathlib import Path

import pytest
import torch

from dlkit.engine.machine import cpu_has_native_bf16, cpu_model, describe_machine, resolve_bf16
from dlkit.errors import ConfigError


def test_describe_machine_names_the_cpu_cores_and_simd_level():
    text = describe_machine()
    assert text.startswith(cpu_model())
    assert f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}" in text
    assert f"{torch.get_num_threads()} threads" in text
    assert ("native bf16" in text) == cpu_has_native_bf16()


def test_resolve_bf16_reads_booleans_and_auto():
    assert resolve_bf16(True, "cpu") is True and resolve_bf16("false", "cpu") is False
    assert resolve_bf16("auto", "cpu") is cpu_has_native_bf16()
    if not torch.cuda.is_available():
        assert resolve_bf16("auto", "cuda") is False
    with pytest.raises(ConfigError, match="auto"):
        resolve_bf16("maybe", "cpu")


def test_native_bf16_follows_the_cpu_flags():
    info = Path("/proc/cpuinfo")
    flags = info.read_text().split() if info.exists() else []
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
