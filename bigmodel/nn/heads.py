"""Task heads that sit on the encoder's hidden states. Names follow BERT's heads for weight import."""

from __future__ import annotations

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


class ClassificationHead(nn.Module):
    """[CLS] -> pooler -> dropout -> linear."""

    def __init__(self, hidden_size: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.pooler = Pooler(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, S, H) -> (B, C)
        return self.classifier(self.dropout(self.pooler(hidden)))
