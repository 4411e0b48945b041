"""COCO exports import to the masks drawn by hand and to pycocotools' own; bad files are one line, nothing written."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetseg.cli.main import main

mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools (the labels extra) rasterises COCO")
W, H = 40, 30


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a (H, W) bool mask: run lengths in column-major order, starting with zeros."""
    counts, current, run = [], False, 0
    for value in mask.flatten(order="F"):
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    assert sum(counts) == mask.size
    return {"size": [H, W], "counts": counts}


def _dataset(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Three images: 'street' with a car (compressed RLE), a smaller person over it (uncompressed RLE) and a crowd of
    persons (iscrowd); 'field' with a polygon; 'empty' without annotations. Returns the JSON and the masks by hand."""
    (tmp_path / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("street", "field", "empty"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), np.uint8)).save(tmp_path / "images" / f"{name}.jpg")
    car = np.zeros((H, W), bool)
    car[5:20, 4:30] = True
    person = np.zeros((H, W), bool)
    person[8:25, 10:16] = True  # overlaps the car: the smaller is on top
    crowd = np.zeros((H, W), bool)
    crowd[22:28, 30:38] = True
    compressed = mask_api.encode(np.asfortranarray(car.astype(np.uint8)))
    polygon = [[2.0, 3.0, 20.0, 3.0, 20.0, 12.0, 2.0, 12.0]]
    coco = {
        "images": [{"id": 1, "file_name": "street.jpg", "width": W, "height": H},
                   {"id": 7, "file_name": "field.jpg", "width": W, "height": H},
                   {"id": 9, "file_name": "empty.jpg", "width": W, "height": H}],
        "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": _uncompressed(person), "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": compressed["counts"].decode("ascii")}},
            {"id": 12, "image_id": 1, "category_id": 1, "segmentation": _uncompressed(crowd), "iscrowd": 1},
            {"id": 13, "image_id": 7, "category_id": 3, "segmentation": polygon, "iscrowd": 0}]}
    street = np.zeros((H, W), np.uint8)
    street[car] = 3
    street[person] = 1
    street[crowd] = 1
    field = mask_api.decode(mask_api.merge(mask_api.frPyObjects(polygon, H, W))).astype(np.uint8) * 3
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path, {"street": street, "field": field, "empty": np.zeros((H, W), np.uint8)}


def test_a_coco_file_imports_to_the_masks_drawn_by_hand_and_check_data_accepts_it(tmp_path, capsys):
    src, expected = _dataset(tmp_path / "export")
    out = tmp_path / "pairs"
    assert main(["import", "coco", str(src), "--out", str(out)]) == 0
    for name, mask in expected.items():
        written = Image.open(out / "masks" / f"{name}.png")
        assert written.mode == "P"
        assert np.array_equal(np.asarray(written), mask), name
        assert (out / "images" / f"{name}.jpg").read_bytes() == (src.parent / "images" / f"{name}.jpg").read_bytes()
    assert expected["field"].sum() > 0 and (expected["street"] == 3).sum() > 0  # the polygon drew something
    assert (out / "classes.csv").read_text().splitlines()[1:] == ["0,background,#000000", "1,person,#1f77b4",
                                                                   "3,car,#2ca02c"]
    assert "3 images" in capsys.readouterr().out
    assert main(["check-data", str(out), "--classes", str(out / "classes.csv")]) == 0


def test_polygons_are_pycocotools_own_pixels_and_images_can_be_linked(tmp_path):
    """A triangle and a two-part polygon, against COCO's API (annToMask) on the same file."""
    coco_api = pytest.importorskip("pycocotools.coco", reason="pycocotools (the labels extra)")
    src, _ = _dataset(tmp_path / "export")
    data = json.loads(src.read_text())
    data["annotations"] = [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1],
                            "segmentation": [[3.5, 2.2, 30.7, 9.9, 8.1, 27.4]]},
                           {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1],
                            "segmentation": [[1, 1, 9, 1, 9, 9], [20.5, 15, 38, 15, 38, 29, 20.5, 29]]}]
    src.write_text(json.dumps(data))
    out = tmp_path / "pairs"
    assert main(["import", "coco", str(src), "--out", str(out), "--link"]) == 0
    api = coco_api.COCO(str(src))
    for ann in data["annotations"]:
        name = {7: "field", 1: "street"}[ann["image_id"]]
        truth = api.annToMask(api.loadAnns(ann["id"])[0]).astype(bool)
        written = np.asarray(Image.open(out / "masks" / f"{name}.png"))
        assert truth.sum() > 20 and np.array_equal(written == ann["category_id"], truth), name
    assert (out / "images" / "field.jpg").is_symlink()


@pytest.mark.parametrize("fault, words", [
    ("category", "annotation 11: category_id 5 is not in categories"),
    ("polygon", "annotation 13: a polygon with 2 point(s), fewer than 3"),
    ("rle", "annotation 11: RLE of size 20x30 but the image is 40x30"),
    ("missing", "field.jpg: image 7 of instances.json not found"),
])
def test_bad_coco_input_is_one_line_naming_it_and_writes_nothing(tmp_path, capsys, fault, words):
    src, _ = _dataset(tmp_path / "export")
    data = json.loads(src.read_text())
    anns = {a["id"]: a for a in data["annotations"]}
    if fault == "category":
        anns[11]["category_id"] = 5
    elif fault == "polygon":
        anns[13]["segmentation"] = [[1.0, 1.0, 5.0, 5.0]]
    elif fault == "rle":
        anns[11]["segmentation"]["size"] = [30, 20]
    else:
        (src.parent / "images" / "field.jpg").unlink()
    src.write_text(json.dumps(data))
    out = tmp_path / "pairs"
    assert main(["import", "coco", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["export"]
    if fault == "missing":  # the rest imports where asked
        assert main(["import", "coco", str(src), "--out", str(out), "--skip-missing"]) == 0
        assert sorted(p.name for p in (out / "masks").iterdir()) == ["empty.png", "street.png"]
