"""Multi-class runs end to end: void pixels count nowhere (loss, validation, evaluate) and are never predicted;
validation folders are the split, also on resume; metrics.jsonl carries mIoU and per-class IoU by name."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from unetseg import Predictor, evaluate_pairs, find_pairs, fit
from unetseg.checkpoint import load_model
from unetseg.config import DataConfig, RunConfig, TrainConfig, UNetConfig
from unetseg.data.synthetic import VOID, make_multiclass_dataset
from unetseg.data.transforms import to_float
from unetseg.metrics import class_scores
from unetseg.train.loop import evaluate as validate
from unetseg.train.losses import SegmentationLoss


def _config(root, **data) -> RunConfig:
    return RunConfig(model=UNetConfig(base_channels=4, depth=2),
                     data=DataConfig(data=str(root), image_size=(48, 32), classes=str(root / "classes.csv"),
                                     ignore_index=(VOID,), rotate_limit=0, **data),
                     train=TrainConfig(epochs=2, batch_size=4, lr=3e-3, loss="dice_ce", class_weights="auto",
                                       progress=False, amp="off"))


def test_void_edges_count_nowhere_and_are_never_predicted(tmp_path):
    root = make_multiclass_dataset(tmp_path / "mc", count=12, size=(48, 32), seed=2)
    run = fit(_config(root, val_fraction=0.25), tmp_path / "run")
    cfg = RunConfig.load(run / "config.json")
    assert cfg.model.num_classes == 4 and cfg.data.class_names == ["background", "disc", "box", "line"]
    assert len(cfg.train.class_weight_values) == 4
    record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert set(record["val_iou_per_class"]) == {"background", "disc", "box", "line"}

    # evaluate's scores equal a count by hand over the non-void pixels at the masks' own size
    predictor = Predictor.from_run(run, device="cpu", amp="off")
    pairs = find_pairs(root)
    result = evaluate_pairs(predictor, pairs, tmp_path / "eval")
    matrix = np.zeros((4, 4), dtype=np.int64)
    for pair in pairs:
        truth = np.asarray(Image.open(pair.mask))
        pred = predictor.predict_image(pair.image)  # class indices at the image's size
        assert VOID not in np.unique(pred) and pred.max() < 4  # never the void value
        counted = truth != VOID
        np.add.at(matrix, (truth[counted], pred[counted]), 1)
    assert (truth == VOID).any()  # the edges were void
    scores = class_scores(torch.from_numpy(matrix))
    assert result["miou"] == scores["miou"] and result["pixel_accuracy"] == scores["pixel_accuracy"]
    assert [c["pixels"] for c in result["per_class"]] == matrix.sum(1).tolist()
    csv_rows = (tmp_path / "eval" / "confusion.csv").read_text().splitlines()
    assert csv_rows[0].split(",")[1:] == ["background", "disc", "box", "line"]
    assert [int(v) for v in csv_rows[2].split(",")[1:]] == matrix[1].tolist()

    # the loss and the validation figures see no void pixel: changing the logits there changes nothing
    model = load_model(run)[0].eval()
    from unetseg.data.check import scan

    data, _ = scan(cfg, progress=False)
    x = to_float(torch.from_numpy(data.images), cfg.data.mean, cfg.data.std)
    y = torch.from_numpy(data.masks).long()
    assert (y == 255).any()
    with torch.no_grad():
        logits = model(x)
    loss = SegmentationLoss(cfg.train.loss, cfg.train.class_weight_values)
    moved = logits.clone()
    moved[:, 3][y == 255] = 50.0  # the void pixels now scream "line"
    assert abs(loss(logits, y).item() - loss(moved, y).item()) < 1e-5
    full = validate(model, data, cfg, torch.device("cpu"))
    brute = np.zeros((4, 4), dtype=np.int64)
    pred = logits.argmax(1)
    keep = y != 255
    np.add.at(brute, (y[keep].numpy(), pred[keep].numpy()), 1)
    assert abs(full["miou"] - class_scores(torch.from_numpy(brute))["miou"]) < 1e-9


def test_validation_folders_are_the_split_and_resume_keeps_it(tmp_path):
    train = make_multiclass_dataset(tmp_path / "train", count=8, size=(48, 32), seed=3)
    val = make_multiclass_dataset(tmp_path / "val", count=3, size=(48, 32), seed=4)  # the same file names as train's
    cfg = _config(train, val_data=str(val))
    cfg.train.epochs = 1
    run = fit(cfg, tmp_path / "run")
    split = json.loads((run / "split.json").read_text())
    assert split["train"] == [f"{i:04d}.png" for i in range(8)] and split["val"] == [f"{i:04d}.png" for i in range(3)]
    assert split["val_folders"] == str(val)
    resumed = RunConfig.load(run / "config.json")
    resumed.train.epochs = 2
    fit(resumed, run, resume=True)
    assert json.loads((run / "split.json").read_text()) == split
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all(r["val_miou"] is not None for r in records)

    # the report evaluates the validation folder and shows IoU per class by name, in the classes' colours
    from unetseg import write_report

    page = write_report([run], tmp_path / "report.html").read_text()
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["images"] == 3 and [c["name"] for c in summary["per_class"]] == ["background", "disc", "box", "line"]
    for c in summary["per_class"]:
        assert f"<th>{c['name']}</th>" in page
    assert 'style="background:#ffe119"' in page  # the line class's colour from classes.csv
    assert 'alt="confusion matrix"' in page and f"mIoU {summary['miou']:.4f}" in page


def test_a_validation_folder_without_pairs_or_of_other_channels_is_one_line(tmp_path):
    import pytest

    from unetseg.data import DataError

    train = make_multiclass_dataset(tmp_path / "train", count=4, size=(48, 32), seed=3)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DataError) as err:
        fit(_config(train, val_data=str(empty)), tmp_path / "run1")
    assert "empty/images: no images" in str(err.value) and "--val-data" in str(err.value)
    grey = make_multiclass_dataset(tmp_path / "grey", count=2, size=(48, 32), seed=5)
    for p in (grey / "images").iterdir():
        Image.open(p).convert("L").save(p)
    with pytest.raises(DataError) as err:
        fit(_config(train, val_data=str(grey)), tmp_path / "run2")
    assert "grey/images/0000.png: validation image is greyscale but the training images are colour" in str(err.value)


def test_validation_folders_need_their_own_ignore_masks(tmp_path):
    import pytest

    from unetseg.data import DataError, pair_files

    train = make_multiclass_dataset(tmp_path / "train", count=3, size=(48, 32), seed=3)
    val = make_multiclass_dataset(tmp_path / "val", count=2, size=(48, 32), seed=4)
    cfg = DataConfig(data=str(train), val_data=str(val), ignore_masks=str(train / "masks"))
    with pytest.raises(DataError, match="give --val-ignore-masks DIR"):
        pair_files(cfg)
    cfg.val_ignore_masks = str(val / "masks")  # the validation images' own (here: their masks, non-zero counts)
    pairs = pair_files(cfg).pairs
    assert [p.ignore.parent for p in pairs] == [train / "masks"] * 3 + [val / "masks"] * 2


def test_oversampled_crops_are_centred_on_a_class_present_and_repeat_with_the_generator():
    from unetseg.train.placement import class_centres, crops

    masks = np.zeros((3, 64, 64), np.uint8)
    masks[0, 60:62, 2:4] = 2  # a rare class in a corner: random 16x16 crops would seldom see it
    masks[1, 10:12, 50:52] = 1
    images = np.zeros((3, 64, 64, 3), np.uint8)
    centres = class_centres(masks, np.arange(3), 3)
    assert len(centres[2][1]) == 0 and len(centres[0][2]) == 4  # image 2: background only
    idx = [0, 1, 0, 1]
    def crop(oversample, seed):
        return crops(torch.from_numpy(images), torch.from_numpy(masks), idx, (16, 16),
                     np.random.default_rng(seed), centres, oversample)[1]
    always = crop(1.0, 0)
    # multi-class: every class present may be drawn (class 0 too); over seeds the rare pixels are always in the crop
    # when their class was drawn, and never-drawn classes fall back to random corners
    hits = sum(int((crop(1.0, s)[0] == 2).any()) for s in range(40))
    plain = sum(int((crop(0.0, s)[0] == 2).any()) for s in range(40))
    assert hits >= 12 and plain <= 4, (hits, plain)
    assert torch.equal(always, crop(1.0, 0))  # the same generator, the same crops: exact resume


def test_a_crop_run_trains_on_crops_and_validates_and_predicts_whole_frames(tmp_path, monkeypatch):
    import unetseg.train.loop as loop

    shapes = []
    real = loop.augment
    monkeypatch.setattr(loop, "augment", lambda *a: (lambda out: shapes.append(tuple(out[0].shape)) or out)(real(*a)))
    root = make_multiclass_dataset(tmp_path / "mc", count=12, size=(64, 48), seed=3)
    cfg = _config(root, val_fraction=0.25, crop=(32, 24), scale_limit=1.0)
    cfg.data.image_size = (64, 48)
    run = fit(cfg, tmp_path / "run")
    assert shapes and {s[1:] for s in shapes} == {(3, 24, 32)}  # every training batch: crops of the 64x48 frames
    saved = RunConfig.load(run / "config.json")
    assert saved.data.crop == (32, 24) and saved.data.patch is None and saved.train.micro_batch == 4
    predictor = Predictor.from_run(run, device="cpu", amp="off")
    image = find_pairs(root)[0].image
    assert predictor.predict_image(image).shape == (48, 64)  # the whole frame, in one pass
    with __import__("pytest").raises(ValueError, match="--crop 80x24 is larger than the training size 64x48"):
        bad = _config(root, val_fraction=0.25, crop=(80, 24))
        bad.data.image_size = (64, 48)
        fit(bad, tmp_path / "bad")
    with __import__("pytest").raises(ValueError, match="--crop and --patch exclude each other"):
        DataConfig(crop=(32, 24), patch=(32, 24))


def test_train_on_val_trains_on_the_validation_folder_too_and_says_so(tmp_path, monkeypatch, caplog):
    import unetseg.train.loop as loop

    train = make_multiclass_dataset(tmp_path / "train", count=6, size=(48, 32), seed=3)
    val = make_multiclass_dataset(tmp_path / "val", count=3, size=(48, 32), seed=4)
    sizes = []
    real = loop._Training.__init__

    def spy(self, cfg, out, world, device, dtype, layout, data, *a, **k):
        sizes.append((len(data.train), len(data.val)))
        real(self, cfg, out, world, device, dtype, layout, data, *a, **k)

    monkeypatch.setattr(loop._Training, "__init__", spy)
    cfg = _config(train, val_data=str(val), train_on_val=True)
    cfg.train.epochs = 1
    with caplog.at_level("WARNING"):
        run = fit(cfg, tmp_path / "run")
    assert sizes == [(9, 3)]  # the 6 training pairs and the 3 validation pairs train; the 3 still validate
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 9 and len(split["val"]) == 3
    assert "--train-on-val: the 3 validation pairs train too" in caplog.text
    assert RunConfig.load(run / "config.json").data.train_on_val
    from unetseg import write_report

    assert "trained on too: --train-on-val" in write_report([run], tmp_path / "report.html").read_text()
