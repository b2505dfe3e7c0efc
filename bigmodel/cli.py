"""The ``bigmodel`` command: Lightning's CLI with bigmodel's defaults, argument links and one-line errors."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys

import lightning as L
import torch
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import bigmodel.data  # noqa: F401  (registers the data modules for short class names in YAML)
from bigmodel.callbacks import (
    PredictionWriter,
    TokenizerCheckpoint,
    archive_previous_checkpoints,
    default_checkpoint_dir,
)
from bigmodel.data.hub import HubUnavailableError
from bigmodel.tasks import base


SUBCOMMANDS = ("fit", "validate", "test", "predict")


class BigModelCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True) -> None:
        super().__init__(
            model_class=base.Task,
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
                "callbacks": [LearningRateMonitor(logging_interval="step"), TokenizerCheckpoint()],
                "plugins": [{"class_path": "bigmodel.checkpoint_io.AtomicCheckpointIO"}],  # a path: serialisable
            },
            # parse errors raise instead of printing a ~50-line usage block; main() prints them as one line
            parser_kwargs={"exit_on_error": False, **{c: {"exit_on_error": False} for c in SUBCOMMANDS}},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(L.pytorch.callbacks.ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_top_k": 1,
                "checkpoint.save_last": True,
                "checkpoint.filename": "best",
                # one best.ckpt/last.ckpt per run name (a fresh rerun first moves them to previous/<time>/)
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Checks that Lightning would make deep inside a run, made before anything is built."""
        trainer = (self.config[self.subcommand] if self.subcommand else self.config).trainer
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

    def instantiate_trainer(self, **kwargs):
        """As Lightning's, but ``--trainer.enable_checkpointing false`` drops the default ModelCheckpoint."""
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        if config.get("enable_checkpointing") is False:
            extra = [cb for cb in extra if not isinstance(cb, L.pytorch.callbacks.ModelCheckpoint)]
        return self._instantiate_trainer(config, extra)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        default_checkpoint_dir(self.trainer)

    def before_fit(self) -> None:
        if self.config_init[self.subcommand].get("ckpt_path") is None:
            archive_previous_checkpoints(self.trainer)


USER_ERRORS = (ValueError, FileNotFoundError, HubUnavailableError, FloatingPointError)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def own_error(err: BaseException) -> BaseException | None:
    """The first error in the chain that bigmodel itself raised about the user's input, if any.

    jsonargparse wraps an error raised in a class's ``__init__`` in a multi-line report; the chain keeps ours.
    """
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    for e in seen:
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if isinstance(e, USER_ERRORS) and tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            return e
    return None


_NOISE = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")


def parse_error_message(text: str) -> str:
    """jsonargparse's multi-line report -> one line, with a 'did you mean' for a misspelled option."""
    lines = [line.strip().removeprefix("- ") for line in text.splitlines() if line.strip()]
    if not lines:
        return "bad arguments"
    details = [line for line in lines[1:] if not line.startswith(_NOISE)]
    message = " ".join([lines[0]] + details).replace(": :", ":").replace(":: ", ": ")
    option = re.search(r"Option '(\w+)' is not accepted", text)
    class_path = re.search(r"class_path '([\w.]+)'", text)
    if option and class_path:
        try:
            module, _, name = class_path[1].rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            accepted = {p for c in cls.__mro__ if "__init__" in vars(c) for p in inspect.signature(c.__init__).parameters}
            close = difflib.get_close_matches(option[1], sorted(accepted - {"self", "args", "kwargs"}), n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
        except (ImportError, AttributeError, ValueError, TypeError):
            pass
    return message


def main(args: list[str] | None = None) -> None:
    """Errors that bigmodel raises about configs and data print as one line (BIGMODEL_DEBUG=1: full trace)."""
    try:
        BigModelCLI(args=args)
    except ArgumentError as err:
        if os.environ.get("BIGMODEL_DEBUG"):
            raise
        message = parse_error_message(str(err))
        command = next((a for a in (args if args is not None else sys.argv[1:]) if a in SUBCOMMANDS), "fit")
        print(f"bigmodel: error: {message} -- see `bigmodel {command} --help`", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        ours = own_error(err)
        if ours is None or os.environ.get("BIGMODEL_DEBUG"):
            raise
        message = " ".join(str(ours).split()) if not isinstance(ours, KeyError) else str(ours.args[0])
        print(f"bigmodel: error: {message}", file=sys.stderr)
        sys.exit(2)


__all__ = ["BigModelCLI", "main", "own_error"]
