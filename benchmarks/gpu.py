"""The GPU path, measured in one run: the seed recipe's step alone, the training loop around it, the host syncs
the loop makes, prediction against the model alone, and a budget run on the Carvana sample.

    python benchmarks/gpu.py [--out DIR] [--old-src OLD/src] [--carvana DIR] [--budget 3m] [--quick]

Prints each figure as it is measured and writes them to ``DIR/gpu.json``. Skipped with a message where no GPU is
present, except with ``--quick`` (tiny sizes, any device: a dry run of the script itself).

- model alone: the seed's U-Net (base 64) at 480x320, batch 16, channels_last, fused Adam, in fp16 with gradient
  scaling and in bf16: step time, images/s, TFLOP/s and the share of the GPU's dense peak (MFU);
- inference memory: the peak bytes per input pixel and base channel of a forward pass (``auto_batch``'s figure);
- the loop: ``unetseg.fit`` on generated 480x320 images with the same model and batch, images/s of its epochs after
  the first, against the model alone: the share of the loop's time the GPU computes (the rest is the host);
  with ``--old-src`` the tree before a change runs the same (PYTHONPATH), side by side;
- host syncs: ``torch.cuda.set_sync_debug_mode("warn")`` while the epochs' steps run (the decisions included; not the
  decode, validation and checkpoints), warnings counted per step and where they come from;
- predict: ``benchmarks/predict_speed.py`` on the Carvana photos (images/s of ``predict_folder`` vs the model alone);
- a ``--budget`` run on the Carvana sample (``unetseg train --budget``) and its held-out Dice (``unetseg evaluate``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from unetseg import UNet, UNetConfig  # noqa: E402
from unetseg.model.flops import conv_flops  # noqa: E402

#: Dense (no sparsity) tensor-core peaks in TFLOP/s for bf16/fp16, by a substring of the device name.
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0, "T4": 65.0,
         "RTX 4090": 165.0, "RTX 3090": 71.0}

RESULTS: dict = {}


def record(key: str, value: object, out: Path) -> None:
    RESULTS[key] = value
    print(f"{key}: {json.dumps(value)}", flush=True)
    (out / "gpu.json").write_text(json.dumps(RESULTS, indent=1) + "\n")


def model_alone(device: torch.device, dtype: torch.dtype, base: int, size: tuple[int, int], batch: int,
                steps: int) -> dict:
    """The seed recipe's training step with nothing around it (the same batch every step)."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=base))
    flops = 3 * conv_flops(model, (3, size[1], size[0]))  # on the CPU, before the model moves
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.randn(batch, 3, size[1], size[0], device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, size[1], size[0], device=device) > 0.5).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - t0) / steps
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAKS.items() if k in name), None)
    tflops = flops * batch / seconds / 1e12
    return {"precision": str(dtype).removeprefix("torch."), "step_ms": round(1000 * seconds, 2),
            "images_per_s": round(batch / seconds, 1), "tflops": round(tflops, 1),
            "mfu": round(tflops / peak, 4) if peak else None,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}


def inference_bytes(device: torch.device, dtype: torch.dtype, base: int, size: tuple[int, int], batch: int) -> float:
    """Peak memory of an inference forward pass, per input pixel and base channel (weights excluded)."""
    model = UNet(UNetConfig(base_channels=base)).to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, size[1], size[0], device=device).contiguous(memory_format=torch.channels_last)
    sync(device)
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
        model(x)
    sync(device)
    return (torch.cuda.max_memory_allocated() - before) / (batch * size[0] * size[1] * base)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


FIT = """
import json, sys, warnings, torch
from unetseg import RunConfig, fit
data, out, size, base, epochs, amp, count_syncs, staged = sys.argv[1:9]
if staged == "1":  # nothing fits on the GPU: the cache stays on the host, batches go through pinned staging
    import unetseg.train.placement as placement
    placement.CACHE_SHARE = 10**12
cfg = RunConfig()
cfg.data.data, cfg.data.image_size = data, tuple(map(int, size.split("x")))
cfg.model.base_channels, cfg.train.amp = int(base), amp
cfg.data.val_fraction, cfg.train.epochs, cfg.train.batch_size = 0.1, int(epochs), 16
cfg.train.progress, cfg.train.bn_recalibrate = False, False
syncs = []
if count_syncs == "1" and torch.cuda.is_available():  # only while the epochs' steps run (not decode, validation, saves)
    import unetseg.train.loop as loop
    inner = loop._Training._epoch
    def epoch(self, *args, **kwargs):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            return inner(self, *args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    loop._Training._epoch = epoch
    warnings.simplefilter("always")
    real = warnings.showwarning
    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            syncs.append(f"{filename}:{lineno}")
        else:
            real(message, category, filename, lineno, file, line)
    warnings.showwarning = show
fit(cfg, out, overwrite=True)
print(json.dumps({"syncs": len(syncs), "where": sorted(set(syncs))[:12]}))
"""


def run_fit(tree: Path, data: Path, out: Path, size: str, base: int, epochs: int, amp: str, count: bool,
            staged: bool = False) -> dict:
    """``fit`` from the source tree ``tree`` in a subprocess; images/s of the epochs after the first."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", FIT, str(data), str(out), size, str(base), str(epochs), amp,
                           "1" if count else "0", "1" if staged else "0"], env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode:
        return {"error": proc.stderr[-1500:]}
    epochs_done = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = epochs_done[-1]["step"]
    rates = [e["images_per_s"] for e in epochs_done[1:]] or [epochs_done[0]["images_per_s"]]
    result = {"images_per_s": round(statistics.median(rates), 1), "epochs": [e["images_per_s"] for e in epochs_done],
              "steps": steps}
    if count:
        tail = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update(syncs=tail["syncs"], syncs_per_step=round(tail["syncs"] / steps, 3), where=tail["where"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--old-src", default="")
    parser.add_argument("--carvana", default=str(ROOT.parent / "shared" / "data" / "carvana_sample"))
    parser.add_argument("--budget", default="3m")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on any device: a dry run of this script")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: alone,loop,predict,budget")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    if not torch.cuda.is_available() and not args.quick:
        print("no CUDA device: CUDA benchmark skipped")
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, size, batch, steps = (8, (96, 64), 4, 2) if args.quick else (64, (480, 320), 16, 10)
    record("device", {"name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      "torch": torch.__version__, "cpus": os.cpu_count()}, out)
    if "alone" not in skip:
        for dtype in ((torch.float16, torch.bfloat16) if device.type == "cuda" else (torch.bfloat16,)):
            record(f"model_alone_{str(dtype).removeprefix('torch.')}", model_alone(device, dtype, base, size, batch,
                                                                                   steps), out)
        if device.type == "cuda":
            record("inference_bytes_per_pixel_per_base_channel",
                   round(inference_bytes(device, torch.bfloat16, base, size, batch), 2), out)
    size_text = f"{size[0]}x{size[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "loop" not in skip:
            from unetseg.data.synthetic import make_synthetic_dataset

            t0 = time.perf_counter()
            data = make_synthetic_dataset(tmp / "synthetic", count=48 if args.quick else 352, size=size)
            print(f"generated the loop's images in {time.perf_counter() - t0:.1f} s", flush=True)
            epochs = 2 if args.quick else 3
            trees = [("new", ROOT / "src")] + ([("old", Path(args.old_src))] if args.old_src else [])
            for amp in ("bf16", "fp16") if device.type == "cuda" else ("auto",):
                for name, tree in trees:
                    record(f"loop_{name}_{amp}", run_fit(tree, data, tmp / f"run-{name}", size_text, base, epochs,
                                                         amp, count=name == "new" and device.type == "cuda"), out)
            amp = "bf16" if device.type == "cuda" else "auto"
            record(f"loop_new_{amp}_staged", run_fit(ROOT / "src", data, tmp / "run-staged", size_text, base, epochs,
                                                     amp, count=device.type == "cuda", staged=True), out)
        if "predict" not in skip and Path(args.carvana).is_dir():
            proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "predict_speed.py"), "--data",
                                   str(Path(args.carvana) / "train"), "--device", device.type, "--base",
                                   str(16 if args.quick else 32), "--size", "240x160" if args.quick else "480x320",
                                   "--images", "16" if args.quick else "96"],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                                  timeout=600)
            record("predict", (proc.stdout + proc.stderr[-800:]).strip().splitlines(), out)
        if "budget" not in skip and Path(args.carvana).is_dir():
            run = tmp / "budget-run"
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            t0 = time.perf_counter()
            train = subprocess.run([sys.executable, "-m", "unetseg", "train", "--data", args.carvana, "--out", str(run),
                                    "--budget", args.budget, "--no-progress", "--overwrite"], env=env,
                                   capture_output=True, text=True, timeout=1200)
            wall = time.perf_counter() - t0
            lines = [line for line in train.stderr.splitlines() if "budget" in line or "plan" in line
                     or "epoch" in line and "val Dice" in line][-12:]
            evaluate = subprocess.run([sys.executable, "-m", "unetseg", "evaluate", "--model", str(run), "--data",
                                       args.carvana, "--split", "val"], env=env, capture_output=True, text=True,
                                      timeout=600)
            record("budget", {"budget": args.budget, "wall_s": round(wall, 1), "train_rc": train.returncode,
                              "log": lines or train.stderr[-1500:].splitlines(),
                              "evaluate": evaluate.stdout.strip().splitlines()[-6:] + evaluate.stderr[-600:].splitlines()},
                   out)


if __name__ == "__main__":
    main()
