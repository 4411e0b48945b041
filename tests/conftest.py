"""Shared fixtures: small generated datasets, and the real datasets in ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetseg.data.synthetic import make_synthetic_dataset

SHARED_DATA = Path(os.environ.get("UNETSEG_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """A dataset folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {path} is not present (set UNETSEG_SHARED_DATA to the folder holding {name}/)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _ceiling_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Resolution ceilings are cached in a temporary folder, not the user's ~/.cache (child processes inherit it)."""
    os.environ["UNETSEG_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def write_thin_lines(root: Path, count: int = 24, size: tuple[int, int] = (256, 192), seed: int = 0) -> Path:
    """``count`` pairs in images/ + masks/ whose foreground is one-pixel lines (vessels): shrinking destroys them."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    w, h = size
    for i in range(count):
        mask = np.zeros((h, w), np.uint8)
        for x in rng.choice(w, 12, replace=False):
            mask[:, x] = 255
        for y in rng.choice(h, 8, replace=False):
            mask[y, :] = 255
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        image[mask > 0] += 150
        Image.fromarray(image).save(root / "images" / f"vessel_{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"vessel_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic pairs, 64x48, greyscale {0, 255} masks, in images/ + masks/."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), count=24, size=(64, 48), seed=1)


def write_carvana_like(root: Path, cars: int = 3, angles: int = 4, size: tuple[int, int] = (96, 64),
                       seed: int = 0) -> Path:
    """A tiny dataset in Carvana's layout: train/<car>_<NN>.jpg + train_masks/<car>_<NN>_mask.gif, palette
    masks with index 1 = car (white) as the competition ships them."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    (root / "train_masks").mkdir()
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for c in range(cars):
        car = f"{c:03x}abc{c:06d}"  # 12 hex digits, as Carvana's car ids
        for a in range(1, angles + 1):
            cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.4, 0.6) * h
            inside = ((xx - cx) / (0.3 * w)) ** 2 + ((yy - cy) / (0.25 * h)) ** 2 < 1
            image = np.where(inside[..., None], [200, 40, 40], [120, 120, 120]) + rng.normal(0, 8, (h, w, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "train" / f"{car}_{a:02d}.jpg",
                                                                           quality=95)
            mask = Image.fromarray(inside.astype(np.uint8), mode="P")
            mask.putpalette([0, 0, 0, 255, 255, 255])
            mask.save(root / "train_masks" / f"{car}_{a:02d}_mask.gif")
    return root


@pytest.fixture()
def carvana_like(tmp_path: Path) -> Path:
    return write_carvana_like(tmp_path / "carvana")
