"""Parameter-efficient fine-tuning on the shared encoder, text and images alike: LoRA, BitFit and linear probes.

LoRA (Hu et al., 2021) adds a trainable low-rank update ``scaling * B @ A`` to chosen linear layers of a frozen
encoder; ``B`` starts at zero, so a LoRA model computes exactly what its base does until the first step. The LoRA
layer *is* an ``nn.Linear`` holding the base's own ``weight``/``bias`` Parameters under the same names, plus
``lora_a``/``lora_b``: checkpoints of the base load into it unchanged, and the Hugging Face name tables still apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Finetune = Literal["full", "linear_probe", "pooler_probe", "bitfit", "lora"]
# the encoder's linear layers: attention in/out, FFN up/down, and a cross-attention layer's q (over x) and kv (over
# its context); proj names the output of both kinds of attention
LORA_TARGETS = ("qkv", "proj", "up", "down", "q", "kv")


@dataclass
class LoRAConfig:
    """rank: of the update; alpha: its scale is alpha / rank (so changing the rank keeps the update's size);
    dropout: on the update's input; targets: which of the encoder's linear layers get one (``qkv``, ``proj``,
    ``up``, ``down``; in a fusion encoder's cross-attention also ``q`` and ``kv``)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv", "proj")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")
        unknown = sorted(set(self.targets) - set(LORA_TARGETS))
        if unknown or not self.targets:
            raise ValueError(f"lora.targets {list(self.targets)}: choose from {', '.join(LORA_TARGETS)}")


class LoRALinear(nn.Linear):
    """``base(x) + scaling * B(A(dropout(x)))``, sharing ``base``'s Parameters (no copy)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate a second weight
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises; B = 0 keeps outputs
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_a), self.lora_b)
        return F.linear(x, self.weight, self.bias) + self.scaling * update

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the update folded into its weight."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight + self.scaling * (self.lora_b @ self.lora_a))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.weight.requires_grad_(self.weight.requires_grad)
        if self.bias is not None:
            linear.bias.requires_grad_(self.bias.requires_grad)
        return linear


def add_lora(module: nn.Module, config: LoRAConfig) -> list[str]:
    """Replaces the targeted ``nn.Linear`` layers of ``module`` by LoRA layers (idempotent); returns their names."""
    names = []
    for name, child in list(module.named_modules()):
        if type(child) is nn.Linear and name.rsplit(".", 1)[-1] in config.targets:
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent), attr, LoRALinear(child, config.rank, config.alpha, config.dropout))
            names.append(name)
        elif isinstance(child, LoRALinear):
            names.append(name)
    if not names:
        raise ValueError(f"lora.targets {list(config.targets)} match no linear layer of {type(module).__name__}")
    return names


def merge_lora(module: nn.Module) -> int:
    """Folds every LoRA update into its base weight (plain ``nn.Linear`` layers again); returns how many."""
    found = [(name, child) for name, child in module.named_modules() if isinstance(child, LoRALinear)]
    for name, child in found:
        parent, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent), attr, child.merged())
    return len(found)


def merge_lora_state(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """The same fold on a state dict (``x.weight += scaling * x.lora_b @ x.lora_a``; LoRA entries dropped), for
    exporting a checkpoint without building its model."""
    merged = {k: v for k, v in state.items() if ".lora_" not in k}
    for key in state:
        if key.endswith(".lora_a"):
            prefix = key[: -len("lora_a")]
            weight = merged[prefix + "weight"]
            update = state[prefix + "lora_b"].float() @ state[key].float()
            merged[prefix + "weight"] = (weight.float() + scaling * update).to(weight.dtype)
    return merged


def set_trainable(model: nn.Module, finetune: Finetune, encoder: str = "encoder") -> None:
    """Which parameters train: ``full`` all; ``linear_probe`` and ``pooler_probe`` all but the encoder's (the head:
    one linear layer, or BERT's tanh pooler and one, as the classifier's pooling says); ``bitfit`` the encoder's
    biases and everything outside the encoder (the head); ``lora`` the LoRA updates and the head."""
    prefix = encoder + "."
    for name, p in model.named_parameters():
        inside = name.startswith(prefix)
        if finetune == "full" or not inside:
            p.requires_grad_(True)
        elif finetune in ("linear_probe", "pooler_probe"):
            p.requires_grad_(False)
        elif finetune == "bitfit":
            p.requires_grad_(name.endswith("bias"))
        elif finetune == "lora":
            p.requires_grad_(".lora_" in name)
        else:
            raise ValueError(f"finetune {finetune!r}: choose full, linear_probe, pooler_probe, bitfit or lora")


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise learning-rate decay: embeddings 0, encoder layer i -> i + 1, anything
    above the encoder (final norm, pooler, head) ``num_layers + 1``."""
    parts = name.split(".")
    if "layers" in parts:
        index = parts.index("layers") + 1
        if index < len(parts) and parts[index].isdigit():
            return int(parts[index]) + 1
    if "embeddings" in parts or "embed" in name:
        return 0
    return num_layers + 1
