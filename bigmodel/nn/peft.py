"""Parameter-efficient fine-tuning on the shared encoder, text and images alike: LoRA, BitFit and linear probes.

LoRA (Hu et al., 2021) adds a trainable low-rank update ``scaling * B @ A`` to chosen projections of a frozen
encoder; ``B`` starts at zero, so a LoRA model computes exactly what its base does until the first step. The LoRA
layer *is* an ``nn.Linear`` holding the base's own ``weight``/``bias`` Parameters under the same names, plus
``lora_a``/``lora_b``: checkpoints of the base load into it unchanged, and the Hugging Face name tables still apply.

Targets name projections, as peft's ``target_modules`` and litgpt's flags do: ``q``, ``k``, ``v`` (self-attention's
and, in a fusion encoder, cross-attention's), ``proj`` (attention output), ``up``/``down`` (FFN). bigmodel fuses q, k
and v into one ``qkv`` layer (``kv`` in cross-attention), so each targeted projection gets its own rank-r update on
its slice of the fused output (litgpt's ``LoRAQKVLinear``, loralib's ``MergedLinear``): r = 8 on q, k, v is three
rank-8 updates, as three separate layers would have. ``qkv`` and ``kv`` stay accepted as aliases of [q, k, v] and
[k, v]; in a fusion encoder ``q`` and ``kv`` reach self-attention's slices too (before per-projection updates they
named cross-attention's layers alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Finetune = Literal["full", "linear_probe", "pooler_probe", "bitfit", "lora"]
LORA_TARGETS = ("q", "k", "v", "proj", "up", "down")
LORA_ALIASES = {"qkv": ("q", "k", "v"), "kv": ("k", "v")}
# the encoder's fused linear layers -> the projections they stack along their output, in order
FUSED = {"qkv": ("q", "k", "v"), "kv": ("k", "v")}


@dataclass
class LoRAConfig:
    """rank: of each projection's update; alpha: the update's scale is alpha / rank (so changing the rank keeps the
    update's size), or alpha / sqrt(rank) with ``rslora`` (Kalajdzievski, 2023: rank-stabilised, for large ranks);
    dropout: on the update's input; targets: which projections get one (``q``, ``k``, ``v``, ``proj``, ``up``,
    ``down``; ``qkv`` and ``kv`` are aliases of [q, k, v] and [k, v]). The default [q, v] is the LoRA paper's."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")
    rslora: bool = False

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:  # alpha 0 scales the update to nothing: only the head would learn
            raise ValueError(f"lora.alpha must be > 0 (the update is scaled by alpha / rank), got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        named = list(self.targets)
        unknown = sorted(set(named) - set(LORA_TARGETS) - set(LORA_ALIASES))
        if unknown or not named:
            raise ValueError(f"lora.targets {named}: choose from {', '.join(LORA_TARGETS)} (qkv = [q, k, v], "
                             "kv = [k, v])")
        expanded = [t for name in named for t in LORA_ALIASES.get(name, (name,))]
        self.targets = tuple(dict.fromkeys(expanded))  # aliases expanded, order kept, duplicates dropped

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def layout(self, layer: str) -> tuple[int, tuple[int, ...]]:
        """For a linear layer called ``layer``: how many projections it stacks along its output, and which of them
        (indices) get an update; none when it is not a target."""
        parts = FUSED.get(layer, (layer,))
        return len(parts), tuple(i for i, name in enumerate(parts) if name in self.targets)


def lora_delta(a: torch.Tensor, b: torch.Tensor, slices: tuple[int, ...], parts: int) -> torch.Tensor:
    """The unscaled update as a weight (out, in): ``B_i @ A_i`` in the rows of slice ``slices[i]``, zero in the
    others. ``a`` stacks the A_i (k * r, in), ``b`` the B_i (k * d, r)."""
    k = len(slices)
    rank, size = a.shape[0] // k, b.shape[0] // k
    blocks = torch.bmm(b.reshape(k, size, rank), a.reshape(k, rank, -1))  # (k, d, in)
    if k == parts:
        return blocks.flatten(0, 1)
    delta = blocks.new_zeros(parts, size, a.shape[1])
    delta[list(slices)] = blocks
    return delta.flatten(0, 1)


def _per_slice_a(a: torch.Tensor, rank: int, k: int) -> torch.Tensor:
    """``a`` as k stacked A_i. A checkpoint from before per-slice updates has one A (rank rows) shared by all of a
    fused layer's slices (and a full-height B): repeating it per slice gives exactly the same update."""
    return a.repeat(k, 1) if k > 1 and a.shape[0] == rank else a


class LoRALinear(nn.Linear):
    """``base(x) + scaling * update(x)``, sharing ``base``'s Parameters (no copy). ``base`` stacks ``parts``
    projections of equal size along its output (3 for a fused qkv); each of ``slices`` gets its own update
    ``B_i A_i``: ``lora_a`` holds the A_i stacked (k * r, in), ``lora_b`` the B_i stacked (k * d, r)."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float = 0.0, parts: int = 1,
                 slices: tuple[int, ...] = (0,)) -> None:
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate a second weight
        if base.out_features % parts or not slices or not set(slices) <= set(range(parts)):
            raise ValueError(f"LoRA slices {slices} of {parts} parts do not fit {base.out_features} outputs")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.scaling, self.parts, self.slices = rank, scaling, parts, tuple(slices)
        k, size = len(self.slices), base.out_features // parts
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(k * rank, base.in_features, **factory))
        self.lora_b = nn.Parameter(torch.zeros(k * size, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear and peft do; B = 0 keeps outputs
        self.lora_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, size = len(self.slices), self.out_features // self.parts
        h = F.linear(self.lora_dropout(x), self.lora_a).unflatten(-1, (k, self.rank))  # (..., k, r)
        update = torch.einsum("...kr,kdr->...kd", h, self.lora_b.view(k, size, self.rank))  # (..., k, d)
        if k < self.parts:  # slices without an update add nothing
            full = update.new_zeros(*update.shape[:-2], self.parts, size)
            full[..., list(self.slices), :] = update
            update = full
        return F.linear(x, self.weight, self.bias) + self.scaling * update.flatten(-2)

    def delta(self) -> torch.Tensor:
        """The update as a weight: ``merged().weight - weight``."""
        return self.scaling * lora_delta(self.lora_a, self.lora_b, self.slices, self.parts)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the update folded into its weight."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight + self.delta())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.weight.requires_grad_(self.weight.requires_grad)
        if self.bias is not None:
            linear.bias.requires_grad_(self.bias.requires_grad)
        return linear

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        key = prefix + "lora_a"
        if key in state_dict:
            state_dict[key] = _per_slice_a(state_dict[key], self.rank, len(self.slices))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def add_lora(module: nn.Module, config: LoRAConfig) -> list[str]:
    """Replaces the targeted ``nn.Linear`` layers of ``module`` by LoRA layers (idempotent); returns their names."""
    names = []
    for name, child in list(module.named_modules()):
        parts, slices = config.layout(name.rsplit(".", 1)[-1])
        if type(child) is nn.Linear and slices:
            parent, _, attr = name.rpartition(".")
            lora = LoRALinear(child, config.rank, config.scaling, config.dropout, parts, slices)
            setattr(module.get_submodule(parent), attr, lora)
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


def merge_lora_state(state: dict[str, torch.Tensor], config: LoRAConfig) -> dict[str, torch.Tensor]:
    """The same fold on a state dict (``x.weight += x``'s update; LoRA entries dropped), for exporting a
    checkpoint without building its model; ``config`` is the run's (which slices of a fused layer have updates)."""
    merged = {k: v for k, v in state.items() if ".lora_" not in k}
    for key in state:
        if key.endswith(".lora_a"):
            prefix = key[: -len("lora_a")]
            parts, slices = config.layout(prefix[:-1].rsplit(".", 1)[-1])
            if not slices:
                raise ValueError(f"{key} is a LoRA update, but lora.targets {list(config.targets)} do not name its "
                                 "layer: pass the run's own LoRA settings")
            weight = merged[prefix + "weight"]
            a = _per_slice_a(state[key].float(), config.rank, len(slices))
            update = lora_delta(a, state[prefix + "lora_b"].float(), slices, parts)
            merged[prefix + "weight"] = (weight.float() + config.scaling * update).to(weight.dtype)
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


def decay_exponents(names: Iterable[str]) -> dict[str, int]:
    """For layer-wise learning-rate decay (ELECTRA, BEiT): parameter name -> how many steps below the top it
    trains (``lr * layer_decay ** exponent``). An encoder stack is the module holding ``layers.<i>`` with its
    embeddings beside them; in a stack of L layers, layer i is L - i steps down and the embeddings L + 1. Each stack
    counts from its own top, so the towers of a multi-tower model (an image tower, a text tower, a fusion encoder)
    each decay as if alone, not against the deepest one. Anything outside the layers and embeddings (final norms,
    poolers, projections, heads) is at the top: 0."""
    names = list(names)
    where: dict[str, tuple[str, int | None]] = {}  # name -> (stack, layer index; None: the embeddings)
    for name in names:
        parts = name.split(".")
        at = parts.index("layers") if "layers" in parts else -1
        if 0 <= at < len(parts) - 1 and parts[at + 1].isdigit():
            where[name] = (".".join(parts[:at]), int(parts[at + 1]))
        else:
            at = next((k for k, part in enumerate(parts) if "embed" in part), None)
            if at is not None:
                where[name] = (".".join(parts[:at]), None)
    depth: dict[str, int] = {}  # stack -> its number of layers
    for stack, index in where.values():
        depth[stack] = max(depth.get(stack, 0), 0 if index is None else index + 1)
    return {name: (depth[where[name][0]] + 1 if where[name][1] is None else depth[where[name][0]] - where[name][1])
            if name in where else 0 for name in names}
