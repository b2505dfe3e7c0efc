"""The ``bigmodel`` command: Lightning's CLI with bigmodel's defaults, argument links and one-line errors."""

from __future__ import annotations

import os
import sys

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import bigmodel.data  # noqa: F401  (registers the data modules for short class names in YAML)
from bigmodel.callbacks import PredictionWriter, TokenizerCheckpoint, default_checkpoint_dir
from bigmodel.data.hub import HubUnavailableError
from bigmodel.tasks import base


class ConfigError(Exception):
    """A problem with the configuration or the data, reported as one line (set BIGMODEL_DEBUG=1 for a trace)."""


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
            },
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
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, HubUnavailableError) as err:
            raise ConfigError(_root_message(err)) from err
        default_checkpoint_dir(self.trainer)


def _root_message(err: BaseException) -> str:
    """The message of the innermost error: jsonargparse wraps a class's own error in a multi-line Union report."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1].removeprefix("- ") if lines else type(err).__name__


def main(args: list[str] | None = None) -> None:
    try:
        BigModelCLI(args=args)
    except ConfigError as err:
        if os.environ.get("BIGMODEL_DEBUG"):
            raise
        print(f"bigmodel: error: {err}", file=sys.stderr)
        sys.exit(2)


__all__ = ["BigModelCLI", "ConfigError", "main"]
