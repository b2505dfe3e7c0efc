"""How a classifier is validated and tested (``ClassificationTask``, and so the prompt task): the metrics of
``metrics.classification_metrics``, each example counted once under DDP, and the confusion matrix (drawn at each
validation, reported at test). A module of its own so ``classification.py`` holds the network and training."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from bigmodel.tasks.metrics import (
    classification_metrics,
    draw_confusion,
    evaluation_loader,
    own_examples,
    report_confusion,
    reset_metrics,
)


class ClassificationEvaluation:
    """The validation and test steps of a task that maps a batch to logits (``self(batch)``), with ``labels`` in
    its batches and ``class_names``; it calls ``init_evaluation`` in its ``__init__``. A base before the task's
    ``LightningModule`` (it uses ``log_global``, ``log_untrained_heads`` and the trainer)."""

    def init_evaluation(self, num_classes: int) -> None:
        """The metrics and confusion matrices of both stages (module attributes: they move with the device)."""
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)

    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Loss (the plain cross-entropy, as timm's and Hugging Face's evaluation report it, whatever
        ``label_smoothing`` training uses) and metrics, counting each example once under DDP."""
        own = own_examples(evaluation_loader(self._trainer, stage), batch_idx, len(batch["labels"]))
        logits, labels = self(batch)[:own], batch["labels"][:own]
        if own:  # torchmetrics refuses an empty batch (a rank's last, holding only the sampler's copy)
            getattr(self, f"{stage}_metrics").update(logits, labels)
            getattr(self, f"{stage}_confusion").update(logits, labels)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_global(self.val_metrics.compute(), prog_bar=True)
        self.log_untrained_heads("val/")
        matrix = self.val_confusion.compute().cpu()  # collective under DDP: every rank computes, rank zero draws
        reset_metrics(self.val_metrics, self.val_confusion)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._draw_confusion("val/confusion_matrix", matrix)

    def _draw_confusion(self, tag: str, matrix: torch.Tensor) -> None:
        draw_confusion(self.trainer, tag, matrix, self.class_names, self.global_step)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self.log_global(self.test_metrics.compute())
        self.log_untrained_heads("test/")
        matrix = self.test_confusion.compute().cpu()
        reset_metrics(self.test_metrics, self.test_confusion)
        self.confusion_matrix = matrix
        log_dir = self.trainer.log_dir  # a collective call under DDP: every rank makes it
        if self.trainer.is_global_zero:
            report_confusion(self.trainer, matrix, self.class_names, log_dir, self.global_step)
