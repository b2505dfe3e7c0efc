"""A failed command takes back the run directory (``version_N``) it made while that holds nothing of a result, so
the run after it is not ``version_N+1`` beside an empty one: ``claim_log_dirs`` before anything is written,
``saved_checkpoints`` and ``remove_if_unused`` after the failure. When in doubt, a directory is kept."""

from __future__ import annotations

import os
import socket
from typing import Any

from bigmodel.run.directory import RunLock
from bigmodel.run.log_versions import claim_log_versions

SETUP_FILES = ("config.yaml", "hparams.yaml")  # what a command writes before it computes anything
SETUP_SCALARS = ("params/",)  # the model's size, logged as a fit starts


def claim_log_dirs(trainer: Any) -> list[tuple[str, str]]:
    """This command's TensorBoard/CSV log directories, each with the topmost of its parents it made or will make:
    what a failed command may take back. The ``version_N`` it claims now (``claim_log_versions``), and those of a
    ``version`` given in the config that are not on disk yet (so nobody else's). Before anything is written; only
    local paths."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    created = claim_log_versions(trainer.loggers)
    for logger in trainer.loggers:
        path = os.fspath(logger.log_dir) if isinstance(logger, (TensorBoardLogger, CSVLogger)) else None
        if path is None or "://" in path or os.path.lexists(path):
            continue
        if any(os.path.abspath(path).startswith(claimed + os.sep) for claimed, _ in created):
            continue  # (TensorBoard's sub_dir in a version directory claimed above)
        path = top = os.path.abspath(path)
        while not os.path.lexists(os.path.dirname(top)) and os.path.dirname(top) != top:
            top = os.path.dirname(top)
        created.append((path, top))
    return list(dict.fromkeys(created))


def _remove_empty_parents(path: str, top: str) -> None:
    """The parents of ``path`` up to ``top`` that this command made, while they are empty (rmdir refuses any other:
    another run's files beside ours keep them)."""
    while path != top and os.path.dirname(path) != path:
        path = os.path.dirname(path)
        try:
            os.rmdir(path)
        except OSError:
            return


def remove_if_unused(directory: str) -> bool:
    """Removes ``directory`` when all it holds is what a command writes before its first result (config.yaml,
    hparams.yaml, the tokenizer's copy, event files of this process with nothing but hyper-parameters and the model
    size): a failed command's empty version_N, which would push the next run to version_N+1. Anything else -- a
    metric, a figure, a file of another process or of the user -- keeps it whole. True when it was removed."""
    files, dirs = [], []
    for root, subdirs, names in os.walk(directory):
        if any(os.path.islink(os.path.join(root, d)) for d in subdirs):
            return False
        files += [os.path.join(root, n) for n in names]
        dirs.append(root)
    if not all(_setup_file(path) for path in files):
        return False
    try:
        for path in files:
            os.remove(path)
        for path in reversed(dirs):  # deepest first; rmdir refuses one that something new was written into
            os.rmdir(path)
    except OSError:
        return False
    return True


def _setup_file(path: str) -> bool:
    name = os.path.basename(path)
    if os.path.islink(path):
        return False
    if name in SETUP_FILES or os.path.basename(os.path.dirname(path)) == "tokenizer":
        return True  # (the tokenizer: TokenizerCheckpoint writes the same files beside the checkpoints)
    if name.startswith("events.out.tfevents.") and f".{socket.gethostname()}.{os.getpid()}." in name:
        return _setup_events(path)
    if name == "metrics.csv":  # CSVLogger
        return _setup_csv(path)
    return False


def _setup_events(path: str) -> bool:
    """An event file of nothing but hyper-parameters (Lightning's hparams summaries and its hp_metric -1
    placeholder) and the model size."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    try:
        for event in EventFileLoader(path).Load():
            if event.HasField("file_version"):
                continue
            if not event.HasField("summary"):
                return False  # a graph, a session log...
            for value in event.summary.value:
                placeholder = value.tag == "hp_metric" and value.HasField("simple_value") and value.simple_value == -1
                if not (value.metadata.plugin_data.plugin_name == "hparams" or placeholder
                        or value.tag.startswith(SETUP_SCALARS)):
                    return False
    except Exception:  # noqa: BLE001 - unreadable: keep it
        return False
    return True


def _setup_csv(path: str) -> bool:
    """A CSVLogger ``metrics.csv`` of nothing but the model size."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as rows:
            return all(not value or (isinstance(key, str) and (key in ("step", "epoch") or key.startswith(SETUP_SCALARS)))
                       for row in csv.DictReader(rows) for key, value in row.items())
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def saved_checkpoints(trainer: Any) -> bool:
    """Whether this command saved a checkpoint: its checkpoint IO says so, else (another IO, FSDP's sharded
    checkpoints) what the checkpoint callbacks hold -- which a resumed run restores: in doubt, a save."""
    from bigmodel.run.checkpoint_io import AtomicCheckpointIO

    io = trainer.strategy.checkpoint_io
    return (isinstance(io, AtomicCheckpointIO) and io.saved_any) or any(
        getattr(cb, "best_model_path", "") or getattr(cb, "last_model_path", "") for cb in trainer.checkpoint_callbacks)


def take_back(trainer: Any, new_dirs: list[tuple[str, str]], own_fit_lock: bool) -> None:
    """After a failed command: removes the log directories it made (``new_dirs``, with the empty parents it made)
    unless it saved a checkpoint, or a fit
    of this run name holds its lock in another process (``own_fit_lock``: this command is that fit), or a directory
    holds anything but setup files."""
    if not new_dirs or trainer is None or saved_checkpoints(trainer):
        return
    locks = [cb.dirpath for cb in trainer.checkpoint_callbacks if cb.dirpath]
    if not own_fit_lock and any(RunLock.held_elsewhere(d) for d in locks):
        return
    for log_dir, top in new_dirs:
        if remove_if_unused(log_dir):  # only the log directory's own files; above it, empty directories only
            _remove_empty_parents(log_dir, top)
