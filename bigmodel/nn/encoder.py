"""The one Transformer encoder of bigmodel, shared by text and images.

Attention has two paths with one set of weights: ``F.scaled_dot_product_attention`` (fused kernels; flash when
there is no mask) and an explicit softmax(QK^T/sqrt(d_k))V that also returns the attention weights. The same class
does cross-attention (queries from ``x``, keys and values from a ``context`` sequence) through the same two paths.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from bigmodel.nn.config import EncoderConfig
from bigmodel.nn.embeddings import TextEmbeddings


class EncoderOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, S, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, heads, S, S) when asked for
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, heads, S, Sk): asked for, with context


def build_attention_mask(attention_mask: torch.Tensor | None, causal: bool, seq_len: int) -> torch.Tensor | None:
    """Boolean mask, True where a query may attend to a key; None when nothing is masked (keeps SDPA on flash).

    ``attention_mask`` is (B, S) with 1/True for real tokens. The result broadcasts to (B, heads, S, S) without
    materialising it: (B, 1, 1, S) for padding alone, (B, 1, S, S) for padding plus causal.
    """
    if attention_mask is None:
        return None
    mask = attention_mask.bool()[:, None, None, :]
    if causal:
        tril = torch.ones(seq_len, seq_len, dtype=torch.bool, device=mask.device).tril()
        mask = mask & tril
    return mask


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T / sqrt(d_k) + mask) V, returning (output (B, h, S, D), weights (B, h, S, Sk)); Sk = S for
    self-attention."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if causal and mask is None:
        s = q.shape[-2]
        mask = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        # finfo.min, not -inf, so a row whose keys are all masked gives no NaN; that row is then zeroed,
        # which is what SDPA returns for it (a fully padded query attends to nothing).
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    if dropout_p > 0.0:
        weights_dropped = F.dropout(weights, p=dropout_p)
        return weights_dropped @ v, weights
    return weights @ v, weights


class Attention(nn.Module):
    """Multi-head attention: self-attention with one fused ``qkv`` projection, or (``cross=True``) cross-attention
    with ``q`` over ``x`` and a fused ``kv`` over the context; separate names, so LoRA targets and checkpoint names
    tell the two apart. Cross-attention is never causal: every query may see the whole context."""

    def __init__(self, config: EncoderConfig, cross: bool = False) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.cross = cross
        self.causal = config.causal and not cross
        self.dropout_p = config.attention_dropout
        if cross:
            self.q = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
            self.kv = nn.Linear(config.hidden_size, 2 * config.hidden_size, bias=config.qkv_bias)
        else:
            self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, S, H); ``context`` (B, Sk, H) for cross-attention. ``mask`` (True = may attend) broadcasts to
        (B, heads, S, Sk), Sk = S without context; with context it masks the context's padding."""
        B, S, H = x.shape
        if context is None:
            if self.cross:
                raise ValueError("cross-attention needs context=: the (B, Sk, H) sequence of its keys and values")
            q, k, v = self.qkv(x).view(B, S, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            if not self.cross:
                raise ValueError("self-attention takes no context=; Attention(config, cross=True) attends to one")
            Sk = context.shape[1]
            q = self.q(x).view(B, S, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, S, D)
            kv = self.kv(context).view(B, Sk, 2, self.num_heads, self.head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, Sk, D) each
        dropout_p = self.dropout_p if self.training else 0.0
        weights = None
        if need_weights:
            out, weights = explicit_attention(q, k, v, mask, self.causal, dropout_p)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=self.causal and mask is None
            )  # (B, h, S, D)
        out = out.transpose(1, 2).reshape(B, S, H)
        return self.proj(out), weights


class FeedForward(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    """One encoder layer; post-LN (BERT) or pre-LN (ViT) by ``config.norm_first``. With
    ``config.add_cross_attention``, a cross-attention sublayer over ``context`` sits between self-attention and the
    FFN, normalised the same way."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.attn = Attention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cross_attn: Attention | None = None
        if config.add_cross_attention:
            self.cross_attn = Attention(config, cross=True)
            self.cross_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns (x, self-attention weights, cross-attention weights); weights only with ``need_weights``.

        ``mask`` and ``context_mask`` are boolean key masks (``build_attention_mask``) for ``x`` and ``context``.
        """
        if self.cross_attn is None and context is not None:
            raise ValueError("this block has no cross-attention (config.add_cross_attention=False); pass no context=")
        cross_weights = None
        if self.norm_first:
            a, weights = self.attn(self.attn_norm(x), mask, need_weights)
            x = x + self.dropout(a)
            if self.cross_attn is not None:
                c, cross_weights = self.cross_attn(self.cross_norm(x), context_mask, need_weights, context)
                x = x + self.dropout(c)
            x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        else:
            a, weights = self.attn(x, mask, need_weights)
            x = self.attn_norm(x + self.dropout(a))
            if self.cross_attn is not None:
                c, cross_weights = self.cross_attn(x, context_mask, need_weights, context)
                x = self.cross_norm(x + self.dropout(c))
            x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return x, weights, cross_weights


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, std) for weights, zeros for biases, ones for LayerNorm scales."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class TransformerEncoder(nn.Module):
    """Embeddings -> ``num_layers`` blocks (-> final LayerNorm when pre-LN).

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
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm_first else nn.Identity()
        )
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        inputs: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        **embedding_kwargs: torch.Tensor | None,
    ) -> EncoderOutput:
        """``inputs`` go to the embedding (token ids for text); ``attention_mask`` is (B, S), 1 for real tokens.
        With ``add_cross_attention``: ``context`` (B, Sk, H), the sequence every layer attends to, and
        ``context_mask`` (B, Sk), 1 for its real tokens.

        Pass ``attention_mask=None`` (``context_mask=None``) when a batch has no padding: the collators do, so SDPA
        can use flash.
        """
        cross = self.config.add_cross_attention
        if cross and context is None:
            raise ValueError("a fusion encoder (add_cross_attention=True) needs context=, the (B, Sk, H) it attends to")
        if not cross and (context is not None or context_mask is not None):
            raise ValueError("context= is for encoders with add_cross_attention=True; this one has no cross-attention")
        if cross and context.shape[-1] != self.config.hidden_size:
            raise ValueError(f"context has width {context.shape[-1]}, the encoder's hidden_size is "
                             f"{self.config.hidden_size}; project it to hidden_size first")
        x = self.embeddings(inputs, **embedding_kwargs)
        mask = build_attention_mask(attention_mask, self.config.causal, x.shape[1])
        key_mask = build_attention_mask(context_mask, False, context.shape[1]) if cross else None  # (B, 1, 1, Sk)
        attentions = [] if output_attentions else None
        cross_attentions = [] if output_attentions and cross else None
        recompute = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:  # non-reentrant; the RNG state is replayed, so dropout masks match the first forward
                x, weights, cross_weights = checkpoint(
                    layer, x, mask, output_attentions, context, key_mask, use_reentrant=False
                )
            else:
                x, weights, cross_weights = layer(x, mask, output_attentions, context, key_mask)
            if attentions is not None:
                attentions.append(weights)
            if cross_attentions is not None:
                cross_attentions.append(cross_weights)
        x = self.final_norm(x)
        return EncoderOutput(
            x,
            tuple(attentions) if attentions is not None else None,
            tuple(cross_attentions) if cross_attentions is not None else None,
        )


def num_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
