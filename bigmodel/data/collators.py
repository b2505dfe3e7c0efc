"""Batch makers. Both drop the attention mask when a batch has no padding (checked on the CPU, before the
batch reaches the device), so the encoder can call SDPA without a mask and take the flash kernel."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, PreTrainedTokenizerBase


def _drop_full_mask(batch: dict[str, Any]) -> dict[str, Any]:
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):
        del batch["attention_mask"]
    return batch


class MLMCollator:
    """Dynamic BERT masking (HF's collator: 15% selected, 80/10/10, special and padding tokens never selected),
    redrawn each time a batch is made; returns flat indices of the selected positions so the model computes
    vocabulary logits only there."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15) -> None:
        if tokenizer.mask_token is None:
            raise ValueError("the tokenizer has no mask token; MLM needs one (e.g. [MASK])")
        self.inner = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.inner(examples)
        labels = batch.pop("labels")
        # Real tokens: not [PAD], or selected (a random replacement may draw the [PAD] id; pads are never selected).
        batch["attention_mask"] = (batch["input_ids"] != self.inner.tokenizer.pad_token_id) | (labels != -100)
        labels = labels.view(-1)
        positions = (labels != -100).nonzero().squeeze(1)
        batch["masked_positions"] = positions
        batch["masked_labels"] = labels[positions]
        return _drop_full_mask(dict(batch))


class ClassificationCollator:
    """Dynamic padding to the longest sequence in the batch; passes the raw texts through for prediction files."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.inner = DataCollatorWithPadding(tokenizer)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [ex.pop("text") for ex in examples] if "text" in examples[0] else None
        batch = dict(self.inner(examples))
        if texts is not None:
            batch["text"] = texts
        return _drop_full_mask(batch)
