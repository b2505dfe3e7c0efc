"""Reading bigmodel checkpoints for ``init_from``: safely (weights_only), with checks that name the fix."""

from __future__ import annotations

import os
import re
from typing import Any

import torch

META_KEY = "bigmodel"  # checkpoint["bigmodel"] = {"task": ..., "encoder_config": {...}}


def strip_compile_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch.compile saves keys with ``_orig_mod.``; drop it so compiled and eager checkpoints load alike."""
    return {re.sub(r"(^|\.)_orig_mod\.", r"\1", k): v for k, v in state.items()}


def read_checkpoint(path: str, expected_task: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_from checkpoint {path!r} does not exist; point it to a .ckpt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - corrupt, truncated or foreign files all get this message
        raise ValueError(
            f"init_from {path!r} is not a readable checkpoint ({type(err).__name__}); was it fully written?"
        ) from err
    meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
    if meta is None or "state_dict" not in ckpt:
        raise ValueError(f"init_from {path!r} is not a bigmodel checkpoint (no '{META_KEY}' entry)")
    if meta.get("task") != expected_task:
        raise ValueError(
            f"init_from {path!r} is a {meta.get('task')!r} checkpoint; expected a {expected_task!r} one "
            f"(pretrain with bigmodel.tasks.MLMTask first)"
        )
    return ckpt


def submodule_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    state = strip_compile_prefix(state)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_backbone_weights(path: str) -> dict[str, torch.Tensor]:
    """The weights ``init_from`` names for a backbone: a classification checkpoint of this project (its ``net.``),
    a Hugging Face model directory, or a state-dict file (``.safetensors``, or a torch file holding the state dict
    flat or under ``state_dict``/``model``, as torchvision, timm and DeiT save them). Read as data only."""
    if os.path.isdir(path):
        found = [os.path.join(path, f) for f in _HF_WEIGHT_FILES if os.path.isfile(os.path.join(path, f))]
        if not found:
            raise FileNotFoundError(f"init_from directory {path!r} has none of {', '.join(_HF_WEIGHT_FILES)}")
        path = found[0]
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"init_from {path!r} does not exist; point it to a .ckpt/.safetensors/.pth file or a Hugging Face model "
            f"directory (with internet, e.g.: hf download google/vit-base-patch16-224-in21k --local-dir {path})"
        )
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - corrupt, truncated or pickled-code files all get this message
        raise ValueError(
            f"init_from {path!r} is not a readable weights file ({type(err).__name__}); was it fully written?"
        ) from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"init_from {path!r} holds a {type(ckpt).__name__}, not a state dict")
    meta = ckpt.get(META_KEY)
    if meta is not None:
        if meta.get("task") != "classification" or "backbone" not in meta:
            kind = "text classification" if meta.get("task") == "classification" else repr(meta.get("task"))
            raise ValueError(f"init_from {path!r} is a {kind} checkpoint; a backbone needs an image classification "
                             "checkpoint or a pretrained state dict")
        return submodule_state(ckpt["state_dict"], "net.")
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    state = strip_compile_prefix({k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)})
    if not state:
        raise ValueError(f"init_from {path!r} holds no tensors")
    return state
