"""Inference: :class:`Predictor`, :func:`predict_folder`, :func:`evaluate_pairs`."""

from unetseg.infer.evaluate import evaluate_pairs
from unetseg.infer.predict import Predictor, predict_folder

__all__ = ["Predictor", "predict_folder", "evaluate_pairs"]
