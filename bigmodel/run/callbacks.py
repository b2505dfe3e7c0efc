"""Callbacks the CLI adds to every run: the tokenizer travels with checkpoints; predictions go to a file."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint, RichProgressBar
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from bigmodel.run.checkpoint_io import AtomicCheckpointIO
from bigmodel.run.directory import continues_run
from bigmodel.data.corpus import document_tokens
from bigmodel.data.tokenizer import CHECKPOINT_KEY, tokenizer_files
from bigmodel.tasks.checkpoints import ARCHIVE


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


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results (text, image path or, for a split's images without files, their ``index`` in it;
    label id, class name, class probabilities) to CSV or JSONL;
    for a causal LM, each prompt with its continuations (one column per decoding). A task of another kind has its
    ``predict_step`` return ``{"rows": [{column: value, ...}, ...]}``: each dict is one row, written as it is.

    Under DDP, rank 0 writes every rank's rows as one file in the order of the inputs, each input once (the
    distributed sampler deals the inputs out in turn and repeats a few to even out the ranks): see ``merge_ranks``.

    Args:
        output: file path (``.csv`` or ``.jsonl``); default ``<run dir>/predictions.csv``.
    """

    FORMATS = (".csv", ".jsonl")

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """A bad output is refused before anything is predicted: an unknown format, or one of the very files being
        labelled (written over with the predictions, the user's input would be lost)."""
        if stage != "predict" or self.output is None:
            return
        output = Path(self.output).expanduser()
        if output.suffix.lower() not in self.FORMATS:
            raise ValueError(f"predictions.output {self.output!r} must end in {' or '.join(self.FORMATS)}: give e.g. "
                             f"{str(output.with_suffix('.csv'))!r}")
        inputs = getattr(trainer.datamodule, "hparams", {}).get("predict_files") or []  # images are no .csv
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        files = [f for pattern in inputs for f in glob.glob(os.path.expanduser(pattern))]
        if output.exists() and any(os.path.samefile(output, f) for f in files):
            other = output.with_name(f"{output.stem}.predictions{output.suffix}")
            raise ValueError(f"predictions.output {self.output!r} is one of the files being labelled "
                             f"(data.init_args.predict_files) and would be overwritten; give another file, e.g. "
                             f"{str(other)!r}")

    def write_on_epoch_end(self, trainer, pl_module, predictions: list[Any], batch_indices) -> None:
        path = Path(self.output or os.path.join(trainer.log_dir or ".", "predictions.csv"))  # (a collective)
        batches = [self._rows(batch, trainer, pl_module) for batch in predictions]
        if getattr(trainer, "world_size", 1) > 1:
            indices = batch_indices[0] if batch_indices else []  # one predict loader: its batches' example indices
            rows = merge_ranks(gather_to_rank_zero(list(zip(indices, batches)) if len(indices) == len(batches)
                                                   else [(None, rows) for rows in batches]))
            if not trainer.is_global_zero:
                return
        else:
            rows = [row for rows in batches for row in rows]
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".jsonl":
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        else:
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["text", "label"])
                writer.writeheader()
                writer.writerows(rows)
        rank_zero_info(f"Wrote {len(rows)} predictions to {path}")

    @staticmethod
    def _rows(batch: dict[str, Any], trainer: L.Trainer, pl_module: L.LightningModule) -> list[dict[str, Any]]:
        """One batch's rows: a task's own ``rows``, a causal LM's continuations, or a classifier's predictions."""
        if "rows" in batch:
            return list(batch["rows"])
        if "generated" in batch:  # a causal LM's continuations: decoded here, where the tokenizer is
            return generated_rows(batch, trainer.datamodule.tokenizer)
        names = list(getattr(pl_module, "class_names", None) or [])
        key = next((k for k in ("path", "text", "index") if batch.get(k) is not None), "text")
        inputs = batch.get(key)
        inputs = [None] * len(batch["pred"]) if inputs is None else \
            inputs.tolist() if isinstance(inputs, torch.Tensor) else inputs
        rows = []
        for item, pred, probs in zip(inputs, batch["pred"].tolist(), batch["probs"].tolist()):
            row = {key: item, "label": pred, "class_name": names[pred] if names else str(pred)}
            row.update({f"prob_{names[i] if names else i}": round(p, 6) for i, p in enumerate(probs)})
            rows.append(row)
        return rows


def gather_to_rank_zero(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable), in rank order, on rank 0; None on the others."""
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def merge_ranks(ranks: list[list[tuple[list[int] | None, list[dict[str, Any]]]]] | None) -> list[dict[str, Any]]:
    """Each rank's batches as ``(the dataset indices of its examples, its rows)``, merged into the rows of the
    inputs in order, each once: a batch of one row per example gives each row its example's index, and the copies
    that the distributed sampler adds to even out the ranks are left out. A batch of another number of rows (a
    task's own ``rows``), or without indices, is kept whole at its first example's place."""
    entries: list[tuple[float, int, list[dict[str, Any]]]] = []  # (place, order seen, rows)
    seen: set[int] = set()
    for batches in ranks or []:
        for indices, rows in batches:
            if indices is not None and len(indices) == len(rows):
                for index, row in zip(indices, rows):
                    if index not in seen:
                        seen.add(index)
                        entries.append((index, len(entries), [row]))
            else:
                entries.append((min(indices) if indices else math.inf, len(entries), rows))
    return [row for *_, rows in sorted(entries, key=lambda entry: entry[:2]) for row in rows]


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, but ``last.ckpt`` follows every save point (each validation, or each epoch end
    without validation), as its docs describe, not only those where ``best.ckpt`` improved (what Lightning 2.6
    does): a job killed late in a run that stopped improving early must not lose the epochs in between."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Lightning warns that the directory "exists and is not empty" on every fit here (the run's own .fit.lock
        is in it): with ``KeepPreviousCheckpoints``, which moves an earlier run's checkpoints to previous/ and warns
        when a resumed fit would write over checkpoints it does not continue, that warning is left out."""
        if not any(isinstance(cb, KeepPreviousCheckpoints) for cb in trainer.callbacks):
            return super().setup(trainer, pl_module, stage)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:  # Lightning 2.6 writes last.ckpt even for a fast_dev_run smoke test
            super().on_train_end(trainer, pl_module)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        """Before the first validation there is no ``val/...`` score to choose the best by: no best.ckpt yet, and
        not Lightning's "could not find the monitored key ... Did you call log()?" (the fit's last line says so)."""
        if (self.monitor and self.monitor.startswith("val") and self.monitor not in monitor_candidates
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
    ``AtomicCheckpointIO.before_first_replace``), so a run that fails before that leaves them where they were."""

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


def generated_rows(batch: dict[str, Any], tokenizer) -> list[dict[str, str]]:
    """Prompt text, then prompt + continuation decoded per decoding; a generated end of document ([SEP], or a GPT
    tokenizer's EOS, which may also be its BOS and begin the prompt) ends it."""
    end = document_tokens(tokenizer)[1]
    rows = []
    for i, text in enumerate(batch["text"]):
        row = {"text": text}
        prompt = batch.get("prompt_length", [0] * len(batch["text"]))[i]
        for name, sequences in batch["generated"].items():
            ids = sequences[i]
            if end in ids[prompt:]:
                ids = ids[: ids.index(end, prompt)]
            row[name] = tokenizer.decode(ids, skip_special_tokens=True)
        rows.append(row)
    return rows
