"""Data: pairing image/mask files, decoding them, mask encodings, augmentation, synthetic data."""

from unetseg.data.dataset import ArrayDataset, load_dataset, split_by_group
from unetseg.data.encoding import MaskEncoding
from unetseg.data.errors import DataError
from unetseg.data.pairing import Pair, find_pairs

__all__ = ["ArrayDataset", "DataError", "MaskEncoding", "Pair", "find_pairs", "load_dataset", "split_by_group"]
