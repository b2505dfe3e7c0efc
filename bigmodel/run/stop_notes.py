"""What a fit that one of Lightning's own stops ended leaves unsaid or undone beside bigmodel: EarlyStopping and
``--trainer.max_time`` (Timer)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class EarlyStoppingNotes(Callback):
    """What Lightning's ``EarlyStopping`` leaves unsaid or undone beside bigmodel. A resumed fit waits the patience
    this command gives: Lightning restores the checkpoint's (its state holds ``patience``), so a run that early
    stopping ended, resumed with a larger patience to train on, stopped again at its next validation without
    improvement. And a fit it ends says so in one line: with ``verbose: false`` (its default) it ended in silence,
    as if the schedule had run out."""

    def __init__(self) -> None:
        self._given: dict[int, int] = {}
        self._before: dict[int, str | None] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._given = {id(cb): cb.patience for cb in trainer.callbacks if isinstance(cb, EarlyStopping)}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After every strategy has restored the callbacks' states."""
        for cb in trainer.callbacks:
            given = self._given.get(id(cb))
            if given is None:
                continue
            self._before[id(cb)] = cb.stopping_reason_message  # a resumed run's is the earlier stop's
            if cb.patience != given:
                rank_zero_info(f"EarlyStopping on {cb.monitor}: patience {given} as given (the checkpoint's was "
                               f"{cb.patience}; {cb.wait_count} validation(s) without improvement so far)")
                cb.patience = given

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for cb in trainer.callbacks:
            reason = getattr(cb, "stopping_reason_message", None) if id(cb) in self._given else None
            if reason is None or reason is self._before.get(id(cb)) or cb.verbose:
                continue
            reason = reason.removesuffix(" Signaling Trainer to stop.").rstrip(".")
            rank_zero_info(f"EarlyStopping ended the fit at step {trainer.global_step} (epoch {cb.stopped_epoch}): "
                           f"{reason}")


class TimeLimitNotes(Callback):
    """What a fit that ``--trainer.max_time`` ended leaves unsaid: the step, and how to train on. Lightning's Timer
    counts the training time of every fit a checkpoint continues, so ``--ckpt_path last`` with the same max_time
    stopped before its first step, saying only "Time limit reached"."""

    def __init__(self) -> None:
        self._spent, self._epoch = 0.0, 0

    @staticmethod
    def _timer(trainer: L.Trainer) -> Timer | None:
        return next((cb for cb in trainer.callbacks if isinstance(cb, Timer) and cb._duration is not None), None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the callbacks' states are restored: the training time of the fits this one continues."""
        timer = self._timer(trainer)
        self._spent = 0.0 if timer is None else float(timer._offset)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._epoch = trainer.current_epoch  # (the trainer's is one more once a stop has ended the epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = self._timer(trainer)
        if timer is not None and trainer.should_stop and timer.time_remaining() <= 0:
            rank_zero_info(f"--trainer.max_time ({timer._duration:g} s) ended the fit at step {trainer.global_step} "
                           f"(epoch {self._epoch}); to train on, resume with --ckpt_path last and a larger "
                           "max_time (it counts this fit's time too)")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = self._timer(trainer)
        if timer is not None and self._spent >= timer._duration:
            rank_zero_warn(f"--trainer.max_time ({timer._duration:g} s) was spent before this fit began: the fits "
                           f"of the checkpoint it continues trained {self._spent:.0f} s, and the limit counts them; "
                           f"nothing trained (still step {trainer.global_step}): give a larger max_time to train on")
