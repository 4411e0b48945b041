"""Scoring segmentations as the field scores them: overlap, boundary, topology and ranking scores per image and
class, means and pooled scores with bootstrap intervals, any tool's predictions (``unetseg score``), and paired
comparisons of runs (``unetseg compare``)."""

from unetseg.score.image import ImageScores, ScoreSettings, score_image
from unetseg.score.intervals import Interval, bootstrap, mean_interval, paired, pooled_interval
from unetseg.score.summary import rows_and_summary, summarise

__all__ = ["ImageScores", "ScoreSettings", "score_image", "Interval", "bootstrap", "mean_interval", "paired",
           "pooled_interval", "rows_and_summary", "summarise"]
