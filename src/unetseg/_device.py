"""Device and precision choice, shared by training and inference."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; any other name is passed to :class:`torch.device`.

    Raises:
        ValueError: for a name torch does not know, or a CUDA device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device name (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {name}: no such CUDA device here ({torch.cuda.device_count()} found)")
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists amx_bf16 or avx512_bf16 (without them bf16 is 10-100x slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True on GPUs with bf16 in hardware (compute capability 8.0+: A100, H100, RTX 30xx and later); V100 and T4
    only emulate it, slowly, though ``torch.cuda.is_bf16_supported()`` says yes there by default."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for a TrainConfig.amp setting on ``device``; None means fp32.

    "auto": CUDA -> bf16 where the GPU has it natively (compute capability 8.0+), else fp16 (with gradient
    scaling); CPU -> bf16 only with native bf16.
    """
    if amp == "off":
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("--amp fp16 needs a CUDA device; use --amp auto or off on CPUs")
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def memory_format(device: torch.device, setting: str, training: bool, encoder: bool = False) -> torch.memory_format:
    """The activation layout for a TrainConfig.memory_format setting. On this project's 2-core Zen 3 CPU
    (benchmarks/ceiling.py, base 32, 480x320, batch 2): inference 0.54 s/img channels_last vs 0.73 contiguous,
    a training step 2.62 s/img channels_last vs 1.95 contiguous; so "auto" trains the plain U-Net contiguous on CPUs.
    A pretrained ``encoder`` trains channels_last everywhere: its depthwise and strided convolutions' backward is
    much faster so (benchmarks/encoder_speed.py, EPYC with avx512_bf16, 224x176: Lite0 52 against 75 ms/image,
    ResNet-18 57 against 62)."""
    if setting == "channels_last" or (setting == "auto" and (device.type == "cuda" or not training or encoder)):
        return torch.channels_last
    return torch.contiguous_format


#: Where Linux mounts the control groups (v2: one tree; v1: a folder per controller).
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: This process's cgroups, one line per hierarchy (v2: ``0::/path``; v1: ``N:memory:/path``).
PROC_CGROUP = Path("/proc/self/cgroup")
#: A v1 limit this large means none (the kernel writes the largest page-aligned 64-bit value).
_NO_LIMIT = 1 << 60


def free_memory(device: torch.device) -> int:
    """Bytes free for tensors on ``device``: CUDA's free memory; on CPUs MemAvailable of /proc/meminfo, or less where
    this process's container (its cgroup's memory limit, :func:`cgroup_free`) leaves less."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available = 8 << 30
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    limited = cgroup_free()
    return available if limited is None else min(available, limited)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2): no limit


def _own_cgroups(root: Path) -> list[Path]:
    """The folders of this process's memory cgroup under ``root`` and of each cgroup above it (a limit set on a
    job's cgroup holds for its steps), then ``root`` itself (a container sees its own cgroup as the root)."""
    folders: list[Path] = []
    try:
        for line in PROC_CGROUP.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers in ("", "memory") or "memory" in controllers.split(","):
                base = (root / "memory") if controllers and (root / "memory").is_dir() else root
                folder = base / path.strip("/")
                while folder != base and base in folder.parents:
                    folders.append(folder)
                    folder = folder.parent
    except (OSError, ValueError):
        pass
    return list(dict.fromkeys([*folders, root, root / "memory"]))


def _reclaimable(folder: Path) -> int:
    """Bytes of the cgroup's usage that the kernel reclaims on demand (its inactive file cache), as MemAvailable
    leaves it out too: a container that has just read its dataset is not full."""
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file") and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def cgroup_free(root: Path | None = None) -> int | None:
    """Bytes this process's memory cgroups have left: the least over the cgroup and those above it of its limit less
    its usage (cgroup v2 ``memory.max`` and ``memory.current``, v1 ``memory.limit_in_bytes`` and
    ``memory.usage_in_bytes``), less reclaimable file cache; None without a limit. In a container limited to 16 GB
    on a 512 GB host, MemAvailable speaks of the host, the cgroup of the container."""
    root = CGROUP_ROOT if root is None else root
    free = None
    for folder in _own_cgroups(root):
        for limit_file, usage_file in (("memory.max", "memory.current"),
                                       ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit = _read_int(folder / limit_file)
            if limit is not None and limit < _NO_LIMIT:
                used = max(0, (_read_int(folder / usage_file) or 0) - _reclaimable(folder))
                free = max(0, limit - used) if free is None else min(free, max(0, limit - used))
                break
    return free


def device_name(device: torch.device) -> str:
    """What a person calls the device: the GPU's name, or the CPU's model name and the threads torch uses."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    model = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({device.type}, {torch.get_num_threads()} threads)"
