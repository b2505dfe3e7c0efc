"""Task heads that sit on the encoder's hidden states. Names follow BERT's heads for weight import."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from bigmodel.nn.config import EncoderConfig


class MLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder tied to the word embeddings (+ own bias)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        """hidden: (N, H) at the selected positions only; decoder_weight: (V, H), the input embedding matrix."""
        return F.linear(self.norm(self.act(self.dense(hidden))), decoder_weight, self.bias)


class Pooler(nn.Module):
    """BERT's pooler: tanh(W h_[CLS] + b)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, S, H) -> (B, H)
        return torch.tanh(self.dense(hidden[:, 0]))


Pooling = Literal["cls", "pooler", "mean"]
POOLINGS: tuple[str, ...] = get_args(Pooling)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, S, H) -> (B, H): the mean over real tokens (sentence-transformers' ``mean`` pooling); padding is 0."""
    if attention_mask is None:
        return hidden.mean(1)
    weights = attention_mask[..., None].to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class ClassificationHead(nn.Module):
    """pooled -> dropout -> linear. Pooling: ``pooler`` ([CLS] through BERT's tanh pooler, as
    ``BertForSequenceClassification``), ``cls`` (the [CLS] state itself) or ``mean`` (over real tokens, as
    sentence-transformers models were trained to embed). With ``cls``/``mean`` the head is one linear layer."""

    def __init__(self, hidden_size: int, num_classes: int, dropout: float = 0.1, pooling: Pooling = "pooler") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.pooler = Pooler(hidden_size) if pooling == "pooler" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, H) -> (B, H): the features the classifier reads."""
        if self.pooler is not None:
            return self.pooler(hidden)
        return hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, attention_mask)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(hidden, attention_mask)))  # (B, S, H) -> (B, C)
