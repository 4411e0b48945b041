"""CVAT's 'Segmentation mask 1.1' and VOC's SegmentationClass import to the class indices they draw."""

from pathlib import Path

import numpy as np
from PIL import Image

from unetseg.cli.main import main

W, H = 24, 16
LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:250,50,83::\nroad:128,64,128::\n"


def _cvat(root: Path) -> np.ndarray:
    """An export of two frames; returns frame 'f1''s class indices by hand (car 1, road 2)."""
    (root / "SegmentationClass").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "labelmap.txt").write_text(LABELMAP)
    truth = np.zeros((H, W), np.uint8)
    truth[8:, :] = 2
    truth[4:12, 5:11] = 1
    colours = np.array([(0, 0, 0), (250, 50, 83), (128, 64, 128)], np.uint8)
    for name, classes in (("f1", truth), ("f2", np.full((H, W), 2, np.uint8))):
        Image.fromarray(colours[classes]).save(root / "SegmentationClass" / f"{name}.png")
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
    return truth


def test_a_cvat_export_imports_to_its_labelmaps_indices_and_colours(tmp_path, capsys):
    truth = _cvat(tmp_path / "export")
    out = tmp_path / "pairs"
    assert main(["import", "cvat", str(tmp_path / "export"), "--out", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "f1.png")), truth)
    assert (out / "classes.csv").read_text().splitlines()[1:] == ["0,background,#000000", "1,car,#fa3253",
                                                                  "2,road,#804080"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["f1.jpg", "f2.jpg"]
    capsys.readouterr()
    assert main(["check-data", str(out), "--classes", str(out / "classes.csv")]) == 0
    # a colour the labelmap lacks: one line naming the mask and the colour, nothing written
    frame = np.asarray(Image.open(tmp_path / "export" / "SegmentationClass" / "f2.png")).copy()
    frame[0, 0] = (1, 2, 3)
    Image.fromarray(frame).save(tmp_path / "export" / "SegmentationClass" / "f2.png")
    capsys.readouterr()
    assert main(["import", "cvat", str(tmp_path / "export"), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "f2.png: colour(s) #010203 not in" in err[0] and not (tmp_path / "bad").exists()


def test_voc_palette_masks_keep_their_indices_and_the_void_border(tmp_path, capsys):
    root = tmp_path / "VOC"
    (root / "SegmentationClass").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    mask = np.zeros((H, W), np.uint8)
    mask[3:10, 3:10] = 15  # person
    mask[2, 2:11] = 255  # the void border
    image = Image.fromarray(mask, mode="L")
    image.putpalette([v for k in range(256) for v in (k, 255 - k, 0)])
    image.save(root / "SegmentationClass" / "2007_000032.png")
    Image.fromarray(np.full((H, W, 3), 60, np.uint8)).save(root / "JPEGImages" / "2007_000032.jpg")
    out = tmp_path / "pairs"
    assert main(["import", "cvat", str(root), "--out", str(out), "--link"]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "2007_000032.png")), mask)
    rows = (out / "classes.csv").read_text().splitlines()[1:]
    assert len(rows) == 16 and rows[15].startswith("15,person,") and rows[0].startswith("0,background,")
    assert (out / "images" / "2007_000032.jpg").is_symlink()
    capsys.readouterr()
    assert main(["check-data", str(out), "--classes", str(out / "classes.csv"), "--ignore-index", "255"]) == 0
