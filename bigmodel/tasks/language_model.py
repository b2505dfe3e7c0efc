"""What masked and causal language modelling share: a token-weighted loss, perplexity and accuracy, and the
checkpoint entry that carries the architecture."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from bigmodel.nn import EncoderConfig
from bigmodel.tasks.base import Task
from bigmodel.tasks.checkpoints import META_KEY


class LanguageModelTask(Task):
    config: EncoderConfig

    def _init_metrics(self, vocab_size: int) -> None:
        self.train_acc = MulticlassAccuracy(vocab_size, average="micro", ignore_index=-100, validate_args=False)
        self.val_acc = MulticlassAccuracy(vocab_size, average="micro", ignore_index=-100, validate_args=False)
        self.val_loss = MeanMetric()

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """(mean loss over the predicted tokens, their logits (N, V), labels (N,), how many tokens count)."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits, labels, _ = self._step(batch)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", loss.detach().exp())
        self.log("train/acc", self.train_acc)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits, labels, count = self._step(batch)
        self.val_loss.update(loss, weight=count)
        self.val_acc.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.log_dict({"val/loss": loss, "val/ppl": loss.exp(), "val/acc": self.val_acc.compute()}, prog_bar=True)
        self.val_loss.reset()
        self.val_acc.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = {"task": self.checkpoint_task, "encoder_config": self.config.to_dict()}
        super().on_save_checkpoint(checkpoint)  # checkpoint_weights: trainable keeps only what trains
