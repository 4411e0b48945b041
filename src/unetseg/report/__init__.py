"""What a person looks at: learning curves, error overlays and the self-contained HTML report of runs."""

from unetseg.drawing.curves import plot_curves, read_metrics
from unetseg.report.html import write_report
from unetseg.drawing.overlays import error_overlay

__all__ = ["error_overlay", "plot_curves", "read_metrics", "write_report"]
