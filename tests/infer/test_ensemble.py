"""Ensembles of runs (predict / evaluate / submit --model A --model B): the mean of their probabilities, each run
with its own normalisation and input size; runs that segment differently refused in one line; and the pair of two
cross-validation runs scored out of fold by compare --pairs, fold N with fold N."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.train.test_fit import tiny_config
from unetseg import Predictor, find_pairs, fit
from unetseg.checkpoint import CheckpointError
from unetseg.cli.main import main
from unetseg.data.io import read_mask
from unetseg.metrics import logits_to_probabilities
from unetseg import UNetConfig
from unetseg.model import UNet
from unetseg.model.ensemble import RunEnsemble


@pytest.mark.parametrize("classes", [1, 3])
def test_a_run_ensemble_is_the_mean_probability_of_its_members_each_normalised_and_sized_as_trained(classes):
    torch.manual_seed(0)
    a = UNet(UNetConfig(base_channels=4, depth=2, num_classes=classes)).eval()
    # a second member that disagrees: confident where the first is not (scores scaled and shifted)
    b = torch.nn.Sequential(UNet(UNetConfig(base_channels=4, depth=2, num_classes=classes)),
                            torch.nn.Conv2d(classes, classes, 1)).eval()
    with torch.no_grad():
        b[1].weight.copy_(torch.eye(classes).view(classes, classes, 1, 1) * 30)
        b[1].bias.copy_(torch.arange(classes, dtype=torch.float32) - 12)
    mean_a, std_a = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    mean_b, std_b = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    raw = torch.rand(2, 3, 48, 64)  # images in [0, 1] at the ensemble's (the first run's) size
    x = (raw - torch.tensor(mean_a).view(1, 3, 1, 1)) / torch.tensor(std_a).view(1, 3, 1, 1)
    ensemble = RunEnsemble([a, b], [(mean_a, std_a), (mean_b, std_b)], [(1.0, 1.0), (0.5, 0.5)], mean_a, std_a)
    with torch.no_grad():
        # by hand: b sees the image at half the size, normalised with its own statistics, its scores enlarged back
        small = F.interpolate(raw, size=(24, 32), mode="bilinear", align_corners=False, antialias=True)
        xb = (small - torch.tensor(mean_b).view(1, 3, 1, 1)) / torch.tensor(std_b).view(1, 3, 1, 1)
        out_b = F.interpolate(b(xb), size=(48, 64), mode="bilinear", align_corners=False)
        by_hand = (logits_to_probabilities(a(x)) + logits_to_probabilities(out_b)) / 2
        got = ensemble(x)
    assert got.shape == (2, classes, 48, 64)
    torch.testing.assert_close(logits_to_probabilities(got), by_hand, atol=1e-5, rtol=1e-4)
    # not the mean of the logits: that differs from the mean probability wherever the members disagree
    mean_logits = (a(x) + out_b) / 2
    assert (logits_to_probabilities(mean_logits) - by_hand).abs().max() > 1e-3


@pytest.fixture(scope="module")
def carvana_data(tmp_path_factory):
    from tests.conftest import write_carvana_like

    return write_carvana_like(tmp_path_factory.mktemp("carvana") / "carvana")


@pytest.fixture(scope="module")
def two_runs(carvana_data, tmp_path_factory):
    """Two runs on the same data with different sizes and normalisations."""
    carvana_like, root = carvana_data, tmp_path_factory.mktemp("ensemble")
    first = fit(tiny_config(carvana_like, epochs=1), root / "a")
    cfg = tiny_config(carvana_like, epochs=1, seed=1)
    cfg.data.image_size, cfg.data.mean, cfg.data.std = (32, 32), (0.4, 0.4, 0.4), (0.3, 0.3, 0.3)
    return first, fit(cfg, root / "b")


def test_predict_with_two_runs_averages_their_probabilities_at_the_largest_input(carvana_data, two_runs, tmp_path,
                                                                                  capsys):
    a, b = two_runs
    carvana_like = carvana_data
    both = Predictor.from_runs([a, b], device="cpu", amp="off")
    assert both.config.data.image_size == (64, 48) and both.threshold == 0.5 and both.postprocess is None
    image = sorted((carvana_like / "train").iterdir())[0]
    arrays = both._load(image)[0][None]  # decoded at 64x48, the larger run's size
    one, other = (Predictor.from_run(r, device="cpu", amp="off") for r in (a, b))
    small = F.interpolate(torch.from_numpy(arrays).permute(0, 3, 1, 2).float(), size=(32, 32), mode="bilinear",
                          align_corners=False, antialias=True).round().clamp(0, 255)
    # b's scores of the image resized to its 32x32 (by hand, within the rounding to uint8 of the resized image)
    b_scores = F.interpolate(other.logits(small.permute(0, 2, 3, 1).to(torch.uint8).numpy()), size=(48, 64),
                             mode="bilinear", align_corners=False)
    by_hand = (one.logits(arrays).sigmoid() + b_scores.sigmoid()) / 2
    torch.testing.assert_close(both.logits(arrays).sigmoid(), by_hand, atol=0.02, rtol=0)
    # the CLI: masks at each photo's size, as one run writes them
    assert main(["predict", "--model", str(a), "--model", str(b), "--input", str(carvana_like / "train"), "--out",
                 str(tmp_path / "pred"), "--no-overlay"]) == 0
    masks = sorted((tmp_path / "pred" / "masks").iterdir())
    assert len(masks) == 12 and read_mask(masks[0]).values.shape == (64, 96)
    np.testing.assert_array_equal(read_mask(tmp_path / "pred" / "masks" / f"{image.stem}.png").values,
                                  both.predict_image(image))
    capsys.readouterr()
    assert main(["evaluate", "--model", str(a), "--model", str(b), "--out", str(tmp_path / "eval")]) == 0
    assert "12 images" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["model"] == f"{a} + {b}"


def test_runs_that_segment_differently_are_refused_in_one_line(two_runs, tmp_path, capsys):
    from tests.data.test_formats import make_dataset

    a, _ = two_runs
    data = make_dataset(tmp_path / "three", n=6, mask="rgb3")
    multi = fit(tiny_config(data, epochs=1), tmp_path / "multi")
    with pytest.raises(CheckpointError, match=r"multi: its classes \(3\) differ from .*a's \(1\)"):
        Predictor.from_runs([a, multi], device="cpu")
    for argv, message in (
            (["predict", "--model", str(a), "--model", str(multi), "--input", str(data), "--out", str(tmp_path / "p")],
             "its classes (3) differ"),
            (["predict", "--model", str(a), "--model", str(a), "--input", str(data), "--out", str(tmp_path / "p")],
             "a run is named twice"),
            (["predict", "--model", str(a), "--model", str(multi), "--folds", "0", "--input", str(data), "--out",
              str(tmp_path / "p")], "--folds picks the folds of one cross-validation run"),
            (["evaluate", "--model", str(a), "--model", str(two_runs[1]), "--split", "val"],
             "--split val: for one run")):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


FLAGS = ["--base-channels", "4", "--depth", "2", "--image-size", "64x48", "--epochs", "2", "--batch-size", "4",
         "--lr", "3e-3", "--no-progress"]


def test_compare_pairs_scores_two_cv_runs_ensemble_out_of_fold_fold_by_fold(synthetic_dir, tmp_path, capsys,
                                                                          caplog):
    a, c = tmp_path / "a", tmp_path / "c"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(a), "--folds", "2", *FLAGS]) == 0
    b = tmp_path / "b"
    shutil.copytree(a, b)  # the same run twice: its ensemble with itself is the run, image for image
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--pairs"]) == 0
    out = capsys.readouterr().out
    pair = a / "cv" / "ensembles" / "a+b"
    rows = {r.split(",")[0]: r for r in (pair / "per_image.csv").read_text().splitlines()[1:]}
    assert sorted(rows) == sorted(p.image.name for p in find_pairs(synthetic_dir))  # every image once
    own = {r.split(",")[0]: r for r in (a / "cv" / "per_image.csv").read_text().splitlines()[1:]}
    header = (a / "cv" / "per_image.csv").read_text().splitlines()[0].split(",")
    k = header.index("dice")
    for name in own:  # a fold that predicted images it trained on, or the other fold's, would differ
        assert float(rows[name].split(",")[k]) == pytest.approx(float(own[name].split(",")[k]), abs=1e-6)
    summary = json.loads((pair / "summary.json").read_text())
    assert [f["fold"] for f in summary["per_fold"]] == [0, 1]
    assert "ranked by mean dice" in out and str(pair) in out and out.count("difference (second - first)") == 2
    # scored once: the second compare reads the scores while the folds' weights are unchanged
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(["compare", str(a), str(b), "--pairs"]) == 0
    assert "was scored out of fold before" in caplog.text
    # runs split otherwise cannot be paired fold by fold
    assert main(["train", "--data", str(synthetic_dir), "--out", str(c), "--folds", "2", "--split-seed", "7",
                 *FLAGS]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(c), "--pairs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its folds hold other images than" in err[0], err
