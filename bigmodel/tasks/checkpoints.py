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
