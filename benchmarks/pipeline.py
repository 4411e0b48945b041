"""Data pipeline vs model: decoded and augmented images/s against the images/s a training step consumes.

    python benchmarks/pipeline.py [--data ../shared/data/carvana_sample] [--size 480x320] [--batch 16] [--base 64]

Decoding (JPEG draft + GIF, on all cores) happens once per run into the uint8 cache; every epoch after that the
pipeline is the batched rotation/flip/normalisation on the training device. The model rate is one training step of
the U-Net at the same size (fp32, the layout unetseg trains with on this device).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from unetseg import UNet, UNetConfig
from unetseg._device import memory_format
from unetseg.config import parse_size
from unetseg.data import find_pairs, load_dataset
from unetseg.data.transforms import random_affine, to_float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/carvana_sample"))
    parser.add_argument("--size", type=parse_size, default=(480, 320))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--base", type=int, default=64)
    args = parser.parse_args()
    pairs = find_pairs(args.data)
    t0 = time.perf_counter()
    data, _ = load_dataset(pairs, args.size, 3, 1, progress=False)
    decode = len(pairs) / (time.perf_counter() - t0)

    images, masks = torch.from_numpy(data.images), torch.from_numpy(data.masks)
    g = torch.Generator().manual_seed(0)
    augment_times = []
    for _ in range(3):
        idx = torch.randperm(len(pairs), generator=g)[: args.batch]
        t0 = time.perf_counter()
        random_affine(to_float(images[idx], (0.0,) * 3, (1.0,) * 3), masks[idx], 35.0, 0.5, 0.1, generator=g)
        augment_times.append(time.perf_counter() - t0)
    augment = args.batch / min(augment_times)

    cpu = torch.device("cpu")
    fmt = memory_format(cpu, "auto", training=True)
    model = UNet(UNetConfig(base_channels=args.base)).to(memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(2, 3, args.size[1], args.size[0]).contiguous(memory_format=fmt)
    step_times = []
    for _ in range(2):
        t0 = time.perf_counter()
        model(x).mean().backward()
        opt.step()
        opt.zero_grad()
        step_times.append(time.perf_counter() - t0)
    model_rate = 2 / min(step_times)
    print(f"{len(pairs)} Carvana pairs -> {args.size[0]}x{args.size[1]}, {torch.get_num_threads()} threads")
    print(f"{'stage':44s} {'img/s':>9s} {'x model':>8s}")
    for name, rate in (("decode JPEG+GIF into the cache (once per run)", decode),
                       (f"augment + normalise, batch {args.batch} (every epoch)", augment),
                       (f"U-Net base {args.base} training step consumes", model_rate)):
        print(f"{name:44s} {rate:9.2f} {rate / model_rate:7.0f}x")


if __name__ == "__main__":
    main()
