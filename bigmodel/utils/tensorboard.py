"""Figures and text into the run's TensorBoards: tasks (confusion matrices) and callbacks (attention maps) both
write there, so the lookup lives below both."""

from __future__ import annotations

from typing import Any


def tensorboards(trainer: Any) -> list[Any]:
    """The SummaryWriters of the run's TensorBoard loggers (figures and text need one)."""
    return [lg.experiment for lg in trainer.loggers if hasattr(getattr(lg, "experiment", None), "add_figure")]


def add_figure(trainer: Any, tag: str, fig: Any) -> None:
    """A matplotlib figure into every TensorBoard of the run, at the current step."""
    for writer in tensorboards(trainer):
        writer.add_figure(tag, fig, trainer.global_step, close=False)
