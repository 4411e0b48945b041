import json
from pathlib import Path

import pytest

from unetseg.config import DataConfig, RunConfig, TrainConfig, UNetConfig, parse_size


def test_defaults_are_the_seed_recipe():
    cfg = RunConfig()
    assert cfg.data.image_size == (480, 320)
    assert (cfg.data.rotate_limit, cfg.data.hflip_p, cfg.data.vflip_p) == (35.0, 0.5, 0.1)
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.epochs) == (16, 1e-4, 20)
    assert cfg.model == UNetConfig(3, 1, 64, 4)


def test_json_round_trip_is_equal(tmp_path):
    cfg = RunConfig(UNetConfig(num_classes=3, base_channels=8), DataConfig(data="x", image_size=(240, 160),
                    mask_values=[0, 7, 9]), TrainConfig(epochs=3, amp="off"))
    cfg.save(tmp_path / "config.json")
    loaded = RunConfig.load(tmp_path / "config.json")
    assert loaded == cfg
    assert json.loads((tmp_path / "config.json").read_text())["data"]["image_size"] == [240, 160]


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match="unknown key.*'epoch'"):
        RunConfig.from_dict({"train": {"epoch": 3}})
    with pytest.raises(ValueError, match="unknown key.*'optim'"):
        RunConfig.from_dict({"optim": {}})


@pytest.mark.parametrize("make", [lambda: UNetConfig(depth=0), lambda: DataConfig(image_size=(8, 100)),
                                  lambda: DataConfig(val_fraction=1.0), lambda: TrainConfig(lr=0),
                                  lambda: TrainConfig(amp="fp8"), lambda: DataConfig(hflip_p=2)])
def test_bad_values_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_parse_size():
    assert parse_size("480x320") == (480, 320)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size("480")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = RunConfig.load(path)
    assert cfg.to_dict()["train"]["batch_size"] >= 1
    if path.name == "carvana.json":  # the seed's recipe, written out
        assert cfg.to_dict() == RunConfig().to_dict()
