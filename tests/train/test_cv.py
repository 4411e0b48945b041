"""K-fold cross-validation: the folds partition the pairs by group, each image is predicted once out of fold by the
fold that did not train on it, the fold ensemble is the mean of the folds' logits, folds trained apart give the run
trained together, a killed fold resumes bit for bit, and bad input is one line before anything trains."""

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.train.test_resume import _assert_same_final_state, _run_until, _unetseg
from unetseg import Predictor, find_pairs
from unetseg.checkpoint import CheckpointError, load_model
from unetseg.cli.main import main
from unetseg.data.errors import DataError
from unetseg.data.split import kfold
from unetseg.train.cv import tune_cv_threshold

FLAGS = ["--base-channels", "4", "--depth", "2", "--image-size", "64x48", "--epochs", "2", "--batch-size", "4",
         "--lr", "3e-3", "--no-progress"]


def _carvana_names(tmp_path: Path, cars: int, angles: int) -> list:
    from tests.data.test_split import _pairs_named

    return find_pairs(_pairs_named(tmp_path / "d", [f"0cdf5b5d0c{c:02d}_{a:02d}" for c in range(cars)
                                                     for a in range(1, angles + 1)]))


def test_the_folds_partition_the_pairs_by_group_evenly_and_repeat_with_the_seed(tmp_path):
    pairs = _carvana_names(tmp_path, cars=7, angles=3)
    fold = kfold(pairs, 3, "groups", 0)
    assert sorted(set(fold)) == [0, 1, 2] and len(fold) == len(pairs)
    by_car = {}
    for p, f in zip(pairs, fold):
        by_car.setdefault(p.group, set()).add(f)
    assert all(len(f) == 1 for f in by_car.values())  # a car never straddles two folds
    assert sorted(fold.count(k) for k in range(3)) == [6, 6, 9]  # 7 cars of 3 in 3 folds: 2, 2, 3 cars
    assert kfold(pairs, 3, "groups", 0) == fold
    assert any(kfold(pairs, 3, "groups", s) != fold for s in range(1, 5))
    blocks = kfold(pairs, 3, "blocks", 0)  # contiguous runs of names in one fold
    assert sorted(set(blocks)) == [0, 1, 2] and sum(a != b for a, b in zip(blocks, blocks[1:])) <= 9
    with pytest.raises(DataError, match="--folds 8: the 21 training pairs make only 7 groups"):
        kfold(pairs, 8, "groups", 0)


@pytest.mark.parametrize("flags, message", [
    (["--folds", "30"], "--folds 30: the 24 training pairs make only 24 images"),
    (["--folds", "3", "--fold", "3"], "--fold 3: 0 to 2 (--folds 3)"),
    (["--fold", "1"], "--fold 1: only with --folds K"),
    (["--folds", "2", "--val-data", "VAL"], "--folds 2 with --val-data"),
    (["--folds", "2", "--train-on-val"], "--folds 2 with --train-on-val: each fold's held-out fold would train"),
], ids=["more-folds-than-images", "fold-out-of-range", "fold-without-folds", "folds-with-val-folder",
        "folds-with-train-on-val"])
def test_bad_fold_flags_are_one_line_and_train_nothing(synthetic_dir, tmp_path, capsys, flags, message):
    flags = [str(synthetic_dir) if f == "VAL" else f for f in flags]
    assert main(["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"), *FLAGS, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and len(err) == 1, err
    assert not (tmp_path / "run" / "fold_0").exists()


def _per_image(path: Path) -> dict:
    with open(path) as fh:
        return {row["image"]: row for row in csv.DictReader(fh)}


def test_every_image_is_predicted_once_out_of_fold_and_the_ensemble_averages_the_folds(synthetic_dir, tmp_path,
                                                                                        capsys):
    run = tmp_path / "xval"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), "--folds", "3", *FLAGS]) == 0
    folds = json.loads((run / "folds.json").read_text())
    names = sorted(p.image.name for p in find_pairs(synthetic_dir))
    assert sorted(n for f in folds["images"] for n in f) == names  # a partition
    pooled = _per_image(run / "cv" / "per_image.csv")
    assert sorted(pooled) == names  # every image once
    for k in range(3):
        split = json.loads((run / f"fold_{k}" / "split.json").read_text())
        assert sorted(split["val"]) == sorted(folds["images"][k])
        assert not set(split["train"]) & set(split["val"])  # predicted by the fold that did not train on it
        per_fold = _per_image(run / "cv" / f"fold_{k}" / "per_image.csv")
        assert sorted(per_fold) == sorted(folds["images"][k])
        for name, row in per_fold.items():
            assert row["dice"] == pooled[name]["dice"]
    assert sorted(p.name for p in (run / "cv" / "predictions" / "masks").iterdir()) == \
        sorted(Path(n).with_suffix(".png").name for n in names)
    summary = json.loads((run / "cv" / "summary.json").read_text())
    assert summary["images"] == 24 and [f["fold"] for f in summary["per_fold"]] == [0, 1, 2]
    # the threshold is tuned on the out-of-fold probabilities: at 0.5 they give the CV score (8-bit rounding aside)
    assert abs(tune_cv_threshold(run, [0.3, 0.5])[0.5] - summary["mean_dice"]) < 0.01
    assert main(["evaluate", "--model", str(run), "--tune-threshold"]) == 0
    assert json.loads((run / "threshold.json").read_text())["split"] == "out of fold"

    # the ensemble is the mean of the folds' logits; one fold alone is that fold
    x = torch.rand(2, 3, 48, 64)
    singles = [load_model(run / f"fold_{k}")[0] for k in range(3)]
    with torch.no_grad():
        by_hand = sum(m(x) for m in singles[:2]) / 2
        ensemble, config = load_model(run, folds=[0, 1])
        assert torch.allclose(ensemble(x), by_hand, atol=1e-6) and config.data.fold is None
        assert torch.equal(load_model(run, folds=[2])[0](x), singles[2](x))
    image = find_pairs(synthetic_dir)[0].image
    both = Predictor.from_run(run, device="cpu", amp="off", folds=[0, 1])
    arrays = both._load(image)[0][None]
    one = [Predictor.from_run(run / f"fold_{k}", device="cpu", amp="off") for k in (0, 1)]
    assert torch.allclose(both.logits(arrays), (one[0].logits(arrays) + one[1].logits(arrays)) / 2, atol=1e-6)

    # the report: the CV scores, then each fold evaluated on its own held-out fold
    from unetseg import write_report

    page = write_report([run], tmp_path / "report.html").read_text()
    assert "<h2>Cross-validation</h2>" in page and f"{summary['mean_dice']:.4f}" in page
    assert all(f"xval/fold_{k}" in page for k in range(3)) and not (run / "fold_0" / "eval").exists()

    # the postprocessing chosen out of fold is stored, and applied by the ensemble unless told not to
    from unetseg.infer.postprocess import ClassRule, Postprocessing

    assert json.loads((run / "postprocessing.json").read_text())["scores"]["classes"] == [1]
    Postprocessing(0, {1: ClassRule(largest_component=True)}).save(run / "postprocessing.json")
    assert Predictor.from_run(run, device="cpu").postprocess.rules[1].largest_component
    assert Predictor.from_run(run, device="cpu", postprocess=False).postprocess is None

    # a missing fold is named, never skipped
    (run / "fold_1" / "finished.json").unlink()
    with pytest.raises(CheckpointError, match=r"fold 1 of 3 has not finished training \(finished: 0, 2\)"):
        Predictor.from_run(run, device="cpu")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--folds", "4"]) == 2  # another K
    assert "a cross-validation run with --folds 3, not 4" in capsys.readouterr().err


@pytest.mark.slow
def test_folds_trained_apart_give_the_run_trained_together(synthetic_dir, tmp_path):
    together, apart = tmp_path / "together", tmp_path / "apart"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(together), "--folds", "2", *FLAGS]) == 0
    for fold in ("1", "0"):
        assert main(["train", "--data", str(synthetic_dir), "--out", str(apart), "--folds", "2", "--fold", fold,
                     *FLAGS]) == 0
    for k in (0, 1):
        assert (together / f"fold_{k}" / "model.safetensors").read_bytes() == \
            (apart / f"fold_{k}" / "model.safetensors").read_bytes()
    a, b = (json.loads((r / "cv" / "summary.json").read_text()) for r in (together, apart))
    assert a["mean_dice"] == b["mean_dice"] and a["images"] == b["images"] == 24
    from unetseg.score.compare import compare

    paired = compare([together, apart])[0]  # two CV runs: their out-of-fold scores, image by image
    assert paired.paired.difference.value == 0.0 and paired.paired.equal == 24
    assert main(["train", "--data", str(synthetic_dir), "--out", str(apart), "--folds", "2", "--fold", "0",
                 *FLAGS]) == 2  # finished: not trained again without --overwrite


@pytest.mark.slow
def test_a_killed_fold_resumes_bit_for_bit(synthetic_dir, tmp_path):
    flags = [*FLAGS, "--epochs", "3", "--checkpoint-steps", "1", "--folds", "2"]
    reference = _unetseg("train", "--data", str(synthetic_dir), "--out", str(tmp_path / "ref"), *flags)
    reference.communicate()
    assert reference.returncode == 0
    killed = _unetseg("train", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"), *flags)
    _run_until(killed, "fold 1 of 2: training")
    _run_until(killed, "checkpoint saved at epoch 2 step 2")
    killed.kill()
    killed.communicate()
    assert (tmp_path / "run" / "fold_0" / "finished.json").is_file()
    assert not (tmp_path / "run" / "fold_1" / "finished.json").is_file()
    resumed = _unetseg("train", "--resume", str(tmp_path / "run"))
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert "fold 0 of 2: finished earlier" in err and "fold 1 of 2: resuming" in err
    for k in (0, 1):
        _assert_same_final_state(tmp_path / "ref" / f"fold_{k}", tmp_path / "run" / f"fold_{k}")
    assert (tmp_path / "ref" / "cv" / "per_image.csv").read_text() == \
        (tmp_path / "run" / "cv" / "per_image.csv").read_text()


@pytest.mark.slow
def test_a_budget_covers_all_folds_planned_once(synthetic_dir, tmp_path, caplog):
    from unetseg.config import RunConfig

    run = tmp_path / "run"
    with caplog.at_level("INFO"):
        assert main(["train", "--data", str(synthetic_dir), "--out", str(run), "--folds", "2", "--budget", "40s",
                     "--base-channels", "4", "--depth", "3", "--no-progress"]) == 0
    assert "budget 40s covers all 2 folds: 20s each" in caplog.text
    first, second = (RunConfig.load(run / f"fold_{k}" / "config.json") for k in (0, 1))
    assert first.train.budget == "20s" and first.train.plan is not None
    assert second.train.budget == "" and second.train.plan == first.train.plan  # planned once
    assert second.data.image_size == first.data.image_size and second.train.lr == first.train.lr
    steps = [json.loads((run / f"fold_{k}" / "metrics.jsonl").read_text().splitlines()[-1])["step"] for k in (0, 1)]
    assert steps[0] == steps[1] == second.train.max_steps  # the steps the planned fold ran
    assert caplog.text.count("budget 20s: plan on") == 1


def test_a_fold_on_changed_data_is_refused_and_a_fold_folder_resumes_as_its_fold(tmp_path, capsys):
    import shutil

    from unetseg.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", count=8, size=(64, 48), seed=2)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--folds", "2", "--fold", "0", *FLAGS]) == 0
    assert main(["train", "--resume", str(run / "fold_0")]) == 0  # a fold's folder: that fold of its run
    assert "fold 0 of 2: finished earlier" in capsys.readouterr().err
    image = next((data / "images").iterdir())
    shutil.copy(image, data / "images" / f"extra{image.suffix}")
    mask = next(p for p in (data / "masks").iterdir() if p.stem == image.stem)
    shutil.copy(mask, data / "masks" / f"extra{mask.suffix}")
    assert main(["train", "--data", str(data), "--out", str(run), "--folds", "2", "--fold", "1", *FLAGS]) == 2
    assert "the data changed since the folds were split (1 new, e.g. extra" in capsys.readouterr().err
    assert not (run / "fold_1").exists()
