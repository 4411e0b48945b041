"""Where a real training step's time goes, part by part, beside the plan's probe and the bare model step, interleaved
in one run (the machine's noise hits every arm alike).

    python benchmarks/step_cost.py [--size 448x336] [--crop 320x240] [--batch 8] [--rounds 3]

Arms, each seconds per training sample (Lite0 U-Net on 11 classes, the precision and layout a run would use here):
  probe            the budget plan's probe (:func:`unetseg.train.plan.measure_step`) at the sample's size
  model            forward, backward and fused Adam with plain cross-entropy (benchmarks/encoder_speed.py's step)
  + loss           the run's loss: Dice + cross-entropy with class weights
  + augment        the run's augmentation of uint8 frames (warp and crop, colour, normalisation) before the step
  + decoder 128..  the narrower decoder (128, 64, 32, 16, 16) in the full step
and the augmentation alone. The matmul ceiling of the machine is printed beside them.
"""

from __future__ import annotations

import argparse
import platform
import time
from contextlib import nullcontext

import torch

from encoder_speed import matmul_gflops  # the benchmarks' one matmul ceiling (this folder first on the path)
from unetseg import UNet, UNetConfig
from unetseg._device import autocast_dtype
from unetseg.config import DataConfig, RunConfig, parse_size
from unetseg.data.transforms import augment
from unetseg.train.losses import SegmentationLoss
from unetseg.train.plan import measure_step

WEIGHTS = [0.339, 0.189, 5.5, 0.176, 1.0, 0.661, 5.36, 2.04, 0.909, 6.56, 9.88]  # CamVid's median frequency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(448, 336), help="the frames' training size")
    parser.add_argument("--crop", type=parse_size, default=(320, 240), help="the sample's size")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dtype = autocast_dtype(torch.device("cpu"), "auto")
    layout = torch.channels_last
    (w, h), (cw, ch), n = args.size, args.crop, args.batch
    data = DataConfig(image_size=args.size, crop=args.crop, scale_limit=1.0, rotate_limit=10, vflip_p=0,
                      brightness=0.3, contrast=0.3, saturation=0.5, gamma=0.25, mean=(0.5,) * 3, std=(0.5,) * 3)
    frames = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8)
    labels = torch.randint(0, 11, (n, h, w), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)

    def arm(decoder: tuple[int, ...], loss_fn: torch.nn.Module, augmented: bool):
        torch.manual_seed(0)
        model = UNet(UNetConfig(encoder="efficientnet-lite0", encoder_weights="none", num_classes=11,
                                decoder_channels=decoder)).to(memory_format=layout).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
        x0 = torch.randn(n, 3, ch, cw).contiguous(memory_format=layout)
        y0 = torch.randint(0, 11, (n, ch, cw))

        def step() -> None:
            x, y = augment(frames, labels, data, generator) if augmented else (x0, y0)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
                loss = loss_fn(model(x.contiguous(memory_format=layout)), y)
            loss.backward()
            opt.step()
        return step

    plain = torch.nn.CrossEntropyLoss()
    run_loss = SegmentationLoss("dice_ce", WEIGHTS)
    wide = (256, 128, 64, 32, 16)
    arms = {"model": arm(wide, plain, False), "+ loss": arm(wide, run_loss, False),
            "+ augment": arm(wide, run_loss, True), "+ decoder 128..": arm((128, 64, 32, 16, 16), run_loss, True),
            "augment alone": lambda: augment(frames, labels, data, generator)}
    probe_cfg = RunConfig()
    probe_cfg.model = UNetConfig(encoder="efficientnet-lite0", encoder_weights="none", num_classes=11)
    probe_cfg.data.image_size = args.crop
    times: dict[str, list[float]] = {name: [] for name in ["probe", *arms]}
    for step in arms.values():
        step()  # warm-up
    for _ in range(args.rounds):
        times["probe"].append(measure_step(probe_cfg, torch.device("cpu"), dtype, layout, n, steps=2))
        for name, step in arms.items():
            t0 = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - t0) / n)
    ceiling = matmul_gflops(dtype or torch.float32)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {str(dtype).removeprefix('torch.')}; matmul ceiling {ceiling:.0f} GFLOP/s; batch {n}, "
          f"frames {w}x{h}, samples {cw}x{ch}")
    base = min(times["model"])
    for name, values in times.items():
        best = min(values)
        print(f"{name:16s} {1000 * best:8.1f} ms a sample ({1e6 * best / (cw * ch):.2f} us a pixel), "
              f"{best / base:.2f}x the model step")


if __name__ == "__main__":
    main()
