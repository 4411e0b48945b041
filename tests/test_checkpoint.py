import pytest
import torch

from unetseg import RunConfig, UNet, UNetConfig, load_model
from unetseg.checkpoint import CheckpointError, load_training_state, save_training_state, save_weights


def _run(tmp_path, model_cfg):
    cfg = RunConfig(model=model_cfg)
    cfg.save(tmp_path / "config.json")
    return cfg


def test_save_then_load_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=4, num_classes=2))
    model.train()(torch.randn(2, 3, 32, 32))  # move BN running stats off their defaults
    model.eval()
    _run(tmp_path, model.config)
    save_weights(model, tmp_path / "model.safetensors")
    loaded, cfg = load_model(tmp_path)
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert cfg.model == model.config


def test_weights_that_do_not_fit_the_config_name_both_files(tmp_path):
    save_weights(UNet(UNetConfig(base_channels=4, num_classes=3)), tmp_path / "model.safetensors")
    _run(tmp_path, UNetConfig(base_channels=4, num_classes=1))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights do not match .*config\.json.*head"):
        load_model(tmp_path)


def test_training_state_round_trip(tmp_path):
    state = {"model": UNet(UNetConfig(base_channels=4)).state_dict(), "epoch": 3, "best_dice": 0.5}
    save_training_state(state, tmp_path / "last.pt")
    loaded = load_training_state(tmp_path / "last.pt")
    assert loaded["epoch"] == 3 and all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"epoch": 1, "payload": _Evil(str(marker))}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt: refused to load"):
        load_training_state(tmp_path / "last.pt")
    assert not marker.exists()
