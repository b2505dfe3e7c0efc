"""Checkpoint files that are either complete or absent.

Lightning's ``_atomic_save`` stages the file through fsspec, whose local transaction writes a temporary file in
the system temp directory and moves it into place: across filesystems (local /tmp, checkpoints on NFS) that move
is a copy, and a kill during it leaves a truncated checkpoint. Here the temporary file sits beside the target and
``os.replace`` swaps it in, which is atomic on POSIX filesystems. Remote URLs keep Lightning's path.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = os.fspath(path)
        if "://" in path:
            return super().save_checkpoint(checkpoint, path, storage_options)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
