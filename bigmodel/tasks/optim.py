"""The one optimiser setup: AdamW with decay/no-decay parameter groups, linear warmup then a decay schedule."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers import get_scheduler

Schedule = Literal["linear", "cosine", "constant"]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, LayerNorm weights and other 1-d parameters (BERT's recipe), nor on what the
    model lists in ``no_weight_decay()`` (timm's convention: a ViT's [CLS] token and position embeddings)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and name not in skip else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    schedule: Schedule,
    warmup: float,
    total_steps: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """``warmup`` below 1 is a fraction of ``total_steps``, otherwise a number of steps."""
    # Not fused: Lightning refuses gradient clipping with optimizers that unscale internally (fused=True).
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[schedule]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    return optimizer, scheduler
