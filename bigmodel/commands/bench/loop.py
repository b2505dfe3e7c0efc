"""bigmodel's training step through Lightning's loop, timed window by window beside plain-PyTorch contenders
(``--compare``, ``--profile`` and the suite's non-finite part)."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from bigmodel.commands.bench.measure import Contender, model_state_bytes, synchronize
from bigmodel.nn import EncoderConfig


class LightningLoop(Callback):
    """bigmodel's ``MLMTask`` trained by a ``lightning.Trainer`` in a thread that runs only when asked:
    ``window(n)`` lets it train n batches and returns seconds per batch, timed from the end of the batch before
    the window to the end of its last, so the loop's own work between batches (fetching and moving the batch,
    logging, hooks) counts. The trainer is ``bigmodel fit``'s for a run without validation: its precision, the
    task's optimizer, LR schedule and non-finite check, a TensorBoard logger (in a temporary directory),
    ``LearningRateMonitor`` and ``ProgressLog``; no progress bar (it would print into the table), no checkpoints,
    no gradient clipping (the plain rows have none)."""

    def __init__(self, task: L.LightningModule, batch: dict, total_steps: int, device: str, precision: str,
                 root: str, log_every_n_steps: int = 20) -> None:
        from lightning.pytorch.callbacks import LearningRateMonitor
        from lightning.pytorch.loggers import TensorBoardLogger
        from torch.utils.data import DataLoader

        from bigmodel.run.progress import ProgressLog

        self.task, self.device = task, device
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self._todo = self._count = 0
        self._start = self._seconds = 0.0
        self._error: BaseException | None = None
        self._stop = self._finished = False
        batch = {k: v.cpu() for k, v in batch.items()}  # a data loader's batch: the loop moves it to the device
        self._loader = DataLoader([batch] * total_steps, batch_size=None, pin_memory=device == "cuda")
        self.trainer = L.Trainer(
            accelerator=device, devices=1, precision=precision, max_steps=total_steps,
            logger=TensorBoardLogger(root, name="bench"), log_every_n_steps=log_every_n_steps,
            callbacks=[LearningRateMonitor(logging_interval="step"), ProgressLog(lines=False), self],
            enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
            limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=root,
        )
        self._thread = threading.Thread(target=self._fit, daemon=True)

    def _fit(self) -> None:
        try:
            self.trainer.fit(self.task, train_dataloaders=self._loader)
        except BaseException as err:  # noqa: B036 (handed to the main thread)
            self._error = err
        finally:
            self._finished = True
            self._done.release()

    def window(self, steps: int) -> float:
        self._todo = steps
        if self._thread.is_alive():
            self._go.release()
        else:
            self._thread.start()  # setup (and compilation) happen in the first window: the warm-up
        self._done.acquire()
        if self._error is not None:
            raise RuntimeError(f"the Lightning contender failed: {self._error!r}") from self._error
        if self._finished:
            raise RuntimeError("the Lightning fit ended before its window did")
        return self._seconds / steps

    def close(self) -> None:
        if self._thread.is_alive():
            self._stop = True
            self._go.release()
            self._thread.join()

    def state_bytes(self) -> int:
        return model_state_bytes(self.task, self.trainer.optimizers[0])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._count += 1
        if self._count < self._todo:
            return
        synchronize(self.device)
        self._seconds = time.perf_counter() - self._start
        self._done.release()
        self._go.acquire()  # the other contenders run now
        if self._stop:
            trainer.should_stop = True
            return
        self._count = 0
        self._start = time.perf_counter()



def mlm_task(cfg: EncoderConfig, **kwargs: Any) -> L.LightningModule:
    """``MLMTask`` of exactly ``cfg``'s shape, its weights seeded as ``measure.mlm_step`` seeds the plain model's."""
    from bigmodel.tasks import MLMTask

    torch.manual_seed(0)
    overrides = {k: v for k, v in cfg.to_dict().items() if k != "vocab_size"}
    return MLMTask(encoder="bert-tiny", encoder_config=overrides, vocab_size=cfg.vocab_size, **kwargs)


def lightning_contender(name: str, cfg: EncoderConfig, data: dict, total_steps: int, device: str, precision: str,
                        root: str, useful: float, **task: Any) -> tuple[Contender, LightningLoop]:
    """The row "``MLMTask`` through Lightning's loop" beside the plain ones: ``mlm_task`` with the plain rows'
    AdamW settings (lr 1e-4, weight decay 0.01; ``task`` adds or overrides task arguments) trained on ``data`` by a
    ``LightningLoop`` of ``total_steps`` batches logging under ``root``; the loop is returned too (its trainer takes
    more callbacks)."""
    loop = LightningLoop(mlm_task(cfg, **{"lr": 1e-4, "weight_decay": 0.01, **task}), data, total_steps, device,
                         precision, root)
    items = data["input_ids"].numel()
    return Contender(name, "text", loop.window, items, useful, useful, loop.state_bytes, close=loop.close), loop


@contextmanager
def quiet_lightning() -> Iterator[str]:
    """A temporary directory for the loops' logs, with Lightning's set-up notes (few workers, no validation, the
    logging interval, the unused GPU) kept out of the printed table."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(does not have many workers|GPU available but not used|"
                                                  r"no `val_dataloader`|smaller than the logging interval|LeafSpec).*")
        logger.setLevel(logging.WARNING)
        try:
            yield root
        finally:
            logger.setLevel(level)
