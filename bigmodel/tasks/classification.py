"""Sequence classification, fine-tuned from an MLM checkpoint of this project (``init_from``) or from scratch."""

from __future__ import annotations

import csv
import os
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from bigmodel.nn import EncoderConfig, SequenceClassifier
from bigmodel.tasks.base import Task
from bigmodel.tasks.checkpoints import META_KEY, read_checkpoint, submodule_state


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class ClassificationTask(Task):
    """[CLS] -> pooler -> dropout -> linear, cross-entropy; accuracy, macro F1/precision/recall; confusion matrix.

    Args:
        num_classes, class_names: linked from the data module.
        encoder, encoder_config: architecture when training from scratch (ignored in favour of the checkpoint's
            architecture with ``init_from``; ``encoder_config`` may still change dropout there).
        vocab_size: linked from the data module's tokenizer; must equal the checkpoint's.
        init_from: an MLM checkpoint of this project; its encoder is loaded, the head is new.
        label_smoothing: cross-entropy label smoothing.
        **kwargs: optimiser settings, see ``Task``.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        encoder: str = "bert-tiny",
        encoder_config: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        init_from: str | None = None,
        classifier_dropout: float = 0.1,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes is None or num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (linked from the data module), got {num_classes}")
        if vocab_size is None:
            raise ValueError("vocab_size is unset: it comes from the data module's tokenizer through the CLI link")
        overrides = dict(encoder_config or {})
        self._init_state: dict[str, torch.Tensor] | None = None
        if init_from:
            ckpt = read_checkpoint(init_from, expected_task="mlm")
            saved = ckpt[META_KEY]["encoder_config"]
            changed = sorted(k for k, v in overrides.items() if not k.endswith("dropout") and saved.get(k) != v)
            if changed:
                raise ValueError(
                    f"encoder_config {changed} cannot change a pretrained encoder loaded by init_from; "
                    "only *_dropout fields may be overridden"
                )
            if saved["vocab_size"] != vocab_size:
                raise ValueError(
                    f"init_from {init_from!r} has a vocabulary of {saved['vocab_size']} tokens but the tokenizer has "
                    f"{vocab_size}; use the checkpoint's own tokenizer (data.init_args.tokenizer: {init_from})"
                )
            self.config = EncoderConfig.from_dict(saved).replace(**overrides)
            self._init_state = submodule_state(ckpt["state_dict"], "net.encoder.")
        else:
            self.config = EncoderConfig.from_name(encoder, **{**overrides, "vocab_size": vocab_size})
        # The resolved architecture, so that load_from_checkpoint(path, init_from=None) rebuilds it exactly.
        self.hparams["encoder_config"] = {**self.config.to_dict(), **overrides}
        self.net = SequenceClassifier(self.config, num_classes, classifier_dropout)
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)

    def setup(self, stage: str) -> None:
        """Pretrained encoder weights go in when a fit starts afresh; a resumed fit, test or predict restores
        the fine-tuned weights from its own checkpoint instead."""
        if stage == "fit" and self._init_state is not None and self.trainer.ckpt_path is None:
            self.load_encoder(self._init_state)
        self._init_state = None

    def load_encoder(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.net.encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"init_from {self.hparams.init_from!r} does not fit the encoder: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        rank_zero_info(f"Loaded encoder weights from {self.hparams.init_from} ({len(state)} tensors)")

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        logits, _ = self.net(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        return logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = self._loss(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(-1) == batch["labels"]).float().mean())
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch)
        self.log("val/loss", self._loss(logits, batch["labels"]), prog_bar=True, sync_dist=True,
                 batch_size=len(batch["labels"]))
        self.val_metrics.update(logits, batch["labels"])

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch)
        self.log("test/loss", self._loss(logits, batch["labels"]), sync_dist=True, batch_size=len(batch["labels"]))
        self.test_metrics.update(logits, batch["labels"])
        self.test_confusion.update(logits, batch["labels"])

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
        matrix = self.test_confusion.compute().cpu()
        self.test_confusion.reset()
        self.confusion_matrix = matrix
        log_dir = self.trainer.log_dir  # a collective call under DDP: every rank makes it
        if self.trainer.is_global_zero:
            self._report_confusion(matrix, log_dir)

    def _report_confusion(self, matrix: torch.Tensor, log_dir: str | None) -> None:
        names = self.class_names
        width = max(len(n) for n in names + ["true\\pred"])
        lines = ["Confusion matrix (rows: true class, columns: predicted):",
                 " ".join(["true\\pred".ljust(width)] + [n[:8].rjust(8) for n in names])]
        lines += [" ".join([names[i].ljust(width)] + [f"{int(v):8d}" for v in row]) for i, row in enumerate(matrix)]
        rank_zero_info("\n".join(lines))
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            with open(os.path.join(log_dir, "confusion_matrix.csv"), "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["true\\pred", *names])
                writer.writerows([names[i], *map(int, row)] for i, row in enumerate(matrix))
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_text"):
            experiment.add_text("test/confusion_matrix", "    " + "\n    ".join(lines), self.global_step)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = self(batch).float().softmax(-1)
        return {"probs": probs, "pred": probs.argmax(-1), "text": batch.get("text")}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = {"task": "classification", "encoder_config": self.config.to_dict(),
                                "class_names": self.class_names}
