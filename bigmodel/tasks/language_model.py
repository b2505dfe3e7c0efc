"""What masked and causal language modelling share: a token-weighted loss, perplexity and accuracy, each block
counted once under DDP; validation and test compute them the same way (``val/*``, ``test/*``)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import SumMetric

from bigmodel.nn import EncoderConfig
from bigmodel.tasks.base import Task
from bigmodel.tasks.metrics import evaluation_loader, own_examples, reset_metrics


class LanguageModelTask(Task):
    config: EncoderConfig

    def _init_metrics(self) -> None:
        # sums with the NaN check off: no boolean indexing and no .any(), so no host sync per step (a classification
        # metric with ignore_index selects the kept tokens, which waits for the GPU at every step). Not MeanMetric's
        # weights: with nan_strategy "disable" torchmetrics 1.9 replaces them by ones. One set per evaluation stage.
        self.val_loss_sum, self.val_hits, self.val_tokens = (SumMetric(nan_strategy="disable") for _ in range(3))
        self.test_loss_sum, self.test_hits, self.test_tokens = (SumMetric(nan_strategy="disable") for _ in range(3))

    def _sums(self, stage: str) -> tuple[SumMetric, SumMetric, SumMetric]:
        """The (loss * tokens, hits, tokens) sums of an evaluation stage, ``val`` or ``test``."""
        return getattr(self, f"{stage}_loss_sum"), getattr(self, f"{stage}_hits"), getattr(self, f"{stage}_tokens")

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """(mean loss over the predicted tokens, their logits (N, V), labels (N,), how many tokens count)."""
        raise NotImplementedError

    def _ignore_examples_from(self, batch: dict[str, torch.Tensor], own: int) -> dict[str, torch.Tensor]:
        """The batch with the labels of its examples ``own`` and after set to -100 (counted nowhere), in the task's
        label layout. Shapes stay the same (a compiled model sees no new one)."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits, labels, _ = self._step(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", loss.detach().exp())
        if self._logs_this_step():  # an argmax over the vocabulary at every predicted token: 3-4 % of a CPU step
            hits, counted = token_hits(logits, labels)
            self.log("train/acc", hits.sum() / counted.sum().clamp(min=1))
        return loss

    def _logs_this_step(self) -> bool:
        """Whether the loggers write this step's values (Lightning logs a step's values every ``log_every_n_steps``
        and drops the rest): values only logged are computed only then. True outside a Trainer."""
        trainer = self._trainer
        return trainer is None or bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def _evaluate(self, batch: dict[str, torch.Tensor], batch_idx: int, stage: str) -> None:
        """Sums over the predicted tokens of this rank's own blocks: under DDP the copy of a block that Lightning's
        ``DistributedSampler`` adds to even out the ranks (``metrics.own_examples``) predicts nothing."""
        size = len(batch["input_ids"])
        own = own_examples(evaluation_loader(self._trainer, stage), batch_idx, size)
        if own < size:
            batch = self._ignore_examples_from(batch, own)
        loss, logits, labels, count = self._step(batch)
        hits, counted = token_hits(logits, labels)
        loss_sum, hit_sum, tokens = self._sums(stage)
        loss_sum.update(loss * count)
        hit_sum.update(hits.sum())
        tokens.update(counted.sum())

    def _log_evaluation(self, stage: str) -> None:
        """``<stage>/loss`` (mean over every predicted token), ``/ppl`` (its exp) and ``/acc``; the sums reset."""
        loss_sum, hit_sum, tokens = self._sums(stage)
        count = tokens.compute().clamp(min=1)
        loss = loss_sum.compute() / count
        self.log_global({f"{stage}/loss": loss, f"{stage}/ppl": loss.exp(), f"{stage}/acc": hit_sum.compute() / count},
                        prog_bar=True)
        self.log_untrained_heads(f"{stage}/")
        reset_metrics(loss_sum, hit_sum, tokens)


def token_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 where the top logit is the label, 1 where the token counts): token accuracy is sum(hits) / sum(counted);
    -100 labels (padding, unpredicted positions) count as neither."""
    return (logits.argmax(-1) == labels).float(), (labels != -100).float()
