"""unetseg: the U-Net semantic-segmentation toolkit.

Example:
    >>> from unetseg import RunConfig, fit, Predictor            # doctest: +SKIP
    >>> cfg = RunConfig()
    >>> cfg.data.data = "data/carvana"
    >>> run = fit(cfg, "runs/carvana")
    >>> mask = Predictor.from_run(run).predict_image("car.jpg")
"""

from unetseg.checkpoint import load_model
from unetseg.config import DataConfig, RunConfig, TrainConfig, UNetConfig
from unetseg.data import DataError, find_pairs
from unetseg.infer import Predictor, evaluate_pairs, predict_folder, write_submission
from unetseg.model import UNet
from unetseg.report import write_report
from unetseg.train import fit

__version__ = "0.1.0"
__all__ = ["UNet", "UNetConfig", "DataConfig", "TrainConfig", "RunConfig", "fit", "load_model", "Predictor",
           "predict_folder", "evaluate_pairs", "write_submission", "write_report", "find_pairs", "DataError"]
