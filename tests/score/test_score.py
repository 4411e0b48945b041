"""``unetseg score`` of any tool's masks: the same scores as ``evaluate`` for a run's own predictions, any two-valued
binary masks, and bad input in one line naming the file."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetseg import Predictor, RunConfig, evaluate_pairs, find_pairs, predict_folder
from unetseg.cli.main import main
from unetseg.config import DataConfig
from unetseg.data.synthetic import make_multiclass_dataset, make_synthetic_dataset
from unetseg.score.folder import score_folder
from unetseg.score.image import RANKING

TINY_SCORES = ["--resamples", "200"]


def _predictor(classes: int) -> Predictor:
    cfg = RunConfig()
    cfg.model.base_channels, cfg.model.depth, cfg.model.num_classes = 4, 2, classes
    cfg.data.image_size = (48, 32)
    if classes > 1:
        cfg.data.mask_values, cfg.data.mask_mode, cfg.data.ignore_index = list(range(classes)), "L", (255,)
    else:
        cfg.data.mask_values, cfg.data.mask_mode = [0, 255], "L"
    weights = torch.linspace(-2.0, 2.0, classes) if classes > 1 else torch.tensor([3.0])

    def model(x: torch.Tensor) -> torch.Tensor:  # scores from brightness: right on some pixels, wrong on others
        grey = x.mean(1, keepdim=True)
        return grey * weights.view(1, -1, 1, 1) - weights.view(1, -1, 1, 1) ** 2 / 4

    return Predictor(model, cfg, device="cpu", batch_size=3, amp="off")


def _same(a: float, b: float, tol: float = 1e-12) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


@pytest.mark.parametrize("classes", [1, 4], ids=["binary", "four-class"])
def test_score_of_a_runs_own_predictions_equals_evaluate_image_for_image(tmp_path, classes):
    data = (make_synthetic_dataset(tmp_path / "d", count=6, size=(64, 48)) if classes == 1
            else make_multiclass_dataset(tmp_path / "d", count=6, size=(64, 48)))
    predictor = _predictor(classes)
    pairs = find_pairs(data)
    evaluated = evaluate_pairs(predictor, pairs, resamples=200)
    predict_folder(predictor, data / "images", tmp_path / "pred", overlays=False, probs=classes == 1)
    cfg = predictor.config.data
    masks = DataConfig(masks=str(data / "masks"), mask_values=cfg.mask_values, mask_mode=cfg.mask_mode,
                       ignore_index=cfg.ignore_index)
    scored = score_folder(tmp_path / "pred" / "masks", masks,
                          probs=tmp_path / "pred" / "probs" if classes == 1 else None, resamples=200)
    assert len(evaluated["per_image"]) == len(scored["per_image"]) == 6
    assert any(0 < r["dice"] < 1 for r in evaluated["per_image"])  # something to score, neither all nor nothing
    for a, b in zip(evaluated["per_image"], scored["per_image"]):
        assert Path(a["image"]).stem == Path(b["image"]).stem
        assert a.keys() == b.keys()
        for key in a:
            if key == "image":
                continue
            tol = 0.03 if key in RANKING else 1e-12  # the PNG probabilities are 8-bit: ties where evaluate has none
            assert _same(a[key], b[key], tol), (a["image"], key, a[key], b[key])
    for key in ("dice", "hd95", "cldice"):
        assert _same(evaluated["metrics"][key]["value"], scored["metrics"][key]["value"])
        assert _same(evaluated["metrics"][key]["low"], scored["metrics"][key]["low"])


def _binary_set(root: Path, count: int = 5, size=(40, 30)) -> tuple[Path, Path]:
    masks, pred = root / "masks", root / "pred"
    masks.mkdir(parents=True)
    pred.mkdir()
    for i in range(count):
        m = np.zeros(size[::-1], np.uint8)
        m[5:20, 5 + i:25 + i] = 255
        Image.fromarray(m).save(masks / f"case{i}_mask.png")
        p = np.roll(m, i % 3, axis=0)
        Image.fromarray((p > 0).astype(np.uint8)).save(pred / f"case{i}.png")  # another tool's 0/1 masks
    return masks, pred


def test_any_tools_two_valued_binary_masks_are_scored_and_written(tmp_path, capsys):
    masks, pred = _binary_set(tmp_path)
    assert main(["score", "--pred", str(pred), "--masks", str(masks), "--out", str(tmp_path / "s"),
                 *TINY_SCORES]) == 0
    out = capsys.readouterr().out
    assert "5 predictions" in out and "hd95" in out and "cldice" in out
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["metrics"]["dice"]["low"] <= summary["metrics"]["dice"]["value"] <= \
        summary["metrics"]["dice"]["high"]
    rows = (tmp_path / "s" / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("image,dice,iou,precision,recall,specificity,accuracy,hd95,assd,nsd,boundary_iou,cldice")
    assert len(rows) == 6
    first = dict(zip(rows[0].split(","), rows[1].split(",")))
    assert float(first["dice"]) == 1.0 and float(first["hd95"]) == 0.0  # case0: not shifted


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_predictions_are_one_line_naming_the_file(tmp_path, capsys):
    masks, pred = _binary_set(tmp_path)
    base = ["score", "--pred", str(pred), "--masks", str(masks), *TINY_SCORES]
    Image.fromarray(np.zeros((31, 40), np.uint8)).save(pred / "case1.png")  # another size
    assert main(base) == 2
    line = _one_error_line(capsys)
    assert "case1.png" in line and "40x31" in line and "40x30" in line
    Image.fromarray(np.array([[0, 1, 2] * 10] * 40, np.uint8)[:30, :40]).save(pred / "case1.png")  # 3 values
    assert main(base) == 2
    assert "case1.png" in _one_error_line(capsys)
    (pred / "case1.png").unlink()  # a mask without a prediction
    assert main(base) == 2
    line = _one_error_line(capsys)
    assert "case1_mask.png" in line and "without a prediction" in line
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(pred / "case1.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(pred / "extra.png")  # a prediction without a mask
    assert main(base) == 2
    assert "extra.png" in _one_error_line(capsys)
    (pred / "extra.png").unlink()
    probs = tmp_path / "probs"
    probs.mkdir()
    for i in range(5):
        np.save(probs / f"case{i}.npy", np.full((30, 40), 0.5 if i != 3 else 1.5))
    assert main([*base, "--probs", str(probs)]) == 2
    line = _one_error_line(capsys)
    assert "case3.npy" in line and "outside [0, 1]" in line


def _multiclass_predictions(root: Path, void_as: int) -> tuple[Path, Path]:
    """A 4-class set and predictions that are its masks with the void pixels given class ``void_as``."""
    data = make_multiclass_dataset(root / "d", count=4, size=(32, 24))
    pred = root / "pred"
    pred.mkdir()
    for m in sorted((data / "masks").iterdir()):
        a = np.asarray(Image.open(m)).copy()
        a[a == 255] = void_as
        Image.fromarray(a).save(pred / m.name)
    return data, pred


def test_a_multi_class_prediction_value_outside_the_classes_names_the_file(tmp_path, capsys):
    data, pred = _multiclass_predictions(tmp_path, void_as=0)
    m = sorted((data / "masks").iterdir())[-1]
    a = np.asarray(Image.open(pred / m.name)).copy()
    a[0, 0] = 9
    Image.fromarray(a).save(pred / m.name)
    args = ["score", "--pred", str(pred), "--masks", str(data / "masks"), "--ignore-index", "255", "--classes",
            str(data / "classes.csv"), *TINY_SCORES]
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert m.name in line and "[9]" in line
    a[0, 0] = 0
    Image.fromarray(a).save(pred / m.name)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "IoU (pooled)" in out and "miou" in out


def test_compare_reports_a_difference_and_names_images_that_differ(tmp_path, capsys):
    masks, pred = _binary_set(tmp_path, count=8)
    worse = tmp_path / "worse"
    worse.mkdir()
    for p in pred.iterdir():
        a = np.asarray(Image.open(p)).copy()
        a[:, :3] = 0
        a[20:24, :] = 1
        Image.fromarray(a).save(worse / p.name)
    for name, folder in (("a", pred), ("b", worse)):
        assert main(["score", "--pred", str(folder), "--masks", str(masks), "--out", str(tmp_path / name),
                     *TINY_SCORES]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    assert "the 8 images where both have it" in out and "a is better" in out and "lower on 8" in out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--metric", "hd95"]) == 0
    assert "no difference" in capsys.readouterr().out
    (pred / "case7.png").unlink()
    (masks / "case7_mask.png").unlink()
    assert main(["score", "--pred", str(pred), "--masks", str(masks), "--out", str(tmp_path / "c"),
                 *TINY_SCORES]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "c"), str(tmp_path / "b")]) == 2
    line = _one_error_line(capsys)
    assert "case7" in line and "other images" in line


def test_probability_pngs_must_be_8_bit_grey(tmp_path, capsys):
    masks, pred = _binary_set(tmp_path)
    probs = tmp_path / "probs"
    probs.mkdir()
    for i in range(5):
        Image.fromarray(np.full((30, 40), 128, np.uint8)).save(probs / f"case{i}.png")
    base = ["score", "--pred", str(pred), "--masks", str(masks), "--probs", str(probs), *TINY_SCORES]
    assert main(base) == 0
    assert "auc" in capsys.readouterr().out
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(probs / "case2.png")
    assert main(base) == 2
    line = _one_error_line(capsys)
    assert "case2.png" in line and "8-bit greyscale" in line


def test_compare_of_a_score_no_image_has_says_so(tmp_path, capsys):
    masks, pred = _binary_set(tmp_path, count=4)
    for p in pred.iterdir():  # nothing predicted anywhere: no precision on any image
        Image.fromarray(np.zeros((30, 40), np.uint8)).save(p)
    assert main(["score", "--pred", str(pred), "--masks", str(masks), "--out", str(tmp_path / "s"),
                 *TINY_SCORES]) == 0
    assert "(4 image(s) without it: NaN)" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "s"), str(tmp_path / "s"), "--metric", "precision"]) == 0
    assert "nothing to compare" in capsys.readouterr().out


def test_score_with_a_run_reads_its_encoding_names_and_background(tmp_path, capsys):
    data, pred = _multiclass_predictions(tmp_path, void_as=1)
    cfg = RunConfig()
    cfg.model.num_classes = 4
    cfg.data.mask_values, cfg.data.mask_mode, cfg.data.ignore_index = [0, 1, 2, 3], "L", (255,)
    cfg.data.class_names, cfg.data.background = ["ground", "disc", "box", "line"], 0
    (tmp_path / "run").mkdir()
    cfg.save(tmp_path / "run" / "config.json")
    base = ["score", "--pred", str(pred), "--masks", str(data / "masks"), "--model", str(tmp_path / "run"),
            "--out", str(tmp_path / "s"), *TINY_SCORES]
    assert main(base) == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["classes"] == ["ground", "disc", "box", "line"]
    assert summary["scored_classes"] == ["disc", "box", "line"]  # the run's background left out, as evaluate does
    assert main([*base, "--background", "none"]) == 0
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["scored_classes"][0] == "ground"


def test_predictions_saved_as_gif_are_scored_as_png_ones(tmp_path, capsys):
    """34.18: score reads every mask extension (GIF too), as predict and the data loader do."""
    masks, pred = _binary_set(tmp_path)
    gif = tmp_path / "gif"
    gif.mkdir()
    for p in pred.iterdir():
        Image.open(p).save(gif / f"{p.stem}.gif")
    assert main(["score", "--pred", str(pred), "--masks", str(masks), *TINY_SCORES]) == 0
    png = capsys.readouterr().out.replace(str(pred), "PRED")
    assert main(["score", "--pred", str(gif), "--masks", str(masks), *TINY_SCORES]) == 0
    assert capsys.readouterr().out.replace(str(gif), "PRED") == png and "5 prediction" in png


def test_a_multi_class_models_saved_probabilities_give_each_class_its_auc_and_ap(tmp_path, capsys):
    """predict --save-probs of a four-class model writes a plane per class; score --probs reads them and gives each
    class's AUC and AP against the rest, pooled over the images, as scikit-learn counts them from the same 8-bit
    planes (void pixels not counted); an image's AUC is the mean over its classes'."""
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (the test extra) is the reference")
    data = make_multiclass_dataset(tmp_path / "d", count=4, size=(64, 48))
    predictor = _predictor(4)
    predict_folder(predictor, data / "images", tmp_path / "pred", overlays=False, probs=True)
    cfg = predictor.config.data
    masks = DataConfig(masks=str(data / "masks"), mask_values=cfg.mask_values, mask_mode=cfg.mask_mode,
                       ignore_index=cfg.ignore_index)
    scored = score_folder(tmp_path / "pred" / "masks", masks, probs=tmp_path / "pred" / "probs", resamples=0)
    stems = sorted(p.stem for p in (data / "masks").iterdir())
    target = np.concatenate([np.asarray(Image.open(data / "masks" / f"{s}.png")).ravel() for s in stems])
    valid = target != 255
    for k, entry in enumerate(scored["per_class"]):
        planes = np.concatenate([np.asarray(Image.open(tmp_path / "pred" / "probs" / f"{s}_class{k}.png")).ravel()
                                 for s in stems])
        truth = target[valid] == k
        assert entry["auc"] == pytest.approx(metrics.roc_auc_score(truth, planes[valid]), abs=1e-9)
        assert entry["ap"] == pytest.approx(metrics.average_precision_score(truth, planes[valid]), abs=1e-9)
    row = scored["per_image"][0]
    assert 0 < row["auc"] < 1 and "auc" in scored["pooled"] and not math.isnan(scored["pooled"]["ap"]["value"])
    args = ["score", "--pred", str(tmp_path / "pred" / "masks"), "--masks", str(data / "masks"), "--probs",
            str(tmp_path / "pred" / "probs"), "--ignore-index", "255", *TINY_SCORES]
    assert main(args) == 0 and "each class against the rest, pooled" in capsys.readouterr().out
    (tmp_path / "pred" / "probs" / f"{stems[1]}_class2.png").unlink()
    args = ["score", "--pred", str(tmp_path / "pred" / "masks"), "--masks", str(data / "masks"), "--probs",
            str(tmp_path / "pred" / "probs"), "--ignore-index", "255", *TINY_SCORES]
    assert main(args) == 2
    assert f"no probabilities of class 2 for {stems[1]}" in capsys.readouterr().err
