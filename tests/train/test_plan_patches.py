"""A budget plan that chose full-resolution patches (thin lines) resumes exactly: kill -9 mid-run, resume, and the
weights equal the uninterrupted run's bit for bit. The plan's speed table is faked and its step count left
uncorrected, so both runs plan the same steps (no timing decides anything here)."""

import subprocess
import sys

from tests.conftest import write_thin_lines
import torch

from tests.train.test_resume import _metrics, _run_until, _unetseg
from unetseg.checkpoint import load_training_state
from unetseg.config import RunConfig

#: Runs the CLI with the plan's measurements faked (0.05 s per image for every candidate) and its step count left
#: uncorrected; 40 images are enough to be chosen, and the only patch candidate is base 4 on 32x32 crops.
PLANNED = (
    "import sys\n"
    "from unetseg.train import plan\n"
    "plan.measure_step = lambda *a, **k: 0.05\n"
    "plan.MIN_IMAGES, plan.PATCH_LADDER, plan.FINE_LADDER = 40, ((4, 32),), ()\n"
    "plan.BudgetClock.maybe_correct = lambda *a, **k: None\n"
    "from unetseg.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
FLAGS = ["--budget", "200s", "--batch-size", "4", "--val-fraction", "0.25", "--checkpoint-steps", "1", "--depth", "3",
         "--no-progress"]


def _planned(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PLANNED, "-v", *args], stderr=subprocess.PIPE, text=True)


def test_a_plan_that_chose_patches_resumes_bit_exact(tmp_path):
    data = write_thin_lines(tmp_path / "vessels")
    killed = _planned("train", "--data", str(data), "--out", str(tmp_path / "run"), *FLAGS)
    _run_until(killed, "checkpoint saved at epoch 2 step 2")
    killed.kill()  # SIGKILL mid-run: no handler runs
    killed.communicate()
    cfg = RunConfig.load(tmp_path / "run" / "config.json")
    # one-pixel lines: every resized size loses them, so the plan trains 32x32 crops of the 256x192 images
    assert cfg.data.patch == (32, 32) and cfg.data.image_size == (256, 192) and cfg.data.patch_scale == (1.0, 1.0)
    assert "patch" in cfg.train.plan["chosen"] and cfg.train.max_steps > 8
    resumed = _unetseg("train", "--resume", str(tmp_path / "run"))
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert "resuming" in err

    # the uninterrupted run of the same plan: the planned config without the budget
    cfg.train.budget = None
    cfg.save(tmp_path / "planned.json")
    reference = _unetseg("train", "--config", str(tmp_path / "planned.json"), "--out", str(tmp_path / "ref"))
    _, err = reference.communicate()
    assert reference.returncode == 0, err
    a, b = load_training_state(tmp_path / "ref" / "last.pt"), load_training_state(tmp_path / "run" / "last.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for name in ("model.safetensors", "best.safetensors"):
        assert (tmp_path / "ref" / name).read_bytes() == (tmp_path / "run" / name).read_bytes(), name
    assert _metrics(tmp_path / "ref") == _metrics(tmp_path / "run")


def test_whole_image_passes_of_a_patch_run_hold_the_pixels_of_a_training_batch():
    from unetseg.train.loop import whole_batch

    cfg = RunConfig()
    cfg.train.batch_size = 16
    assert whole_batch(cfg) == 16  # whole-image runs: the training batch
    cfg.data.patch, cfg.data.image_size = (256, 256), (512, 512)
    assert whole_batch(cfg) == 4
    cfg.data.image_size = (4000, 3000)  # larger than a batch of patches: one image at a time
    assert whole_batch(cfg) == 1
