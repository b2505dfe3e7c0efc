"""What a command says about its run beside its results: where they were written, a results directory that a
setting did not move, results of a model no checkpoint was given to."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from bigmodel.run import directory as runs


def say_root_dir_unused(root: str | None, directory: str | None) -> None:
    """Lightning puts logs and checkpoints under ``default_root_dir`` only for a logger without a directory of
    its own; bigmodel's logger has one (``runs``), so ``--trainer.default_root_dir`` alone moves nothing."""
    if root is None or directory is None:
        return
    root, run = os.path.abspath(os.fspath(root)), os.path.abspath(os.path.dirname(directory))
    if os.path.commonpath([root, run]) != root:
        rank_zero_warn(f"--trainer.default_root_dir {root}: this run's logs and checkpoints go to the logger's "
                       f"directory {run}; give --trainer.logger.init_args.save_dir to put them under {root}")


def no_weights_note(subcommand: str, config: Any, model: Any) -> str | None:
    """A validate/test/predict given neither ``--ckpt_path`` nor ``init_from`` ran the model as drawn: its results
    are a random model's, which a forgotten ``--ckpt_path`` would otherwise pass off as the run's."""
    if config.get("ckpt_path") is not None or getattr(model, "_loaded_from", None):
        return None
    best = os.path.join(runs.checkpoint_dir(config) or "runs/<name>/checkpoints", "best.ckpt")
    return (f"{subcommand} without --ckpt_path or init_from: these results are a randomly initialised model's; "
            f"give the trained one with --ckpt_path (e.g. --ckpt_path {best})")


def say_where(metrics_file: str | None) -> None:
    """Each test/validate opens a new version directory: name it and what is in it."""
    if metrics_file:
        directory = os.path.dirname(metrics_file)
        files = sorted(f for f in os.listdir(directory) if f.endswith((".json", ".csv")))
        rank_zero_info(f"Wrote {', '.join(files)} and the TensorBoard logs to {directory}")
