"""Any folder of image/mask pairs: each encoding, each pairing rule and each error case, on small generated files."""

import numpy as np
import pytest
from PIL import Image

from unetseg.config import DataConfig, RunConfig
from unetseg.data import IGNORE, DataError, find_pairs
from unetseg.data.check import adopt, format_report, scan
from unetseg.data.io import pack_rgb

COLOURS = np.array([(0, 0, 0), (220, 20, 60), (0, 128, 255)], np.uint8)


def _classes(h=40, w=56, k=2):
    classes = np.zeros((h, w), np.uint8)
    classes[8:30, 10:40] = 1
    if k > 2:
        classes[20:30, 10:40] = 2
    return classes


def make_dataset(root, n=4, mask="grey", image="rgb", ext=".png", mask_ext=".png", h=40, w=56):
    """n pairs in root/images + root/masks with the given mask encoding and image kind."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        classes = _classes(h, w, 3 if mask == "rgb3" else 2)
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(pixels if image == "rgb" else pixels[..., 0])
        img.save(root / "images" / f"{i}{ext}")
        if mask == "grey":
            Image.fromarray(classes * 255).save(root / "masks" / f"{i}{mask_ext}")
        elif mask == "index":
            Image.fromarray(classes).save(root / "masks" / f"{i}{mask_ext}")
        elif mask == "rgb3":
            Image.fromarray(COLOURS[classes]).save(root / "masks" / f"{i}{mask_ext}")
    return root


def _scan(**data):
    cfg = RunConfig(data=DataConfig(image_size=(32, 32), **data))
    dataset, report = scan(cfg, progress=False)
    return cfg, dataset, report


def test_greyscale_images_give_one_input_channel(tmp_path):
    cfg, dataset, report = _scan(data=str(make_dataset(tmp_path, image="grey")))
    assert report.channels == 1 and dataset.images.shape == (4, 32, 32, 1)
    adopt(cfg, dataset, report)
    assert cfg.model.in_channels == 1 and cfg.data.mean == (0.0,)


def test_lzw_tiff_images_and_bmp(tmp_path):
    root = make_dataset(tmp_path, n=2)
    for i in range(2):
        Image.open(root / "images" / f"{i}.png").save(root / "images" / f"{i}.tif", compression="tiff_lzw")
        (root / "images" / f"{i}.png").unlink()
    Image.open(root / "images" / "1.tif").save(root / "images" / "1.bmp")
    (root / "images" / "1.tif").unlink()
    _, dataset, report = _scan(data=str(root))
    assert not report.errors and dataset.images.shape == (2, 32, 32, 3)


def test_grey_class_index_masks(tmp_path):
    _, dataset, report = _scan(data=str(make_dataset(tmp_path, mask="index")))
    assert report.encoding.values == (0, 1) and set(np.unique(dataset.masks)) == {0, 1}


def test_rgb_colour_map_with_three_classes(tmp_path):
    cfg, dataset, report = _scan(data=str(make_dataset(tmp_path, mask="rgb3")))
    enc = report.encoding
    assert enc.mode == "RGB" and enc.num_labels == 3
    adopt(cfg, dataset, report)
    assert cfg.model.num_classes == 3 and cfg.data.mask_mode == "RGB"
    # Writing the classes back gives the same colours, pixel for pixel.
    original = np.asarray(Image.open(tmp_path / "masks" / "0.png"))
    classes = enc.to_classes(pack_rgb(original), "0.png")
    assert set(np.unique(classes)) == {0, 1, 2}
    assert np.array_equal(np.asarray(enc.to_image(classes)), original)


def test_num_classes_that_does_not_fit_the_masks_says_what_was_found(tmp_path):
    cfg = RunConfig(data=DataConfig(data=str(make_dataset(tmp_path, mask="rgb3")), image_size=(32, 32),
                                    follow_classes=False))
    _, report = scan(cfg, progress=False)
    assert any("3 distinct values" in e and "--num-classes 1 takes 2 labels" in e for e in report.errors), report.errors


def test_invert_mask_swaps_foreground(tmp_path):
    root = make_dataset(tmp_path)
    _, plain, _ = _scan(data=str(root))
    _, inverted, report = _scan(data=str(root), invert_mask=True)
    assert report.encoding.values == (255, 0)
    assert np.array_equal(inverted.masks, 1 - plain.masks)


def test_jpeg_mask_with_grey_values_is_refused_naming_the_file_or_snapped(tmp_path):
    root = make_dataset(tmp_path, mask="grey", mask_ext=".jpg")
    _, dataset, report = _scan(data=str(root))
    assert dataset is None
    assert any(e.startswith(str(root / "masks")) and "distinct values" in e and "--snap-masks" in e
               for e in report.errors), report.errors
    _, dataset, report = _scan(data=str(root), snap_masks=True)
    assert not report.errors and report.encoding.values == (0, 255)
    assert "snapped" in report.notes[0]
    truth = _classes()
    small = np.asarray(Image.fromarray(truth).resize((32, 32), Image.NEAREST))
    assert (dataset.masks[0] == small).mean() > 0.97


def test_truncated_image_and_mask_of_another_size_are_both_reported(tmp_path):
    root = make_dataset(tmp_path)
    data = (root / "images" / "1.png").read_bytes()
    (root / "images" / "1.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "masks" / "2.png")
    _, dataset, report = _scan(data=str(root))
    assert dataset is None
    text = "\n".join(report.errors)
    assert "1.png: cannot read image" in text
    assert "2.png: mask is 20x20 but its image 2.png is 56x40" in text


def test_missing_mask_orphan_mask_and_duplicate_stem(tmp_path):
    root = make_dataset(tmp_path)
    (root / "masks" / "0.png").unlink()
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(root / "masks" / "9.png")
    Image.open(root / "images" / "3.png").save(root / "images" / "3.jpg")
    _, _, report = _scan(data=str(root))
    text = "\n".join(report.errors)
    assert "0.png: no mask" in text and "9.png: mask without an image" in text and "duplicate stem" in text
    assert "cannot train" in format_report(report)


def test_empty_mask_is_a_warning_not_an_error(tmp_path):
    root = make_dataset(tmp_path)
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(root / "masks" / "1.png")
    _, dataset, report = _scan(data=str(root))
    assert dataset is not None and any("1.png: empty mask" in w for w in report.warnings)


def test_a_label_in_one_mask_is_a_warning_naming_the_file_and_the_way_out(tmp_path):
    root = make_dataset(tmp_path, n=6)
    stray = np.asarray(Image.open(root / "masks" / "4.png")).copy()
    stray[0:2, 0:3] = 128  # six pixels of a third value: an annotation slip, not a class
    Image.fromarray(stray).save(root / "masks" / "4.png")
    _, dataset, report = _scan(data=str(root))
    assert dataset.encoding.values == (0, 128, 255)  # still read as 3 labels ...
    rare = [w for w in report.warnings if "label 128" in w]
    assert len(rare) == 1 and rare[0].startswith(f"{root / 'masks' / '4.png'}: ")  # ... but not without a word
    assert "in only 1 of 6 masks (6 pixels)" in rare[0] and "--num-classes 1 --snap-masks" in rare[0]
    cfg = RunConfig(data=DataConfig(data=str(root), image_size=(32, 32), snap_masks=True, follow_classes=False))
    cfg.model.num_classes = 1  # the way out the warning names
    snapped, report = scan(cfg, progress=False)
    assert snapped.encoding.values == (0, 255) and not [w for w in report.warnings if "label" in w]


def test_labels_in_every_mask_give_no_rare_label_warning(tmp_path):
    _, dataset, report = _scan(data=str(make_dataset(tmp_path, n=6, mask="rgb3")))
    assert dataset.encoding.num_labels == 3 and not [w for w in report.warnings if "label" in w]


def test_patterns_and_ignore_masks_like_drive(tmp_path):
    root = make_dataset(tmp_path)
    (root / "fov").mkdir()
    for i in range(4):
        (root / "images" / f"{i}.png").rename(root / "images" / f"{i + 21}_training.png")
        (root / "masks" / f"{i}.png").rename(root / "masks" / f"{i + 21}_manual1.png")
        fov = np.zeros((40, 56), np.uint8)
        fov[:, :28] = 255
        Image.fromarray(fov).save(root / "fov" / f"{i + 21}_training_mask.png")
    data = dict(images=str(root / "images"), masks=str(root / "masks"), image_pattern="{id}_training.png",
                mask_pattern="{id}_manual1.png", ignore_masks=str(root / "fov"), ignore_pattern="{id}_training_mask.png")
    _, dataset, report = _scan(**data)
    assert not report.errors and report.rule.startswith("patterns")
    assert [p.group for p in dataset.pairs] == ["21", "22", "23", "24"]
    assert (dataset.masks[:, :, 16:] == IGNORE).all() and (dataset.masks[:, :, :16] != IGNORE).all()
    with pytest.raises(DataError, match=r"21_manual1\.png: mask name does not match"):
        find_pairs(DataConfig(**{**data, "mask_pattern": "{id}_manual2.png"}))


def test_pairs_from_a_csv(tmp_path):
    root = make_dataset(tmp_path)
    (root / "pairs.csv").write_text("image,mask\n" + "".join(f"images/{i}.png,masks/{i}.png\n" for i in range(4)))
    pairs = find_pairs(DataConfig(pairs_csv=str(root / "pairs.csv")))
    assert [p.mask.name for p in pairs] == ["0.png", "1.png", "2.png", "3.png"]
    (root / "pairs.csv").write_text("image,mask\nimages/0.png,masks/7.png\n")
    with pytest.raises(DataError, match=r"masks/7\.png: file not found \(.*pairs\.csv line 2\)"):
        find_pairs(DataConfig(pairs_csv=str(root / "pairs.csv")))


def test_masks_written_in_every_encoding_hold_the_stored_values_and_palette():
    from unetseg.data.encoding import MaskEncoding, unpack_rgb

    rng = np.random.default_rng(0)
    palette = tuple(rng.integers(0, 255, 9).tolist())
    for enc, mode in [(MaskEncoding((0, 255)), "L"), (MaskEncoding((0, 1, 2), "P", palette), "P"),
                      (MaskEncoding((0, 128, 255), "L", palette), "P"), (MaskEncoding((0, 3, 7), "P"), "P"),
                      (MaskEncoding((0, 0xFF0000, 0x00FF00), "RGB"), "RGB"), (MaskEncoding(tuple(range(12))), "L")]:
        classes = rng.integers(0, len(enc.values), (37, 53)).astype(np.uint8)
        image = enc.to_image(classes)
        expected = np.asarray(enc.values, dtype=np.uint32)[classes]
        assert image.mode == mode
        if mode == "RGB":
            np.testing.assert_array_equal(np.asarray(image), unpack_rgb(expected))
        else:
            np.testing.assert_array_equal(np.asarray(image), expected.astype(np.uint8))
        if enc.palette:
            assert image.getpalette()[:9] == list(palette)
