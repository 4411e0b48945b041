import json

import pytest
import torch

from unetseg import RunConfig, UNetConfig, fit, load_model
from unetseg.checkpoint import CheckpointError
from unetseg.config import DataConfig, TrainConfig


def tiny_config(data, **train) -> RunConfig:
    return RunConfig(UNetConfig(base_channels=4, depth=3), DataConfig(data=str(data), image_size=(64, 48),
                     val_fraction=0.25), TrainConfig(**{"epochs": 2, "batch_size": 8, "lr": 3e-3, **train}))


def test_fit_writes_a_complete_run_folder(synthetic_dir, tmp_path):
    run = fit(tiny_config(synthetic_dir), tmp_path / "run")
    assert {p.name for p in run.iterdir()} >= {"config.json", "split.json", "model.safetensors", "last.pt",
                                              "metrics.jsonl"}
    cfg = RunConfig.load(run / "config.json")
    assert cfg.data.mask_values == [0, 255] and cfg.data.mask_palette is None
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(0.0 <= r["val_dice"] <= 1.0 and r["train_loss"] > 0 for r in lines)
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 18 and len(split["val"]) == 6
    model, _ = load_model(run)
    assert model(torch.zeros(1, 3, 48, 64)).shape == (1, 1, 48, 64)


def test_training_lowers_the_loss(synthetic_dir, tmp_path):
    cfg = tiny_config(synthetic_dir, epochs=6, lr=1e-2)
    cfg.model.base_channels = 8
    fit(cfg, tmp_path / "run")
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.7 * losses[0]


def test_a_folder_holding_a_run_is_not_overwritten(synthetic_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    (tmp_path / "run" / "last.pt").write_bytes(b"state")
    with pytest.raises(CheckpointError, match="folder is not empty"):
        fit(tiny_config(synthetic_dir), tmp_path / "run")
    assert (tmp_path / "run" / "config.json").read_text() == "{}"
    assert (tmp_path / "run" / "last.pt").read_bytes() == b"state"


def test_resume_continues_after_the_last_epoch(synthetic_dir, tmp_path):
    run = fit(tiny_config(synthetic_dir, epochs=1), tmp_path / "run")
    cfg = RunConfig.load(run / "config.json")
    cfg.train.epochs = 2
    fit(cfg, run, resume=True)
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_without_an_image_size_the_training_size_keeps_the_aspect_ratio(tmp_path):
    from unetseg.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "wide", count=8, size=(200, 100), seed=0)
    cfg = RunConfig(UNetConfig(base_channels=4, depth=3), DataConfig(data=str(data), val_fraction=0.25),
                    TrainConfig(epochs=1, batch_size=4))
    run = fit(cfg, tmp_path / "run")
    w, h = RunConfig.load(run / "config.json").data.image_size
    assert (w, h) != (480, 320) and w % 8 == 0 and h % 8 == 0  # whole strides of the depth-3 model: 2**3
    assert abs(w / h - 2.0) < 0.1 and w <= 200 and h <= 100  # the images' 2:1, never upscaled


def test_a_run_records_the_resolution_ceiling_of_its_training_size_and_the_report_shows_it(synthetic_dir, tmp_path):
    from pathlib import Path

    from unetseg.data.ceiling import dice_from_iou, resolution_ceiling, sample_class_maps
    from unetseg.report.html import _ceiling

    cfg = tiny_config(synthetic_dir, epochs=1)
    cfg.data.image_size = (32, 24)  # half the images' 64x48: the blobs' edges lose a little
    run = fit(cfg, tmp_path / "run")
    record = json.loads((run / "run_info.json").read_text())["resolution_ceiling"]
    assert record["size"] == [32, 24]
    masks = [Path(synthetic_dir) / "masks" / n for n in
             json.loads((run / "split.json").read_text())["train"]]
    maps, k = sample_class_maps(masks)  # computed afresh, not read back from the cache the run wrote
    expected = dice_from_iou(resolution_ceiling(maps, [(32, 24)], k)[0])
    assert record["dice_per_class"] == pytest.approx(expected.tolist(), abs=1e-4)
    assert 0.8 < record["dice_per_class"][1] < 1.0
    assert f"Dice &lt;= {min(record['dice_per_class']):.3f}" in _ceiling(record)
