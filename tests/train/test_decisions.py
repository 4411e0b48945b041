"""Under torchrun every per-step decision (losses read and checked, a checkpoint, a stop, a budget re-plan) is taken
on fixed steps from one all-reduced tensor, so processes that see different things never part ways.

The hang this guards against: a process that decides alone to read its losses (an all-reduce) while another goes on
to the next step's gradient all-reduce; both wait until the process-group timeout."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unetseg.train.control import StepControl
from unetseg.train.distributed import World

#: Each process is made to see the world differently, the way processes of a cluster do: rank 1 has a terminal
#: (a progress bar), rank 0's clock runs fast (so its checkpoint is always due) and its saves take long.
DRIVER = """
import os, sys, time, types
rank = int(os.environ["RANK"])
if os.environ.get("SKEW") == "1":
    import unetseg.train.loop as loop
    if rank == 1:
        sys.stderr.isatty = lambda: True
    if rank == 0:
        skew = [0.0]
        def monotonic():
            skew[0] += 1000.0
            return time.monotonic() + skew[0]
        loop.time = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
        loop.time.monotonic = monotonic
from unetseg.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(data: Path, out: Path, driver: Path, skew: bool) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver),
           "train", "--data", str(data), "--out", str(out), "--base-channels", "4", "--depth", "3", "--image-size",
           "64x48", "--epochs", "2", "--batch-size", "2", "--val-fraction", "0.25", "--sync-every", "4",
           "--checkpoint-minutes", "1", "--dist-timeout-minutes", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SKEW": "1" if skew else "0"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)


def test_ranks_that_disagree_still_train_the_same_run(synthetic_dir, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    skewed = _torchrun(synthetic_dir, tmp_path / "skewed", driver, skew=True)
    assert skewed.returncode == 0, skewed.stderr[-3000:]
    plain = _torchrun(synthetic_dir, tmp_path / "plain", driver, skew=False)
    assert plain.returncode == 0, plain.stderr[-3000:]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("skewed", "plain"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "skewed" / "metrics.jsonl").read_text().count("\n") == 2


def test_a_decision_is_the_same_on_every_process_and_checks_every_loss(tmp_path):
    control = StepControl(World(), torch.device("cpu"), 3, tmp_path)
    assert [control.due(s, False) for s in range(6)] == [False, False, True, False, False, True]
    assert control.due(4, True)  # an epoch's last step is always one
    for step, value in enumerate([1.0, 2.0, 4.0]):
        control.append(step, torch.tensor(value), 2)
    decision = control.decide(0, 0, True, 17)
    assert (decision.loss_sum, decision.last_loss, decision.save, decision.total, decision.stop) == (14.0, 4.0, True,
                                                                                                     17, 0)
    assert control.pending == []
    control.append(3, torch.tensor(float("nan")), 2)
    with pytest.raises(RuntimeError, match="at epoch 1, step 4"):
        control.decide(0, 15, False, 0)
