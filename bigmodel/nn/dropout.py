"""Dropout with a cheaper mask on CPU.

``F.dropout`` draws its mask with ``bernoulli_``, which on CPU costs about 1.65 x drawing uniform numbers and
comparing them (``torch.rand_like(x) >= p``), and ``F.scaled_dot_product_attention`` with a dropout probability
leaves its fused CPU kernel for a math path with that same mask. In the bert-mini MLM step on CPU the two were 21 %
of the time (``bigmodel bench --profile``). Here: the same distribution (each element kept with probability 1 - p,
scaled by 1 / (1 - p)), drawn from the same global generator (so seeding, resume and activation checkpointing's RNG
replay work as before), but not the same random stream as ``F.dropout``: runs with dropout differ from runs of
earlier code in their random draws. On other devices ``F.dropout`` (fused on CUDA). ``CHEAP_CPU_MASK = False``
restores torch's path everywhere (the bench's before/after uses it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHEAP_CPU_MASK = True


class _KeepMask(torch.autograd.Function):
    """x * keep / (1 - p) with keep = uniform >= p; the boolean mask is what the backward keeps."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand_like(x) >= p
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return (x * keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None


def uses_cheap_mask(x: torch.Tensor, p: float, training: bool = True) -> bool:
    """Whether ``dropout`` draws its own mask for ``x`` (CPU, training, 0 < p), which is also when attention takes
    the explicit path rather than SDPA's dropout fallback."""
    return CHEAP_CPU_MASK and training and 0.0 < p and x.device.type == "cpu"


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability {p}: use 0 <= p < 1")
    if uses_cheap_mask(x, p, training):
        return _KeepMask.apply(x, p)
    return F.dropout(x, p, True)


class Dropout(nn.Module):
    """``nn.Dropout`` with ``dropout``'s CPU mask; no parameters or buffers, so state dicts are unchanged."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p}: use 0 <= p < 1")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
