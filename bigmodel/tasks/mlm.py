"""Masked language modelling (BERT pretraining without next-sentence prediction)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bigmodel.nn import MaskedLanguageModel
from bigmodel.tasks.language_model import LanguageModelTask
from bigmodel.tasks.checkpoints import Pretrained


class MLMTask(LanguageModelTask):
    """Args:
        encoder: preset name (``bert-tiny`` ... ``bert-large``).
        encoder_config: overrides of the preset's fields, e.g. ``{num_layers: 4, hidden_dropout: 0.0}``; with
            ``init_from`` only the ``*_dropout`` fields, and for a RoPE encoder the context (a longer
            ``max_position_embeddings``, a new ``rope_theta``: context extension).
        vocab_size: linked from the data module's tokenizer; never set by hand.
        init_from: continue pretraining from a checkpoint of this project (MLM or text classification) or a
            Hugging Face BERT/RoBERTa directory or hub name; its MLM head is loaded when it has one (set
            ``data.init_args.tokenizer`` to the same value).
        **kwargs: optimiser settings, see ``Task``.
    """

    checkpoint_task = "mlm"  # checkpoint["bigmodel"]["task"]: the CLI checks a --ckpt_path against it

    def __init__(
        self,
        encoder: str = "bert-tiny",
        encoder_config: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        init_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if vocab_size is None:
            raise ValueError("vocab_size is unset: it comes from the data module's tokenizer through the CLI link")
        overrides = {k: v for k, v in (encoder_config or {}).items() if k != "causal"}
        self.config = self.encoder_config_for(encoder, overrides, vocab_size, init_from, causal=False)
        self.net = MaskedLanguageModel(self.config)
        self._init_metrics()

    def setup(self, stage: str) -> None:
        if stage == "predict":  # before the checkpoint is read and anything runs
            raise ValueError(self._no_predictions())
        super().setup(stage)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Lightning wants a predict step before it calls ``setup``, which says what to do instead."""
        raise ValueError(self._no_predictions())

    def _no_predictions(self) -> str:
        return (f"{type(self).__name__} has no predict step: predict with a classification or causal-LM config, or "
                "export the encoder with bigmodel export")

    def load_pretrained(self, pretrained: Pretrained) -> list[str]:
        notes = self.load_encoder(self.net.encoder, pretrained)
        if pretrained.config is not None and pretrained.config.causal:
            notes.append("a causal encoder, now trained bidirectionally")
        head = pretrained.part("mlm_head.")
        if head:
            self.net.mlm_head.load_state_dict(head)
        else:
            notes.append("new MLM head (the source has none)")
            self.new_heads.append("MLM head")
        return notes

    def _ignore_examples_from(self, batch: dict[str, torch.Tensor], own: int) -> dict[str, torch.Tensor]:
        """The masked positions are flat indices into the (B, S) block: the example of one is its index // S."""
        examples = batch["masked_positions"] // batch["input_ids"].shape[1]
        return {**batch, "masked_labels": batch["masked_labels"].masked_fill(examples >= own, -100)}

    def _step(self, batch: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if "masked_positions" not in batch:
            raise ValueError("MLMTask needs masked batches but got whole blocks: set data.init_args.objective: mlm")
        logits = self.net(batch["input_ids"], batch["masked_positions"], batch.get("attention_mask"),
                          batch.get("document_ids"))  # packed documents kept apart (document_mask)
        labels = batch["masked_labels"]
        # sum / count instead of mean: a batch with no selected token gives 0, not NaN. Labels -100 (padding of the
        # positions to a multiple, see MLMCollator) count nowhere; the count stays on the device (no sync).
        count = (labels != -100).sum()
        loss = F.cross_entropy(logits.float(), labels, reduction="sum") / count.clamp(min=1)
        return loss, logits, labels, count
