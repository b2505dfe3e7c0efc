"""What a fit prints to a log file: no progress-bar frames or zero FLOPs, a word on settings that surprise (no
logger, no end, a batch larger than the data) and one closing line naming the checkpoints."""

import logging
import re
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import datasets
import lightning as L

from bigmodel.commands.cli import BigModelCLI
from tests.test_cli import mlm_config, write_yaml


class StopAtStep(L.Callback):
    """Ends the fit after optimizer step ``step`` (as a user's Ctrl-C would, without a signal)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def small_config(tmp_path: Path, pydoc_text: Path, **trainer) -> dict:
    """An MLM fit on 60 paragraphs, 10 % held out: the first 6, one contiguous run, enough for a block of 64 tokens."""
    small = tmp_path / "small.txt"
    small.write_text("\n".join(pydoc_text.read_text().splitlines()[:60]))
    config = mlm_config(tmp_path, small, **trainer)
    config["data"]["init_args"]["validation_fraction"] = 0.1
    return config


def test_a_fit_without_logger_or_end_to_a_file_says_what_is_true_once(tmp_path, pydoc_text, caplog, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # output redirected to a file
    config = small_config(tmp_path, pydoc_text, max_epochs=-1, logger=False,
                          enable_model_summary=True, check_val_every_n_epoch=10, default_root_dir=str(tmp_path),
                          callbacks=[{"class_path": "tests.test_run_output.StopAtStep", "init_args": {"step": 2}}])
    del config["trainer"]["enable_progress_bar"]  # unset: decided by where the output goes
    config["model"]["init_args"].update(schedule="constant", warmup=0)
    config["data"]["init_args"]["batch_size"] = 512
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        cli = BigModelCLI(args=["fit", "-c", write_yaml(tmp_path / "mlm.yaml", config)])
    assert cli.trainer.global_step == 2 and cli.trainer.progress_bar_callback is None
    assert not datasets.utils.logging.is_progress_bar_enabled()
    said = [str(w.message) for w in warned]
    assert sum(m.startswith("--trainer.max_epochs -1 with no max_steps, max_time or EarlyStopping: this fit trains "
                            "until it is stopped") for m in said) == 1, said
    assert sum(re.fullmatch(r"batch_size 512 is larger than the \d+ training examples: every step trains on all of "
                            r"them \(one batch per epoch\); a smaller batch_size gives more steps", m) is not None
               for m in said) == 1, said
    assert not any("could not find the monitored key" in m for m in said), said
    lines = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("No logger (--trainer.logger false): no learning-rate monitor") for m in lines) == 1
    (summary,) = [m for m in lines if "Total params" in m]
    assert "| Params |" in summary and "FLOPs" not in summary and "Flops" not in summary
    assert lines[-1] == (f"Checkpoints in {tmp_path / 'checkpoints'}: last.ckpt (step 2); no best.ckpt: no "
                         "validation ran, so there was no val/loss to choose it by")
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_a_fit_ends_with_its_best_and_last_checkpoints(tmp_path, pydoc_text, caplog):
    config = small_config(tmp_path, pydoc_text, max_epochs=2, limit_train_batches=2, limit_val_batches=1)
    with caplog.at_level(logging.INFO):
        cli = BigModelCLI(args=["fit", "-c", write_yaml(tmp_path / "mlm.yaml", config)])
    best = cli.trainer.checkpoint_callback.best_model_score.item()
    assert caplog.records[-1].getMessage() == (f"Checkpoints in {tmp_path / 'runs' / 'mlm' / 'checkpoints'}: "
                                               f"best.ckpt (best val/loss {best:.4g}), last.ckpt (step 4)")


def test_the_progress_bar_shows_no_version_number():
    from bigmodel.run.callbacks import ProgressBar

    trainer = SimpleNamespace(loggers=[SimpleNamespace(version=0)], progress_bar_metrics={"train/loss": 1.5})
    assert ProgressBar().get_metrics(trainer, None) == {"train/loss": 1.5}
