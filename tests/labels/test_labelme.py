"""LabelMe files import to pycocotools' pixels of their shapes, later shapes on top; bad files are one line."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetseg.cli.main import main

mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools (the labels extra) rasterises the shapes")
W, H = 48, 32


def _poly(coords: list[float]) -> np.ndarray:
    return mask_api.decode(mask_api.merge(mask_api.frPyObjects([coords], H, W))).astype(bool)


def _export(folder: Path) -> dict[str, np.ndarray]:
    """'a.json' beside a.jpg: a road polygon, a car rectangle over it (later: on top); 'b.json' with its image inside
    (imageData) and a circle. Returns the masks by hand (labels sorted: car 1, road 2, tree 3)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), np.uint8)).save(folder / "a.jpg")
    road = [[1.0, 30.0], [46.0, 30.0], [30.0, 8.0], [10.0, 8.0]]
    shapes_a = [{"label": "road", "points": road, "shape_type": "polygon"},
                {"label": "car", "points": [[12.0, 14.0], [24.0, 26.0]], "shape_type": "rectangle"}]
    (folder / "a.json").write_text(json.dumps({"imagePath": "a.jpg", "imageData": None, "shapes": shapes_a,
                                                "imageHeight": H, "imageWidth": W}))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (H, W, 3), np.uint8)).save(buffer, format="PNG")
    shapes_b = [{"label": "tree", "points": [[20.0, 16.0], [28.0, 16.0]], "shape_type": "circle"}]
    (folder / "b.json").write_text(json.dumps({"imagePath": "elsewhere/b.png", "shapes": shapes_b,
                                                "imageData": base64.b64encode(buffer.getvalue()).decode()}))
    a = np.zeros((H, W), np.uint8)
    a[_poly([c for p in road for c in p])] = 2
    a[_poly([12, 14, 24, 14, 24, 26, 12, 26])] = 1
    return {"a": a}


def test_labelme_files_import_with_later_shapes_on_top_and_embedded_images(tmp_path, capsys):
    expected = _export(tmp_path / "lm")
    out = tmp_path / "pairs"
    assert main(["import", "labelme", str(tmp_path / "lm"), "--out", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "a.png")), expected["a"])
    assert (expected["a"] == 2).sum() > 100 and (expected["a"] == 1).sum() > 100
    circle = np.asarray(Image.open(out / "masks" / "b.png")) == 3
    ys, xs = np.nonzero(circle)  # a disc of radius 8 about (20, 16)
    assert abs(circle.sum() - np.pi * 64) < 12 and abs(xs.mean() - 19.5) < 1 and abs(ys.mean() - 15.5) < 1
    assert (out / "images" / "a.jpg").read_bytes() == (tmp_path / "lm" / "a.jpg").read_bytes()
    assert Image.open(out / "images" / "b.png").size == (W, H)
    assert (out / "classes.csv").read_text().splitlines()[1:4] == ["0,background,#000000", "1,car,#1f77b4",
                                                                   "2,road,#ff7f0e"]
    capsys.readouterr()
    assert main(["check-data", str(out), "--classes", str(out / "classes.csv")]) == 0


def test_a_labels_file_fixes_the_values_and_bad_files_are_one_line(tmp_path, capsys):
    _export(tmp_path / "lm")
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\nroad\ncar\ntree\n")
    out = tmp_path / "pairs"
    assert main(["import", "labelme", str(tmp_path / "lm"), "--out", str(out), "--labels", str(labels)]) == 0
    assert set(np.unique(np.asarray(Image.open(out / "masks" / "a.png")))) == {0, 1, 2}  # road 1, car 2
    capsys.readouterr()
    labels.write_text("_background_\nroad\ncar\n")  # no tree
    bad = tmp_path / "bad"
    assert main(["import", "labelme", str(tmp_path / "lm"), "--out", str(bad), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.json shape 0 ('tree'): label not in" in err[0] and not bad.exists()
    doc = json.loads((tmp_path / "lm" / "a.json").read_text())
    doc["shapes"][0]["points"] = doc["shapes"][0]["points"][:2]
    (tmp_path / "lm" / "a.json").write_text(json.dumps(doc))
    (tmp_path / "lm" / "a.jpg").unlink()
    assert main(["import", "labelme", str(tmp_path / "lm"), "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "a.json: its image" in err and "not found" in err and not bad.exists()
