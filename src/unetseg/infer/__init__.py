"""Inference: :class:`Predictor`, :func:`predict_folder`, :func:`evaluate_pairs`, :func:`write_submission`."""

from unetseg.infer.evaluate import evaluate_pairs
from unetseg.infer.predict import Predictor, predict_folder
from unetseg.infer.submit import write_submission

__all__ = ["Predictor", "predict_folder", "evaluate_pairs", "write_submission"]
