import numpy as np
import pytest
from PIL import Image

from unetseg.data import DataError, MaskEncoding
from unetseg.data.io import _draft_request, read_image, read_mask


def test_draft_request_picks_quarter_scale_for_carvana():
    assert _draft_request((1918, 1280), (480, 320)) == (479, 320)
    assert _draft_request((1918, 1280), (240, 160)) == (239, 160)
    assert _draft_request((100, 100), (80, 80)) == (100, 100)


def test_jpeg_is_decoded_to_the_training_size(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1280, 1918, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    image = read_image(tmp_path / "a.jpg", (480, 320))
    assert image.shape == (320, 480, 3) and image.dtype == np.uint8
    assert read_image(tmp_path / "a.jpg", (480, 320), channels=1).shape == (320, 480, 1)
    assert read_image(tmp_path / "a.jpg").shape == (1280, 1918, 3)


def test_palette_gif_mask_keeps_exact_indices_when_resized(tmp_path):
    values = np.zeros((128, 192), dtype=np.uint8)
    values[30:90, 40:150] = 1
    mask = Image.fromarray(values, mode="P")
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.save(tmp_path / "m.gif")
    decoded = read_mask(tmp_path / "m.gif", (48, 32))
    assert decoded.mode == "P" and decoded.values.shape == (32, 48)
    assert set(np.unique(decoded.values)) == {0, 1}
    assert decoded.palette[:6] == (0, 0, 0, 255, 255, 255)
    assert decoded.counts == {1: 60 * 110, 0: 128 * 192 - 60 * 110} and decoded.size == (192, 128)


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.jpg: cannot read image"):
        read_image(tmp_path / "t.jpg", (32, 32))


def test_not_an_image_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(DataError, match=r"x\.png: cannot read image"):
        read_mask(tmp_path / "x.png")


def test_palette_prediction_round_trips_byte_exact(tmp_path):
    encoding = MaskEncoding(values=(0, 1), mode="P", palette=(0, 0, 0, 255, 255, 255))
    classes = (np.random.default_rng(0).random((40, 60)) > 0.5).astype(np.uint8)
    encoding.to_image(classes).save(tmp_path / "p.png")
    decoded = read_mask(tmp_path / "p.png")
    assert decoded.mode == "P" and decoded.palette[:6] == (0, 0, 0, 255, 255, 255)
    np.testing.assert_array_equal(encoding.to_classes(decoded.values, "p.png"), classes)
    # Viewed as RGB the foreground is white, never a black-looking mask of 0/1 grey levels.
    assert np.asarray(Image.open(tmp_path / "p.png").convert("L"))[classes == 1].min() == 255


def test_greyscale_encoding_and_unknown_values():
    encoding = MaskEncoding(values=(0, 255))
    np.testing.assert_array_equal(np.asarray(encoding.to_image(np.array([[0, 1]], np.uint8))), [[0, 255]])
    with pytest.raises(DataError, match=r"m\.png: mask values \[128\]"):
        encoding.to_classes(np.array([[0, 128, 255]], np.uint8), "m.png")


def test_decompression_bomb_limit_names_the_file_and_size_and_can_be_raised(tmp_path):
    from unetseg.data.io import set_max_image_pixels

    Image.fromarray(np.zeros((60, 70), np.uint8)).save(tmp_path / "big.png")
    default = Image.MAX_IMAGE_PIXELS
    try:
        set_max_image_pixels(1000)
        with pytest.raises(DataError, match=r"big\.png: image of 70 x 60 = 4200 pixels is over the decompression"):
            read_mask(tmp_path / "big.png")
        set_max_image_pixels(5000)
        assert read_mask(tmp_path / "big.png").values.shape == (60, 70)
    finally:
        Image.MAX_IMAGE_PIXELS = default
    assert Image.MAX_IMAGE_PIXELS == default


def test_16_bit_images_scale_by_the_type_range_not_per_image(tmp_path):
    from unetseg.data.io import read_image

    dark = np.full((8, 8), 1000, dtype=np.uint16)
    dark[0, 0] = 2000
    bright = np.full((8, 8), 1000, dtype=np.uint16)
    bright[0, 0] = 60000
    for name, array in (("dark.png", dark), ("bright.png", bright)):
        Image.fromarray(array).save(tmp_path / name)
    a, b = read_image(tmp_path / "dark.png", channels=1), read_image(tmp_path / "bright.png", channels=1)
    assert a[1, 1, 0] == b[1, 1, 0] == round(1000 / 257)  # the same value reads the same in both images
    assert a[0, 0, 0] == round(2000 / 257) and b[0, 0, 0] == round(60000 / 257)
