import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.train.test_fit import tiny_config
from unetseg import Predictor, evaluate_pairs, find_pairs, fit, predict_folder
from unetseg.data.io import read_mask


@pytest.fixture()
def carvana_run(carvana_like, tmp_path):
    return fit(tiny_config(carvana_like, epochs=1), tmp_path / "run")


def test_predicted_masks_have_the_original_size_and_the_training_palette(carvana_like, carvana_run, tmp_path,
                                                                         monkeypatch):
    from unetseg.data import io

    decoded = []
    real_decode = io._decode_sized  # every decode of an image goes through it
    monkeypatch.setattr(io, "_decode_sized", lambda path, *a, **k: decoded.append(path) or real_decode(path, *a, **k))
    predictor = Predictor.from_run(carvana_run, device="cpu", batch_size=5)
    written = predict_folder(predictor, carvana_like / "train", tmp_path / "pred")
    # with overlays each photo is decoded twice: as training decoded it for the model, and whole for the overlay
    assert sorted(decoded) == sorted(2 * list((carvana_like / "train").iterdir()))
    assert len(written) == 12
    for path in written:
        mask = read_mask(path)
        assert path.suffix == ".png" and mask.values.shape == (64, 96)  # the images' own size, not 64x48
        assert mask.mode == "P" and mask.palette[:6] == (0, 0, 0, 255, 255, 255)
        assert set(np.unique(mask.values)) <= {0, 1}
    overlays = sorted((tmp_path / "pred" / "overlays").iterdir())
    assert len(overlays) == 12 and Image.open(overlays[0]).size == (96, 64)


def test_predict_image_matches_predict_folder(carvana_like, carvana_run, tmp_path):
    predictor = Predictor.from_run(carvana_run, device="cpu")
    image = sorted((carvana_like / "train").iterdir())[3]
    classes = predictor.predict_image(image)
    predict_folder(predictor, image, tmp_path / "one", overlays=False)
    np.testing.assert_array_equal(read_mask(tmp_path / "one" / "masks" / f"{image.stem}.png").values, classes)


def test_evaluate_at_original_resolution(carvana_like, carvana_run, tmp_path):
    predictor = Predictor.from_run(carvana_run, device="cpu")
    pairs = find_pairs(carvana_like)
    result = evaluate_pairs(predictor, pairs, tmp_path / "eval")
    assert result["images"] == 12
    # Recompute one image's Dice by hand from the written prediction.
    pair = pairs[0]
    pred = predictor.predict_image(pair.image).astype(bool)
    target = read_mask(pair.mask).values.astype(bool)
    dice = 2 * (pred & target).sum() / (pred.sum() + target.sum())
    assert abs(result["per_image"][0]["dice"] - dice) < 1e-9
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["mean_dice"] == pytest.approx(np.mean([r["dice"] for r in result["per_image"]]))
    assert (tmp_path / "eval" / "per_image.csv").read_text().count("\n") == 13


def test_three_class_colour_masks_train_predict_and_score_per_class(tmp_path):
    from tests.data.test_formats import COLOURS, make_dataset

    root = make_dataset(tmp_path / "d", n=6, mask="rgb3")
    run = fit(tiny_config(root, epochs=1), tmp_path / "run")
    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.config.model.num_classes == 3 and predictor.encoding.mode == "RGB"
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert len(record["val_dice_per_class"]) == 3  # every class (class 0 is scored too)
    written = predict_folder(predictor, root / "images", tmp_path / "pred", overlays=False)
    colours = {tuple(c) for c in COLOURS.tolist()}
    for path in written:
        image = Image.open(path)
        assert image.mode == "RGB" and image.size == (56, 40)
        assert {tuple(c) for c in np.unique(np.asarray(image).reshape(-1, 3), axis=0).tolist()} <= colours
    result = evaluate_pairs(predictor, find_pairs(root), tmp_path / "eval")
    from unetseg.score.image import OVERLAP, SURFACE, TOPOLOGY

    per_class = {f"{m}_class{k}" for m in ("dice", "iou") for k in range(3)}
    assert set(result["per_image"][0]) == {"image", *OVERLAP, *SURFACE, *TOPOLOGY, *per_class}
    row = result["per_image"][0]
    assert row["dice"] == pytest.approx(np.nanmean([row["dice_class0"], row["dice_class1"], row["dice_class2"]]))
    assert "mean_dice_class2" in json.loads((tmp_path / "eval" / "summary.json").read_text())


def test_predict_writes_background_outside_the_ignore_masks(tmp_path):
    from tests.data.test_formats import make_dataset
    from unetseg.config import DataConfig

    root = make_dataset(tmp_path / "d", n=4)
    (root / "fov").mkdir()
    fov = np.zeros((40, 56), np.uint8)
    fov[:, :20] = 255
    for i in range(4):
        Image.fromarray(fov).save(root / "fov" / f"{i}.png")
    run = fit(tiny_config(root, epochs=1, lr=0.0001), tmp_path / "run")
    predictor = Predictor.from_run(run, device="cpu")
    plain = predict_folder(predictor, root / "images", tmp_path / "plain", overlays=False)
    blanked = predict_folder(predictor, root / "images", tmp_path / "fov", overlays=False,
                             ignore=DataConfig(ignore_masks=str(root / "fov")))
    for a, b in zip(plain, blanked):
        a, b = read_mask(a).values, read_mask(b).values
        assert (b[:, 20:] == 0).all() and np.array_equal(a[:, :20], b[:, :20])
    assert any((read_mask(p).values[:, 20:] > 0).any() for p in plain)  # there was something to blank


def _random_predictor(vflip_p: float, tta: bool, classes: int = 1) -> Predictor:
    from unetseg import RunConfig, UNetConfig
    from unetseg.model import UNet

    cfg = RunConfig(UNetConfig(base_channels=4, depth=3, num_classes=classes))
    cfg.data.image_size, cfg.data.vflip_p = (64, 48), vflip_p
    torch.manual_seed(0)
    return Predictor(UNet(cfg.model), cfg, device="cpu", amp="off", tta=tta)


@pytest.mark.parametrize("classes", [1, 3])
def test_tta_makes_predictions_equivariant_to_the_flips_it_averages(classes):
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    h, v = images[:, :, ::-1].copy(), images[:, ::-1].copy()
    plain = _random_predictor(0.5, tta=False, classes=classes)
    assert (plain.logits(h) - plain.logits(images).flip(3)).abs().max() > 1e-3  # a model alone is not equivariant
    both = _random_predictor(0.5, tta=True, classes=classes)  # training flipped vertically half the time: 4 passes
    torch.testing.assert_close(both.logits(h), both.logits(images).flip(3), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both.logits(v), both.logits(images).flip(2), atol=1e-4, rtol=1e-4)
    horizontal = _random_predictor(0.1, tta=True, classes=classes)  # vertical flips rare in training: 2 passes
    torch.testing.assert_close(horizontal.logits(h), horizontal.logits(images).flip(3), atol=1e-4, rtol=1e-4)
    assert (horizontal.logits(v) - horizontal.logits(images).flip(2)).abs().max() > 1e-3
    # the scores are those of the mean probability over the model and its horizontally flipped copy, by hand
    from unetseg.metrics import logits_to_probabilities

    x = torch.from_numpy(images)
    by_hand = (logits_to_probabilities(plain.logits(images)) +
               logits_to_probabilities(plain.logits(x.flip(2).numpy().copy())).flip(3)) / 2
    torch.testing.assert_close(logits_to_probabilities(horizontal.logits(images)), by_hand, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("classes", [1, 3])
def test_multi_scale_inference_is_the_mean_probability_of_the_scales_resized_back(classes):
    from unetseg.infer.predict import scaled_size
    from unetseg.metrics import logits_to_probabilities

    images = np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    plain = _random_predictor(0.5, tta=False, classes=classes)
    multi = Predictor(plain.model, plain.config, device="cpu", amp="off", scales=(1.0, 0.5, 1.5))
    assert scaled_size((48, 64), 1.5) == (64, 96) and scaled_size((48, 64), 0.5) == (32, 32)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # the run's normalisation: mean 0, std 1
    by_hand = logits_to_probabilities(plain.logits(images))
    with torch.inference_mode():
        for scale, antialias in ((0.5, True), (1.5, False)):
            xs = F.interpolate(x, size=scaled_size((48, 64), scale), mode="bilinear", antialias=antialias)
            out = F.interpolate(plain.model(xs), size=(48, 64), mode="bilinear")
            by_hand = by_hand + logits_to_probabilities(out)
    got = logits_to_probabilities(multi.logits(images))
    torch.testing.assert_close(got, by_hand / 3, atol=1e-5, rtol=1e-4)
    assert (got - logits_to_probabilities(plain.logits(images))).abs().max() > 1e-4  # the other scales count
    # with --tta each scale's flipped copy too: equivariant to the flip
    both = Predictor(plain.model, plain.config, device="cpu", amp="off", tta=True, scales=(1.0, 1.5))
    torch.testing.assert_close(both.logits(images[:, :, ::-1].copy()), both.logits(images).flip(3), atol=1e-4,
                               rtol=1e-4)


def test_a_runs_own_inference_settings_are_used_unless_a_flag_says_otherwise(carvana_like, carvana_run, tmp_path):
    from unetseg.cli.main import main

    config = json.loads((carvana_run / "config.json").read_text())
    config["data"].update(predict_scales=[1.0, 1.5], predict_tta=True)  # as the plan's scene recipe records them
    (carvana_run / "config.json").write_text(json.dumps(config))
    own = Predictor.from_run(carvana_run, device="cpu")
    assert own.scales == (1.0, 1.5) and own.tta is True
    plain = Predictor.from_run(carvana_run, device="cpu", tta=False, scales=[1])
    assert plain.scales == (1.0,) and plain.tta is False
    images = np.stack([own._load(path)[0] for path in sorted((carvana_like / "train").iterdir())[:2]])
    assert (own.logits(images) - plain.logits(images)).abs().max() > 1e-4  # the run's settings change the scores
    runs = {}
    for name, flags in (("own", []), ("plain", ["--scales", "1", "--no-tta"]), ("half", ["--scales", "1.5"])):
        assert main(["evaluate", "--model", str(carvana_run), "--split", "val", "--out", str(tmp_path / name),
                     *flags]) == 0
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert (runs["own"]["scales"], runs["own"]["tta"]) == ([1.0, 1.5], True)
    assert (runs["plain"]["scales"], runs["plain"]["tta"]) == ([1.0], False)
    assert (runs["half"]["scales"], runs["half"]["tta"]) == ([1.5], True)  # one flag given, the other the run's
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", str(carvana_run), "--scales", "one"])


def test_a_gpu_batch_shrinks_by_the_largest_scales_area_and_a_cpu_batch_stays():
    from unetseg.infer.predict import scaled_batch

    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert scaled_batch(64, gpu, (1.0, 1.5, 2.0)) == 16 and scaled_batch(64, gpu, (1.0,)) == 64
    assert scaled_batch(3, gpu, (2.0,)) == 1 and scaled_batch(64, gpu, (0.5, 1.0)) == 64
    assert scaled_batch(4, cpu, (1.0, 2.0)) == 4


@pytest.mark.parametrize("scales, message", [((0.0,), "--scales 0: a factor between 0.25 and 4"),
                                             ((1.0, 1.0), "--scales 1 1: one or more factors, each once"),
                                             ((), "--scales : one or more factors")])
def test_bad_scales_are_one_line(scales, message):
    plain = _random_predictor(0.5, tta=False)
    with pytest.raises(ValueError, match=message):
        Predictor(plain.model, plain.config, device="cpu", scales=scales)


def test_the_threshold_tuned_on_validation_is_stored_and_used_and_probabilities_are_saved(carvana_like, carvana_run,
                                                                                         tmp_path, capsys):
    from unetseg.cli.main import main

    assert main(["evaluate", "--model", str(carvana_run), "--split", "val", "--tune-threshold"]) == 0
    stored = json.loads((carvana_run / "threshold.json").read_text())
    assert 0.05 <= stored["threshold"] <= 0.95 and stored["mean_dice"] >= stored["mean_dice_at_0.5"]
    assert f"threshold {stored['threshold']:.2f}" in capsys.readouterr().out
    image = sorted((carvana_like / "train").iterdir())[0]
    plain = Predictor.from_run(carvana_run, device="cpu", threshold=0.5)
    _, logits = next(plain.predict_paths([image]))
    middle = float(logits.sigmoid().median())  # splits this photo's pixels: a threshold that changes the mask
    (carvana_run / "threshold.json").write_text(json.dumps({**stored, "threshold": middle}))
    predictor = Predictor.from_run(carvana_run, device="cpu")
    assert predictor.threshold == middle
    assert predictor.predict_image(image).sum() < plain.predict_image(image).sum()  # the stored one is used
    assert main(["evaluate", "--model", str(carvana_run), "--split", "val"]) == 0
    assert main(["evaluate", "--model", str(carvana_run), "--split", "val", "--threshold", "0.5"]) == 0
    scores = [line for line in capsys.readouterr().out.splitlines() if line.startswith("mean Dice")]
    assert len(scores) == 2 and scores[0] != scores[1]  # evaluate uses it too; a flag wins
    written = predict_folder(predictor, carvana_like / "train", tmp_path / "pred", overlays=False, probs=True)
    for mask_file in written[:3]:
        saved = np.asarray(Image.open(tmp_path / "pred" / "probs" / mask_file.name))
        photo = carvana_like / "train" / mask_file.with_suffix(".jpg").name
        _, logits = next(predictor.predict_paths([photo]))
        assert saved.shape == read_mask(mask_file).values.shape == (64, 96) and saved.dtype == np.uint8
        assert np.abs(saved / 255 - logits[0].sigmoid().numpy()).max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
    (carvana_run / "threshold.json").write_text("{}")
    with pytest.raises(ValueError, match="not a threshold"):
        Predictor.from_run(carvana_run, device="cpu")


def test_one_image_gives_one_mask_whatever_the_outputs(carvana_like, tmp_path):
    """predict with and without overlays, evaluate and submit: the same pixels (the JPEG photos are decoded as
    training decoded them, at half size by the draft decode, whatever else is written)."""
    from unetseg.infer.submit import rle_decode, write_submission
    from unetseg.metrics import dice_from_counts, confusion_counts

    cfg = tiny_config(carvana_like, epochs=1)
    cfg.data.image_size = (48, 32)  # half the 96x64 photos: the draft decode's scale
    run = fit(cfg, tmp_path / "run")
    predictor = Predictor.from_run(run, device="cpu")
    inputs = []
    logits = predictor.logits
    predictor.logits = lambda images: inputs.append(images.copy()) or logits(images)
    with_overlays = predict_folder(predictor, carvana_like / "train", tmp_path / "a", overlays=True)
    without = predict_folder(predictor, carvana_like / "train", tmp_path / "b", overlays=False)
    half = len(inputs) // 2  # the model saw the same bytes both times: the training decode
    assert all(np.array_equal(a, b) for a, b in zip(inputs[:half], inputs[half:])) and half > 0
    csv = write_submission(predictor, carvana_like / "train", tmp_path / "sub.csv")
    rows = dict(line.split(",") for line in csv.read_text().splitlines()[1:])
    pairs = find_pairs(carvana_like)
    scores = {r["image"]: r["dice"] for r in evaluate_pairs(predictor, pairs)["per_image"]}
    assert len(with_overlays) == len(without) == len(rows) == len(scores) == 12
    for a, b, pair in zip(sorted(with_overlays), sorted(without), sorted(pairs, key=lambda p: p.image.name)):
        mask = read_mask(a).values
        np.testing.assert_array_equal(mask, read_mask(b).values)
        np.testing.assert_array_equal(mask, rle_decode(rows[pair.image.name], mask.shape))
        truth = (read_mask(pair.mask).values > 0).astype(np.int64)
        dice = float(dice_from_counts(confusion_counts(torch.from_numpy(mask.astype(np.int64))[None],
                                                       torch.from_numpy(truth)[None], 2))[0, 1])
        assert dice == scores[pair.image.name] or (dice != dice and scores[pair.image.name] != scores[pair.image.name])
