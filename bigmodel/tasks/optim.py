"""The one optimiser setup: AdamW with decay/no-decay parameter groups, linear warmup then a decay schedule (or
warmup-stable-decay: constant after warmup, decaying to zero only over the last steps)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn
from transformers import get_scheduler
from transformers.optimization import get_wsd_schedule

from bigmodel.nn.peft import decay_exponents

Schedule = Literal["linear", "cosine", "constant", "wsd", "wsd_sqrt"]
# warmup-stable-decay's final decay to zero: linear, or 1 - sqrt(progress) (Hagele et al., 2024; ModernBERT's)
WSD_DECAY = {"wsd": "linear", "wsd_sqrt": "1-sqrt"}


def parameter_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                     layer_decay: float = 1.0) -> list[dict]:
    """No weight decay on biases, LayerNorm weights and other 1-d parameters (BERT's recipe), nor on what any of
    the model's modules lists in ``no_weight_decay()`` (timm's convention: a ViT's [CLS] token and position
    embeddings, wherever the ViT sits: a classifier's backbone, an image-text model's image tower). Frozen
    parameters are left out (no optimizer state for them). ``layer_decay`` < 1: layer-wise learning-rate decay
    (ELECTRA, BEiT): encoder layer i of L trains at ``lr * layer_decay ** (L - i)``, the embeddings at
    ``layer_decay ** (L + 1)``, the head at ``lr``; each encoder stack of a multi-tower model counts from its own top
    (``bigmodel.nn.peft.decay_exponents``; depths from the architecture, frozen parameters included)."""
    skip = no_weight_decay_names(model)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    steps_down = decay_exponents(name for name, _ in model.named_parameters()) if layer_decay != 1.0 else {}
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in named:
        decay = p.ndim >= 2 and name not in skip
        down = steps_down.get(name, 0)
        group = groups.setdefault((decay, down), {"params": [], "weight_decay": weight_decay if decay else 0.0})
        if layer_decay != 1.0:
            group["lr"] = lr * layer_decay ** down
        group["params"].append(p)
    if layer_decay == 1.0:  # the two groups every caller knows, in this order
        return [groups.get((True, 0), {"params": [], "weight_decay": weight_decay}),
                groups.get((False, 0), {"params": [], "weight_decay": 0.0})]
    return [groups[key] for key in sorted(groups, key=lambda k: (-k[1], not k[0]))]


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """The full names of the parameters that ``model`` or any submodule lists in its ``no_weight_decay()``."""
    return {f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
            if callable(getattr(module, "no_weight_decay", None)) for name in module.no_weight_decay()}


def fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch has a fused AdamW kernel for every parameter (CPU and CUDA do, for floating dtypes)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a private helper: fall back to the two devices every recent torch supports
        devices = {"cpu", "cuda"}
    params = list(params)
    return bool(params) and all(p.device.type in devices and p.is_floating_point() for p in params)


def adamw(groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over all parameters) where torch supports the parameters' device, else foreach.
    ``fused=None`` decides by the parameters; ``False`` forces foreach."""
    if fused is None:
        fused = fused_supported(p for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **({"fused": True} if fused else {"foreach": True}))


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
    fused: bool | None = None,
    decay: float = 0.1,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """``warmup`` below 1 is a fraction of ``total_steps``, otherwise a number of steps; so is ``decay``, the final
    decay of the warmup-stable-decay schedules (``wsd``, ``wsd_sqrt``: linear warmup, the peak ``lr`` held, then
    down to zero over the last ``decay`` steps -- ModernBERT's trapezoid). ``fused``: see ``adamw`` (the tasks clip
    gradients themselves, so Lightning's refusal to clip for fused optimizers does not apply)."""
    groups = parameter_groups(model, weight_decay, lr, layer_decay)
    optimizer = adamw(groups, lr, betas, eps, fused)
    warmup_steps = steps(warmup, total_steps)
    if schedule in WSD_DECAY:
        decay_steps = steps(decay, total_steps)
        if decay < 0 or warmup_steps + decay_steps > total_steps:
            raise ValueError(f"schedule {schedule}: warmup ({warmup_steps} steps) and decay ({decay_steps} steps) "
                             f"must fit in the run's {total_steps} steps; shorten warmup or decay")
        return optimizer, get_wsd_schedule(optimizer, warmup_steps, decay_steps, total_steps,
                                           decay_type=WSD_DECAY[schedule])
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[schedule]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    return optimizer, scheduler


def steps(length: float, total_steps: int) -> int:
    """A schedule phase's length: below 1 a fraction of ``total_steps``, otherwise a number of steps."""
    return int(length * total_steps) if length < 1 else int(length)


def schedule_change(old_steps: int, step: int, old_lr: float, new_steps: int, scheduler: object) -> str:
    """What a resumed fit says when its schedule is built for ``new_steps`` instead of the checkpoint's
    ``old_steps``: recomputed over the new length from the resumed ``step``, with the lr jump where the scheduler is a
    LambdaLR (as every ``build_optimizer`` schedule is)."""
    rules = getattr(scheduler, "lr_lambdas", None)
    jump = "" if rules is None else \
        f" (lr jumps from {old_lr:.3g} to {max(b * r(step) for b, r in zip(scheduler.base_lrs, rules)):.3g})"
    return (f"the learning-rate schedule was built for {old_steps} steps; this fit runs {new_steps}: it is recomputed "
            f"over {new_steps} steps from step {step}{jump}")


def optimizer_steps(trainer: Any) -> float:
    """The optimizer steps of a fit, the length its lr schedule is built for: Lightning's estimate, which takes a
    GradientAccumulationScheduler's accumulation for 1 (a schedule k times too long, whose lr never came down),
    counted epoch by epoch with the callback's accumulation."""
    from lightning.pytorch.callbacks import GradientAccumulationScheduler

    total = trainer.estimated_stepping_batches  # (sets up the training data: num_training_batches below)
    gas = next((cb for cb in trainer.callbacks if isinstance(cb, GradientAccumulationScheduler)), None)
    epochs, batches = trainer.max_epochs, trainer.num_training_batches
    if gas is None or not math.isfinite(total) or epochs is None or epochs < 0 or not math.isfinite(batches):
        return total
    steps = sum(math.ceil(batches / gas.get_accumulate_grad_batches(epoch)) for epoch in range(epochs))
    return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps
