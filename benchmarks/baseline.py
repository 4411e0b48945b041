"""unetseg vs a plain baseline written the way the common tutorials write it, same model and data, side by side.

    python benchmarks/baseline.py [--data ../shared/data/carvana_sample] [--base 64] [--size 480x320] [--batch 4]
                                  [--steps 3] [--rounds 2]

Baseline: eager PyTorch, NCHW, fp32, a DataLoader (2 workers, as the tutorials set) whose Dataset fully decodes each JPEG
and GIF with Pillow every epoch, resizes, rotates (limit 35) and flips with Pillow, and normalises with NumPy.
unetseg: images decoded once into a uint8 cache (JPEG draft mode), batched rotation/flips on the device, the layout the
measurements pick (contiguous for CPU training, channels_last for inference), ``torch.inference_mode`` for inference.
Training images/s are measured over ``--steps`` optimizer steps (data loading included), inference images/s over the
same images; each round runs both, and the best round counts.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from unetseg import UNet, UNetConfig
from unetseg._device import memory_format
from unetseg.config import parse_size
from unetseg.data import find_pairs, load_dataset
from unetseg.data.transforms import random_affine, to_float
from unetseg.train.losses import SegmentationLoss


class TutorialDataset(Dataset):
    """The tutorial way: everything with Pillow/NumPy per item, every epoch."""

    def __init__(self, pairs, size):
        self.pairs, self.size = pairs, size

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        image = Image.open(self.pairs[i].image).convert("RGB").resize(self.size, Image.BILINEAR)
        mask = Image.open(self.pairs[i].mask).convert("L").resize(self.size, Image.NEAREST)
        angle = random.uniform(-35, 35)
        image, mask = image.rotate(angle, Image.BILINEAR), mask.rotate(angle, Image.NEAREST)
        if random.random() < 0.5:
            image, mask = image.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
        if random.random() < 0.1:
            image, mask = image.transpose(Image.FLIP_TOP_BOTTOM), mask.transpose(Image.FLIP_TOP_BOTTOM)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0)
        y = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))
        return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/carvana_sample"))
    parser.add_argument("--base", type=int, default=64)
    parser.add_argument("--size", type=parse_size, default=(480, 320))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    pairs = find_pairs(args.data)[: args.batch * args.steps]
    n = len(pairs)
    cpu = torch.device("cpu")

    t0 = time.perf_counter()
    cached, _ = load_dataset(pairs, args.size, 3, 1, progress=False)
    decode_s = time.perf_counter() - t0
    base_model = UNet(UNetConfig(base_channels=args.base))
    ours_model = UNet(UNetConfig(base_channels=args.base))
    ours_model.load_state_dict(base_model.state_dict())
    train_fmt, infer_fmt = memory_format(cpu, "auto", True), memory_format(cpu, "auto", False)
    ours_model = ours_model.to(memory_format=train_fmt)
    loader = DataLoader(TutorialDataset(pairs, args.size), batch_size=args.batch, shuffle=True, num_workers=2)
    bce = torch.nn.BCEWithLogitsLoss()
    opt_b = torch.optim.Adam(base_model.parameters(), 1e-4)
    opt_o = torch.optim.Adam(ours_model.parameters(), 1e-4)
    loss_fn = SegmentationLoss()
    images, masks = torch.from_numpy(cached.images), torch.from_numpy(cached.masks)

    def baseline_train() -> None:
        base_model.train()
        for x, y in loader:
            loss = bce(base_model(x)[:, 0], y)
            opt_b.zero_grad()
            loss.backward()
            opt_b.step()

    def ours_train() -> None:
        ours_model.train()
        for idx in torch.randperm(n).split(args.batch):
            x, y = random_affine(to_float(images[idx], (0.0,) * 3, (1.0,) * 3), masks[idx], 35.0, 0.5, 0.1)
            loss = loss_fn(ours_model(x.contiguous(memory_format=train_fmt)), y)
            opt_o.zero_grad(set_to_none=True)
            loss.backward()
            opt_o.step()

    def baseline_infer() -> None:
        base_model.eval()
        with torch.no_grad():
            for i in range(0, n, args.batch):
                batch = [np.asarray(Image.open(p.image).convert("RGB").resize(args.size, Image.BILINEAR), np.float32)
                         for p in pairs[i:i + args.batch]]
                base_model(torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2) / 255.0))

    infer_model = UNet(UNetConfig(base_channels=args.base)).eval()  # a Predictor holds its model in one layout
    infer_model.load_state_dict(base_model.state_dict())
    infer_model = infer_model.to(memory_format=infer_fmt)

    def ours_infer() -> None:
        with torch.inference_mode():
            for i in range(0, n, args.batch):
                infer_model(to_float(images[i:i + args.batch], (0.0,) * 3, (1.0,) * 3).contiguous(memory_format=infer_fmt))

    timings = {k: float("inf") for k in ("baseline train", "unetseg train", "baseline infer", "unetseg infer")}
    fns = {"baseline train": baseline_train, "unetseg train": ours_train, "baseline infer": baseline_infer,
           "unetseg infer": ours_infer}
    ours_infer()  # warm-up: oneDNN primitive creation for both layouts
    baseline_infer()
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            timings[name] = min(timings[name], time.perf_counter() - t0)
    print(f"{n} Carvana images at {args.size[0]}x{args.size[1]}, U-Net base {args.base}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, best of {args.rounds} rounds; unetseg decoded them once in {decode_s:.2f} s "
          f"({decode_s / n * 1e3:.1f} ms/img, not in the figures below: once per run)")
    print(f"{'':16s} {'baseline img/s':>15s} {'unetseg img/s':>14s} {'ratio':>6s}")
    for kind in ("train", "infer"):
        b, o = n / timings[f"baseline {kind}"], n / timings[f"unetseg {kind}"]
        print(f"{'training' if kind == 'train' else 'inference':16s} {b:15.3f} {o:14.3f} {o / b:5.2f}x")


if __name__ == "__main__":
    main()
