"""Several trained U-Nets as one model: the mean of their logits (a cross-validation run's folds)."""

from __future__ import annotations

import torch
from torch import nn


class FoldEnsemble(nn.Module):
    """The models of a cross-validation run's folds, answering as one: the mean of their logits, in float32.

    nnU-Net averages the folds' logits (its ``predict_logits_from_preprocessed_data``) and the probabilities of
    different configurations; the folds of one run are one configuration, so their logits are averaged here. The
    folds run one after another on each batch, so memory holds one fold's activations at a time. Exported to ONNX,
    the average is inside the one graph.

    Args:
        models: the folds' models, built alike (same classes and input).
    """

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("FoldEnsemble: no models")
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.models[0](x).float()
        for model in self.models[1:]:
            out = out + model(x).float()
        return out / len(self.models)
