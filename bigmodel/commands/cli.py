"""The ``bigmodel`` command: Lightning's CLI with bigmodel's defaults, argument links and one-line errors."""

from __future__ import annotations

import os
import signal
import sys

import datasets
import lightning as L
import torch
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, RichModelSummary, RichProgressBar, Timer
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

import bigmodel.data  # noqa: F401  (registers the data modules for short class names in YAML)
from bigmodel.run import errors
from bigmodel.run import cleanup
from bigmodel.run import directory as runs
from bigmodel.commands import COMMANDS, OVERVIEW, ckpt_path, run_notes
from bigmodel.run.log_versions import follow_claimed_version
from bigmodel.run.predictions import PredictionWriter
from bigmodel.run.callbacks import (Checkpoint, KeepPreviousCheckpoints, ModelSummary, ProgressBar, TokenizerCheckpoint,
                                    default_checkpoint_dir)
from bigmodel.run.stop_notes import EarlyStoppingNotes, TimeLimitNotes
from bigmodel.run.figures import AttentionMaps, MaskedPredictions, RetrievalExamples
from bigmodel.run.progress import BestScoreHParam, ProgressLog, interactive
from bigmodel.run.stop_signals import stop_cause
from bigmodel.run.stopping import RunStopped, StopSafely
from bigmodel.tasks import base


SUBCOMMANDS = ("fit", "validate", "test", "predict")
# on by default, configurable in YAML
MONITORS = (ProgressLog, BestScoreHParam, AttentionMaps, MaskedPredictions, RetrievalExamples)


class BigModelCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True) -> None:
        self._lock: runs.RunLock | None = None
        self._new_dirs: list[tuple[str, str]] = []
        self._replaced: list[str] = []  # the config's model settings that --ckpt_path's replace
        try:
            self._init(args, run)
        except BaseException as err:
            self._take_back_empty_dirs()
            if isinstance(err, Exception) and not isinstance(err, RunStopped):  # (a stop ends every rank itself)
                other = errors.after_rank_failure(getattr(self, "trainer", None), err)
                if other is not None:
                    raise other from err
            raise
        finally:
            if self._lock is not None:
                self._lock.release()

    def _init(self, args, run: bool) -> None:
        if not interactive():  # a batch job's log: no 'Generating train split' or 'Map:' bars
            datasets.disable_progress_bars()
        super().__init__(
            model_class=base.TaskBase,  # a lab's task may leave out the parts Task composes
            datamodule_class=L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # optimiser settings are the task's init args: one way
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "runs", "name": "default"},
                },
                "callbacks": [LearningRateMonitor(logging_interval="step"), TokenizerCheckpoint(), StopSafely(),
                              KeepPreviousCheckpoints(), EarlyStoppingNotes(), TimeLimitNotes(), ProgressLog(),
                              BestScoreHParam(), AttentionMaps(), MaskedPredictions(), RetrievalExamples()],
                "plugins": [{"class_path": "bigmodel.run.checkpoint_io.AtomicCheckpointIO"}],  # a path: serialisable
            },
            # parse errors raise instead of printing a ~50-line usage block; main() prints them as one line. No
            # abbreviations (jsonargparse 5's default): --trainer.max_epoch is an error naming max_epochs
            parser_kwargs={"exit_on_error": False, "allow_abbrev": False, "prog": "bigmodel",
                           "description": OVERVIEW.split("\n\n")[1],
                           **{c: {"exit_on_error": False, "description": COMMANDS[c]} for c in SUBCOMMANDS}},
            args=args,
            run=run,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """As Lightning's; an option the command does not have (a typo, or a prefix: abbreviations are off, so
        ``--trainer.max_epoch`` is not taken as ``max_epochs``) gets a 'did you mean' from the command's options."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            argv = args if isinstance(args, list) else sys.argv[1:]
            command = self._subcommand_parsers.get(next((a for a in argv if a in SUBCOMMANDS), None), parser)
            hint = errors.unknown_option_hint(str(err), list(command._option_string_actions))
            if not hint:
                raise
            raise ArgumentError(None, f"{err}{hint}") from err

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_top_k": 1,
                "checkpoint.save_last": True,
                "checkpoint.filename": "best",
                # one best.ckpt/last.ckpt per run name (a fresh rerun moves them to previous/<time>/)
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Checks that Lightning would make deep inside a run (or never), made before anything is built."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.accumulate_grad_batches is not None and trainer.accumulate_grad_batches <= 0:
            raise ValueError(
                f"trainer.accumulate_grad_batches must be >= 1, got {trainer.accumulate_grad_batches}"
            )
        precision, accelerator = str(trainer.precision or ""), str(trainer.accelerator or "auto")
        on_gpu = accelerator in {"gpu", "cuda"} or (accelerator == "auto" and torch.cuda.is_available())
        if "bf16" in precision and on_gpu and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision {precision} needs a GPU with bfloat16 (Ampere or newer); this one has none: "
                "use --trainer.precision 16-mixed"
            )
        directory = runs.checkpoint_dir(config)
        run_notes.say_root_dir_unused(trainer.default_root_dir, directory)
        if self.subcommand == "fit" and directory is not None and runs.launch_rank_zero() and not trainer.fast_dev_run:
            self._lock = runs.RunLock(directory)  # before the data module trains a tokenizer or anything is written
            self._lock.acquire()

    def _parse_ckpt_path(self) -> None:
        """Lightning reads the ``--ckpt_path`` file here (its hyper-parameters update the config): check it first."""
        subcommand = self.config.get("subcommand")
        meta, given, before = None, None, None
        if subcommand:
            config = self.config[subcommand]
            meta = ckpt_path.check_ckpt_path(config, subcommand, runs.checkpoint_dir(config))
            given = ((config.get("model") or {}).get("init_args") or {}).get("init_from")
            before = config.model.clone().as_dict() if config.get("model") is not None else None
        super()._parse_ckpt_path()
        model = self.config[subcommand].get("model") if subcommand else None
        if meta is not None and before is not None and model is not None:
            # said once the run directory is claimed (instantiate_classes), so that the line names it
            self._replaced = ckpt_path.replaced_settings(before, model.as_dict())
        ckpt_path.settle_init_from(meta, model, given)

    def instantiate_trainer(self, **kwargs):
        """As Lightning's, but ``--trainer.enable_checkpointing false`` drops the default ModelCheckpoint, and
        output that goes to a file gets no progress bar (ProgressLog writes lines there)."""
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        if config.get("enable_checkpointing") is False:
            extra = [cb for cb in extra if not isinstance(cb, L.pytorch.callbacks.ModelCheckpoint)]
        if config.get("enable_progress_bar") is None and not interactive():
            config["enable_progress_bar"] = False  # a bar in a file is its last frame, or a line per refresh
        given = config.get("callbacks") or []
        given = list(given) if isinstance(given, list) else [given]  # ``--trainer.callbacks=X``: one, no list
        trainer = self._instantiate_trainer(config, extra)
        # a monitoring callback in the config's trainer.callbacks replaces the default one of its class (settings,
        # or switching it off), instead of running twice
        defaults = [cb for cb in self.trainer_defaults["callbacks"] if isinstance(cb, MONITORS)
                    and any(type(g) is type(cb) for g in given)]
        if not trainer.loggers:  # --trainer.logger false: a legitimate run (smoke tests, benchmarks, sweeps)
            defaults += [cb for cb in self.trainer_defaults["callbacks"] if isinstance(cb, LearningRateMonitor)]
            if self.subcommand == "fit":
                rank_zero_info("No logger (--trainer.logger false): no learning-rate monitor, TensorBoard scalars "
                               "or figures; checkpoints and the progress output are as usual")
        trainer.callbacks[:] = [self._bigmodel_default(cb) for cb in trainer.callbacks
                                if not any(cb is d for d in defaults)]
        return trainer

    @staticmethod
    def _bigmodel_default(callback: L.Callback) -> L.Callback:
        """Lightning's default model summary and progress bar (not one the config chose) as bigmodel shows them."""
        if type(callback) in (LightningModelSummary, RichModelSummary):
            return ModelSummary(max_depth=callback._max_depth)
        if type(callback) is RichProgressBar:
            return ProgressBar()
        return callback

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        default_checkpoint_dir(self.trainer)
        if runs.launch_rank_zero():
            self._new_dirs = cleanup.claim_log_dirs(self.trainer)  # its own version_N, before anything is written
        else:
            follow_claimed_version(self.trainer.loggers)  # that version_N, not the next one
        if self._replaced:
            # Lightning builds the model from the checkpoint's hyper-parameters, not the config's: a config of
            # another model runs the checkpoint's, filed under the config's run
            rank_zero_warn(f"--ckpt_path {self.config[self.subcommand].ckpt_path!r}: "
                           f"{'; '.join(self._replaced)}; this {self.subcommand} runs the checkpoint's model and "
                           f"writes to {self.trainer.log_dir}")

    def _take_back_empty_dirs(self) -> None:
        """A failed command removes the run directory it made when nothing of a result is in it (``run.cleanup``)."""
        cleanup.take_back(getattr(self, "trainer", None), self._new_dirs, own_fit_lock=self._lock is not None)

    def after_validate(self) -> None:
        run_notes.say_where(runs.write_metrics(self.trainer, "validate"))
        self._say_untrained()

    def after_test(self) -> None:
        run_notes.say_where(runs.write_metrics(self.trainer, "test"))
        self._say_untrained()

    def after_predict(self) -> None:
        self._say_untrained()

    def _say_untrained(self) -> None:
        note = getattr(self.model, "untrained_note", lambda: None)() or \
            run_notes.no_weights_note(self.subcommand, self.config[self.subcommand], self.model)
        if note:
            rank_zero_warn(note)

    def before_fit(self) -> None:
        trainer = self.trainer
        stops = (EarlyStopping, Timer)
        if trainer.max_epochs == -1 and trainer.max_steps == -1 and not any(isinstance(cb, stops) for cb in
                                                                           trainer.callbacks):
            rank_zero_warn("--trainer.max_epochs -1 with no max_steps, max_time or EarlyStopping: this fit trains "
                           "until it is stopped (Ctrl-C or SIGTERM writes last.ckpt first)")
        if self._lock is None and runs.launch_rank_zero() and not self.trainer.fast_dev_run:
            # a logger whose directory the config did not tell
            directory = next((cb.dirpath for cb in self.trainer.checkpoint_callbacks if cb.dirpath), None)
            if directory is not None:
                self._lock = runs.RunLock(directory)
                self._lock.acquire()


def main(args: list[str] | None = None) -> None:
    """Errors that bigmodel raises about configs and data print as one line (BIGMODEL_DEBUG=1: full trace)."""
    argv = list(args if args is not None else sys.argv[1:])
    if args is None:  # the command itself, not a caller in Python (tests, notebooks)
        errors.quiet_output()
    try:
        if argv[:1] == ["export"]:  # not a Trainer method: its own small parser (bigmodel/commands/export.py)
            from bigmodel.commands.export import main as export_main

            return export_main(argv[1:])
        if argv[:1] in (["sweep"], ["results"], ["compare"]):  # over many runs (bigmodel/commands/sweep/, results.py, ...)
            from importlib import import_module

            return import_module(f"bigmodel.commands.{argv[0]}").main(argv[1:])
        if argv[:1] == ["bench"]:  # the same command line as python -m bigmodel.commands.bench
            from bigmodel.commands.bench import main as bench_main

            return bench_main(argv[1:], prog="bigmodel bench")
        errors.check_config_files(argv)
        BigModelCLI(args=args)
    except ArgumentError as err:
        if os.environ.get("BIGMODEL_DEBUG"):
            raise
        message = errors.parse_error_message(str(err))
        command = next((a for a in argv if a in (*SUBCOMMANDS, "export", "sweep", "results", "compare")), "fit")
        print(f"bigmodel: error: {message} -- see `bigmodel {command} --help`", file=sys.stderr)
        sys.exit(2)
    except errors.OtherRankFailed as failed:
        if failed.say:
            print(f"bigmodel: error: {failed}", file=sys.stderr)
        sys.exit(failed.exit_code)
    except RunStopped as stopped:
        if stopped.say:  # once for all DDP ranks
            print(f"bigmodel: {stopped}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    except (KeyboardInterrupt, SystemExit) as err:
        if isinstance(err, SIGTERMException):  # Lightning's own stop (exit status 0): a run that did not finish
            command = next((a for a in argv if a in SUBCOMMANDS), "fit")
            what = "before training started; nothing was saved by this stop" if command == "fit" else \
                f"during {command}; no result was written"
            signum, name = stop_cause(signal.SIGTERM)  # (a sweep's run: the sweep's own signal)
            print(f"bigmodel: stopped by {name} {what}", file=sys.stderr)
            sys.exit(128 + signum)
        # Lightning turns a Ctrl-C it catches (before training, or a second one) into exit 1
        if isinstance(err, SystemExit) and not isinstance(err.__context__, KeyboardInterrupt):
            raise
        print("bigmodel: interrupted by Ctrl-C; nothing was saved by this stop (checkpoints written before are "
              "kept)", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if os.environ.get("BIGMODEL_DEBUG"):
            raise
        message = errors.user_message(err)
        if message is None:
            raise
        print(f"bigmodel: error: {message}", file=sys.stderr)
        sys.exit(2)


__all__ = ["BigModelCLI", "main"]
