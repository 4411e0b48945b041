"""CUDA training throughput of the U-Net: images/s, MFU against the GPU's dense peak, peak memory.

    python benchmarks/gpu.py [--base 64] [--size 480x320] [--batch 16] [--steps 10]

Skipped with a message where no GPU is present. Precision is what unetseg picks ("auto": bf16 where supported,
else fp16 with gradient scaling); layout channels_last.
"""

from __future__ import annotations

import argparse
import time

import torch

from unetseg import UNet, UNetConfig
from unetseg._device import autocast_dtype
from unetseg.config import parse_size
from unetseg.model.flops import conv_flops

#: Dense (no sparsity) tensor-core peaks in TFLOP/s for bf16/fp16, by a substring of the device name.
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0, "T4": 65.0,
         "RTX 4090": 165.0, "RTX 3090": 71.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=64)
    parser.add_argument("--size", type=parse_size, default=(480, 320))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: CUDA benchmark skipped")
        return
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAKS.items() if k in name), None)
    model = UNet(UNetConfig(base_channels=args.base))
    flops = 3 * conv_flops(model, (3, args.size[1], args.size[0]))
    model = model.to(device, memory_format=torch.channels_last).train()
    dtype = autocast_dtype(device, "auto")
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.randn(args.batch, 3, args.size[1], args.size[0], device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(args.batch, 1, args.size[1], args.size[0], device=device) > 0.5).float()

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / args.steps
    rate = args.batch / seconds
    achieved = flops * rate / 1e12
    print(f"{name}, {dtype}, U-Net base {args.base}, {args.size[0]}x{args.size[1]}, batch {args.batch}")
    print(f"training: {rate:.1f} img/s, {achieved:.1f} TFLOP/s"
          + (f", MFU {achieved / peak:.2%} of {peak:.0f} TFLOP/s dense peak" if peak else ", peak unknown for this GPU"))
    print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
