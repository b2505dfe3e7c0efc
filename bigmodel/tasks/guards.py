"""A training-step guard a task composes: the non-finite gradient check, the gradient clipping that shares its norm,
and the fused-flag restore of a resumed optimizer.

A part of its own (not of ``TaskBase``) because it is a policy, not a need: it costs a pass over the gradients per
step and owns ``configure_gradient_clipping`` and ``on_before_optimizer_step``, which a lab's task may want for
itself. ``bigmodel.tasks.Task`` composes it; a task on ``TaskBase`` alone gets Lightning's own clipping (and
``TaskBase`` then builds a foreach AdamW where Lightning's clipping refuses a fused one).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class NonFiniteGuard:
    """Stops (or skips) an optimizer step with NaN/inf gradients, and clips by the norm that check computed.

    Args:
        nonfinite: what a NaN/inf gradient does: ``stop`` the run naming the step, ``skip`` that optimizer step
            (no parameter or optimizer-state update; counted in ``train/skipped_steps``), or ``off`` (no check).
            With a fused optimizer (the default AdamW on CPU and CUDA) the check decides on the device: the bad
            step is skipped by the optimizer itself and the count is read every ``log_every_n_steps`` and at the
            end of an epoch, so ``stop`` stops at the next of those (naming the first bad step; the bad steps in
            between were skipped). Otherwise it costs one host sync per optimizer step.
    """

    MIN_LOSS_SCALE = 2.0**-14  # a 16-mixed loss scale below this means every step overflows

    def __init__(self, *args: Any, nonfinite: Literal["stop", "skip", "off"] = "stop", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if nonfinite not in ("stop", "skip", "off"):
            raise ValueError(f"nonfinite {nonfinite!r}: choose stop, skip or off")
        self.skipped_steps = 0  # as read back from the device (see _read_nonfinite)
        self._announced_scaler = False
        self._grad_norm: torch.Tensor | None = None  # this step's total norm, shared by the check and the clipping
        self._bad_count: torch.Tensor | None = None  # device counters of the sync-free check: skipped steps,
        self._bad_first: torch.Tensor | None = None  # the first bad step since the last read (-1: none)
        self._bad_where: dict[int, tuple[int, int]] = {}  # step -> (epoch, batch) since the last read

    def fused_adamw(self) -> bool | None:
        """Fused wherever torch has it, except under 16-mixed (see ``TaskBase.fused_adamw``): the clipping below
        accepts a fused optimizer, which Lightning's refuses under bf16-mixed."""
        return False if getattr(self.trainer.precision_plugin, "scaler", None) is not None else None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stops (or skips) a step with non-finite gradients before the parameters are touched.

        With an optimizer that reads GradScaler's ``found_inf`` (fused AdamW) the decision stays on the device: the
        optimizer skips the step (step count included) and device counters record it; ``_read_nonfinite`` reads
        them back now and then (no host sync per step). Other optimizers: the gradients' finiteness is read at
        every step (one host sync) and a bad step's gradients are dropped.

        Under ``16-mixed`` the GradScaler owns overflows: it skips the step and lowers the scale, routinely in the
        first steps, so gradients are not checked here; only a scale that collapses (every step overflows: a NaN
        in the forward pass) stops the run. Under DDP gradients are already reduced, so ranks agree; under
        sharded strategies (FSDP) each rank sees its shard, so the decision is reduced across ranks."""
        self._grad_norm = None
        if self.hparams.nonfinite == "off":
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            if not self._announced_scaler:
                self._announced_scaler = True
                rank_zero_info("16-mixed: the GradScaler skips steps whose gradients overflow; bigmodel's "
                               "non-finite check applies only if the loss scale collapses")
            scale = scaler.get_scale()  # one host sync, as the check below
            if self.hparams.nonfinite == "stop" and scale < self.MIN_LOSS_SCALE:
                raise FloatingPointError(
                    f"the 16-mixed loss scale fell to {scale:.2e} by step {self.global_step} (epoch "
                    f"{self.current_epoch}): the gradients overflow at every step. Lower the lr, set "
                    "--trainer.gradient_clip_val 1.0, or train in bf16-mixed or 32-true"
                )
            return
        # the optimizer's parameters, in its order: the clipping reuses this norm, bit for bit Lightning's
        grads = [g.to_local() if hasattr(g, "to_local") else g
                 for group in optimizer.param_groups for p in group["params"] if (g := p.grad) is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)  # foreach kernels on CPU and CUDA
        sharded = self.trainer.world_size > 1 and not isinstance(self.trainer.strategy,
                                                                 L.pytorch.strategies.DDPStrategy)
        fused = getattr(optimizer, "_step_supports_amp_scaling", False) and all(
            g.get("fused") for g in optimizer.param_groups)
        if fused:
            bad = norm.isfinite().logical_not()
            if sharded:  # an all-reduce on the device: still no host sync
                bad = self.trainer.strategy.reduce(bad.float(), reduce_op="max") > 0
            else:
                self._grad_norm = norm  # the clipping reuses it
            self._flag_nonfinite(optimizer, bad)
            return
        finite = bool(norm.isfinite())  # one host sync
        if sharded:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self._grad_norm = None if sharded else norm
            return
        if self.hparams.nonfinite == "stop":
            raise FloatingPointError(
                f"non-finite gradients at step {self.global_step} (epoch {self.current_epoch}, batch "
                f"{getattr(self, '_batch_idx', '?')} of the epoch); the parameters are "
                "still finite. Lower the lr, set --trainer.gradient_clip_val 1.0, or set "
                "model.init_args.nonfinite: skip"
            )
        for p in self.parameters():
            p.grad = None  # AdamW leaves parameters without gradients untouched: the step is skipped
        self.skipped_steps += 1
        rank_zero_warn(f"skipped optimizer step {self.global_step}: non-finite gradients ({self.skipped_steps} so far)")
        self._log_skipped()

    def _flag_nonfinite(self, optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
        """Hands ``bad`` to the optimizer as GradScaler does (``found_inf`` 1.0: the fused kernel leaves parameters,
        moments and step count as they were) and counts it on the device."""
        optimizer.found_inf = bad.float()
        if self._bad_count is None or self._bad_count.device != bad.device:
            self._bad_count = torch.zeros((), dtype=torch.long, device=bad.device)
            self._bad_first = torch.full((), -1, dtype=torch.long, device=bad.device)
        self._bad_count += bad
        self._bad_first = torch.where(bad & (self._bad_first < 0), self.global_step, self._bad_first)
        self._bad_where[self.global_step] = (self.current_epoch, getattr(self, "_batch_idx", -1))

    def _read_nonfinite(self) -> None:
        """Reads the device counters of the sync-free check (one host sync, at points that sync anyway): ``stop``
        raises naming the first bad step, ``skip`` warns and logs ``train/skipped_steps``."""
        if self._bad_count is None or not self._bad_where:
            return
        count, first = torch.stack((self._bad_count, self._bad_first)).tolist()
        where, self._bad_where = self._bad_where, {}
        new = count - self.skipped_steps
        if new <= 0:
            return
        self._bad_first.fill_(-1)
        self.skipped_steps = count
        epoch, batch = where.get(first, ("?", "?"))
        if self.hparams.nonfinite == "stop":
            raise FloatingPointError(
                f"non-finite gradients at step {first} (epoch {epoch}, batch {batch} of the epoch); that optimizer "
                f"step was skipped ({new} skipped by step {self.global_step}, when the check was read), so the "
                "parameters are still finite. Lower the lr, set --trainer.gradient_clip_val 1.0, or set "
                "model.init_args.nonfinite: skip"
            )
        rank_zero_warn(f"skipped {new} optimizer step(s) with non-finite gradients, the first at step {first} "
                       f"(epoch {epoch}, batch {batch}); {count} so far")
        self._log_skipped()

    def _log_skipped(self) -> None:
        for logger in self.loggers:  # not self.log: this also runs in hooks where Lightning refuses it
            logger.log_metrics({"train/skipped_steps": float(self.skipped_steps)}, step=self.global_step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self._bad_where and self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self._read_nonfinite()  # with the logging step, which reads the logged values back anyway

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self._read_nonfinite()

    def on_train_end(self) -> None:
        super().on_train_end()
        self._read_nonfinite()

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clips here rather than through the precision plugin, which refuses any fused optimizer under
        ``bf16-mixed`` (it cannot tell one from an fp16 optimizer that unscales inside its step), although bf16
        gradients are never scaled. By norm: the non-finite check's total norm when it has one (one pass over
        the gradients for both), torch's foreach kernels. ``16-mixed`` (GradScaler; a foreach AdamW, unscaled by
        Lightning before this) keeps Lightning's path; under FSDP the norm is the sharded module's own."""
        if not gradient_clip_val or gradient_clip_val <= 0:
            return
        strategy = self.trainer.strategy
        sharded = self.trainer.world_size > 1 and not isinstance(strategy, L.pytorch.strategies.DDPStrategy)
        fsdp = isinstance(strategy, L.pytorch.strategies.FSDPStrategy)
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None or (sharded and not fsdp):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        elif fsdp:
            strategy.model.clip_grad_norm_(gradient_clip_val)  # (untested here: Lightning runs FSDP on GPUs only)
        elif params:
            norm = self._grad_norm if self._grad_norm is not None else torch.nn.utils.get_total_norm(
                [p.grad for p in params])
            torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm)
        self._grad_norm = None

    def on_train_start(self) -> None:
        """A resumed checkpoint's optimizer groups carry the fused/foreach choice of the run that saved them (torch
        restores them with the state): this run's own choice wins, so a checkpoint from before the fused AdamW (or
        from another device) trains as this run built its optimizer."""
        super().on_train_start()
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                for key in ("fused", "foreach"):
                    if key in group and key in optimizer.defaults:
                        group[key] = optimizer.defaults[key]
