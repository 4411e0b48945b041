"""The model learns real photographs: a narrow U-Net trained for about a minute on five Carvana cars segments the
sixth, held-out car (all its 16 angles) at the photos' original 1918x1280 resolution."""

import json

import pytest

from tests.conftest import shared_dataset
from unetseg import Predictor, RunConfig, evaluate_pairs, find_pairs, fit
from unetseg.config import DataConfig, TrainConfig, UNetConfig
from unetseg.data.dataset import pairs_from_split


@pytest.mark.slow
def test_narrow_unet_segments_a_held_out_car(tmp_path):
    data = shared_dataset("carvana_sample")
    cfg = RunConfig(UNetConfig(base_channels=16),
                    DataConfig(data=str(data), image_size=(144, 96), val_fraction=1 / 6, split_seed=1),
                    TrainConfig(epochs=10, batch_size=8, lr=2e-3, restart_epochs=10, progress=False))
    run = fit(cfg, tmp_path / "run")
    split = json.loads((run / "split.json").read_text())
    held_out = pairs_from_split(find_pairs(data), split["val"])
    assert len(held_out) == 16 and len({p.group for p in held_out}) == 1
    assert not {p.group for p in held_out} & {p.split("_")[0] for p in split["train"]}
    result = evaluate_pairs(Predictor.from_run(run, device="cpu"), held_out)
    assert result["mean_dice"] >= 0.90, result
