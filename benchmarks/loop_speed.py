"""Training-loop speed: images/s of ``unetseg.fit`` (augmentation, steps, loss checks, checkpoints) against the model's
training step alone on the same batches, for one or more source trees side by side in one run.

    python benchmarks/loop_speed.py [--trees src /tmp/old/src] [--base 16] [--size 240x160] [--repeats 2]

Each tree trains the same synthetic run in a subprocess (``PYTHONPATH=TREE``), the trees alternating ``--repeats``
times; the figure is the median images/s of the epochs after the first. Used to keep the CPU speed of a change to the
loop within 5% of the tree before it.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = """
import json, sys, torch
from unetseg import RunConfig, fit
cfg = RunConfig()
cfg.data.data, cfg.data.image_size = sys.argv[1], tuple(map(int, sys.argv[3].split("x")))
cfg.model.base_channels = int(sys.argv[4])
cfg.data.val_fraction, cfg.train.epochs, cfg.train.batch_size = 0.1, int(sys.argv[5]), 16
cfg.train.progress, cfg.train.bn_recalibrate, cfg.train.device = False, False, "cpu"
fit(cfg, sys.argv[2], overwrite=True)
"""

ALONE = """
import sys, time, torch
from unetseg import UNet, UNetConfig
from unetseg._device import autocast_dtype
w, h = map(int, sys.argv[1].split("x"))
model = UNet(UNetConfig(base_channels=int(sys.argv[2]))).train()
opt = torch.optim.Adam(model.parameters(), 1e-4)
dtype = autocast_dtype(torch.device("cpu"), "auto")
x, y = torch.randn(16, 3, h, w), (torch.rand(16, 1, h, w) > 0.5).float()
times = []
for i in range(int(sys.argv[3]) + 1):
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t0)
print(16 / statistics.median(times[1:]))
""".replace("import sys", "import statistics, sys")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=[str(ROOT / "src")])
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--size", default="240x160")
    parser.add_argument("--images", type=int, default=144)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "CPU")
    rates: dict[str, list[float]] = {t: [] for t in args.trees}
    alone: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run([sys.executable, "-c", "import sys; from unetseg.data.synthetic import make_synthetic_dataset; "
                        "make_synthetic_dataset(sys.argv[1], count=int(sys.argv[2]), size=(int(sys.argv[3]), "
                        "int(sys.argv[4])))", str(data), str(args.images), *args.size.split("x")],
                       check=True, env={**os.environ, "PYTHONPATH": args.trees[0]})
        for _ in range(args.repeats):
            for tree in args.trees:
                out = Path(tmp) / "run"
                env = {**os.environ, "PYTHONPATH": tree}
                subprocess.run([sys.executable, "-c", RUN, str(data), str(out), args.size, str(args.base),
                                str(args.epochs)], check=True, env=env, capture_output=True)
                epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                rates[tree].append(statistics.median(e["images_per_s"] for e in epochs[1:]))
            alone.append(float(subprocess.run([sys.executable, "-c", ALONE, args.size, str(args.base), "4"],
                                              check=True, env=env, capture_output=True, text=True).stdout))
    model = statistics.median(alone)
    print(f"{cpu}: U-Net base {args.base}, {args.size}, batch 16, {args.images} synthetic images, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"  model step alone: {model:.2f} img/s (median of {len(alone)})")
    for tree, values in rates.items():
        rate = statistics.median(values)
        print(f"  fit, {tree}: {rate:.2f} img/s ({rate / model:.1%} of the model alone; runs: "
              f"{', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
