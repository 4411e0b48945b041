"""Several trained U-Nets as one model: the mean of their logits (a cross-validation run's folds), or of their
probabilities (runs of different configurations)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unetseg.metrics import logits_to_probabilities


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


class RunEnsemble(nn.Module):
    """Runs of different configurations (recipes, encoders, sizes) answering as one: the mean of their
    probabilities (nnU-Net's ensembles of configurations), returned as scores with the same decision rule (the
    logit of the mean foreground probability; the log of the mean softmax).

    The input comes normalised as the ensemble's config says (``mean``, ``std``) at its size; each member gets it
    renormalised with its own statistics and resized by its own scale (bilinear, antialiased where it shrinks), and
    its scores are resized back before they become probabilities. The members run one after another, so memory
    holds one member's activations at a time.

    Args:
        models: the runs' models (a cross-validation run's folds already one :class:`FoldEnsemble`).
        stats: each member's (mean, std) per input channel, as in its config.
        scales: each member's (x, y) input size over the ensemble's (1, 1: the same size).
        mean, std: the statistics the input arrives normalised with.
    """

    def __init__(self, models: Sequence[nn.Module], stats: Sequence[tuple[Sequence[float], Sequence[float]]],
                 scales: Sequence[tuple[float, float]], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(models) < 2 or not len(models) == len(stats) == len(scales):
            raise ValueError("RunEnsemble: at least two models, each with its statistics and scale")
        self.models = nn.ModuleList(models)
        self.scales = [tuple(map(float, s)) for s in scales]
        base_mean, base_std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        for k, (m, s) in enumerate(stats):  # x_k = (x * std + mean - mean_k) / std_k = x * a_k + b_k
            m, s = torch.tensor(m, dtype=torch.float32), torch.tensor(s, dtype=torch.float32)
            self.register_buffer(f"gain{k}", (base_std / s).view(1, -1, 1, 1), persistent=False)
            self.register_buffer(f"shift{k}", ((base_mean - m) / s).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        probs = None
        for k, model in enumerate(self.models):
            xk = x.float() * getattr(self, f"gain{k}") + getattr(self, f"shift{k}")
            sx, sy = self.scales[k]
            size = (max(1, round(height * sy)), max(1, round(width * sx)))
            if size != (height, width):
                xk = F.interpolate(xk, size=size, mode="bilinear", align_corners=False, antialias=sx < 1 or sy < 1)
            out = model(xk.to(x.dtype).contiguous(memory_format=_layout(x))).float()
            if out.shape[-2:] != (height, width):  # scores enlarged as a single run's are, then probabilities
                out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
            p = logits_to_probabilities(out)
            probs = p if probs is None else probs + p
        probs = probs / len(self.models)
        return torch.logit(probs, eps=1e-6) if probs.shape[1] == 1 else probs.clamp_min(1e-12).log()


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
