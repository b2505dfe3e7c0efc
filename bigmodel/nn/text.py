"""The text networks as plain ``nn.Module``s (the images' are in ``bigmodel.nn.vision``): usable without Lightning,
wrapped by the tasks for training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bigmodel.nn.config import EncoderConfig
from bigmodel.nn.embeddings import max_sequence_length
from bigmodel.nn.encoder import EncoderOutput, TransformerEncoder, init_weights
from bigmodel.nn.heads import ClassificationHead, MLMHead, Pooling


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
        document_ids: torch.Tensor | None = None,  # (B, S) of a packed block: documents kept apart
    ) -> torch.Tensor:  # (N, V): logits only where the loss needs them
        hidden = self.encoder(input_ids, attention_mask, document_ids=document_ids).last_hidden_state
        selected = hidden.flatten(0, 1).index_select(0, masked_positions)
        return self.mlm_head(selected, self.encoder.embeddings.word_embeddings.weight)


class SequenceClassifier(nn.Module):
    def __init__(self, config: EncoderConfig, num_classes: int, classifier_dropout: float = 0.1,
                 pooling: Pooling = "pooler") -> None:
        super().__init__()
        self.config = config
        self.encoder = TransformerEncoder(config)
        self.head = ClassificationHead.for_encoder(config, num_classes, classifier_dropout, pooling)
        self.head.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, EncoderOutput]:
        out = self.encoder(input_ids, attention_mask, output_attentions, token_type_ids=token_type_ids)
        return self.head(out.last_hidden_state, attention_mask), out


class CausalLanguageModel(nn.Module):
    """The shared encoder with a causal mask and a next-token decoder tied to the word embeddings (GPT-2's LM).

    No head of its own: with ``norm_first`` the encoder ends in a LayerNorm (post-LN blocks end in one too), and the
    logits are that state times the embedding matrix, so input and output share one vocabulary table. An MLM-style
    dense + LayerNorm transform would add H^2 + 2H parameters applied at every position for no gain at this size.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if not config.causal:
            raise ValueError("CausalLanguageModel needs config.causal=True (each token sees only earlier ones)")
        self.config = config
        self.encoder = TransformerEncoder(config)

    @property
    def decoder_weight(self) -> torch.Tensor:  # (V, H): the input embedding matrix
        return self.encoder.embeddings.word_embeddings.weight

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, S) -> (B, S, V): logits at t predict token t + 1
        hidden = self.encoder(input_ids, attention_mask).last_hidden_state
        return F.linear(hidden, self.decoder_weight)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        max_context: int | None = None,
        eos_token_id: int | None = None,
    ) -> torch.Tensor:
        """Appends up to ``max_new_tokens`` tokens to ``input_ids`` (B, S; no padding) and returns (B, S + new).

        Greedy takes the most likely token; otherwise a draw from softmax(logits / temperature), restricted to the
        ``top_k`` most likely when given (0 or None: all tokens, as in transformers). The context is cropped to
        the last ``max_context`` tokens: by default all that have positions (``max_sequence_length``:
        ``max_position_embeddings`` less ``position_offset``, RoBERTa's 2); a caller that knows how long the
        trained sequences were passes that, since position rows past it never trained.
        No key/value cache: each step recomputes the whole context, which is cheap at these model sizes and
        keeps one forward path. Call ``eval()`` first (dropout would otherwise stay on).
        With ``eos_token_id`` (the end of a document) a row that has generated it is done: it gets that id at every
        later step (as transformers pads a finished row), and generation stops as soon as every row is done, so
        ``new`` may be less than ``max_new_tokens``. The tokens up to each row's end are those it would get without
        it (a sampled row draws from ``generator`` in the same order).
        """
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}; use greedy=True for argmax")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 or None: no top-k filter), got {top_k}")
        positions = max_sequence_length(self.config)
        context = positions if max_context is None else max_context
        if not 1 <= context <= positions:
            raise ValueError(f"max_context must be in [1, {positions}] (the encoder's positions), got {context}")
        ids = input_ids
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            logits = self(ids[:, -context:])[:, -1].float()  # (B, V)
            if greedy:
                next_id = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k and top_k < logits.shape[-1]:
                    kth = logits.topk(top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            if eos_token_id is not None:
                next_id = next_id.masked_fill(done[:, None], eos_token_id)
                done |= next_id[:, 0] == eos_token_id
            ids = torch.cat([ids, next_id], dim=1)
            if eos_token_id is not None and bool(done.all()):
                break
        return ids
