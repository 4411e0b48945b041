"""Device and precision choice, shared by training and inference."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; any other name is passed to :class:`torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists amx_bf16 or avx512_bf16 (without them bf16 is 10-100x slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for ``amp="auto"``: fp16 on CUDA (with gradient scaling, the seed's recipe), bf16 on
    CPUs with native bf16, None (fp32) otherwise or when ``amp="off"``."""
    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None
