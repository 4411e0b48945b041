"""One decode per node: a 2-process torchrun job on one machine with the shared node cache (``--cache auto``) against
each process decoding into its own RAM (``--cache memory``, how unetseg ran before): images decoded, by how many
processes, and the peak memory of the two processes together (the sum of their PSS: shared pages counted once).

    python benchmarks/node_cache.py [--data ../shared/data/carvana_sample] [--image-size 480x320]

Each job trains one step of a small U-Net (the decode is what is measured); decodes are counted by a
``sitecustomize`` that wraps the decoder in every process of the job.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SITE = '''
import os
import unetseg.data.dataset as dataset
_real = dataset.read_image
def _counted(*args, **kwargs):
    with open(os.environ["DECODES"], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    return _real(*args, **kwargs)
dataset.read_image = _counted
'''


def workers(parent: int) -> list[int]:
    """The pids of torchrun's workers (children of the launcher that have a RANK)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = next(int(line.split()[1]) for line in (entry / "status").read_text().splitlines()
                            if line.startswith("PPid:"))
                if ppid == parent and b"RANK=" in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except (OSError, StopIteration):
                continue
    return found


def pss_mib(pid: int) -> float:
    """Proportional set size: private pages plus a 1/n share of pages n processes map."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(data: str, size: str, cache: str, tmp: Path) -> tuple[int, int, float]:
    """(decodes, processes that decoded, peak summed PSS in MiB) of one job."""
    decodes = tmp / f"decodes-{cache}.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp), "DECODES": str(decodes)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "unetseg",
           "train", "--data", data, "--out", str(tmp / f"run-{cache}"), "--cache", cache, "--image-size", size,
           "--base-channels", "8", "--batch-size", "2", "--max-steps", "1", "--val-fraction", "0", "--no-progress"]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while job.poll() is None:
        total = 0.0
        for pid in workers(job.pid):
            try:
                total += pss_mib(pid)
            except OSError:
                pass
        peak = max(peak, total)
        time.sleep(0.05)
    if job.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{job.stderr.read()[-2000:]}")
    pids = decodes.read_text().split()
    return len(pids), len(set(pids)), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" /
                                              "carvana_sample"))
    parser.add_argument("--image-size", default="480x320")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "sitecustomize.py").write_text(SITE)
        w, h = (int(v) for v in args.image_size.split("x"))
        for cache, label in (("memory", "each process its own copy (before)"), ("auto", "one decode per node")):
            n, procs, peak = run(args.data, args.image_size, cache, tmp)
            print(f"--cache {cache:6s} {label:36s}: {n} decodes by {procs} process(es); peak PSS of the 2 "
                  f"processes {peak:.0f} MiB (one copy of the images: {n // procs * w * h * 3 / 2**20:.0f} MiB)",
                  flush=True)


if __name__ == "__main__":
    main()
