"""The learning rates a signal-stopped step trained with, logged with its metrics: LearningRateMonitor logs at a
batch start, before the stop is known, and by the time the step is logged its step schedulers have stepped (the
optimizers hold the next step's rates). ``StopSafely`` copies the rates as each unlogged batch starts and logs them
at the stop."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor


_HYPERPARAMETERS = ("lr", "momentum", "betas", "weight_decay")  # what LearningRateMonitor reads from a param group


def step_monitors(trainer: L.Trainer) -> list[LearningRateMonitor]:
    """The learning-rate monitors that log as a batch starts."""
    return [cb for cb in trainer.callbacks if isinstance(cb, LearningRateMonitor) and cb.logging_interval != "epoch"]


def step_hyperparameters(trainer: L.Trainer) -> list[list[dict[str, Any]]]:
    """Each optimizer's param groups' values that the monitors log, copied (a tensor lr is updated in place). Cheap:
    taken as every unlogged batch starts, since a signal may come during any step."""
    import torch

    return [[{k: g[k].clone() if isinstance(g[k], torch.Tensor) else g[k] for k in _HYPERPARAMETERS if k in g}
             for g in optimizer.param_groups] for optimizer in trainer.optimizers]


def _set_hyperparameters(trainer: L.Trainer, values: list[list[dict[str, Any]]]) -> None:
    for optimizer, groups in zip(trainer.optimizers, values):
        for group, saved in zip(optimizer.param_groups, groups):
            group.update(saved)


def log_step_rates(trainer: L.Trainer, step: int, at_start: list[list[dict[str, Any]]]) -> None:
    """The step-interval monitors' values for the batch that started at ``step``, logged at that step as they log
    them at a batch start. When the step is logged its schedulers have stepped already (the optimizers hold the next
    step's rates), so the monitors read the rates of the batch start, put back for the time of the reading."""
    now = [[{k: g[k] for k in _HYPERPARAMETERS if k in g} for g in o.param_groups] for o in trainer.optimizers]
    _set_hyperparameters(trainer, at_start)
    try:
        for monitor in step_monitors(trainer):
            extract = getattr(monitor, "_extract_stats", None)
            if extract is None:
                continue
            stats = extract(trainer, "step" if monitor.logging_interval is None else "any")
            if stats:
                for logger in trainer.loggers:
                    logger.log_metrics(stats, step=step)
    finally:
        _set_hyperparameters(trainer, now)
