"""Prediction throughput: ``predict_folder`` (decode, model, resize to the photo's size, encode and write masks and
overlays) against the model alone on the same batches, in the same run.

    python benchmarks/predict_speed.py [--data ../shared/data/carvana_sample/train] [--base 16] [--size 240x160]

The weights are random (speed does not depend on them); the model is the seed's U-Net at the given width and input
size, on ``--device`` (the CPU by default) in the precision ``--amp auto`` picks. Goal: predict within 10% of the model alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unetseg import Predictor, RunConfig, UNet, predict_folder
from unetseg.config import parse_size
from unetseg.infer.predict import list_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                              "carvana_sample" / "train"))
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--size", default="240x160")
    parser.add_argument("--batch", type=int, default=0, help="0: the predictor's own choice (4 on CPUs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=1, help="predict each image this many times (a longer folder)")
    parser.add_argument("--overlays", choices=["both", "off", "on"], default="both")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stages", action="store_true", help="time the host stages apart (header, decode, mask PNG), "
                        "in one thread and in the decode threads, and stop")
    args = parser.parse_args()
    if args.stages:
        stages(list_images(args.data)[:args.images], parse_size(args.size))
        return
    cfg = RunConfig()
    cfg.model.base_channels, cfg.data.image_size = args.base, parse_size(args.size)
    torch.manual_seed(0)
    predictor = Predictor(UNet(cfg.model), cfg, device=args.device, batch_size=args.batch)
    args.batch = predictor.batch_size
    sync = torch.cuda.synchronize if predictor.device.type == "cuda" else (lambda: None)
    paths = list_images(args.data)[:args.images] * args.repeat
    inputs = [np.stack([predictor._load(p)[0] for p in paths[i:i + args.batch]])
              for i in range(0, len(paths), args.batch)]
    predictor.logits(inputs[0])  # warm-up
    print(f"{len(paths)} images of {args.data}, U-Net base {args.base} at {args.size}, batch {args.batch}, "
          f"precision {predictor.dtype or torch.float32}, {torch.get_num_threads()} threads")
    for _ in range(args.rounds):  # interleaved, twice by default: the machine is noisy
        t0 = time.perf_counter()
        for batch in inputs:
            predictor.logits(batch)
        sync()
        model_s = time.perf_counter() - t0
        rows = [("model alone (decoded batches)", model_s)]
        for overlays in {"both": (False, True), "off": (False,), "on": (True,)}[args.overlays]:
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                predict_folder(predictor, _subset(paths, out), Path(out) / "pred", overlays=overlays)
                rows.append((f"predict_folder, overlays {'on' if overlays else 'off'}", time.perf_counter() - t0))
        for name, seconds in rows:
            print(f"{name:<34} {len(paths) / seconds:8.2f} img/s  time x model {seconds / model_s:5.2f}")


def stages(paths: list[Path], size: tuple[int, int]) -> None:
    """ms per photo of each host stage of predict, in one thread and in DECODE_THREADS threads."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from unetseg.data.encoding import MaskEncoding
    from unetseg.data.io import DECODE_THREADS, image_info, read_image
    from unetseg.infer.predict import PNG_LEVEL

    width, height = image_info(paths[0])[0]
    classes = np.zeros((height, width), np.uint8)
    classes[height // 4:3 * height // 4, width // 5:4 * width // 5] = 1  # a car-like blob
    encoding = MaskEncoding((0, 255))

    def png(_: Path) -> None:
        encoding.to_image(classes).save(io.BytesIO(), format="PNG", compress_level=PNG_LEVEL)

    for name, work in (("header", image_info), ("draft decode + resize", lambda p: read_image(p, size)),
                       ("mask to PNG", png)):
        t0 = time.perf_counter()
        for p in paths:
            work(p)
        one = (time.perf_counter() - t0) / len(paths)
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            t0 = time.perf_counter()
            list(pool.map(work, paths * 2))
            many = (time.perf_counter() - t0) / (2 * len(paths))
        print(f"{name:<24} {1000 * one:6.2f} ms/photo; {DECODE_THREADS} threads {1000 * many:6.2f} ms/photo "
              f"(x{one / many:.2f})")


def _subset(paths: list[Path], out: str) -> Path:
    """A folder of links to the first images, so predict_folder reads exactly those."""
    folder = Path(out) / "input"
    folder.mkdir(exist_ok=True)
    for i, p in enumerate(paths):  # a repeated image gets a name of its own
        name = p.name if i < len(set(paths)) else f"{p.stem}_{i}{p.suffix}"
        if not (folder / name).exists():
            (folder / name).symlink_to(p.resolve())
    return folder


if __name__ == "__main__":
    main()
