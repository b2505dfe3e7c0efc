"""A task of one's own on bigmodel's ``TaskBase``: a tag for every word (code spans here; NER, part of speech alike).

``TaskBase`` rather than ``Task``: this task takes none of the parts bigmodel's own tasks compose (fine-tuning modes,
int8 inference, the non-finite guard), so it has none of their init args or hooks; list a part before ``TaskBase``
in the bases to add it (``class TokenTaggingTask(NonFiniteGuard, TaskBase)``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import ClasswiseWrapper, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from bigmodel import UsageError
from bigmodel.tasks import Pretrained, TaskBase

from my_lab.nn import TokenTagger


def tag_metrics(class_names: list[str], prefix: str) -> MetricCollection:
    """Word accuracy, macro F1, and F1 per tag (``f1_CODE``), over the words that carry a tag."""
    n = len(class_names)
    return MetricCollection({
        "acc": MulticlassAccuracy(n, average="micro"),
        "f1": MulticlassF1Score(n, average="macro"),
        "f1_": ClasswiseWrapper(MulticlassF1Score(n, average=None), labels=class_names, prefix="f1_"),
    }, prefix=prefix, compute_groups=False)  # the per-tag F1 wrapper computes its own state


def tagged_text(words: list[str], tags: list[str]) -> str:
    """``if/CODE statement``: each word followed by its tag, except words tagged with the first tag (``O``)."""
    return " ".join(w if t == "O" else f"{w}/{t}" for w, t in zip(words, tags))


class TokenTaggingTask(TaskBase):
    """A tag per word: bigmodel's text encoder (from scratch, or ``init_from`` an MLM checkpoint) and a linear
    layer on each word's first sub-word token; cross-entropy over the tagged tokens (labels -100 elsewhere, as the
    data module makes them); word accuracy, macro F1 and F1 per tag.

    Args:
        num_classes, class_names: the tags; linked from the data module.
        encoder, encoder_config: a preset and overrides when training from scratch; with ``init_from`` the
            source's architecture (only ``*_dropout`` may change).
        vocab_size: linked from the data module's tokenizer.
        init_from: a checkpoint of this project (an MLM, a classifier, or this task's) or a Hugging Face
            BERT/RoBERTa directory; its encoder is loaded, and its tag layer when the source has the same tags.
        classifier_dropout: before the tag layer.
        **kwargs: optimiser settings of ``bigmodel.tasks.TaskBase`` (lr, schedule, warmup, ...).
    """

    checkpoint_task = "token_tagging"  # checkpoint["bigmodel"]["task"]: --ckpt_path is checked against it

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        encoder: str = "bert-tiny",
        encoder_config: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        init_from: str | None = None,
        classifier_dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes is None or num_classes < 2:
            raise UsageError(f"num_classes must be >= 2 (linked from the data module), got {num_classes}")
        if vocab_size is None:
            raise UsageError("vocab_size is unset: it comes from the data module's tokenizer through the CLI link")
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        # the architecture (init_from's or the preset's), stored resolved in the hyper-parameters
        self.config = self.encoder_config_for(encoder, encoder_config, vocab_size, init_from, causal=False)
        self.net = TokenTagger(self.config, num_classes, classifier_dropout)
        self.val_metrics = tag_metrics(self.class_names, "val/")
        self.test_metrics = tag_metrics(self.class_names, "test/")

    def load_pretrained(self, pretrained: Pretrained) -> list[str]:
        """Called by ``TaskBase.setup`` when a run starts from ``init_from`` (never when restoring a --ckpt_path)."""
        notes = self.load_encoder(self.net.encoder, pretrained)
        tagger = pretrained.part("tagger.")
        if tagger and pretrained.class_names == self.class_names:
            self.net.tagger.load_state_dict(tagger)
            notes.append("tag layer loaded")
        else:
            notes.append(f"new tag layer for {self.class_names}")
        return notes

    def checkpoint_meta(self) -> dict[str, Any]:
        return {**super().checkpoint_meta(), "class_names": self.class_names}  # init_from reads them back

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:  # (B, S, tags)
        return self.net(batch["input_ids"], batch.get("attention_mask"))

    def _scored(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, tags) and labels (N,) of the N tokens that carry a word's tag."""
        labels = batch["labels"].flatten()
        keep = labels != -100
        return self(batch).flatten(0, 1)[keep].float(), labels[keep]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits, labels = self._scored(batch)
        loss = F.cross_entropy(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, labels = self._scored(batch)
        # weighted by words, so the epoch's loss is the mean over all words, whatever the batch lengths
        self.log("val/loss", F.cross_entropy(logits, labels), prog_bar=True, sync_dist=True, batch_size=len(labels))
        self.val_metrics.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, labels = self._scored(batch)
        self.log("test/loss", F.cross_entropy(logits, labels), sync_dist=True, batch_size=len(labels))
        self.test_metrics.update(logits, labels)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    @torch.no_grad()
    def tag(self, batch: dict[str, Any]) -> list[list[str]]:
        """Each text's tags, one per word, read at the word's first token (words cut by max_length get none)."""
        predicted = self(batch).argmax(-1).tolist()
        out = []
        for row, word_ids in zip(predicted, batch["word_ids"]):
            firsts = {w: pos for pos, w in reversed(list(enumerate(word_ids))) if w is not None}
            out.append([self.class_names[row[firsts[w]]] for w in sorted(firsts)])
        return out

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Rows for bigmodel's prediction file: the text's words and the same words with their tags."""
        rows = [{"text": " ".join(words), "tagged": tagged_text(words, tags)}
                for words, tags in zip(batch["words"], self.tag(batch))]
        return {"rows": rows}
