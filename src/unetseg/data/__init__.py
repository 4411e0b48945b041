"""Data: pairing image/mask files, decoding them, mask encodings, checks, augmentation, synthetic data."""

from unetseg.data.dataset import ArrayDataset, DataReport, load_dataset
from unetseg.data.encoding import IGNORE, MaskEncoding
from unetseg.data.errors import DataError
from unetseg.data.pairing import Pair, Pairing, find_pairs, pair_files
from unetseg.data.split import split_by_group, split_pairs

__all__ = ["ArrayDataset", "DataError", "DataReport", "IGNORE", "MaskEncoding", "Pair", "Pairing", "find_pairs",
           "load_dataset", "pair_files", "split_by_group", "split_pairs"]
