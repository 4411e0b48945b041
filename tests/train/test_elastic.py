"""Outgrowing one machine without losing work: ``--resume auto`` under ``torchrun --max-restarts`` (a worker killed
with SIGKILL, the job finishes by itself with the weights of an uninterrupted run) and two "nodes" over loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unetseg import RunConfig, load_model
from unetseg.checkpoint import CheckpointError
from unetseg.data.check import scan
from unetseg.cli.main import main
from unetseg.train.loop import evaluate
from unetseg.train.run_dir import resume_or_start

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _train_flags(data: Path, out: Path) -> list[str]:
    return ["-m", "unetseg", "train", "--data", str(data), "--out", str(out), "--resume", "auto", "--base-channels",
            "4", "--depth", "3", "--image-size", "64x48", "--epochs", "8", "--batch-size", "8", "--val-fraction",
            "0.25", "--checkpoint-steps", "1", "--no-progress"]


def _workers(parent: int) -> dict[int, int]:
    """torchrun's worker processes: rank -> pid (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, StopIteration):
            continue
        rank = [e for e in env if e.startswith(b"RANK=")]
        if ppid == parent and rank:
            found[int(rank[0][5:])] = int(entry.name)
    return found


def test_resume_auto_starts_resumes_or_refuses(synthetic_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert resume_or_start(run) is False  # absent: start
    run.mkdir()
    assert resume_or_start(run) is False  # empty: start
    (run / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="holds files but no last.pt"):
        resume_or_start(run)
    flags = ["train", "--data", str(synthetic_dir), "--base-channels", "4", "--depth", "3", "--image-size", "64x48",
             "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.25", "--no-progress", "--resume", "auto"]
    assert main([*flags, "--out", str(run)]) == 2
    assert "holds files but no last.pt" in capsys.readouterr().err and (run / "notes.txt").read_text() == "mine"
    fresh = tmp_path / "fresh"
    assert main([*flags, "--out", str(fresh)]) == 0  # started
    assert main([*flags, "--out", str(fresh), "--epochs", "2"]) == 0  # the same command again: resumed, one more epoch
    assert [line.count('"epoch"') for line in (fresh / "metrics.jsonl").read_text().splitlines()] == [1, 1]
    assert "resuming" in (fresh / "train.log").read_text()


def test_torchrun_restarts_a_killed_worker_and_the_run_ends_as_if_uninterrupted(synthetic_dir, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    reference = subprocess.run([*torchrun, *_train_flags(synthetic_dir, tmp_path / "ref")], capture_output=True,
                               text=True, env=ENV, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run = tmp_path / "run"
    job = subprocess.Popen([*torchrun, "--max-restarts", "1", *_train_flags(synthetic_dir, run)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    killed = False
    while job.poll() is None and not killed:  # wait for the first checkpoint, then kill rank 1
        try:
            job.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass
        workers = _workers(job.pid)
        if (run / "last.pt").is_file() and 1 in workers:
            os.kill(workers[1], signal.SIGKILL)
            killed = True
    output, _ = job.communicate(timeout=300)
    assert killed, output[-3000:]
    assert job.returncode == 0, output[-3000:]
    log = (run / "train.log").read_text()
    assert "resuming" in log, output[-3000:]  # the restarted workers resumed from last.pt
    a, b = load_file(run / "model.safetensors"), load_file(tmp_path / "ref" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # bit for bit
    assert (run / "metrics.jsonl").read_text().count('"epoch"') == 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_over_loopback_train_one_run(synthetic_dir, tmp_path):
    port = _free_port()
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "unetseg-test"]
    flags = _train_flags(synthetic_dir, tmp_path / "run")
    flags[flags.index("8", flags.index("--epochs"))] = "2"
    jobs = [subprocess.Popen([*node, "--node-rank", str(rank), *flags], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=ENV) for rank in (0, 1)]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "2 processes (torch.distributed)" in (tmp_path / "run" / "train.log").read_text()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # written once, by rank 0
    # validation was sharded over the two processes (3 images each) and summed: one process gets the same figures
    run = tmp_path / "run"
    cfg = RunConfig.load(run / "config.json")
    data, _ = scan(cfg, progress=False)
    names = json.loads((run / "split.json").read_text())["val"]
    val = data.subset([i for i, p in enumerate(data.pairs) if p.image.name in names])
    model, _ = load_model(run)
    alone = evaluate(model, val, cfg, torch.device("cpu"))
    assert len(val) == 6 and alone["dice"] > 0
    assert abs(alone["dice"] - records[-1]["val_dice"]) < 1e-4 and abs(alone["loss"] - records[-1]["val_loss"]) < 1e-4


# Loaded at the start of every Python process of a test's torchrun job (PYTHONPATH): counts the images each process
# decodes, by appending its pid to a file, and kills the process at the Nth decode where asked.
_SITECUSTOMIZE = '''
import os
import threading
import unetseg.data.dataset as dataset
_real, _count, _lock = dataset.read_image, [0], threading.Lock()
def _counted(*args, **kwargs):
    with _lock:  # images are decoded on threads
        _count[0] += 1
        with open(os.environ["UNETSEG_TEST_DECODES"], "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        if _count[0] == int(os.environ.get("UNETSEG_TEST_KILL_AT", "0")):
            os.kill(os.getpid(), 9)
    return _real(*args, **kwargs)
dataset.read_image = _counted
'''


def _counted_run(data: Path, out: Path, tmp: Path, *extra: str, kill_at: int = 0) -> tuple[int, list[str], str]:
    """A 2-process torchrun job whose decodes are counted: (exit code, the pid of each decode, output)."""
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    decodes = tmp / f"decodes-{len(list(tmp.glob('decodes-*')))}.txt"
    env = {**ENV, "PYTHONPATH": str(site), "UNETSEG_TEST_DECODES": str(decodes),
           "UNETSEG_TEST_KILL_AT": str(kill_at)}
    flags = _train_flags(data, out)
    flags[flags.index("8", flags.index("--epochs"))] = "1"
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *flags, *extra], capture_output=True, text=True, env=env, timeout=300)
    pids = decodes.read_text().split() if decodes.is_file() else []
    return job.returncode, pids, job.stdout + job.stderr


def test_the_processes_of_a_node_share_one_decode(synthetic_dir, tmp_path):
    code, pids, output = _counted_run(synthetic_dir, tmp_path / "shared", tmp_path)
    assert code == 0, output[-3000:]
    assert len(pids) == 24 and len(set(pids)) == 1  # 24 pairs decoded once, by one process of the two
    assert not list((tmp_path / "shared").glob(".cache-*"))  # removed at the end of a finished run
    code, pids, output = _counted_run(synthetic_dir, tmp_path / "own", tmp_path, "--cache", "memory")
    assert code == 0, output[-3000:]
    assert len(pids) == 48 and len(set(pids)) == 2  # before: each process decoded everything


def test_a_kill_while_decoding_leaves_no_cache_that_a_restart_would_use(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    code, pids, output = _counted_run(synthetic_dir, run, tmp_path, kill_at=10)
    assert code != 0 and len(pids) == 10, (pids, output[-3000:])  # local rank 0 killed at its 10th decode
    assert not list(run.glob(".cache-*-node0")) and len(list(run.glob(".cache-*-node0.tmp-*"))) == 1
    code, pids, output = _counted_run(synthetic_dir, run, tmp_path)  # the same command again (--resume auto)
    assert code == 0, output[-3000:]
    assert len(pids) == 24 and len(set(pids)) == 1  # decoded afresh, the half-written files removed
    assert not list(run.glob(".cache-*"))
