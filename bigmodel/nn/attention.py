"""Attention and what it is given: the boolean masks (padding, causal, sliding windows, packed documents), rotary
positions, the unpadded layout of a padded batch, and the two computation paths with one set of weights --
``F.scaled_dot_product_attention`` (fused kernels; flash when there is no mask) and an explicit
softmax(QK^T/sqrt(d_k))V that also returns the attention weights. The same class does cross-attention (queries from
``x``, keys and values from a ``context`` sequence) through the same two paths. ``bigmodel.nn.encoder`` stacks it
into blocks.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bigmodel.nn.config import EncoderConfig
from bigmodel.nn.dropout import dropout, uses_cheap_mask

Rotary = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (B or 1, S, head_dim)


class Unpadded(NamedTuple):
    """Where the real tokens of a padded (B, S) batch are: ``indices`` (T,) into its flattened B * S places. The
    unpadded path keeps hidden states as (T, H) and re-pads q, k, v for attention only (``pad``/``unpad``)."""

    indices: torch.Tensor
    batch: int
    seq_len: int

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> "Unpadded":
        return cls(attention_mask.flatten().nonzero().squeeze(1), *attention_mask.shape)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (B, S, ...), zeros at the padding."""
        out = x.new_zeros(self.batch * self.seq_len, *x.shape[1:]).index_copy(0, self.indices, x)
        return out.view(self.batch, self.seq_len, *x.shape[1:])

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) -> (T, ...)."""
        return x.flatten(0, 1).index_select(0, self.indices)


def build_attention_mask(
    attention_mask: torch.Tensor | None,
    causal: bool,
    seq_len: int,
    window: int | None = None,
    document_ids: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Boolean mask, True where a query may attend to a key; None when nothing is masked (keeps SDPA on flash).

    ``attention_mask`` is (B, S) with 1/True for real tokens. The result broadcasts to (B, heads, S, S) without
    materialising it: (B, 1, 1, S) for padding alone, (B, 1, S, S) for padding plus causal. The other rules compose
    with it by "and": ``window`` (a whole sliding window: query i sees keys j with |i - j| <= window // 2, ModernBERT's
    and Hugging Face's rule) and ``document_ids`` (B, S) (a packed block: tokens see only their own document).
    ``device``: where the window and causal parts are made (the inputs' device).
    """
    parts: list[torch.Tensor] = []
    if attention_mask is not None:
        parts.append(attention_mask.bool()[:, None, None, :])
    if document_ids is not None:
        parts.append((document_ids[:, :, None] == document_ids[:, None, :])[:, None])
    if window is not None:
        i = torch.arange(seq_len, device=device)
        parts.append((i[:, None] - i[None, :]).abs() <= window // 2)
    if not parts:
        return None  # causal alone: SDPA's is_causal
    if causal:
        parts.append(torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril())
    mask = parts[0]
    for part in parts[1:]:
        mask = mask & part
    return mask


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> Rotary:
    """RoPE's (cos, sin) for ``positions`` (B or 1, S): angle pos / theta^(2i/d), each frequency used for the two
    halves of the head (the GPT-NeoX/Hugging Face layout that ModernBERT uses), in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    freqs = positions[..., None].float() * inv_freq  # (B, S, d/2)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates each pair (x_i, x_{i+d/2}) of ``x`` (B, h, S, d) by its position's angle; ``cos``/``sin`` (B, S, d)."""
    cos, sin = cos[:, None], sin[:, None]
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def document_positions(document_ids: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 where each document of a packed block starts: (B, S) -> (B, S)."""
    index = torch.arange(document_ids.shape[1], device=document_ids.device).expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    return index - torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values


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
        return dropout(weights, dropout_p) @ v, weights
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
        qkv_bias = config.qkv_bias and config.bias
        if cross:
            self.q = nn.Linear(config.hidden_size, config.hidden_size, bias=qkv_bias)
            self.kv = nn.Linear(config.hidden_size, 2 * config.hidden_size, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
        context: torch.Tensor | None = None,
        rotary: Rotary | None = None,
        unpadded: Unpadded | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, S, H); ``context`` (B, Sk, H) for cross-attention. ``mask`` (True = may attend) broadcasts to
        (B, heads, S, Sk), Sk = S without context; with context it masks the context's padding. ``rotary``: RoPE's
        (cos, sin) for self-attention's q and k (cross-attention's context has no positions of ours).
        ``unpadded``: ``x`` is (T, H), the real tokens of a padded batch; q, k, v are projected for those alone and
        re-padded for attention with the padded batch's ``mask`` and ``rotary``, so each sequence attends to itself."""
        H = x.shape[-1]
        B, S = (unpadded.batch, unpadded.seq_len) if unpadded is not None else x.shape[:2]
        if context is None:
            if self.cross:
                raise ValueError("cross-attention needs context=: the (B, Sk, H) sequence of its keys and values")
            qkv = self.qkv(x)
            if unpadded is not None:
                qkv = unpadded.pad(qkv)
            q, k, v = qkv.view(B, S, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            if rotary is not None:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        else:
            if not self.cross:
                raise ValueError("self-attention takes no context=; Attention(config, cross=True) attends to one")
            if unpadded is not None:
                raise ValueError("cross-attention runs on padded batches; pass no unpadded=")
            Sk = context.shape[1]
            q = self.q(x).view(B, S, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, S, D)
            kv = self.kv(context).view(B, Sk, 2, self.num_heads, self.head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, Sk, D) each
        dropout_p = self.dropout_p if self.training else 0.0
        weights = None
        if need_weights:
            out, weights = explicit_attention(q, k, v, mask, self.causal, dropout_p)
        elif uses_cheap_mask(q, dropout_p):  # SDPA with dropout on CPU is this math with a dearer mask (nn/dropout.py)
            out = explicit_attention(q, k, v, mask, self.causal, dropout_p)[0]
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=self.causal and mask is None
            )  # (B, h, S, D)
        out = out.transpose(1, 2).reshape(B, S, H)
        if unpadded is not None:
            out = unpadded.unpad(out)
        return self.proj(out), weights
