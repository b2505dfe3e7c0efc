"""The one optimiser setup: AdamW with decay/no-decay parameter groups, linear warmup then a decay schedule."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers import get_scheduler

from bigmodel.nn.peft import layer_id

Schedule = Literal["linear", "cosine", "constant"]


def parameter_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                     layer_decay: float = 1.0) -> list[dict]:
    """No weight decay on biases, LayerNorm weights and other 1-d parameters (BERT's recipe), nor on what the
    model lists in ``no_weight_decay()`` (timm's convention: a ViT's [CLS] token and position embeddings). Frozen
    parameters are left out (no optimizer state for them). ``layer_decay`` < 1: layer-wise learning-rate decay
    (ELECTRA, BEiT): a parameter at depth d of L + 1 (``bigmodel.nn.peft.layer_id``) trains at
    ``lr * layer_decay ** (L + 1 - d)``, the head at ``lr``, the embeddings lowest."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    num_layers = 1 + max((int(n.split("layers.")[1].split(".")[0]) for n, _ in named
                          if "layers." in n and n.split("layers.")[1].split(".")[0].isdigit()), default=-1)
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in named:
        decay = p.ndim >= 2 and name not in skip
        depth = layer_id(name, num_layers) if layer_decay != 1.0 else 0
        group = groups.setdefault((decay, depth), {"params": [], "weight_decay": weight_decay if decay else 0.0})
        if layer_decay != 1.0:
            group["lr"] = lr * layer_decay ** (num_layers + 1 - depth)
        group["params"].append(p)
    if layer_decay == 1.0:  # the two groups every caller knows, in this order
        return [groups.get((True, 0), {"params": [], "weight_decay": weight_decay}),
                groups.get((False, 0), {"params": [], "weight_decay": 0.0})]
    return [groups[key] for key in sorted(groups, key=lambda k: (k[1], not k[0]))]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    schedule: Schedule,
    warmup: float,
    total_steps: int,
    layer_decay: float = 1.0,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """``warmup`` below 1 is a fraction of ``total_steps``, otherwise a number of steps."""
    # Not fused: Lightning refuses gradient clipping with optimizers that unscale internally (fused=True).
    groups = parameter_groups(model, weight_decay, lr, layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[schedule]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    return optimizer, scheduler
