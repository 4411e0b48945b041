"""The train/validation split: Carvana's names group by car, other names image by image unless --group-pattern says
otherwise; check-data reports the split and warns when validation comes out empty or far from the asked share."""

import numpy as np
import pytest
from PIL import Image

from unetseg.cli.main import main
from unetseg.config import DataConfig
from unetseg.data import find_pairs, split_by_group
from unetseg.data.pairing import group_of


def _pairs_named(root, stems):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray((rng.random((16, 16)) > 0.5).astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
    return root


def test_groups():
    assert group_of("0cdf5b5d0ce1_01") == "0cdf5b5d0ce1"  # Carvana: the car
    assert group_of("img_0001") == "img_0001"  # generic names: each image its own group
    assert group_of("scan01_slice_07") == "scan01_slice_07"
    assert group_of("scan01_slice_07", r"^(scan\d+)_") == "scan01"
    assert group_of("patientA-3", r"patient\w") == "patientA"


@pytest.mark.parametrize("stems, val", [([f"img_{i:04d}" for i in range(100)], 10),
                                        ([f"scan{s:02d}_slice_{i:02d}" for s in (1, 2) for i in range(10)], 2)])
def test_generic_names_give_the_asked_validation_share(tmp_path, stems, val):
    pairs = find_pairs(_pairs_named(tmp_path / "d", stems))
    train, held = split_by_group(pairs, 0.1, 0)
    assert len(held) == val and len(train) == len(stems) - val


def test_group_pattern_keeps_a_scan_on_one_side(tmp_path):
    stems = [f"scan{s:02d}_slice_{i:02d}" for s in range(5) for i in range(4)]
    cfg = DataConfig(data=str(_pairs_named(tmp_path / "d", stems)), group_pattern=r"^(scan\d+)_")
    pairs = find_pairs(cfg)
    train, held = split_by_group(pairs, 0.2, 0)
    assert len(held) == 4 and len({pairs[i].group for i in held}) == 1
    assert not {pairs[i].group for i in held} & {pairs[i].group for i in train}


def test_check_data_reports_the_split_and_warns_when_validation_is_off(tmp_path, capsys):
    root = _pairs_named(tmp_path / "d", [f"scan01_slice_{i:02d}" for i in range(6)])
    assert main(["check-data", str(root), "--val-fraction", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "split: 5 train / 1 validation images (6 groups: each image its own group" in out
    assert main(["check-data", str(root), "--group-pattern", r"^(scan\d+)_"]) == 0
    out = capsys.readouterr().out
    assert "split: 6 train / 0 validation images" in out and "warning: " in out and "no validation split" in out


def test_two_groups_for_a_tenth_is_a_warning(tmp_path, capsys):
    root = _pairs_named(tmp_path / "d", [f"scan{s:02d}_slice_{i:02d}" for s in (1, 2) for i in range(5)])
    assert main(["check-data", str(root), "--group-pattern", r"^(scan\d+)_"]) == 0
    out = capsys.readouterr().out
    assert "split: 5 train / 5 validation images" in out and "validation holds 50% of the images, not the 10%" in out
