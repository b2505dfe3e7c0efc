"""Whole networks as plain ``nn.Module``s: usable without Lightning, wrapped by the tasks for training."""

from __future__ import annotations

import torch
from torch import nn

from bigmodel.nn.config import EncoderConfig
from bigmodel.nn.encoder import EncoderOutput, TransformerEncoder, init_weights
from bigmodel.nn.heads import ClassificationHead, MLMHead


class MaskedLanguageModel(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = TransformerEncoder(config)
        self.mlm_head = MLMHead(config)
        self.mlm_head.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, S)
        masked_positions: torch.Tensor,  # (N,) flat indices into B*S
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:  # (N, V): logits only where the loss needs them
        hidden = self.encoder(input_ids, attention_mask).last_hidden_state
        selected = hidden.flatten(0, 1).index_select(0, masked_positions)
        return self.mlm_head(selected, self.encoder.embeddings.word_embeddings.weight)


class SequenceClassifier(nn.Module):
    def __init__(self, config: EncoderConfig, num_classes: int, classifier_dropout: float = 0.1) -> None:
        super().__init__()
        self.config = config
        self.encoder = TransformerEncoder(config)
        self.head = ClassificationHead(config.hidden_size, num_classes, classifier_dropout)
        self.head.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, EncoderOutput]:
        out = self.encoder(input_ids, attention_mask, output_attentions, token_type_ids=token_type_ids)
        return self.head(out.last_hidden_state), out
