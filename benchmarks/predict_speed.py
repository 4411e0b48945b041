"""Prediction throughput: ``predict_folder`` (decode, model, resize to the photo's size, encode and write masks and
overlays) against the model alone on the same batches, in the same run.

    python benchmarks/predict_speed.py [--data ../shared/data/carvana_sample/train] [--base 16] [--size 240x160]

The weights are random (speed does not depend on them); the model is the seed's U-Net at the given width and input
size, on ``--device`` (the CPU by default) in the precision ``--amp auto`` picks. Goal: predict within 10% of the
model alone.
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
    parser.add_argument("--host-bound", action="store_true", help="the pipeline with a model that costs nothing (a 1x1 "
                        "convolution at --size): its img/s, each stage timed apart, and the overlap efficiency")
    args = parser.parse_args()
    if args.stages:
        stages(list_images(args.data)[:args.images], parse_size(args.size))
        return
    if args.host_bound:
        host_bound(list_images(args.data)[:args.images] * args.repeat, parse_size(args.size), args.rounds,
                   args.device, args.batch)
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


def host_bound(paths: list[Path], size: tuple[int, int], rounds: int, device: str = "cpu", batch: int = 0) -> None:
    """The pipeline on the host alone: predict (with and without overlays) and submit with a 1x1 convolution for a
    model, against each stage timed apart in one thread (ms/image): decode (draft decode + resize to the model's
    size), model, enlarge (to the photo's size, classify, to host memory), write (mask PNG; with overlays the full
    decode and the overlay JPEG too; for submit the run-length encoding). Overlap efficiency E = img/s / (1000 /
    the slowest stage): 1 where the stages overlap perfectly and the slowest one sets the pace."""
    import io

    import torch.nn.functional as F

    from unetseg.data.io import read_image
    from unetseg.infer.predict import PNG_LEVEL, overlay
    from unetseg.infer.submit import rle_encode, write_submission
    from unetseg.metrics import logits_to_classes

    cfg = RunConfig()
    cfg.data.image_size = size
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 1, 1)
    predictor = Predictor(model, cfg, device=device, batch_size=batch or (4 if device == "cpu" else 64))
    n = len(paths)
    print(f"{n} images, a 1x1 convolution at {size[0]}x{size[1]} for a model, batch {predictor.batch_size}, "
          f"{torch.get_num_threads()} torch threads, precision {predictor.dtype or torch.float32}")

    def per_image(work, items) -> float:
        t0 = time.perf_counter()
        for item in items:
            work(item)
        return 1000 * (time.perf_counter() - t0) / len(items)

    sample = paths[:min(16, n)]
    decoded = [predictor._load(p) for p in sample]
    b = predictor.batch_size
    batches = [[d[0] for d in decoded[i:i + b]] for i in range(0, len(decoded) - b + 1, b)]
    scores = torch.cat([predictor.logits(np.stack(x)) for x in batches])
    full = [(d[1][1], d[1][0]) for d in decoded]

    def model_stage(x: list[np.ndarray]) -> None:  # as the pipeline's model thread: stack, normalise, forward
        predictor.logits(np.stack(x))

    def enlarge(i: int) -> np.ndarray:
        s = F.interpolate(scores[i % len(scores)][None], size=full[i], mode="bilinear", align_corners=False)
        return logits_to_classes(s, predictor.threshold, torch.uint8).cpu().numpy()[0]

    masks = [enlarge(i) for i in range(len(sample))]

    def png(i: int) -> None:
        predictor.encoding.to_image(masks[i]).save(io.BytesIO(), format="PNG", compress_level=PNG_LEVEL)

    def with_overlay(i: int) -> None:
        png(i)
        image = read_image(sample[i], None, 3)
        overlay(image, masks[i], predictor.encoding).save(io.BytesIO(), format="JPEG", quality=90)

    stage = {"decode": per_image(predictor._load, sample),
             "model": per_image(model_stage, batches) / b,
             "enlarge": per_image(enlarge, range(len(sample)))}
    writes = {"predict": per_image(png, range(len(sample))), "predict, overlays": per_image(with_overlay,
                                                                                          range(len(sample))),
              "submit": per_image(lambda i: rle_encode(masks[i]), range(len(sample)))}
    for _ in range(rounds):
        for name, write_ms in writes.items():
            with tempfile.TemporaryDirectory() as out:
                folder = _subset(paths, out)
                t0 = time.perf_counter()
                if name == "submit":
                    write_submission(predictor, folder, Path(out) / "submission.csv")
                else:
                    predict_folder(predictor, folder, Path(out) / "pred", overlays=name.endswith("overlays"))
                rate = n / (time.perf_counter() - t0)
            costs = {**stage, "write": write_ms}
            slowest = max(costs.values())
            both = max(slowest, sum(costs.values()) / 2)  # two cores: the work's sum over 2 bounds it too
            print(f"{name:<18} pipeline: {rate:.1f} img/s; stages apart (ms/image): decode {stage['decode']:.1f}, "
                  f"model {stage['model']:.1f}, enlarge {stage['enlarge']:.1f}, write {write_ms:.1f}; overlap "
                  f"efficiency {rate / (1000 / slowest):.2f} (of 2 cores' bound {rate / (1000 / both):.2f})")


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
