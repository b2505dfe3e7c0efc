"""Task heads that sit on the encoder's hidden states. Names follow BERT's heads for weight import."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from bigmodel.nn.config import EncoderConfig
from bigmodel.nn.norm import make_norm
from bigmodel.nn.dropout import Dropout


def _gelu(config: EncoderConfig) -> nn.GELU:
    return nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")


class MLMHead(nn.Module):
    """dense -> GELU -> norm -> decoder tied to the word embeddings (+ own bias)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.bias)
        self.act = _gelu(config)
        self.norm = make_norm(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        """hidden: (N, H) at the selected positions only; decoder_weight: (V, H), the input embedding matrix."""
        return F.linear(self.norm(self.act(self.dense(hidden))), decoder_weight, self.bias)


Pooling = Literal["cls", "pooler", "mean"]
POOLINGS: tuple[str, ...] = get_args(Pooling)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, S, H) -> (B, H): the mean over real tokens (sentence-transformers' ``mean`` pooling); padding is 0."""
    if attention_mask is None:
        return hidden.mean(1)
    weights = attention_mask[..., None].to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, S, H) -> (B, H): the first ([CLS]) state, or the mean over real tokens (all of them without a mask)."""
    return hidden[:, 0] if how == "cls" else mean_pool(hidden, attention_mask)


class Pooler(nn.Module):
    """BERT's pooler: tanh(W h + b) of the pooled state h ([CLS] by default). ``dropout`` > 0 drops h out first, as
    RoBERTa's classification head does (``EncoderConfig.dropout_before_pooler``); BERT's pooler has none."""

    def __init__(self, hidden_size: int, pooling: str = "cls", bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.pooling = pooling

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.dense(self.dropout(pool(hidden, attention_mask, self.pooling))))  # (B, S, H) -> (B, H)


class TransformPooler(nn.Module):
    """ModernBERT's classification head before its classifier: pooled state -> dense -> GELU -> norm (``dropout``:
    as ``Pooler``'s, before the dense; ModernBERT's has none)."""

    def __init__(self, config: EncoderConfig, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = Dropout(dropout)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.bias)
        self.act = _gelu(config)
        self.norm = make_norm(config)
        self.pooling = config.classifier_pooling

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(self.act(self.dense(self.dropout(pool(hidden, attention_mask, self.pooling)))))


class ClassificationHead(nn.Module):
    """pooled -> dropout -> linear. Pooling: ``pooler`` (a trained pooler module: BERT's tanh over [CLS] as
    ``BertForSequenceClassification``, or the one the encoder's config asks for, e.g. ModernBERT's dense-GELU-norm;
    RoBERTa's drops [CLS] out before its dense too, see ``for_encoder``), ``cls`` (the [CLS] state itself) or
    ``mean`` (over real tokens, as sentence-transformers models were trained to embed). With ``cls``/``mean`` the
    head is one linear layer."""

    def __init__(self, hidden_size: int, num_classes: int, dropout: float = 0.1, pooling: Pooling = "pooler",
                 pooler: nn.Module | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.pooler = (pooler if pooler is not None else Pooler(hidden_size)) if pooling == "pooler" else None
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, H) -> (B, H): the features the classifier reads."""
        if self.pooler is not None:
            return self.pooler(hidden, attention_mask)
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(hidden, attention_mask)))  # (B, S, H) -> (B, C)

    @classmethod
    def for_encoder(cls, config: EncoderConfig, num_classes: int, dropout: float = 0.1,
                    pooling: Pooling = "pooler") -> "ClassificationHead":
        """The head ``config`` asks for: with ``pooling: pooler`` its pooler (``config.pooler``: BERT's ``tanh``
        or ModernBERT's ``transform``, over ``config.classifier_pooling``), which with
        ``config.dropout_before_pooler`` drops its input out with the same ``dropout`` (RoBERTa's head, whose one
        dropout module serves both places)."""
        pooler = None
        if pooling == "pooler":
            before = dropout if config.dropout_before_pooler else 0.0
            pooler = TransformPooler(config, before) if config.pooler == "transform" else \
                Pooler(config.hidden_size, config.classifier_pooling, config.bias, before)
        return cls(config.hidden_size, num_classes, dropout, pooling, pooler)
