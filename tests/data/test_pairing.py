import pytest

from tests.conftest import shared_dataset
from unetseg.data import DataError, find_pairs, split_by_group
from unetseg.data.pairing import group_of


def test_carvana_layout_pairs_every_image_with_its_mask(carvana_like):
    pairs = find_pairs(carvana_like)
    assert len(pairs) == 12
    for pair in pairs:
        assert pair.mask.name == pair.image.stem + "_mask.gif"
        assert pair.group == pair.image.stem.rsplit("_", 1)[0]
    assert len({p.group for p in pairs}) == 3


def test_missing_mask_is_an_error_naming_the_file(carvana_like):
    (carvana_like / "train_masks" / "001abc000001_03_mask.gif").unlink()
    with pytest.raises(DataError, match=r"001abc000001_03\.jpg: no mask"):
        find_pairs(carvana_like)


def test_mask_without_image_is_an_error_naming_the_file(carvana_like):
    (carvana_like / "train" / "002abc000002_01.jpg").unlink()
    with pytest.raises(DataError, match=r"002abc000002_01_mask\.gif: mask without an image"):
        find_pairs(carvana_like)


def test_images_masks_layout_with_same_names(synthetic_dir):
    pairs = find_pairs(synthetic_dir)
    assert len(pairs) == 24
    assert all(p.image.name == p.mask.name for p in pairs)


def test_unknown_layout_names_the_folder(tmp_path):
    (tmp_path / "pics").mkdir()
    with pytest.raises(DataError, match="no image and mask folders"):
        find_pairs(tmp_path)


def test_group_of():
    assert group_of("0cdf5b5d0ce1_01") == "0cdf5b5d0ce1"
    assert group_of("17") == "17"
    assert group_of("21_training") == "21_training"


def test_split_keeps_groups_together_and_is_reproducible(carvana_like):
    pairs = find_pairs(carvana_like)
    train, val = split_by_group(pairs, 0.34, seed=3)
    assert sorted(train + val) == list(range(len(pairs)))
    assert not {pairs[i].group for i in train} & {pairs[i].group for i in val}
    assert len({pairs[i].group for i in val}) == 1
    assert split_by_group(pairs, 0.34, seed=3) == (train, val)


def test_real_carvana_sample_pairs_by_car():
    pairs = find_pairs(shared_dataset("carvana_sample"))
    assert len(pairs) == 96
    assert len({p.group for p in pairs}) == 6
    train, val = split_by_group(pairs, 0.1, seed=0)
    assert len(val) == 16 and len({pairs[i].group for i in val}) == 1
