"""Training: :func:`fit` and its pieces."""

from unetseg.train._state import NonFiniteLossError, TrainingInterrupted
from unetseg.train.loop import evaluate, fit
from unetseg.train.losses import SegmentationLoss

__all__ = ["fit", "evaluate", "SegmentationLoss", "NonFiniteLossError", "TrainingInterrupted"]
