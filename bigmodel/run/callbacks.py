"""Callbacks the CLI adds to every run: the tokenizer travels with checkpoints; predictions go to a file."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar, StochasticWeightAveraging
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from bigmodel.run.checkpoint_io import AtomicCheckpointIO
from bigmodel.run.directory import continues_run
from bigmodel.data.tokenizer import CHECKPOINT_KEY, tokenizer_files
from bigmodel.tasks.checkpoints import ARCHIVE
from bigmodel.run.predictions import PredictionWriter, generated_rows  # noqa: F401 (imported from here too)


class TokenizerCheckpoint(Callback):
    """Saves the data module's tokenizer in the run directory, beside the checkpoints and inside each checkpoint,
    so a checkpoint alone is enough to fine-tune with exactly the pretraining vocabulary."""

    def __init__(self) -> None:
        self._files: dict[str, str] | None = None

    @staticmethod
    def _tokenizer(trainer: L.Trainer):
        return getattr(trainer.datamodule, "tokenizer", None) if trainer.datamodule is not None else None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tokenizer = self._tokenizer(trainer)
        if tokenizer is None:
            return
        self._files = tokenizer_files(tokenizer)
        dirs = [trainer.log_dir] + [cb.dirpath for cb in trainer.checkpoint_callbacks if cb.dirpath]  # collective
        if trainer.is_global_zero:
            for d in dict.fromkeys(d for d in dirs if d):
                tokenizer.save_pretrained(os.path.join(d, "tokenizer"))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._files is not None:
            checkpoint[CHECKPOINT_KEY] = self._files


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, but ``last.ckpt`` follows every save point (each validation, or each epoch end
    without validation), as its docs describe, not only those where ``best.ckpt`` improved (what Lightning 2.6
    does): a job killed late in a run that stopped improving early must not lose the epochs in between.

    And with saves every N steps or minutes (``every_n_train_steps``, ``train_time_interval``) and a validation
    score to monitor, the best is chosen at each validation, from the weights validated: Lightning chose it at the
    step saves, by the last validation's score, so ``best.ckpt`` held later weights than the score it was chosen by
    (and a validation between saves chose nothing). The step saves write ``last.ckpt``, to resume from (before the
    first validation too). Not with ``save_top_k: -1`` (a file per step save is then what is asked for) nor
    ``save_last: link`` (a link needs a top-k file to point at): Lightning's choice as it is."""

    _between_validations = False

    def _chooses_at_validations(self) -> bool:
        saves_by_time = self._every_n_train_steps >= 1 or self._train_time_interval is not None
        return (saves_by_time and bool(self.monitor) and self.monitor.startswith("val") and self.save_top_k != -1
                and self.save_last != "link")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._chooses_at_validations():
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._between_validations = True  # no top-k here (``_save_topk_checkpoint``); the monitor, and so the
        try:  # state_key a resume finds this callback's state under, stays as it is
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._between_validations = False
        if self._defer_save_until_validation:  # Lightning waited for a fresh score to save at all
            self._defer_save_until_validation = False
            candidates = self._monitor_candidates(trainer)
            validation_next = self.monitor in candidates  # (the epoch's last batch: that validation writes last)
            if self.save_last and not validation_next and not self._should_skip_saving_checkpoint(trainer):
                self._save_last_checkpoint(trainer, candidates)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._after_validation(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._after_validation(trainer)

    def _after_validation(self, trainer: L.Trainer) -> None:
        """At a save point: with saves by steps or time, the best is chosen here (Lightning chooses none here then:
        ``every_n_epochs`` excludes them), and last.ckpt written unless a step save wrote it at this step and the
        top-k files did not change; otherwise last.ckpt follows."""
        if (self._chooses_at_validations() and not trainer.sanity_checking and not trainer.fast_dev_run
                and trainer.state.fn == "fit"):
            candidates = self._monitor_candidates(trainer)
            written, kept = self._last_global_step_saved == trainer.global_step, dict(self.best_k_models)
            self._save_topk_checkpoint(trainer, candidates)  # (also after a step save of this very step)
            if self.save_last and (not written or self.best_k_models != kept):
                self._save_last_checkpoint(trainer, candidates)
        else:
            self._refresh_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Also: StochasticWeightAveraging puts its averaged weights into the model as training ends, after the
        last save (Lightning writes no other, so the averaged model was lost): they are saved as ``swa.ckpt``,
        beside ``last.ckpt``, which keeps the last step's own weights for an exact resume."""
        if trainer.fast_dev_run:  # Lightning 2.6 writes last.ckpt even for a fast_dev_run smoke test
            return
        super().on_train_end(trainer, pl_module)
        if self.dirpath and trainer.global_step > 0 and _holds_swa_average(trainer, pl_module):
            path = os.path.join(self.dirpath, "swa.ckpt")
            trainer.save_checkpoint(path)  # (collective; the checkpoint callbacks' hooks run after SWA's)
            rank_zero_info(f"Saved {path}: the weights StochasticWeightAveraging averaged (test or export it with "
                           f"--ckpt_path {path})")

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        """Before the first validation there is no ``val/...`` score to choose the best by: no best.ckpt yet, and
        not Lightning's "could not find the monitored key ... Did you call log()?" (the fit's last line says so)."""
        if self._between_validations or (self.monitor and self.monitor.startswith("val")
                                         and self.monitor not in monitor_candidates
                                         and not trainer.fit_loop.epoch_loop.val_loop._has_run):
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One line: where the checkpoints are and the best monitored value."""
        if trainer.fast_dev_run or not trainer.is_global_zero or not self.dirpath:
            return
        saved = []
        if self.best_model_path and os.path.isfile(self.best_model_path):
            score = f" {self.monitor} {float(self.best_model_score):.4g}" if self.best_model_score is not None else ""
            saved.append(f"{os.path.basename(self.best_model_path)} (best{score})")
        last = self.last_model_path or os.path.join(self.dirpath, "last.ckpt")
        if self.save_last and os.path.isfile(last):
            saved.append(f"{os.path.basename(last)} (step {trainer.global_step})")
        if not saved:
            return
        no_best = (f"; no best.ckpt: no validation ran, so there was no {self.monitor} to choose it by"
                   if self.monitor and self.save_top_k and not self.best_model_path
                   and not trainer.fit_loop.epoch_loop.val_loop._has_run else "")
        rank_zero_info(f"Checkpoints in {self.dirpath}: {', '.join(saved)}{no_best}")


def _holds_swa_average(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
    """Whether StochasticWeightAveraging moved its average into the model (it does at its last epoch only)."""
    for cb in trainer.callbacks:
        average = getattr(cb, "_average_model", None) if isinstance(cb, StochasticWeightAveraging) else None
        if average is not None:
            return all(torch.equal(a.to(p.device), p) for a, p in zip(average.parameters(), pl_module.parameters()))
    return False


class ModelSummary(LightningModelSummary):
    """Lightning's model summary as a plain table (a log file shows it as printed) without the FLOPs column and
    total when they were not measured: Lightning counts FLOPs only for a model that declares an
    ``example_input_array``, and prints zeros otherwise."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:
        if not total_flops:
            summary_data = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *summary_data)
        if not total_flops:
            table = table.rsplit("\n", 1)[0]  # "0  Total Flops"
        rank_zero_info("\n" + table)


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar without ``v_num`` (the logger's version number, shown as a metric: 0.000)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class KeepPreviousCheckpoints(Callback):
    """A fresh fit under a run name that already has checkpoints moves them to ``checkpoints/previous/<time>/``
    instead of overwriting them -- at the moment its own first checkpoint is completely written (through
    ``AtomicCheckpointIO.before_first_replace``), so a run that fails before that leaves them where they were.

    Lightning's "Checkpoint directory ... exists and is not empty" warning, which every ModelCheckpoint there (a
    lab's own too) gave on every fit (the run's .fit.lock is in it), is left out: this callback moves an earlier
    run's checkpoints away and warns when a resumed fit would write over checkpoints it does not continue. (Its
    ``setup`` runs before theirs: Lightning puts the checkpoint callbacks last.)"""

    def __init__(self) -> None:
        self._quiet: warnings.catch_warnings | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._quiet is None:
            self._quiet = warnings.catch_warnings()
            self._quiet.__enter__()
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    def _speak(self) -> None:
        quiet, self._quiet = self._quiet, None
        if quiet is not None:
            quiet.__exit__(None, None, None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._speak()  # (the checkpoint callbacks' setup is done)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._speak()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if trainer.ckpt_path is not None:  # a resumed run (--ckpt_path, SLURM's hpc checkpoint) continues its own
            _say_what_a_resume_writes_over(trainer)
            return
        dirs = [cb.dirpath for cb in trainer.checkpoint_callbacks if cb.dirpath and _checkpoints_in(cb.dirpath)]
        if not dirs:
            return
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO):
            io.before_first_replace = lambda _path: archive_checkpoints(dirs)
            rank_zero_info(f"Checkpoints of an earlier run in {', '.join(dirs)} move to previous/<time>/ when this "
                           "run writes its first one")
        else:  # another checkpoint IO: move them now rather than overwrite them
            archive_checkpoints(dirs)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._speak()
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO):
            io.before_first_replace = None


def _say_what_a_resume_writes_over(trainer: L.Trainer) -> None:
    """A fit resumed from a checkpoint that is none of its directories' last.ckpt (another run's, best.ckpt, an
    archived one) writes over the checkpoints there, which a fresh fit would have moved to previous/: said before
    it does. A SLURM requeue resumes its own hpc checkpoint: nothing to say."""
    path = os.fspath(trainer.ckpt_path)
    dirs = [cb.dirpath for cb in trainer.checkpoint_callbacks if cb.dirpath]
    hpc = getattr(getattr(trainer, "_checkpoint_connector", None), "_hpc_resume_path", None)
    if (hpc is not None and os.path.abspath(hpc) == os.path.abspath(path)) or \
            any(continues_run(directory, path) for directory in dirs):
        return
    for directory in dirs:
        names = [p.name for p in _checkpoints_in(directory)]
        if names:
            rank_zero_warn(f"--ckpt_path {path} is not {directory}'s last.ckpt: this fit writes over "
                           f"{', '.join(names)} there (another run's, or later steps); copy them elsewhere first to "
                           "keep them, or fit under another run name")


def _checkpoints_in(directory: str) -> list[Path]:
    return sorted(Path(directory).glob("*.ckpt")) if os.path.isdir(directory) else []


def archive_checkpoints(dirs: list[str]) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for directory in dirs:
        old = _checkpoints_in(directory)
        if old:
            target = Path(directory) / ARCHIVE / stamp
            target.mkdir(parents=True, exist_ok=True)
            for path in old:
                path.rename(target / path.name)
            rank_zero_info(f"Moved {len(old)} checkpoint(s) of an earlier run to {target}")


def default_checkpoint_dir(trainer: L.Trainer) -> None:
    """Checkpoints go to ``<save_dir>/<name>/checkpoints`` (not per logger version) so ``--ckpt_path last``
    finds the previous run's ``last.ckpt`` when a resumed run opens a new log version."""
    logger = trainer.logger
    root = getattr(logger, "root_dir", None) if logger is not None else None
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath is None and root:
            cb.dirpath = os.path.join(root, "checkpoints")
