"""ONNX Runtime vs PyTorch eager inference of the U-Net on the CPU: time per image, ratio, max difference.

    python benchmarks/onnx_vs_torch.py [--base 64] [--size 480x320] [--batch 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from unetseg import UNet, UNetConfig
from unetseg.config import parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=64)
    parser.add_argument("--size", type=parse_size, default=(480, 320))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=args.base))
    model.train()(torch.randn(2, 3, 64, 64))  # move BN statistics off their defaults
    model.eval()
    w, h = args.size
    x = torch.randn(args.batch, 3, h, w)
    path = Path(tempfile.mkdtemp()) / "unet.onnx"
    dims = {0: torch.export.Dim("batch", max=1024), 2: torch.export.Dim("h", min=16, max=8192),
            3: torch.export.Dim("w", min=16, max=8192)}
    torch.onnx.export(model, (x[:1],), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_shapes={"x": dims}, dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cl = model.to(memory_format=torch.channels_last)

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return cl(x.contiguous(memory_format=torch.channels_last)).numpy()

    def run_ort() -> np.ndarray:
        return session.run(None, {"image": x.numpy()})[0]

    ref, got = run_torch(), run_ort()  # warm-up
    best = {"torch eager (channels_last)": float("inf"), "onnxruntime": float("inf")}
    for _ in range(args.repeat):
        for name, fn in zip(best, (run_torch, run_ort)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    print(f"U-Net base {args.base}, {w}x{h}, batch {args.batch}, best of {args.repeat}, onnxruntime {ort.__version__}")
    base = best["torch eager (channels_last)"]
    for name, seconds in best.items():
        print(f"{name:30s} {seconds / args.batch:7.3f} s/img  time ratio {seconds / base:5.2f}")
    print(f"max abs difference of the logits: {np.abs(ref - got).max():.3g}")


if __name__ == "__main__":
    main()
