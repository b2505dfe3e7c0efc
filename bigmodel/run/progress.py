"""Watching a run's progress: progress lines for batch jobs, throughput, MFU and gradient-norm scalars, and the best
monitored score in the HParams tab. The figure callbacks are in ``bigmodel.run.figures``; configs may name either
group by its old home, ``bigmodel.run.monitoring`` (or ``bigmodel.monitoring``).

Everything here runs at logging or validation boundaries, never in the training step.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from bigmodel.nn.encoder import TransformerEncoder
from bigmodel.tasks.optim import optimizer_steps


def sharded(trainer: L.Trainer) -> bool:
    """FSDP gathers a layer's weights only inside the wrapped model's own forward: a callback that reads parameters
    or calls the encoder or the MLM head directly would see shards (or wait forever on rank zero alone), so the
    gradient norm here and the drawings in ``bigmodel.run.figures`` skip sharded runs."""
    return isinstance(trainer.strategy, FSDPStrategy)


def _format_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def interactive() -> bool:
    """Output goes to a terminal (not a file, as in SLURM or nohup): progress bars there, ProgressLog lines else."""
    return sys.stdout.isatty()


class ProgressLog(Callback):
    """A progress line every ``every_seconds`` when output goes to a file (SLURM, nohup), where the interactive bar
    writes nothing readable; samples/s and tokens/s (padded), MFU on a GPU whose peak FLOPs are known, and the
    gradient norm before clipping as TensorBoard scalars at the trainer's ``log_every_n_steps``.

    Timing needs no device synchronisation: over a logging interval of many steps the host clock tracks the device.
    """

    def __init__(self, every_seconds: float = 60.0, lines: bool | None = None) -> None:
        self.every_seconds = every_seconds
        self.lines = lines  # None: only when stdout is not a terminal
        self._last_line = self._t0 = self._interval_start = 0.0
        self._samples = self._tokens = self._step = self._start_step = 0
        self._speed: dict[str, float] = {}
        self._validation_start = 0.0
        self._flops_per_token: float | None = None
        self._peak: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.lines is None:
            self.lines = not interactive()
        self._t0 = self._interval_start = self._last_line = time.perf_counter()
        self._samples = self._tokens = 0
        self._step = self._start_step = trainer.global_step  # a resumed run's elapsed time covers only its own steps
        encoder = next((m for m in pl_module.modules() if isinstance(m, TransformerEncoder)), None)
        if encoder is not None and trainer.strategy.root_device.type == "cuda":
            # 6 N per token for the matmuls forward and backward (Kaplan et al.), attention scores excluded
            matmul = sum(p.numel() for n, p in encoder.named_parameters() if p.dim() == 2 and "embeddings" not in n)
            self._flops_per_token = 6.0 * matmul
            dtype = torch.bfloat16 if "bf16" in str(trainer.precision) else (
                torch.float16 if "16" in str(trainer.precision) else torch.float32)
            self._peak = get_available_flops(trainer.strategy.root_device, dtype)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if isinstance(batch, dict):
            ids = batch.get("input_ids")
            first = next((v for v in batch.values() if torch.is_tensor(v) and v.dim() > 0), None)
            self._samples += len(first) if first is not None else 0
            self._tokens += ids.numel() if ids is not None else 0
        step = trainer.global_step
        if step == self._step:  # accumulating: not an optimizer step
            return
        self._step = step
        if step % trainer.log_every_n_steps == 0:
            self._log_speed(trainer, step)
        now = time.perf_counter()
        if self.lines and now - self._last_line >= self.every_seconds:
            self._last_line = now
            self._print_line(trainer, step, now)

    def _log_speed(self, trainer: L.Trainer, step: int) -> None:
        now = time.perf_counter()
        seconds, world = now - self._interval_start, trainer.world_size
        if seconds <= 0 or not self._samples:
            return
        metrics = {"perf/samples_per_sec": self._samples * world / seconds}
        if self._tokens:
            metrics["perf/tokens_per_sec"] = self._tokens * world / seconds
            if self._flops_per_token and self._peak:
                metrics["perf/mfu"] = self._tokens * self._flops_per_token / seconds / self._peak
        self._interval_start, self._samples, self._tokens = now, 0, 0
        self._speed = metrics
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    @rank_zero_only
    def _print_line(self, trainer: L.Trainer, step: int, now: float) -> None:
        total = optimizer_steps(trainer)  # (with a GradientAccumulationScheduler too)
        elapsed = now - self._t0
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}" if trainer.max_epochs and
                 trainer.max_epochs > 0 else f"epoch {trainer.current_epoch + 1}"]
        if math.isfinite(total) and total > 0:
            left = elapsed / max(step - self._start_step, 1) * (total - step)
            parts.append(f"step {step}/{int(total)} ({100 * step / total:.1f} %)")
        else:
            left = None
            parts.append(f"step {step}")
        shown = {k: v for k, v in trainer.progress_bar_metrics.items() if not k.startswith(("v_num", "val/"))}
        parts += [f"{k} {v:.4g}" for k, v in shown.items()]
        if "perf/samples_per_sec" in self._speed:
            parts.append(f"{self._speed['perf/samples_per_sec']:.0f} samples/s")
        parts.append(f"elapsed {_format_time(elapsed)}" + (f", left {_format_time(left)}" if left is not None else ""))
        rank_zero_info(" | ".join(parts))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        # the step about to happen is global_step + 1's update; log with the other scalars of a logging step
        if (trainer.global_step + 1) % trainer.log_every_n_steps or sharded(trainer):  # FSDP: shards, not the norm
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            pl_module.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=False)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":  # the training speed leaves validation time out
            self._interval_start += time.perf_counter() - self._validation_start
        if self.lines and not trainer.sanity_checking and trainer.state.fn == "fit":
            shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            rank_zero_info(f"validation at step {trainer.global_step}: "
                           + " | ".join(f"{k} {v:.4g}" for k, v in shown.items()))


class BestScoreHParam(Callback):
    """The HParams tab lists every run's hyper-parameters with ``hp_metric``: make that the best value of the
    checkpoint's monitored metric so far in a fit. Lightning's TensorBoardLogger would write a placeholder -1 at the
    start of every run (and of every test and predict, which measure no monitored value): that placeholder is
    switched off, and the hyper-parameters reach the HParams tab with the first real value instead."""

    def __init__(self) -> None:
        self._listed: set[int] = set()  # the loggers whose HParams entry is written

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:  # before Lightning logs the hyper-parameters
            if isinstance(logger, TensorBoardLogger):
                logger._default_hp_metric = False  # its init argument default_hp_metric, which configs set rarely
        self._listed.clear()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ckpt = trainer.checkpoint_callback
        monitor = getattr(ckpt, "monitor", None)
        current = trainer.callback_metrics.get(monitor) if monitor else None
        if (trainer.sanity_checking or current is None or not trainer.is_global_zero
                or trainer.state.fn != "fit"):
            return
        # the checkpoint callback updates its best after this hook (Lightning runs it last); a resumed run's best
        # comes from its state
        scores = [float(current)] + ([float(ckpt.best_model_score)] if ckpt.best_model_score is not None else [])
        best = max(scores) if ckpt.mode == "max" else min(scores)
        # the step Lightning gave the validation values it repeats: batches stepped before this one's increment,
        # one less than global_step (which counts the optimizer step of the batch that triggered validation)
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and id(logger) not in self._listed:
                self._listed.add(id(logger))
                logger.log_hyperparams(logger.hparams, {"hp_metric": best}, step=step)
            else:
                logger.log_metrics({"hp_metric": best}, step=step)
