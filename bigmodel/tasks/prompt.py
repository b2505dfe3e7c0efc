"""Prompt-based classification (PET, Schick & Schütze 2021): no new head, the MLM head answers a cloze.

The data module turns each text into a template with one mask (``data.init_args.template``); a verbaliser maps
each class to words, and the class's score is the MLM logit of its word at the mask (the log-sum-exp over its
words when it has several). ``bigmodel test`` from an MLM checkpoint is zero-shot classification; ``fit`` is
PET-style fine-tuning of the whole model on the template (cross-entropy over the classes' scores; PET's auxiliary
MLM loss is left out). Metrics, confusion matrix and predictions are the classification task's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bigmodel.nn import MaskedLanguageModel
from bigmodel.tasks.checkpoints import Pretrained
from bigmodel.tasks.classification import ClassificationTask


def verbalizer_scores(mlm_logits: torch.Tensor, word_ids: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """(B, V) logits at the mask, (C, W) word ids per class with a validity mask -> (B, C) class scores:
    log-sum-exp of the class's word logits, i.e. log P(any of its words) up to a constant shared by all classes."""
    picked = mlm_logits.float()[:, word_ids]  # (B, C, W)
    return picked.masked_fill(~word_mask, float("-inf")).logsumexp(-1)


def verbalizer_ids(tokenizer: Any, verbalizer: dict[str, list[str]], class_names: list[str]) -> list[list[int]]:
    """Each class's words as token ids, read as they follow a space in a sentence (RoBERTa's ``Ġgreat``);
    every word must be one token of the tokenizer."""
    missing = [name for name in class_names if name not in verbalizer]
    extra = sorted(set(verbalizer) - set(class_names))
    if missing or extra:
        raise ValueError(f"the verbalizer names {sorted(verbalizer)} but the classes are {class_names}: give words "
                         f"for each class{f' (missing {missing})' if missing else ''}"
                         f"{f', not for {extra}' if extra else ''}")
    ids = []
    owner: dict[int, tuple[str, str]] = {}  # token id -> (class, word) that first claimed it
    for name in class_names:
        row = []
        for word in verbalizer[name]:
            tokens = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            if len(tokens) != 1 or tokens[0] == tokenizer.unk_token_id:
                pieces = tokenizer.convert_ids_to_tokens(tokens)
                raise ValueError(f"verbalizer word {word!r} (class {name!r}) is {pieces} for this tokenizer; each word "
                                 "must be one token of its vocabulary: choose another word")
            first, first_word = owner.setdefault(tokens[0], (name, word))
            if first != name:  # the same logit would score both classes: they could not be told apart by it
                token = tokenizer.convert_ids_to_tokens(tokens[0])
                raise ValueError(f"verbalizer gives the word {token!r} to both class {first!r} ({first_word!r}) and "
                                 f"class {name!r} ({word!r}): a word may answer for one class only; choose another "
                                 "word for one of them")
            if tokens[0] not in row:  # a word given twice (or "bad" and "Bad" in an uncased vocabulary) counts once:
                row.append(tokens[0])  # twice in the log-sum-exp would add log 2 to its class's score
        ids.append(row)
    return ids


class PromptClassificationTask(ClassificationTask):
    """Args:
        verbalizer: class name -> word(s), e.g. ``{negative: [terrible], positive: [great]}``; each word one token.
        num_classes, class_names: linked from the data module (the verbaliser's keys must be these names).
        encoder, encoder_config, vocab_size, init_from: as ``MLMTask`` (start from an MLM checkpoint of this
            project or a Hugging Face BERT/RoBERTa with its MLM head: the head is what answers).
        label_smoothing: of the training cross-entropy over the classes (evaluation reports the plain one).
        **kwargs: optimiser and fine-tuning settings, see ``Task``.

    Needs ``data.init_args.template`` with one ``{mask}``; the tokenizer is the data module's.
    """

    checkpoint_task = "prompt"

    def __init__(
        self,
        verbalizer: dict[str, str | list[str]],
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        encoder: str = "bert-tiny",
        encoder_config: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        init_from: str | None = None,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self.verbalizer = {str(k): [v] if isinstance(v, str) else list(v) for k, v in (verbalizer or {}).items()}
        empty = [name for name, words in self.verbalizer.items() if not words]
        if not self.verbalizer or empty:
            which = f"class {empty[0]!r} has no words" if empty else "it is empty"
            raise ValueError(f"verbalizer must give each class at least one word ({which}), e.g. "
                             "{negative: [terrible], positive: [great]}")
        super().__init__(num_classes=num_classes, class_names=class_names, encoder=encoder,
                         encoder_config=encoder_config, vocab_size=vocab_size, init_from=init_from,
                         label_smoothing=label_smoothing, **kwargs)
        for key in ("backbone", "classifier_dropout", "pooling"):  # the classifier's, unused here
            self.hparams.pop(key, None)
        width = max(len(words) for words in self.verbalizer.values())
        self.register_buffer("word_ids", torch.zeros(len(self.class_names), width, dtype=torch.long), persistent=False)
        self.register_buffer("word_mask", torch.zeros(len(self.class_names), width, dtype=torch.bool),
                             persistent=False)
        self.mask_token_id: int | None = None

    def _text_classifier(self, num_classes: int, encoder: str, encoder_config: dict[str, Any] | None,
                         vocab_size: int | None, init_from: str | None, classifier_dropout: float,
                         pooling: str | None = None) -> nn.Module:
        if vocab_size is None:
            raise ValueError("vocab_size is unset: it comes from the data module's tokenizer through the CLI link")
        self.config = self.encoder_config_for(encoder, encoder_config, vocab_size, init_from, causal=False)
        return MaskedLanguageModel(self.config)

    def set_tokenizer(self, tokenizer: Any) -> None:
        """The verbaliser's token ids and the mask id, from the tokenizer the data was made with."""
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token; prompt-based classification needs an MLM's tokenizer")
        ids = verbalizer_ids(tokenizer, self.verbalizer, self.class_names)
        self.word_ids.zero_()
        self.word_mask.zero_()
        for c, row in enumerate(ids):
            self.word_ids[c, : len(row)] = torch.tensor(row)
            self.word_mask[c, : len(row)] = True
        self.mask_token_id = tokenizer.mask_token_id

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None:
            if not getattr(datamodule.hparams, "template", None):
                raise ValueError("PromptClassificationTask reads the MLM's answer at a mask: set data.init_args."
                                 "template, e.g. '{text} It was {mask}.'")
            self.set_tokenizer(datamodule.tokenizer)
        super().setup(stage)

    def load_pretrained(self, pretrained: Pretrained) -> list[str]:
        head = pretrained.part("mlm_head.")
        if not head:
            raise ValueError(f"init_from {pretrained.source!r} has no MLM head, which is what answers the prompt; "
                             "start from an MLM checkpoint or a Hugging Face *ForMaskedLM model")
        notes = self.load_encoder(self.net.encoder, pretrained)
        self.net.mlm_head.load_state_dict(head)
        return notes

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:  # (B, classes)
        if self.mask_token_id is None:
            raise ValueError("call set_tokenizer(tokenizer) first (the CLI does it from the data module)")
        if "mask_index" not in batch:
            raise ValueError("the batch has no mask_index: make prompts with data.init_args.template (or "
                             "bigmodel.data.prompts.encode_prompts)")
        input_ids = batch["input_ids"]
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        positions = rows * input_ids.shape[1] + batch["mask_index"]  # flat indices, no host sync
        logits = self.net(input_ids, positions, batch.get("attention_mask"))
        return verbalizer_scores(logits, self.word_ids, self.word_mask)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {**super().checkpoint_meta(), "verbalizer": self.verbalizer}
