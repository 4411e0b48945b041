"""Hardware ceiling vs the U-Net: matmul GFLOP/s, then the U-Net's inference and training-step GFLOP/s as a fraction
of it, for both memory layouts (contiguous NCHW and channels_last), measured interleaved in one run.

    python benchmarks/ceiling.py [--base 64] [--size 480x320] [--batch 2] [--repeat 3]

FLOPs are counted from the model's convolutions (2 * MACs; BN, ReLU, pooling and resizing are left out, as is usual),
a training step as 3x the forward (forward + grad wrt input + grad wrt weights).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from unetseg import UNet, UNetConfig
from unetseg._device import autocast_dtype, cpu_has_native_bf16
from unetseg.model.flops import conv_flops
from unetseg.config import parse_size


def matmul_gflops(n: int, dtype: torch.dtype, repeat: int) -> float:
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
    parser.add_argument("--base", type=int, default=64, help="base channels (64 = the seed's U-Net)")
    parser.add_argument("--size", type=parse_size, default=(480, 320), help="WIDTHxHEIGHT")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    w, h = args.size
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"native bf16: {cpu_has_native_bf16()}, autocast for training here: "
          f"{autocast_dtype(torch.device('cpu'), 'auto') or 'none (fp32)'}")
    ceiling = matmul_gflops(4096, torch.float32, args.repeat)
    print(f"fp32 matmul n=4096: {ceiling:.1f} GFLOP/s (the ceiling below)")
    if cpu_has_native_bf16():
        print(f"bf16 matmul n=4096: {matmul_gflops(4096, torch.bfloat16, args.repeat):.1f} GFLOP/s")

    model = UNet(UNetConfig(base_channels=args.base))
    fwd = conv_flops(model, (3, h, w))
    print(f"U-Net base {args.base}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{fwd / 1e9:.1f} GFLOP forward per {w}x{h} image, {3 * fwd / 1e9:.1f} per training step")
    x = torch.randn(args.batch, 3, h, w)
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    models = {name: UNet(UNetConfig(base_channels=args.base)).to(memory_format=fmt) for name, fmt in layouts.items()}
    opts = {name: torch.optim.Adam(m.parameters(), 1e-4) for name, m in models.items()}

    def infer(name: str) -> None:
        with torch.inference_mode():
            models[name].eval()(x.contiguous(memory_format=layouts[name]))

    def train(name: str) -> None:
        m = models[name].train()
        loss = m(x.contiguous(memory_format=layouts[name])).float().mean()
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    rows = []
    for kind, fn, flops in (("inference", infer, fwd), ("training step", train, 3 * fwd)):
        for name in layouts:
            fn(name)  # warm-up (oneDNN primitive creation)
        best = {name: float("inf") for name in layouts}
        for _ in range(args.repeat):  # interleaved so that machine noise hits both layouts alike
            for name in layouts:
                best[name] = min(best[name], _timed(lambda: fn(name)))
        for name in layouts:
            per_image = best[name] / args.batch
            gflops = flops / per_image / 1e9
            rows.append((kind, name, per_image, gflops, gflops / ceiling))
    print(f"\nbatch {args.batch}, best of {args.repeat}")
    print(f"{'':15s} {'layout':14s} {'s/image':>8s} {'GFLOP/s':>8s} {'of ceiling':>10s}")
    for kind, name, per_image, gflops, frac in rows:
        print(f"{kind:15s} {name:14s} {per_image:8.2f} {gflops:8.1f} {frac:10.2f}")


if __name__ == "__main__":
    main()
