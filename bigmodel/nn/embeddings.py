"""Input embeddings: the part of the encoder that differs between text and images."""

from __future__ import annotations

import math

import torch
from torch import nn

from bigmodel.nn.config import EncoderConfig
from bigmodel.nn.norm import make_norm
from bigmodel.nn.dropout import Dropout


def sinusoidal_encoding(num_positions: int, dim: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)) (Vaswani et al., 2017)."""
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(num_positions, dim)
    pe[:, 0::2] = torch.sin(position * inv_freq)
    pe[:, 1::2] = torch.cos(position * inv_freq)[:, : dim // 2]
    return pe


def max_sequence_length(config: EncoderConfig) -> int:
    """The longest input the encoder has positions for: ``max_position_embeddings`` less ``position_offset``
    (RoBERTa's learned rows start at 2); a RoPE encoder's context is bounded the same way."""
    return config.max_position_embeddings - config.position_offset


class TextEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then a norm and dropout (BERT's embedding block). With rotary
    positions (``position_embedding: rope``) nothing is added here: attention rotates q and k instead."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding == "learned":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        elif config.position_embedding == "sinusoidal":
            pe = sinusoidal_encoding(config.max_position_embeddings, config.hidden_size)
            self.register_buffer("sinusoidal", pe, persistent=False)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size > 0 else None
        )
        self.norm = make_norm(config)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, S)
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
    ) -> torch.Tensor:  # (B, S, H), or (T, H) with ``indices``
        """``indices`` (T,): the real tokens' places in the flattened (B * S) batch; only those are embedded, each
        with the position it has in the padded batch (the encoder's unpadded path)."""
        seq_len, offset = input_ids.shape[1], self.config.position_offset
        if seq_len > max_sequence_length(self.config):
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings={self.config.max_position_embeddings}"
                f"{f' less the offset {offset}' if offset else ''}; truncate the input (data max_length / block_size)"
                " or build a model with more positions"
            )
        rope = self.config.position_embedding == "rope"  # rotary positions enter attention, not the embedding
        if indices is not None:
            input_ids, token_type_ids, position_ids = (None if t is None else t.flatten().index_select(0, indices)
                                                       for t in (input_ids, token_type_ids, position_ids))
        x = self.word_embeddings(input_ids)
        if not rope and indices is not None and position_ids is None:
            x = x + self._positions(seq_len, None).index_select(0, indices % seq_len)
        elif not rope:
            x = x + self._positions(seq_len, position_ids)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                x = x + self.token_type_embeddings.weight[0]
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))

    def _positions(self, seq_len: int, position_ids: torch.Tensor | None) -> torch.Tensor:
        learned = self.config.position_embedding == "learned"
        if position_ids is None:  # right-padded batches: positions offset, offset + 1, ... (RoBERTa's for real tokens)
            offset = self.config.position_offset
            # broadcast over the batch: no index tensor needed
            return self.position_embeddings.weight[offset : offset + seq_len] if learned else self.sinusoidal[:seq_len]
        return self.position_embeddings(position_ids) if learned else self.sinusoidal[position_ids]
