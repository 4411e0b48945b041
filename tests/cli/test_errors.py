"""Every subcommand, given missing or wrong arguments and paths, ends with exit code 2 and a short message naming the
problem: never a Python traceback. And a run that failed before its first step does not block its own rerun."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from unetseg.cli.main import main

TINY = ["--base-channels", "4", "--depth", "3", "--image-size", "64x48", "--epochs", "1", "--batch-size", "8",
        "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(synthetic_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("errors") / "run"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), *TINY]) == 0
    return run


def _bad_ignore_masks(synthetic_dir, folder):
    folder.mkdir(exist_ok=True)
    for image in sorted((synthetic_dir / "images").iterdir()):
        Image.fromarray(np.full((7, 5), 255, dtype=np.uint8)).save(folder / image.name)  # not the images' size
    return folder


def _cases(data, run, tmp):
    missing = str(tmp / "no-such-folder")
    return {
        "train without --out": ["train", "--data", str(data)],
        "train without data": ["train", "--out", str(tmp / "a")],
        "train, data folder typo": ["train", "--data", missing, "--out", str(tmp / "b")],
        "train, bad budget": ["train", "--data", str(data), "--out", str(tmp / "c"), "--budget", "ten minutes"],
        "train, resume of nothing": ["train", "--resume", missing],
        "train, bad size": ["train", "--data", str(data), "--out", str(tmp / "d"), "--image-size", "big"],
        "train, unknown flag": ["train", "--data", str(data), "--out", str(tmp / "e"), "--learning-rate", "1"],
        "train, bad group pattern": ["train", "--data", str(data), "--out", str(tmp / "f"), "--group-pattern", "(x"],
        "train, no such CUDA device": ["train", "--data", str(data), "--out", str(tmp / "g"), *TINY, "--device", "cuda:7"],
        "train, not a device": ["train", "--data", str(data), "--out", str(tmp / "h"), *TINY, "--device", "gpu"],
        "train, --out is a file": ["train", "--data", str(data), "--out", str(tmp / "empty.csv"), *TINY],
        "train, resume of nothing with a config": ["train", "--resume", missing, "--config", str(run / "config.json")],
        "train, a new budget on resume": ["train", "--resume", str(run), "--budget", "5m"],
        "predict, no model": ["predict", "--model", missing, "--input", str(data / "images"), "--out", str(tmp / "p")],
        "predict, no input": ["predict", "--model", str(run), "--input", missing, "--out", str(tmp / "p")],
        "predict, ignore masks of the wrong size": ["predict", "--model", str(run), "--input", str(data / "images"),
                                                    "--out", str(tmp / "p2"), "--ignore-masks", str(tmp / "ign")],
        "predict, missing --out": ["predict", "--model", str(run), "--input", str(data / "images")],
        "predict, onnxruntime with the best weights": ["predict", "--model", str(run), "--input", str(data / "images"),
                                                       "--out", str(tmp / "p3"), "--backend", "onnxruntime",
                                                       "--weights", "best"],
        "evaluate, no model": ["evaluate", "--model", missing],
        "evaluate, no data": ["evaluate", "--model", str(run), "--data", missing],
        "evaluate, ignore masks of the wrong size": ["evaluate", "--model", str(run), "--ignore-masks", str(tmp / "ign")],
        "evaluate, best weights of a run without them": ["evaluate", "--model", str(tmp / "nobest"), "--weights", "best"],
        "evaluate, zero images": ["evaluate", "--model", str(run), "--pairs-csv", str(tmp / "empty.csv")],
        "export, no model": ["export", "--model", missing],
        "check-data, no folder": ["check-data", missing],
        "demo-data, bad size": ["demo-data", "--out", str(tmp / "dd"), "--size", "0x0"],
        "no subcommand": [],
    }


def test_every_subcommand_fails_in_one_short_message_without_a_traceback(synthetic_dir, tiny_run, tmp_path):
    _bad_ignore_masks(synthetic_dir, tmp_path / "ign")
    (tmp_path / "nobest").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "nobest" / name).write_bytes((tiny_run / name).read_bytes())
    (tmp_path / "empty.csv").write_text("image,mask\n")
    from concurrent.futures import ThreadPoolExecutor

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "unetseg", *argv], capture_output=True, text=True, timeout=120)

    cases = _cases(synthetic_dir, tiny_run, tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:  # each process spends its time importing torch: two at a time
        done = dict(zip(cases, pool.map(run, cases.values())))
    failures = {}
    for name, proc in done.items():
        lines = proc.stderr.strip().splitlines()
        if proc.returncode != 2 or "Traceback" in proc.stderr or not 1 <= len(lines) <= 2 or "error" not in lines[-1]:
            failures[name] = (proc.returncode, proc.stderr[-600:])
    assert not failures, failures


def test_a_flag_with_a_typo_names_the_flag_meant(synthetic_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "r"), "--budjet", "5m"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "did you mean --budget?" in err[0]


def test_a_run_that_failed_before_its_first_step_does_not_block_its_rerun(synthetic_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "typo"), "--out", str(run), *TINY]) == 2
    assert (run / "train.log").is_file()  # the failure is logged there
    assert main(["train", "--resume", str(run)]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), *TINY]) == 0  # the corrected command
    assert (run / "model.safetensors").is_file()
    log = (run / "train.log").read_text()
    assert "dataset folder not found" in log and "starting afresh" in log
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), *TINY]) == 2  # a real run: refused


def test_a_run_trained_in_fp16_on_a_gpu_predicts_and_evaluates_on_a_cpu(synthetic_dir, tiny_run, tmp_path, capsys):
    gpu_run = tmp_path / "gpu_run"
    gpu_run.mkdir()
    cfg = json.loads((tiny_run / "config.json").read_text())
    cfg["train"]["amp"] = "fp16"  # as written by a CUDA run with --amp fp16
    (gpu_run / "config.json").write_text(json.dumps(cfg))
    (gpu_run / "model.safetensors").write_bytes((tiny_run / "model.safetensors").read_bytes())
    (gpu_run / "split.json").write_bytes((tiny_run / "split.json").read_bytes())
    assert main(["predict", "--model", str(gpu_run), "--input", str(synthetic_dir / "images"), "--out",
                 str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert main(["evaluate", "--model", str(gpu_run), "--data", str(synthetic_dir), "--device", "cpu"]) == 0
    assert "mean Dice" in capsys.readouterr().out


def test_auto_micro_batch_is_recorded_split_evenly_and_reused(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), *TINY, "--micro-batch", "3"]) == 0
    assert "accumulate over 3 micro-batches of 3/2 images" in (run / "train.log").read_text()
    auto = tmp_path / "auto"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(auto), *TINY]) == 0
    cfg = json.loads((auto / "config.json").read_text())
    assert cfg["train"]["micro_batch"] == 8  # a tiny model: the whole batch fits; the choice is in config.json
    cfg["train"]["micro_batch"] = 4  # as if memory had been tighter when the run started
    (auto / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(auto), "--epochs", "2"]) == 0
    assert "accumulate over 2 micro-batches of 4 images" in (auto / "train.log").read_text()  # reused, not re-picked
    assert json.loads((auto / "config.json").read_text())["train"]["micro_batch"] == 4
