"""The one Transformer encoder of bigmodel, shared by text and images: embeddings, then blocks of attention
(``bigmodel.nn.attention``) and a feed-forward layer, post-LN (BERT) or pre-LN (ViT).

The modern switches (``EncoderConfig``): rotary positions applied to self-attention's q and k, GeGLU/SwiGLU
feed-forward, RMSNorm, no biases, and local (sliding-window) layers between global ones -- ModernBERT's recipe, each
one a boolean mask or a few lines in the same classes, so both attention paths see every switch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from bigmodel.nn.attention import (
    Attention,
    Rotary,
    Unpadded,
    build_attention_mask,
    document_positions,
    rotary_cos_sin,
)
from bigmodel.nn.config import EncoderConfig
from bigmodel.nn.embeddings import TextEmbeddings
from bigmodel.nn.norm import make_norm
from bigmodel.nn.dropout import Dropout

class EncoderOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, S, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, heads, S, S) when asked for
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, heads, S, Sk): asked for, with context


class FeedForward(nn.Module):
    """up -> activation -> down, or a gated linear unit (``feed_forward: geglu | swiglu``): ``up`` gives both halves
    (a, b) in one matmul (so LoRA's ``up``/``down`` targets stay the same) and act(a) * b goes down."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.glu = config.feed_forward != "gelu"
        width = 2 * config.intermediate_size if self.glu else config.intermediate_size
        self.up = nn.Linear(config.hidden_size, width, bias=config.bias)
        self.act = nn.SiLU() if config.feed_forward == "swiglu" else \
            nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.glu:
            a, b = self.up(x).chunk(2, dim=-1)
            return self.down(self.act(a) * b)
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    """One encoder layer; post-LN (BERT) or pre-LN (ViT) by ``config.norm_first``. With
    ``config.add_cross_attention``, a cross-attention sublayer over ``context`` sits between self-attention and the
    FFN, normalised the same way. ``index`` is the layer's number (layer 0 may take the embedding norm as its own:
    ``first_attn_norm: false``)."""

    def __init__(self, config: EncoderConfig, index: int = 0) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.attn = Attention(config)
        self.attn_norm = nn.Identity() if index == 0 and not config.first_attn_norm else make_norm(config)
        self.cross_attn: Attention | None = None
        if config.add_cross_attention:
            self.cross_attn = Attention(config, cross=True)
            self.cross_norm = make_norm(config)
        self.ffn = FeedForward(config)
        self.ffn_norm = make_norm(config)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        rotary: Rotary | None = None,
        unpadded: Unpadded | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns (x, self-attention weights, cross-attention weights); weights only with ``need_weights``.

        ``mask`` and ``context_mask`` are boolean key masks (``build_attention_mask``) for ``x`` and ``context``;
        ``rotary`` RoPE's (cos, sin) for self-attention; ``unpadded``: ``x`` is (T, H), see ``Attention``.
        """
        if self.cross_attn is None and context is not None:
            raise ValueError("this block has no cross-attention (config.add_cross_attention=False); pass no context=")
        cross_weights = None
        if self.norm_first:
            a, weights = self.attn(self.attn_norm(x), mask, need_weights, rotary=rotary, unpadded=unpadded)
            x = x + self.dropout(a)
            if self.cross_attn is not None:
                c, cross_weights = self.cross_attn(self.cross_norm(x), context_mask, need_weights, context)
                x = x + self.dropout(c)
            x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        else:
            a, weights = self.attn(x, mask, need_weights, rotary=rotary, unpadded=unpadded)
            x = self.attn_norm(x + self.dropout(a))
            if self.cross_attn is not None:
                c, cross_weights = self.cross_attn(x, context_mask, need_weights, context)
                x = self.cross_norm(x + self.dropout(c))
            x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return x, weights, cross_weights


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, std) for weights, zeros for biases, ones for norm scales."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        nn.init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


class TransformerEncoder(nn.Module):
    """Embeddings -> ``num_layers`` blocks (-> final norm when pre-LN).

    ``embeddings`` defaults to ``TextEmbeddings``; images pass a patch embedding instead. Everything after the
    embedding is the same code for every modality.

    A fusion encoder (ALBEF-style: text cross-attending to image patches) is this class with
    ``add_cross_attention=True`` and ``embeddings=nn.Identity()``: its ``inputs`` are another encoder's hidden states
    (B, S, H), and ``context`` (B, Sk, H) the other modality's (e.g. a ViT's ``last_hidden_state``).
    """

    def __init__(self, config: EncoderConfig, embeddings: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.embeddings = embeddings if embeddings is not None else TextEmbeddings(config)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.final_norm = make_norm(config) if config.norm_first else nn.Identity()
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        inputs: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        **embedding_kwargs: torch.Tensor | None,
    ) -> EncoderOutput:
        """``inputs`` go to the embedding (token ids for text); ``attention_mask`` is (B, S), 1 for real tokens.
        With ``add_cross_attention``: ``context`` (B, Sk, H), the sequence every layer attends to, and
        ``context_mask`` (B, Sk), 1 for its real tokens. ``document_ids`` (B, S): a packed block's document of each
        token; tokens then attend only within their document and positions restart at each document's start.

        Pass ``attention_mask=None`` (``context_mask=None``) when a batch has no padding: the collators do, so SDPA
        can use flash.

        With ``config.unpad`` and padding, text runs unpadded (``Unpadded``): everything but attention sees the real
        tokens only, and ``last_hidden_state`` is zero at the padding. Attention weights (``output_attentions``)
        and fusion encoders (``context``) keep the padded path.
        """
        config = self.config
        cross = config.add_cross_attention
        if cross and context is None:
            raise ValueError("a fusion encoder (add_cross_attention=True) needs context=, the (B, Sk, H) it attends to")
        if not cross and (context is not None or context_mask is not None):
            raise ValueError("context= is for encoders with add_cross_attention=True; this one has no cross-attention")
        if cross and context.shape[-1] != config.hidden_size:
            raise ValueError(f"context has width {context.shape[-1]}, the encoder's hidden_size is "
                             f"{config.hidden_size}; project it to hidden_size first")
        if document_ids is not None and embedding_kwargs.get("position_ids") is None:
            # learned rows start at the offset (RoBERTa: 2), as for a document alone
            embedding_kwargs["position_ids"] = document_positions(document_ids) + config.position_offset
        unpadded = None
        if config.unpad and attention_mask is not None and not output_attentions and not cross \
                and isinstance(self.embeddings, TextEmbeddings):
            unpadded = Unpadded.of(attention_mask.bool())
            x = self.embeddings(inputs, **embedding_kwargs, indices=unpadded.indices)  # (T, H)
            S = unpadded.seq_len
        else:
            x = self.embeddings(inputs, **embedding_kwargs)
            S = x.shape[1]
        mask = build_attention_mask(attention_mask, config.causal, S, None, document_ids, x.device)
        local_mask = mask if config.sliding_window is None else \
            build_attention_mask(attention_mask, config.causal, S, config.sliding_window, document_ids, x.device)
        rotary = local_rotary = None
        if config.position_embedding == "rope":  # once per forward, shared by the layers of each kind
            positions = embedding_kwargs.get("position_ids")
            positions = torch.arange(S, device=x.device)[None] if positions is None else positions
            rotary = rotary_cos_sin(positions, config.head_dim, config.rope_theta)
            local_theta = config.local_rope_theta
            local_rotary = rotary if local_theta in (None, config.rope_theta) else \
                rotary_cos_sin(positions, config.head_dim, local_theta)
        key_mask = build_attention_mask(context_mask, False, context.shape[1]) if cross else None  # (B, 1, 1, Sk)
        attentions = [] if output_attentions else None
        cross_attentions = [] if output_attentions and cross else None
        recompute = config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            layer_mask, layer_rotary = (mask, rotary) if config.is_global(i) else (local_mask, local_rotary)
            if recompute:  # non-reentrant; the RNG state is replayed, so dropout masks match the first forward
                x, weights, cross_weights = checkpoint(
                    layer, x, layer_mask, output_attentions, context, key_mask, layer_rotary, unpadded,
                    use_reentrant=False,
                )
            else:
                x, weights, cross_weights = layer(x, layer_mask, output_attentions, context, key_mask, layer_rotary,
                                                  unpadded)
            if attentions is not None:
                attentions.append(weights)
            if cross_attentions is not None:
                cross_attentions.append(cross_weights)
        x = self.final_norm(x)
        if unpadded is not None:
            x = unpadded.pad(x)
        return EncoderOutput(
            x,
            tuple(attentions) if attentions is not None else None,
            tuple(cross_attentions) if cross_attentions is not None else None,
        )


def num_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
