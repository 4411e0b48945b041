"""Training-step speed of the budget plan's candidates (unetseg.train.plan.LADDER at Carvana's aspect ratio) against
the matmul ceiling, for both layouts and two batch sizes, measured interleaved in one run: fp32, and bf16 autocast too
where the CPU has native bf16 (AMX / AVX512-BF16), each against its own matmul ceiling.

    python benchmarks/plan_speed.py [--repeat 2] [--max-base 16]

A training step counts 3x the forward convolution FLOPs (forward, input gradient, weight gradient).
"""

from __future__ import annotations

import argparse
import time

import torch

from unetseg import RunConfig, UNetConfig
from unetseg._device import cpu_has_native_bf16
from unetseg.model import UNet
from unetseg.model.flops import conv_flops
from unetseg.train.plan import LADDER, measure_step, size_for


def matmul_gflops(n: int = 4096, repeat: int = 3, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--max-base", type=int, default=16, help="skip the costlier candidates (slow on CPUs)")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cpu")
    precisions = {"fp32": (None, matmul_gflops())}
    if cpu_has_native_bf16():
        precisions["bf16"] = (torch.bfloat16, matmul_gflops(dtype=torch.bfloat16))
    for name, (_, ceiling) in precisions.items():
        print(f"{name} matmul n=4096: {ceiling:.1f} GFLOP/s; {torch.get_num_threads()} threads")
    print(f"{'base':>4} {'size':>8} {'prec':>4} {'layout':>13} {'batch':>5} {'ms/img':>8} {'GFLOP/s':>8} "
          f"{'of ceiling':>10}")
    for base, scale in LADDER:
        if base > args.max_base:
            continue
        size = size_for(1918 / 1280, scale)
        cfg = RunConfig()
        cfg.model.base_channels, cfg.data.image_size = base, size
        flops = 3 * conv_flops(UNet(UNetConfig(base_channels=base)), (3, size[1], size[0]))
        for prec, (dtype, ceiling) in precisions.items():
            for layout in (torch.contiguous_format, torch.channels_last):
                for batch in (8, 16):
                    sec = min(measure_step(cfg, device, dtype, layout, batch) for _ in range(args.repeat))
                    name = "channels_last" if layout == torch.channels_last else "contiguous"
                    print(f"{base:>4} {size[0]:>4}x{size[1]:<3} {prec:>4} {name:>13} {batch:>5} {sec * 1e3:>8.1f} "
                          f"{flops / sec / 1e9:>8.1f} {flops / sec / 1e9 / ceiling:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
