"""Postprocessing chosen on out-of-fold predictions: a rule is kept only where the mean Dice rises and no class falls
(nnU-Net's rule); the chosen rules are stored, applied by predict and evaluate, and left off with --no-postprocess."""

import json

import numpy as np
import torch

from unetseg import Predictor
from unetseg.infer.postprocess import (ClassRule, Postprocessing, apply, class_dice, determine_postprocessing,
                                       smallest_components)


def _square(a: np.ndarray, top: int, left: int, size: int, value: int) -> None:
    a[top:top + size, left:left + size] = value


def _binary_cases(spurious: bool, second_object: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for k in range(4):
        target = np.zeros((64, 64), np.uint8)
        _square(target, 10 + k, 10, 20, 1)
        if second_object:
            _square(target, 45, 45, 8, 1)
        pred = target.copy()
        if spurious:
            _square(pred, 50, 5, 6, 1)  # a blob of nothing
        pairs.append((pred, target))
    return pairs


def test_the_largest_component_is_kept_where_it_removes_false_blobs():
    pairs = _binary_cases(spurious=True, second_object=False)
    rules = determine_postprocessing(pairs, 2, 0, {1: 400})
    assert rules.rules[1].largest_component and rules.scores["mean_dice_after"] == 1.0
    assert rules.scores["mean_dice_before"] == 800 / 836  # the 20x20 square and a 6x6 blob of nothing


def test_the_largest_component_is_refused_where_it_removes_a_true_second_object():
    pairs = _binary_cases(spurious=False, second_object=True)
    for pred, _ in pairs:
        _square(pred, 2, 55, 3, 1)  # a small false blob too: the largest component would remove it, and the object
    rules = determine_postprocessing(pairs, 2, 0, smallest_components((t for _, t in pairs), [1]))
    tried = {t["rule"]: t for t in rules.scores["tried"]}
    assert not tried["largest_component"]["kept"] and not rules.rules.get(1, ClassRule()).largest_component
    assert tried["largest_component"]["mean_dice"] < rules.scores["mean_dice_before"] == 2 * 464 / (473 + 464)
    assert rules.rules[1].min_size == 32 and rules.scores["mean_dice_after"] == 1.0  # half the 8x8 object: the blob


def test_a_rule_that_helps_one_class_but_hurts_another_is_refused():
    target = np.zeros((64, 64), np.uint8)
    _square(target, 10, 10, 20, 1)           # class 1, and class 2 touching it: one foreground region
    target[10:30, 30:40] = 2
    _square(target, 50, 50, 2, 2)            # a small true class-2 object on its own
    pred = target.copy()
    _square(pred, 50, 5, 10, 1)              # a false class-1 blob
    before = class_dice([(pred, target)], 3, {}, 0)
    union = class_dice([(pred, target)], 3, {}, 0, foreground_largest=True)
    assert union[1:].mean() > before[1:].mean() and union[2] < before[2]  # the mean rises, class 2 falls
    rules = determine_postprocessing([(pred, target)], 3, 0, {1: 400, 2: 4})
    assert not rules.foreground_largest  # refused
    assert rules.rules[1].largest_component and 2 not in rules.rules  # class 1's own rule harms nobody: kept
    assert rules.scores["dice_after"] == [1.0, 1.0]


def test_rules_apply_as_stored_and_holes_fill_with_the_class():
    classes = np.zeros((32, 32), np.uint8)
    _square(classes, 4, 4, 12, 1)
    classes[8:10, 8:10] = 0                  # a hole
    _square(classes, 25, 25, 2, 1)           # a speck of 4 pixels
    out = apply(classes, {1: ClassRule(min_size=5, fill_holes=True)})
    assert out[8:10, 8:10].tolist() == [[1, 1], [1, 1]] and out[25:27, 25:27].sum() == 0
    assert classes[8, 8] == 0  # the input is left as it is
    rules = Postprocessing(0, {1: ClassRule(largest_component=True)})
    assert apply(classes, rules.rules).sum() == rules(classes).sum() == (144 - 4)


def test_the_predictor_applies_its_rules_to_every_mask_it_writes(tmp_path):
    from PIL import Image

    from unetseg.config import DataConfig, RunConfig, UNetConfig
    from unetseg.infer import predict_folder

    def model(x: torch.Tensor) -> torch.Tensor:  # foreground: a square and a speck, whatever the image
        out = torch.full((x.shape[0], 1, 32, 32), -5.0)
        out[:, :, 4:16, 4:16] = 5.0
        out[:, :, 25:27, 25:27] = 5.0
        return out

    config = RunConfig(model=UNetConfig(base_channels=4, depth=2), data=DataConfig(image_size=(32, 32)))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    predictor = Predictor(model, config, device="cpu", amp="off")
    assert predictor.predict_image(tmp_path / "a.png").sum() == 148  # 144 + the speck's 4
    predictor.postprocess = Postprocessing(0, {1: ClassRule(largest_component=True)})
    assert predictor.predict_image(tmp_path / "a.png").sum() == 144
    for probs in (False, True):  # both of predict's paths
        predict_folder(predictor, tmp_path / "a.png", tmp_path / f"out{probs}", overlays=False, probs=probs)
        assert (np.asarray(Image.open(tmp_path / f"out{probs}" / "masks" / "a.png")) > 0).sum() == 144
    rules = tmp_path / "postprocessing.json"
    predictor.postprocess.save(rules)
    loaded = Postprocessing.load(rules)
    assert loaded.rules == predictor.postprocess.rules and json.loads(rules.read_text())["background"] == 0
