"""The learning-rate schedule: a ``LambdaLR`` stepped once per optimiser step. Its shape comes from the run's config
(the step total, which a budget run corrects while it trains, included) and its position is the run's steps done, so
a resumed run rebuilds it exactly from ``config.json`` and ``last.pt``'s position: nothing is saved twice."""

from __future__ import annotations

import math

import torch

from unetseg.config import TrainConfig


def steps_per_epoch(n_train: int, batch_size: int, processes: int = 1, compiled: bool = False) -> int:
    """Optimiser steps in one pass over ``n_train`` images, as the loop runs them: one process keeps the last partial
    batch; several processes drop it (every process has a share of every step), and so does a compiled model (every
    step has one shape)."""
    if processes == 1 and not compiled:
        return math.ceil(n_train / batch_size)
    return max(1, n_train // batch_size)


def run_total(epochs: int, max_steps: int, per_epoch: int) -> int:
    """The optimiser steps of a run of ``epochs`` capped at ``max_steps`` (0: no cap)."""
    return min(max_steps, epochs * per_epoch) if max_steps else epochs * per_epoch


def corrected_warmup(warmup: int, total: int) -> int:
    """The warm-up of a step total a budget run corrected: the decay keeps most of the steps."""
    return min(warmup, max(1, total // 10))


def cosine_lr(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """The "cosine" schedule's learning rate for the 0-based optimiser ``step`` of ``total``: linear warm-up over
    ``warmup`` steps, then one cosine decay that reaches ``min_lr`` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def restarts_lr(epoch: float, lr: float, min_lr: float, first: int, mult: int) -> float:
    """The seed's cosine annealing with warm restarts (``CosineAnnealingWarmRestarts``) at a fractional ``epoch``:
    cycles of ``first`` epochs, each ``mult`` times longer than the one before."""
    if mult == 1:
        t_cur, t_i = epoch % first, first
    else:
        n = int(math.log(epoch / first * (mult - 1) + 1, mult))
        t_cur, t_i = epoch - first * (mult ** n - 1) / (mult - 1), first * mult ** n
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


class LrFactor:
    """The learning rate of optimiser step ``step`` over the configured one (the ``LambdaLR`` function)."""

    def __init__(self, cfg: TrainConfig, total: int, steps_per_epoch: int) -> None:
        self.kind, self.lr, self.min_lr, self.warmup = cfg.schedule, cfg.lr, cfg.min_lr, cfg.warmup_steps
        self.first, self.mult = cfg.restart_epochs, cfg.restart_mult
        self.total, self.steps_per_epoch = total, steps_per_epoch

    def __call__(self, step: int) -> float:
        """The factor of the 0-based optimiser ``step``."""
        if self.kind == "cosine":
            return cosine_lr(step, self.total, self.warmup, self.lr, self.min_lr) / self.lr
        return restarts_lr(step / self.steps_per_epoch, self.lr, self.min_lr, self.first, self.mult) / self.lr


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total: int,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's schedule; step it after every optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LrFactor(cfg, total, steps_per_epoch))


def set_total(scheduler: torch.optim.lr_scheduler.LambdaLR, total: int, warmup: int) -> None:
    """A new step total (a budget run's correction, or a resumed run's config): the learning rate of the next step
    (``scheduler.last_epoch``) follows it at once."""
    factor = scheduler.lr_lambdas[0]
    factor.total, factor.warmup = total, warmup
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * factor(scheduler.last_epoch)
