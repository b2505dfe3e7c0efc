"""Classification metrics and the confusion-matrix report (terminal, CSV, TensorBoard), shared by the classification
tasks; a module of their own so ``classification.py`` holds the task."""

from __future__ import annotations

import csv
import os
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, DistributedSampler
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from bigmodel.utils.tensorboard import tensorboards

MAX_PRINTED_CLASSES = 20


class CrossEntropy(MeanMetric):
    """The plain cross-entropy (log-loss) of class-id labels, averaged over every example: its sum and count sync
    across ranks by sum, so ranks with different numbers of examples average exactly (Lightning's
    ``self.log(..., sync_dist=True)`` averages the ranks' integer example counts, rounded down on gloo)."""

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:  # type: ignore[override]
        super().update(F.cross_entropy(logits.float(), labels, reduction="none"))


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """The loss (plain cross-entropy, whatever training's label smoothing), accuracy and macro F1/precision/recall;
    top-5 accuracy too when there are more than 10 classes."""
    metrics = {
        "loss": CrossEntropy(),
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
        "precision": MulticlassPrecision(num_classes, average="macro"),
        "recall": MulticlassRecall(num_classes, average="macro"),
    }
    if num_classes > 10:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


def reset_metrics(*metrics: Metric | MetricCollection) -> None:
    """Resets the sums of an evaluation as ordinary tensors. A validate or test ends under inference mode, where a
    reset would make them inference tensors, which no later update outside it may change in place: a ``fit`` after
    a ``validate`` on the same Trainer (its validation runs under no_grad only) would fail at its first batch."""
    with torch.inference_mode(False):
        for metric in metrics:
            metric.reset()


def evaluation_loader(trainer: Any, stage: str) -> Any:
    """The loader this evaluation (``val`` or ``test``) reads: ``trainer.val_dataloaders`` would give a ``fit``'s
    after it, in a ``validate`` on the same trainer. None without a trainer or a single loader."""
    if trainer is None:
        return None
    loop = trainer.test_loop if stage == "test" else (
        trainer.fit_loop.epoch_loop.val_loop if trainer.state.fn == TrainerFn.FITTING else trainer.validate_loop)
    combined = getattr(loop, "_combined_loader", None)  # (private: a Lightning without it counts every example)
    return None if combined is None else combined.iterables


def own_examples(loader: Any, batch_idx: int, size: int) -> int:
    """How many of the first examples of this evaluation batch (of ``size``) are this rank's own: under DDP,
    Lightning's ``DistributedSampler`` evens out the ranks by appending copies of the first examples to the order,
    which it deals ``order[rank::world]``, so the copies are the last position of a rank's share (at most one per
    rank) and would be counted twice. ``loader``: the stage's dataloader as the trainer holds it (with its sampler);
    a loader without a ``DistributedSampler`` (one process) or with a batch sampler of its own keeps every example."""
    sampler = getattr(loader, "sampler", None)
    if not isinstance(loader, DataLoader) or not isinstance(sampler, DistributedSampler) or loader.batch_size is None \
            or getattr(sampler, "dataset", None) is None:
        return size
    own = len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))  # unpadded share of this rank
    return max(0, min(size, own - batch_idx * loader.batch_size))


def draw_confusion(trainer: L.Trainer, tag: str, matrix: torch.Tensor, names: list[str], step: int) -> None:
    """The matrix as a figure in each TensorBoard of the run."""
    writers = tensorboards(trainer)
    if writers:
        from bigmodel.utils import figures

        fig = figures.confusion_matrix(matrix, names, f"{tag} at step {step}")
        for writer in writers:
            writer.add_figure(tag, fig, step, close=False)


def report_confusion(trainer: L.Trainer, matrix: torch.Tensor, names: list[str], log_dir: str | None,
                     step: int) -> None:
    """The test confusion matrix: printed (up to ``MAX_PRINTED_CLASSES``), ``confusion_matrix.csv`` in the run
    directory, and TensorBoard's text and image tabs."""
    width = max(len(n) for n in names + ["true\\pred"])
    lines = ["Confusion matrix (rows: true class, columns: predicted):",
             " ".join(["true\\pred".ljust(width)] + [n[:8].rjust(8) for n in names])]
    lines += [" ".join([names[i].ljust(width)] + [f"{int(v):8d}" for v in row]) for i, row in enumerate(matrix)]
    if len(names) <= MAX_PRINTED_CLASSES:
        rank_zero_info("\n".join(lines))
    else:  # a 100 x 100 table is unreadable in a terminal; the CSV and TensorBoard keep it
        rank_zero_info(f"Confusion matrix ({len(names)} classes): confusion_matrix.csv in {log_dir}")
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        with open(os.path.join(log_dir, "confusion_matrix.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true\\pred", *names])
            writer.writerows([names[i], *map(int, row)] for i, row in enumerate(matrix))
    for writer in tensorboards(trainer):
        writer.add_text("test/confusion_matrix", "    " + "\n    ".join(lines), step)
    draw_confusion(trainer, "test/confusion_matrix", matrix, names, step)
