"""predict --format coco / cvat: the labelling tools' own formats, which unetseg import reads back to the predicted
classes pixel for pixel (and pycocotools' own decoder agrees)."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.train.test_fit import tiny_config
from unetseg import Predictor, fit
from unetseg.cli.main import main
from unetseg.data.classes import class_names

pytest.importorskip("pycocotools")


def _varied(run, images):
    """Sharpen a tiny run's head so its predictions vary across each image (a model trained for seconds predicts
    one class everywhere): scores 50 x (score - its median over the images), written into model.safetensors."""
    import torch
    from safetensors.torch import load_file, save_file

    predictor = Predictor.from_run(run, device="cpu", amp="off")
    scores = torch.cat([predictor.logits(predictor._load(p)[0][None]) for p in sorted(images.iterdir())])
    median = scores.transpose(0, 1).reshape(scores.shape[1], -1).median(dim=1).values
    state = load_file(str(run / "model.safetensors"))
    state["head.weight"] = state["head.weight"] * 50
    state["head.bias"] = (state["head.bias"] - median) * 50
    save_file(state, str(run / "model.safetensors"))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A binary run (Carvana's GIF palette masks) and a three-class run (colour masks, every class an object)
    whose predictions hold several classes."""
    from tests.conftest import write_carvana_like
    from tests.data.test_formats import make_dataset

    root = tmp_path_factory.mktemp("export")
    carvana = write_carvana_like(root / "carvana")
    three = make_dataset(root / "three", n=6, mask="rgb3")
    return {"binary": (_varied(fit(tiny_config(carvana, epochs=1), root / "binary"), carvana / "train"),
                       carvana / "train"),
            "three": (_varied(fit(tiny_config(three, epochs=1), root / "three_run"), three / "images"),
                      three / "images")}


@pytest.mark.parametrize("kind", ["binary", "three"])
def test_predict_format_coco_imports_back_to_the_predicted_classes(runs, kind, tmp_path):
    from pycocotools.coco import COCO

    run, images = runs[kind]
    assert main(["predict", "--model", str(run), "--input", str(images), "--out", str(tmp_path / "p"),
                 "--format", "coco", "--no-overlay"]) == 0
    assert not (tmp_path / "p" / "masks").exists()
    file = tmp_path / "p" / "predictions.coco.json"
    data = json.loads(file.read_text())
    predictor = Predictor.from_run(run, device="cpu")
    names = class_names(predictor.config.data.class_names, max(2, predictor.config.model.num_classes))
    offset = 0 if kind == "binary" else 1  # every class an object: class k is category k + 1 (COCO's ids from 1)
    assert [c["id"] for c in data["categories"]] == ([1] if kind == "binary" else [1, 2, 3])
    assert all(0 < a["score"] <= 1 for a in data["annotations"])
    coco = COCO(str(file))
    assert main(["import", "coco", str(file), "--images", str(images), "--out", str(tmp_path / "back")]) == 0
    seen = set()
    for path in sorted(images.iterdir()):
        classes = predictor.predict_image(path)
        seen |= set(np.unique(classes).tolist())
        imported = np.asarray(Image.open(tmp_path / "back" / "masks" / f"{path.stem}.png"))
        np.testing.assert_array_equal(imported, classes.astype(np.int64) + offset)
        # pycocotools' own decoding of each annotation is that class's pixels
        image_id = next(i["id"] for i in data["images"] if i["file_name"] == path.name)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), classes == ann["category_id"] - offset)
            probs = predictor.probabilities(next(predictor.predict_paths([path]))[1])
            plane = probs[0] if kind == "binary" else probs[ann["category_id"] - offset]
            assert ann["score"] == pytest.approx(float(plane[classes == ann["category_id"] - offset].mean()),
                                                 abs=1e-5)
    assert len(seen) >= 2  # not a trivial all-background round trip
    rows = (tmp_path / "back" / "classes.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == (names if kind == "binary" else ["background", *names])


@pytest.mark.parametrize("kind", ["binary", "three"])
def test_predict_format_cvat_imports_back_to_the_predicted_classes(runs, kind, tmp_path):
    run, images = runs[kind]
    assert main(["predict", "--model", str(run), "--input", str(images), "--out", str(tmp_path / "p"),
                 "--format", "cvat", "--no-overlay"]) == 0
    out = tmp_path / "p"
    stems = sorted(p.stem for p in images.iterdir())
    assert (out / "ImageSets" / "Segmentation" / "default.txt").read_text().split() == stems
    predictor = Predictor.from_run(run, device="cpu")
    names = class_names(predictor.config.data.class_names, max(2, predictor.config.model.num_classes))
    labels = [line.split(":")[0] for line in (out / "labelmap.txt").read_text().splitlines()[1:]]
    assert labels == names
    assert main(["import", "cvat", str(out), "--images", str(images), "--out", str(tmp_path / "back")]) == 0
    from unetseg.labels.export import VOC_COLOURS

    inverse = {tuple(c): n for n, c in enumerate(VOC_COLOURS.tolist())}
    seen = set()
    for path in sorted(images.iterdir()):
        classes = predictor.predict_image(path)
        seen |= set(np.unique(classes).tolist())
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "back" / "masks" / f"{path.stem}.png")),
                                      classes)
        # the object masks in VOC's instance colours (as CVAT reads them): each object is one class's pixels, class 0
        # an object too where it is not the background
        rgb = np.asarray(Image.open(out / "SegmentationObject" / f"{path.stem}.png").convert("RGB"))
        objects = np.vectorize(lambda packed: inverse[((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)])(
            (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2])
        objects_of = [k for k in np.unique(classes).tolist() if k > 0 or kind == "three"]
        for n, k in enumerate(objects_of, 1):
            np.testing.assert_array_equal(objects == n, classes == k)
        assert objects.max() == len(objects_of)
    assert len(seen) >= 2
