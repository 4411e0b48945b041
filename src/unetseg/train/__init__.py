"""Training: :func:`fit` and its pieces."""

from unetseg.train.loop import NonFiniteLossError, TrainingInterrupted, evaluate, fit
from unetseg.train.losses import SegmentationLoss

__all__ = ["fit", "evaluate", "SegmentationLoss", "NonFiniteLossError", "TrainingInterrupted"]
