"""Checkpoint files that are either complete or absent.

Lightning's ``_atomic_save`` stages the file through fsspec, whose local transaction writes a temporary file in
the system temp directory and moves it into place: across filesystems (local /tmp, checkpoints on NFS) that move
is a copy, and a kill during it leaves a truncated checkpoint. Here the temporary file sits beside the target and
``os.replace`` swaps it in, which is atomic on POSIX filesystems. Remote URLs keep Lightning's path.

``before_first_replace`` runs once, after the first new file is completely written and before it replaces
anything: a fresh fit moves an earlier run's checkpoints aside there, so a run that fails (or a disk that fills)
before its first checkpoint leaves the earlier ones where they were.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    before_first_replace: Callable[[str], None] | None = None
    saved_any = False  # whether this process saved a checkpoint (a failed command then keeps its run directory)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = os.fspath(path)
        if "://" in path:
            super().save_checkpoint(checkpoint, path, storage_options)
            self.saved_any = True
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                writer = _Writer(f, path)
                try:
                    torch.save(checkpoint, writer)
                except RuntimeError as err:  # torch reports a failed write (full disk, quota) without its cause
                    if writer.error is not None:
                        raise writer.error from err
                    raise
                f.flush()
                os.fsync(f.fileno())
            if self.before_first_replace is not None:
                self.before_first_replace(path)
                self.before_first_replace = None
            os.replace(tmp, path)
            self.saved_any = True
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class _Writer:
    """Passes writes through and keeps the OSError of a failed one, which torch.save would turn into a bare
    'unexpected pos' RuntimeError: the CLI can then say 'No space left on device' and name the file."""

    def __init__(self, file: Any, path: str) -> None:
        self.file, self.path, self.error = file, path, None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = OSError(err.errno, err.strerror, self.path)
            raise

    def flush(self) -> None:
        self.file.flush()
