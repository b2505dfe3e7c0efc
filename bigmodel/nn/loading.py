"""Loading weights trained elsewhere into a classifier: everything that fits, a new output layer when the class
count differs, and one clear error for anything else. Shared by the ViT and every other backbone."""

from __future__ import annotations

import torch
from torch import nn


def load_matching(net: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Loads ``state`` into ``net``; the output layer (the last registered weight and bias) may differ in shape or
    be absent and then stays new. Returns notes on what was adapted."""
    own = net.state_dict()
    output = list(own)[-2:]
    reshaped = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    wrong = [k for k in reshaped if k not in output]
    name = type(net).__name__
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"weights do not fit {name}: {k} is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here; build the "
            "backbone as the checkpoint's was (preset, width, patch size, channels)"
        )
    missing, unexpected = net.load_state_dict({k: v for k, v in state.items() if k not in reshaped}, strict=False)
    new_output = [k for k in missing if k in output] + [k for k in reshaped if k in output]
    missing = [k for k in missing if k not in output and ".lora_" not in k]  # LoRA updates are never in a source
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit {name}: unexpected {unexpected[:3]}, missing {missing[:3]}; build the backbone as "
            "the checkpoint's was"
        )
    if not new_output:
        return []
    before = f" (checkpoint: {tuple(state[output[0]].shape)})" if output[0] in state else ""
    return [f"new output layer {output[0].rsplit('.', 1)[0]} for {own[output[0]].shape[0]} classes{before}"]
