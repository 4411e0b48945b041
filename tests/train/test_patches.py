"""Training on random crops (--patch) and predicting by windows at the training scale, whatever the image's size."""

import numpy as np
import torch

from unetseg import Predictor, RunConfig, fit, predict_folder
from unetseg.cli.main import main
from unetseg.config import DataConfig, TrainConfig, UNetConfig
from unetseg.data.io import read_mask
from unetseg.data.synthetic import make_synthetic_dataset
from unetseg.train.placement import crops


def test_crops_come_from_the_step_generator_and_cover_the_image():
    images = torch.arange(2 * 6 * 8).reshape(2, 6, 8, 1).to(torch.uint8)
    masks = images[..., 0].clone()
    a = crops(images, masks, [1, 0, 1], (4, 3), np.random.default_rng(5))
    b = crops(images, masks, [1, 0, 1], (4, 3), np.random.default_rng(5))
    assert a[0].shape == (3, 3, 4, 1) and a[1].shape == (3, 3, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[0][..., 0], a[1])  # same draws; image and mask crop together
    corners = set()
    for seed in range(200):
        crop = crops(images, masks, [0], (4, 3), np.random.default_rng(seed))[1][0]
        corners.add(int(crop[0, 0]))
    assert len(corners) == (6 - 3 + 1) * (8 - 4 + 1)  # every corner position is drawn


def test_a_patch_run_trains_at_native_size_and_predicts_larger_images_by_windows(tmp_path):
    data = make_synthetic_dataset(tmp_path / "d", count=24, size=(96, 64), seed=0)
    cfg = RunConfig(UNetConfig(base_channels=8, depth=3),
                    DataConfig(data=str(data), patch=(48, 32), val_fraction=0.25),
                    TrainConfig(epochs=40, batch_size=8, lr=3e-3, progress=False))
    run = fit(cfg, tmp_path / "run")
    saved = RunConfig.load(run / "config.json")
    assert saved.data.image_size == (96, 64) and saved.data.patch == (48, 32) and saved.data.patch_scale == (1.0, 1.0)
    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.tile == (48, 32)
    big = make_synthetic_dataset(tmp_path / "big", count=4, size=(192, 128), seed=3)  # larger than any training image
    written = predict_folder(predictor, big / "images", tmp_path / "pred", overlays=False)
    dices = []
    for mask_file in written:
        pred = read_mask(mask_file).values > 0
        truth = read_mask(big / "masks" / mask_file.name).values > 0
        assert pred.shape == (128, 192)  # predicted at its own size, by windows, not squeezed to 96x64
        dices.append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    assert np.mean(dices) > 0.85, dices


def test_a_patch_larger_than_the_images_is_a_one_line_error(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "d", count=8, size=(64, 48), seed=0)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--patch", "128x128"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "larger than the training images" in err[0]


def test_patch_training_on_images_of_several_sizes_asks_for_a_size(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "d", count=8, size=(64, 48), seed=0)
    other = make_synthetic_dataset(tmp_path / "o", count=1, size=(80, 64), seed=1)
    for folder in ("images", "masks"):
        (other / folder / "0000.png").replace(data / folder / "0000.png")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--patch", "32x32"]) == 2
    assert "differ in size" in capsys.readouterr().err


def test_validation_of_a_patch_run_holds_no_more_pixels_than_a_training_batch(synthetic_dir, tmp_path, monkeypatch):
    """Whole 64x48 images are 4x the 32x24 patch: validation and the BN pass take 2 of them at a time, the pixels
    of a training batch of 8 patches, not 8 whole images (out of memory on a GPU for large photos)."""
    from unetseg.model import unet

    seen = []
    forward = unet.UNet.forward
    monkeypatch.setattr(unet.UNet, "forward", lambda self, x: seen.append((self.training, x.shape)) or forward(self, x))
    cfg = RunConfig(UNetConfig(base_channels=4, depth=3),
                    DataConfig(data=str(synthetic_dir), image_size=(64, 48), patch=(32, 24), val_fraction=0.25),
                    TrainConfig(epochs=1, batch_size=8, device="cpu", progress=False, bn_recalibrate=True))
    fit(cfg, tmp_path / "run")
    whole = [shape for training, shape in seen if shape[-2:] == (48, 64)]
    assert whole and max(n * h * w for n, _, h, w in whole) <= 8 * 32 * 24  # validation and the BN pass
    assert all(shape[-2:] == (24, 32) for training, shape in seen if training and shape not in whole)
