"""Classes and their conventions: classes files, void values, declared classes, colour-coded masks, and the
one-line errors of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetseg.config import DataConfig, RunConfig
from unetseg.data import DataError
from unetseg.data.check import adopt, format_report, scan
from unetseg.data.classes import read_classes_file
from unetseg.data.encoding import IGNORE
from unetseg.data.synthetic import make_multiclass_dataset


def _label_set(root: Path, masks: list[np.ndarray], mode: str = "L") -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(np.full(m.shape[:2] + (3,), 90 + 10 * i, np.uint8)).save(root / "images" / f"f{i}.png")
        Image.fromarray(m, mode=mode).save(root / "masks" / f"f{i}.png")
    return root


def _cfg(root: Path, **data) -> RunConfig:
    cfg = RunConfig(data=DataConfig(data=str(root), image_size=(32, 32), **data))
    return cfg


def test_classes_files_in_csv_and_json(tmp_path):
    csv_file = tmp_path / "classes.csv"
    csv_file.write_text("value,name,colour\n0,sky,#808080\n1,road,128 64 128\n11,void,#000000\n")
    entries = read_classes_file(csv_file)
    assert [(e.value, e.name, e.colour) for e in entries] == [(0, "sky", (128, 128, 128)), (1, "road", (128, 64, 128)),
                                                              (11, "void", (0, 0, 0))]
    json_file = tmp_path / "classes.json"
    json_file.write_text(json.dumps({"0": "sky", "1": {"name": "road", "colour": [128, 64, 128]}}))
    assert [(e.value, e.name, e.colour) for e in read_classes_file(json_file)] == [(0, "sky", None),
                                                                                 (1, "road", (128, 64, 128))]
    camvid32 = tmp_path / "class_dict.csv"  # CamVid's 32-class release: name,r,g,b for colour-coded masks
    camvid32.write_text("name,r,g,b\nAnimal,64,128,64\nArchway,192,0,128\n")
    assert [(e.value, e.colour) for e in read_classes_file(camvid32)] == [(0, (64, 128, 64)), (1, (192, 0, 128))]


@pytest.mark.parametrize("text, problem", [
    ("value,name\n0,sky\n1,sky\n", "name 'sky' is listed twice"),
    ("value,name\n0,sky\n0,road\n", "value 0 is listed twice"),
    ("value,name\n0,sky\n1,\n", "class 2 has no name"),
    ("value,label\n0,sky\n", "needs a header"),
    ("value,name,colour\n0,sky,#12345\n", "is not #rrggbb"),
])
def test_a_bad_classes_file_is_one_line_naming_it(tmp_path, text, problem):
    path = tmp_path / "classes.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_classes_file(path)
    assert str(path) in str(err.value) and problem in str(err.value) and "\n" not in str(err.value)


def test_void_value_counts_nowhere_and_is_not_a_class(tmp_path):
    m = np.array([[0, 1, 2, 11], [11, 2, 1, 0]] * 16, np.uint8).repeat(8, axis=1)
    root = _label_set(tmp_path / "d", [m, m[::-1]])
    cfg = _cfg(root, ignore_index=(11,))
    data, report = scan(cfg, progress=False)
    assert not report.errors and data is not None
    assert data.encoding.values == (0, 1, 2) and data.encoding.ignore == (11,)
    assert set(np.unique(data.masks).tolist()) == {0, 1, 2, IGNORE}
    assert (data.masks == IGNORE).sum() == (np.stack([m, m[::-1]]) == 11).sum()  # same size: nearest keeps them all
    adopt(cfg, data, report)
    assert cfg.model.num_classes == 3


def test_a_value_outside_the_declared_classes_is_one_line_naming_the_file_and_value(tmp_path):
    m = np.array([[0, 1, 2, 11]] * 32, np.uint8).repeat(8, axis=1)
    root = _label_set(tmp_path / "d", [m])
    cfg = _cfg(root)
    cfg.data.follow_classes, cfg.model.num_classes = False, 3
    _, report = scan(cfg, progress=False)
    assert len(report.errors) == 1
    assert "f0.png: mask value 11 is outside the declared classes [0, 1, 2]" in report.errors[0]
    assert "--ignore-index 11" in report.errors[0]


def test_void_zero_with_declared_classes_one_to_n(tmp_path):
    m = np.array([[0, 1, 2, 3]] * 32, np.uint8).repeat(8, axis=1)  # NYUv2-style: 0 void, classes 1..3
    cfg = _cfg(_label_set(tmp_path / "d", [m]), ignore_index=(0,))
    cfg.data.follow_classes, cfg.model.num_classes = False, 3
    data, report = scan(cfg, progress=False)
    assert not report.errors and data.encoding.values == (1, 2, 3)
    assert set(np.unique(data.masks).tolist()) == {0, 1, 2, IGNORE}  # 1..3 -> classes 0..2, void nowhere


def test_a_classes_file_and_another_num_classes_disagree_in_one_line(tmp_path):
    m = np.array([[0, 1, 2, 2]] * 32, np.uint8).repeat(8, axis=1)
    classes = tmp_path / "classes.csv"
    classes.write_text("value,name\n0,road\n1,car\n2,person\n")
    cfg = _cfg(_label_set(tmp_path / "d", [m]), classes=str(classes))
    cfg.data.follow_classes, cfg.model.num_classes = False, 5
    _, report = scan(cfg, progress=False)
    assert report.errors and f"{classes}: the classes file declares 3 classes" in report.errors[0]


def test_255_beside_a_small_label_set_asks_for_ignore_index(tmp_path):
    m = np.array([[0, 1, 2, 255]] * 32, np.uint8).repeat(8, axis=1)
    _, report = scan(_cfg(_label_set(tmp_path / "d", [m])), progress=False)
    assert report.errors and "--ignore-index 255" in report.errors[0] and "f0.png" in report.errors[0]


def test_a_declared_class_absent_from_the_masks_keeps_its_index(tmp_path):
    m = np.array([[0, 1, 3]] * 32, np.uint8).repeat(11, axis=1)[:, :32]  # class 2 in no mask
    cfg = _cfg(_label_set(tmp_path / "d", [m]))
    cfg.data.follow_classes, cfg.model.num_classes = False, 4
    data, report = scan(cfg, progress=False)
    assert not report.errors and data.encoding.values == (0, 1, 2, 3)
    assert set(np.unique(data.masks).tolist()) == {0, 1, 3}  # 3 stays 3, not shifted to 2


def test_a_classes_file_names_the_classes_and_refuses_values_it_lacks(tmp_path):
    m = np.array([[0, 1, 2, 7]] * 32, np.uint8).repeat(8, axis=1)
    root = _label_set(tmp_path / "d", [m])
    classes = tmp_path / "classes.csv"
    classes.write_text("value,name,colour\n0,road,#804080\n1,car,#400080\n2,person,#c08080\n7,void,#000000\n")
    cfg = _cfg(root, classes=str(classes))
    data, report = scan(cfg, progress=False)
    assert any("class 'void' (value 7) reads as void" in w and "--ignore-index 7" in w for w in report.warnings)
    cfg = _cfg(root, classes=str(classes), ignore_index=(7,))
    data, report = scan(cfg, progress=False)
    assert not report.errors and report.names == ["road", "car", "person"]
    assert "0 road:" in format_report(report)
    adopt(cfg, data, report)
    assert cfg.data.class_names == ["road", "car", "person"]
    assert cfg.data.class_colours == ["#804080", "#400080", "#c08080"]
    short = tmp_path / "short.csv"
    short.write_text("value,name\n0,road\n1,car\n")
    _, report = scan(_cfg(root, classes=str(short)), progress=False)
    assert report.errors and "f0.png: mask value 2" in report.errors[0] and str(short) in report.errors[0]


def test_colour_coded_masks_are_decoded_with_the_palette_file(tmp_path):
    colours = {0: (128, 64, 128), 1: (64, 0, 128), 2: (0, 0, 0)}
    labels = np.array([[0, 1, 2, 1]] * 32).repeat(8, axis=1)
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    for k, c in colours.items():
        rgb[labels == k] = c
    root = _label_set(tmp_path / "d", [rgb], mode="RGB")
    classes = tmp_path / "class_dict.csv"
    classes.write_text("name,r,g,b\nRoad,128,64,128\nCar,64,0,128\nVoid,0,0,0\n")
    cfg = _cfg(root, classes=str(classes), ignore_index=(0,))  # #000000 packed is 0
    data, report = scan(cfg, progress=False)
    assert not report.errors and report.names == ["Road", "Car"]
    expected = np.where(labels == 2, IGNORE, labels)
    assert (data.masks[0] == expected).all()
    rgb[0, :5] = (1, 2, 3)  # a colour not in the palette: the file and the pixel count
    Image.fromarray(rgb).save(root / "masks" / "f0.png")
    _, report = scan(cfg, progress=False)
    assert report.errors and "f0.png: mask colour #010203 (5 pixels in all) is not in the classes file" in \
        report.errors[0]


def test_class_names_must_match_the_classes(tmp_path):
    root = make_multiclass_dataset(tmp_path / "mc", count=4, size=(48, 32))
    cfg = _cfg(root, ignore_index=(255,), class_names=["bg", "disc"])
    _, report = scan(cfg, progress=False)
    assert report.errors and "--class-names: 2 names for 4 classes" in report.errors[0]


def test_the_shipped_camvid_classes_file_fits_camvid(tmp_path):
    from tests.conftest import shared_dataset

    shipped = Path(__file__).resolve().parents[2] / "configs" / "camvid_classes.csv"
    entries = read_classes_file(shipped)
    assert [e.value for e in entries] == list(range(12)) and entries[11].name == "void"
    data = shared_dataset("camvid_val")
    cfg = RunConfig(data=DataConfig(data=str(data), image_size=(96, 72), classes=str(shipped), ignore_index=(11,)))
    _, report = scan(cfg, progress=False)
    assert not report.errors and report.names[2] == "pole" and len(report.names) == 11
