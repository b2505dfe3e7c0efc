"""A fit that stops for any reason but SIGKILL keeps the step it reached.

- ``max_steps`` ending between epoch-end checkpoints: ``last.ckpt`` is written at the final step.
- An error in a training step (bad data, the non-finite stop, out of memory): ``last.ckpt`` of the last optimizer
  step, on one process (under DDP the other ranks wait in a collective, so nothing is saved).
- SIGTERM (SLURM, Kubernetes, ``kill``), Ctrl-C (SIGINT) and SIGHUP (the terminal window closed, an ssh connection
  dropped): the run finishes the optimizer step it is in (a step of gradient accumulation is never split, so the
  resume is exact), writes ``last.ckpt`` there, logs that step's metrics and learning rate (whatever
  ``log_every_n_steps`` says) and ends with exit status 128 + signal (143, 130, 129) and one line naming the step and
  the file. A second Ctrl-C stops at once, without saving. A signal during validation takes effect when the
  validation ends. A signal its starter set to be ignored stays ignored (SIGHUP under ``nohup``, SIGINT of a
  background job); after a hangup, output to the terminal that hung up goes to /dev/null
  (``leave_hung_up_terminal``), so that no write to it fails.
- Under DDP the decision is collective: every rank stops after the same step.
- SLURM requeueing stays Lightning's (``SLURMEnvironment(auto_requeue=True)``): on the requeue signal Lightning
  saves its ``hpc_ckpt_N.ckpt`` and requeues the job; the SIGTERM that follows saves ``last.ckpt`` at the end of
  the step and links it as the newest ``hpc_ckpt_N+1.ckpt`` (what the requeued job resumes from), and the process
  exits 0 because the job goes on.
- A run of ``bigmodel sweep`` gets SIGTERM from the sweep whatever stopped the sweep (a second SIGINT would stop it
  unsaved): it names the sweep's signal and exits with its status (``stopped by the sweep on SIGINT (Ctrl-C)``, 130),
  read from the file in ``$BIGMODEL_SWEEP_STOP_FILE`` where the sweep writes it first (``stop_cause``).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from bigmodel.run.hangup import leave_hung_up_terminal
from bigmodel.run.stop_signals import SAME_SIGNAL_S, STOP_SIGNALS, stop_cause
from bigmodel.run.stop_rates import log_step_rates, step_hyperparameters, step_monitors




class RunStopped(Exception):
    """Raised after ``last.ckpt`` was written for a fit stopped by a signal; the CLI prints it as one line, on
    global rank zero only (``say``: every rank raises it, to exit with the signal's status)."""

    def __init__(self, signum: int, message: str, requeued: bool = False, say: bool = True) -> None:
        super().__init__(message)
        self.signum, self.requeued, self.say = signum, requeued, say

    @property
    def exit_code(self) -> int:
        return 0 if self.requeued else 128 + self.signum


class StopSafely(Callback):
    def __init__(self) -> None:
        self.signum: int | None = None
        self._signal_at = -SAME_SIGNAL_S  # (time.monotonic() of the first stop signal)
        self.requeued = False
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None
        self._armed: Any = None  # the logger connector whose step logging raises the stop
        self._pending: RunStopped | None = None  # that stop, until raised
        self._rates_at_start: tuple[int, list] | None = None  # (step, hyperparameters) of a batch the monitor skips

    # -- signal handlers (main thread only; Lightning's own SIGTERM handler is replaced while training runs)
    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            if time.monotonic() - self._signal_at < SAME_SIGNAL_S:
                return  # the same Ctrl-C delivered twice (``timeout -s INT``: to the process, then to its group)
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, nothing saved
        leave_hung_up_terminal()  # after a hangup, before anything writes to the dead terminal (and fails the run)
        first = self.signum is None
        self.signum = signum
        if first:
            self._signal_at = time.monotonic()
        trainer = self._trainer
        launcher = trainer.strategy.launcher if trainer is not None else None
        if first and launcher is not None and signum != signal.SIGINT:
            launcher.kill(signum)  # DDP ranks started by this process stop with it (as Lightning's handler does)
        if first and (trainer is None or trainer.is_global_zero):
            again = " (Ctrl-C again stops at once without saving)" if signum == signal.SIGINT else ""
            _, name = stop_cause(signum)
            heard = f"{name} received" if name == signal.Signals(signum).name else f"SIGTERM from {name}"
            try:
                saving = "saving last.ckpt" if trainer is None or _last_callback(trainer) is not None else \
                    "saving nothing (checkpointing off)"
                print(f"bigmodel: {heard}: stopping after this optimizer step and {saving}{again}", file=sys.stderr,
                      flush=True)
            except OSError:  # stderr is gone (a pipe whose reader ended): the stop goes on without its notice
                pass

    def _on_requeue(self, signum: int, frame: Any) -> None:
        self.requeued = True
        handler = self._previous.get(signum)
        if callable(handler):
            handler(signum, frame)

    def _install(self, trainer: L.Trainer) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        self._trainer = trainer
        if getattr(trainer, "received_sigterm", False):  # arrived between Lightning's handler and this one
            self.signum = signal.SIGTERM
            trainer._signal_connector.received_sigterm = False  # ours to act on, at a step boundary
        wanted = dict.fromkeys(STOP_SIGNALS, self._on_signal)
        env = trainer._accelerator_connector.cluster_environment
        if isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal is not None:
            wanted[env.requeue_signal] = self._on_requeue  # Lightning's handler, wrapped: we learn of the requeue
        for signum, handler in wanted.items():
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # ignored by whoever started us (nohup's SIGHUP, a background job's SIGINT): stays ignored
            self._previous[signum] = previous
            signal.signal(signum, handler)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # -- hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signum, self.requeued, self._pending = None, False, None
        self._install(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.fit_loop.epoch_loop._should_accumulate():
            return  # never between the batches of one accumulated step
        stopped = self._maybe_stop(trainer, f"after batch {batch_idx + 1} of epoch {trainer.current_epoch}")
        if stopped is not None:
            self._raise_after_logging(trainer, stopped)

    def _raise_after_logging(self, trainer: L.Trainer, stopped: RunStopped) -> None:
        """Lightning logs a step's metrics (train/loss...) after every batch-end hook has run; raised here, the stop
        would lose the stopping step's. It is raised right after that logging instead, which logs this step whatever
        log_every_n_steps says (Lightning's rule for the step where a fit stops, ``trainer.should_stop``), with its
        learning rate (which LearningRateMonitor logs as a batch starts, when it did not know of the stop: by the
        time the step is logged the step-interval schedulers have stepped, so the rates of the batch start are
        logged, as the monitor would have)."""
        connector = getattr(trainer, "_logger_connector", None)
        log_step = getattr(connector, "update_train_step_metrics", None)
        if log_step is None:  # a Lightning without that step: stop now, as before
            raise stopped

        def log_then_stop() -> None:
            self._disarm(trainer)
            at_start, self._rates_at_start = self._rates_at_start, None
            previous, trainer.should_stop = trainer.should_stop, True
            try:
                if at_start is not None:  # (None: the monitor logged this step as it started)
                    log_step_rates(trainer, *at_start)
                log_step()
            finally:
                trainer.should_stop = previous
            raise stopped

        connector.update_train_step_metrics = log_then_stop
        self._armed, self._pending = connector, stopped

    def _raise_pending(self, trainer: L.Trainer) -> None:
        """The stop, should the fit loop reach its next hook without logging the step (a Lightning that no longer
        logs there): never a second step after a signal."""
        stopped, self._pending = self._pending, None
        if stopped is not None:
            self._disarm(trainer)
            raise stopped

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._raise_pending(trainer)
        # (Lightning's private counters, read defensively: a Lightning without them logs no lr at a stop, as before)
        logs_now = getattr(getattr(trainer, "_logger_connector", None), "should_update_logs", True)
        step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", None)
        monitored = bool(step_monitors(trainer)) and not logs_now and step is not None
        self._rates_at_start = (step, step_hyperparameters(trainer)) if monitored else None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_pending(trainer)

    def _disarm(self, trainer: L.Trainer) -> None:
        """The connector's own method again (an error in a later batch-end hook ends the fit first)."""
        if self._armed is not None:
            self._armed.__dict__.pop("update_train_step_metrics", None)
        self._armed = self._pending = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_pending(trainer)
        stopped = self._maybe_stop(trainer, f"at the end of epoch {trainer.current_epoch}")
        if stopped is not None:
            raise stopped

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """max_steps can end a fit between the checkpoints of epoch ends or every_n_train_steps."""
        self._raise_pending(trainer)
        self._restore()
        if save_last(trainer):
            rank_zero_info(f"Saved last.ckpt at the final step {trainer.global_step}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """An error during a training step (bad data, NaN stop, out of memory) leaves the parameters of the last
        optimizer step: they are saved as last.ckpt -- unless this fresh run has written no checkpoint yet (the
        save would move an earlier run's aside), and not under DDP, where the other ranks wait in a collective."""
        self._restore()
        self._disarm(trainer)
        if self.signum is not None and _loader_worker_killed(exception) and trainer.world_size == 1:
            # timeout, scancel and kill -- -PGID signal the whole process group: the loader workers died of the
            # stop the user asked for, mid-step. The last full step is saved and the stop reported as one.
            save_last(trainer)
            path = last_checkpoint_path(trainer)
            saved = f"saved {path}; resume with --ckpt_path last" if path else "no checkpoint saved (checkpointing off)"
            signum, name = stop_cause(self.signum)
            raise RunStopped(signum, f"stopped by {name} at step {trainer.global_step} (the signal reached the data "
                                     f"loader's workers too); {saved}") from exception
        if isinstance(exception, (RunStopped, KeyboardInterrupt, SystemExit)) or trainer.world_size > 1 \
                or not trainer.training:
            return
        if getattr(trainer.strategy.checkpoint_io, "before_first_replace", None) is not None:
            return  # a fresh run with no checkpoint of its own yet: the earlier run's stay where they are
        try:
            if save_last(trainer):
                rank_zero_warn(f"the run failed at step {trainer.global_step}; saved {last_checkpoint_path(trainer)} "
                               "there: resume with --ckpt_path last once the cause is fixed")
        except Exception as err:  # noqa: BLE001 - never hide the original error behind a failed save
            rank_zero_warn(f"the run failed at step {trainer.global_step} and last.ckpt could not be saved ({err})")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()
        self._disarm(trainer)
        self._trainer = None

    def _maybe_stop(self, trainer: L.Trainer, where: str) -> RunStopped | None:
        """On a signal: last.ckpt saved at this step, and the stop to raise."""
        stop = self.signum is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)  # any rank's signal stops all
        if not stop:
            return None
        signum, name = stop_cause(self.signum or signal.SIGTERM)  # a rank that got no signal follows the others
        save_last(trainer)
        path = last_checkpoint_path(trainer)
        saved = f"saved {path}; resume with --ckpt_path last" if path else "no checkpoint saved (checkpointing off)"
        message = f"stopped by {name} at step {trainer.global_step} ({where}); {saved}"
        if self.requeued and path:
            hpc = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
            if trainer.is_global_zero:
                _link_or_copy(path, hpc)  # the requeued job resumes from the newest hpc_ckpt: this exact step
            message += f"; SLURM requeued the job, which resumes from {hpc}"
        return RunStopped(signum, message, requeued=self.requeued, say=trainer.is_global_zero)


def _loader_worker_killed(exception: BaseException) -> bool:
    """torch's error when a DataLoader worker process died of a signal (raised in the main process)."""
    text = str(exception)
    return isinstance(exception, RuntimeError) and "DataLoader worker" in text and "killed by signal" in text


def _last_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    return next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.save_last),
                None)


def last_checkpoint_path(trainer: L.Trainer) -> str | None:
    cb = _last_callback(trainer)
    return cb.last_model_path or None if cb is not None else None


def save_last(trainer: L.Trainer) -> bool:
    """Writes ``last.ckpt`` through the run's ModelCheckpoint unless it already holds this step (collective)."""
    cb = _last_callback(trainer)
    if cb is None or trainer.fast_dev_run or trainer.global_step == 0 or cb._last_global_step_saved == trainer.global_step:
        return False  # (fast_dev_run: a smoke test writes no checkpoints, as Lightning's own callbacks)
    cb._save_last_checkpoint(trainer, cb._monitor_candidates(trainer))
    return True


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
