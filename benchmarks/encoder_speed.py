"""Training-step speed of U-Nets on pretrained encoders against the plain U-Net, beside the machine's matmul ceiling,
interleaved in one run (the machine's noise hits every arm alike).

    python benchmarks/encoder_speed.py [--size 224x176] [--batch 8] [--rounds 3]

Each arm: seconds per training image (forward, backward, Adam step; the precision a run would use on this device,
the faster memory layout of the two), the model's GFLOP per image (convolutions, 2 x MACs, a step as 3x the
forward) and the share of the matmul ceiling that reaches. Arms: the plain U-Net at base 16 and 32; EfficientNet-Lite0
with its batch norms trained, frozen and folded; the decoder's upsampling transposed and nearest; a narrower decoder;
ResNet-18 and 34.
"""

from __future__ import annotations

import argparse
import platform
import time
from contextlib import nullcontext

import torch

from unetseg import UNet, UNetConfig
from unetseg._device import autocast_dtype
from unetseg.config import parse_size
from unetseg.model.flops import conv_flops

ARMS = {
    "unet base 16": UNetConfig(base_channels=16, num_classes=11),
    "unet base 32": UNetConfig(base_channels=32, num_classes=11),
    "lite0 bn train": UNetConfig(encoder="efficientnet-lite0", encoder_bn="train", num_classes=11),
    "lite0 bn frozen": UNetConfig(encoder="efficientnet-lite0", encoder_bn="frozen", num_classes=11),
    "lite0 bn fold": UNetConfig(encoder="efficientnet-lite0", encoder_bn="fold", num_classes=11),
    "lite0 fold nearest": UNetConfig(encoder="efficientnet-lite0", decoder_upsample="nearest", num_classes=11),
    "lite0 fold 128..16": UNetConfig(encoder="efficientnet-lite0", decoder_channels=(128, 64, 32, 16, 16),
                                     num_classes=11),
    "resnet18 fold": UNetConfig(encoder="resnet18", num_classes=11),
    "resnet34 fold": UNetConfig(encoder="resnet34", num_classes=11),
}


def step_seconds(cfg: UNetConfig, size: tuple[int, int], batch: int, layout: torch.memory_format,
                 dtype: torch.dtype | None, steps: int = 3) -> float:
    """Seconds per image of a training step (one warm-up step first)."""
    torch.manual_seed(0)
    model = UNet(cfg).to(memory_format=layout).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch, 3, size[1], size[0]).contiguous(memory_format=layout)
    y = torch.randint(0, cfg.num_classes, (batch, size[1], size[0]))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / (steps * batch)


def matmul_gflops(dtype: torch.dtype) -> float:
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(224, 176))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    args = parser.parse_args()
    dtype = autocast_dtype(torch.device("cpu"), "auto")
    ceiling = matmul_gflops(dtype or torch.float32)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {dtype or torch.float32}; "
          f"matmul ceiling {ceiling:.0f} GFLOP/s; {args.size[0]}x{args.size[1]}, batch {args.batch}")
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved rounds; the best of each arm
        for name in args.arms:
            for layout in (torch.contiguous_format, torch.channels_last):
                s = step_seconds(ARMS[name], args.size, args.batch, layout, dtype)
                best[name] = min(best.get(name, s), s)
    base = best[args.arms[0]]
    for name in args.arms:
        cfg = ARMS[name]
        gflop = 3 * conv_flops(UNet(cfg), (3, args.size[1], args.size[0])) / 1e9
        params = sum(p.numel() for p in UNet(cfg).parameters()) / 1e6
        print(f"{name:20s} {best[name] * 1000:7.1f} ms/image  x{best[name] / base:5.2f} of {args.arms[0]}  "
              f"{gflop:6.2f} GFLOP/image  {gflop / best[name]:6.1f} GFLOP/s ({gflop / best[name] / ceiling:5.1%} of "
              f"the ceiling)  {params:5.2f}M parameters", flush=True)


if __name__ == "__main__":
    main()
