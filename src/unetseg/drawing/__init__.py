"""Pictures below training, inference and the report: learning curves, error overlays, the confusion heat-map.
Both ``train`` / ``infer`` and ``report`` import them from here (``report`` stays on top)."""

from unetseg.drawing.curves import CurvesPainter, plot_curves, read_metrics
from unetseg.drawing.overlays import error_overlay

__all__ = ["CurvesPainter", "error_overlay", "plot_curves", "read_metrics"]
