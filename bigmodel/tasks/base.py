"""What every task shares: the optimiser settings (typed init args the CLI reads) and their setup."""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from typing import Any, ClassVar, Literal, get_args

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from bigmodel.nn import EncoderConfig, num_parameters
from bigmodel.nn.peft import Finetune, LoRAConfig, add_lora, set_trainable
from bigmodel.tasks.checkpoints import META_KEY, Pretrained, check_vocabulary, resolve, text_config
from bigmodel.utils.seeding import mix_seed
from bigmodel.tasks.optim import Schedule, build_optimizer


class Task(L.LightningModule):
    """Args (set under ``model.init_args`` in YAML):
        lr: peak learning rate of AdamW.
        weight_decay: applied to weight matrices and embeddings, never to biases or LayerNorm.
        betas, eps: AdamW's.
        schedule: ``linear`` or ``cosine`` decay to zero after warmup, ``constant``, or warmup-stable-decay
            (``wsd``: the peak lr held after warmup, then a linear decay to zero over the last ``decay`` steps;
            ``wsd_sqrt``: that decay as 1 - sqrt(progress), ModernBERT's).
        warmup: warmup length, as a fraction of all steps (< 1) or a number of steps (>= 1).
        decay: length of ``wsd``'s final decay, as ``warmup`` (ignored by the other schedules).
        nonfinite: what a NaN/inf gradient does: ``stop`` the run naming the step, ``skip`` that optimizer step
            (no parameter or optimizer-state update; counted in ``train/skipped_steps``), or ``off`` (no check).
            With a fused optimizer (the default AdamW on CPU and CUDA) the check decides on the device: the bad
            step is skipped by the optimizer itself and the count is read every ``log_every_n_steps`` and at the
            end of an epoch, so ``stop`` stops at the next of those (naming the first bad step; the bad steps in
            between were skipped). Otherwise it costs one host sync per optimizer step.
        compile: ``torch.compile`` the network in place (parameter names, hence checkpoints, stay unchanged).
            Pays off most for fixed shapes (images). Variable text lengths do not compile once per length: the
            first length gets a static graph, the second a graph with a dynamic length that serves the rest
            (a batch without padding, which has no attention mask, is one more graph); ``pad_to_multiple_of``
            (data) bounds the lengths, ``masked_positions_multiple_of`` the MLM's masked counts.
        finetune: which parameters train (``bigmodel.nn.peft``): ``full``; ``linear_probe`` (the encoder frozen,
            the head -- one linear layer on [CLS] or mean-pooled features -- trained); ``pooler_probe`` (the same
            with BERT's tanh pooler before it, also trained); ``bitfit`` (the encoder's biases and the head);
            ``lora`` (low-rank updates of the encoder's ``lora.targets`` projections and the head). Frozen
            parameters get no optimizer state.
        lora: rank, alpha, dropout, targets (``q``, ``k``, ``v``, ``proj``, ``up``, ``down``; ``qkv`` = [q, k, v])
            and rslora of ``finetune: lora`` (``bigmodel.nn.peft.LoRAConfig``).
        layer_decay: layer-wise learning-rate decay, e.g. 0.8: each layer down from the head trains at that
            fraction of the one above (embeddings lowest); 1.0 is off.
        checkpoint_weights: ``all``, or ``trainable``: with a frozen encoder (``finetune`` other than ``full``),
            checkpoints hold only what trains (LoRA updates, biases, the head) and the buffers -- a small file --
            plus where the frozen rest came from (``init_from``, which must be set) and a checksum of it; resuming,
            testing, predicting, ``export`` and ``init_from`` rebuild the frozen part from that source.
        quantize: ``int8``: test and predict on CPU with dynamic int8 linear layers (``bigmodel.nn.quantize``;
            LoRA merged first). An inference setting: not stored in checkpoints, so it can be added at test time.

    Subclasses build ``self.net`` (a plain ``nn.Module``; a text encoder at ``self.net.encoder``), set
    ``checkpoint_task`` and implement the steps; see experiments/extending/README.md.
    """

    net: nn.Module
    # checkpoint["bigmodel"]["task"]: `--ckpt_path` is checked against it, and init_from reads it; give each task
    # its own name
    checkpoint_task: ClassVar[str | None] = None

    MIN_LOSS_SCALE = 2.0**-14  # a 16-mixed loss scale below this means every step overflows

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        schedule: Schedule = "linear",
        warmup: float = 0.06,
        decay: float = 0.1,
        nonfinite: Literal["stop", "skip", "off"] = "stop",
        compile: bool = False,
        finetune: Finetune = "full",
        lora: LoRAConfig | None = None,
        layer_decay: float = 1.0,
        checkpoint_weights: Literal["all", "trainable"] = "all",
        quantize: Literal["int8"] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # collects the subclass's init args too
        # how to run inference is not how the model was trained: kept out of the checkpoint's hyper-parameters,
        # which Lightning's CLI lets override the command line (as CausalLMTask's decoding settings)
        self.quantize = self.hparams.pop("quantize")
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize {quantize!r}: choose int8 or null")
        if checkpoint_weights not in ("all", "trainable"):
            raise ValueError(f"checkpoint_weights {checkpoint_weights!r}: choose all or trainable")
        if checkpoint_weights == "trainable" and finetune == "full":
            raise ValueError("checkpoint_weights: trainable keeps only what trains, and with finetune: full that is "
                             "everything: set finetune to lora, bitfit or linear_probe, or checkpoint_weights: all")
        if checkpoint_weights == "trainable" and not self.hparams.get("init_from"):
            raise ValueError("checkpoint_weights: trainable rebuilds the frozen encoder from init_from, which is "
                             "unset: set model.init_args.init_from (the frozen base), or checkpoint_weights: all")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        if finetune not in get_args(Finetune):
            raise ValueError(f"finetune {finetune!r}: choose one of {', '.join(get_args(Finetune))}")
        self.lora = LoRAConfig(**lora) if isinstance(lora, dict) else (lora or LoRAConfig())
        self.hparams["lora"] = asdict(self.lora)  # plain data: checkpoints load with weights_only
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.skipped_steps = 0  # as read back from the device (see _read_nonfinite)
        self._announced_scaler = False
        self._grad_norm: torch.Tensor | None = None  # this step's total norm, shared by the check and the clipping
        self._bad_count: torch.Tensor | None = None  # device counters of the sync-free check: skipped steps,
        self._bad_first: torch.Tensor | None = None  # the first bad step since the last read (-1: none)
        self._bad_where: dict[int, tuple[int, int]] = {}  # step -> (epoch, batch) since the last read
        self._pretrained: Pretrained | None = None  # init_from, read in __init__, loaded in setup
        self._loaded_from: str | None = None  # the init_from whose weights went in
        self.new_heads: list[str] = []  # heads init_from lacks (load_pretrained draws them): random until trained

    def encoder_config_for(self, encoder: str, overrides: dict[str, Any] | None, vocab_size: int | None,
                           init_from: str | None, **task_fields: Any) -> EncoderConfig:
        """A text task's architecture: ``init_from``'s (dropout may change) or the preset with ``overrides``;
        ``task_fields`` are what the task itself sets (a causal LM: ``causal=True``). Stored resolved in the
        hyper-parameters, so ``load_from_checkpoint(path, init_from=None)`` rebuilds it."""
        overrides = dict(overrides or {})
        if init_from:
            self._pretrained = resolve(init_from)
            config = text_config(self._pretrained, overrides).replace(**task_fields)
            check_vocabulary(self._pretrained, vocab_size)
        else:
            config = EncoderConfig.from_name(encoder, **{**overrides, **task_fields, "vocab_size": vocab_size})
        self.hparams["encoder_config"] = {**config.to_dict(), **overrides, **task_fields}
        return config

    def setup(self, stage: str) -> None:
        """``init_from`` weights go in when a run starts from them (fit, or validate/test of a published model); a
        run restored from its own checkpoint (a resumed fit, test or predict of a trained model) then gets the
        checkpoint's (the CLI leaves init_from unset there, unless the checkpoint holds only the trainable ones)."""
        device = self.trainer.strategy.root_device.type
        if self.quantize and (stage == "fit" or device != "cpu"):
            raise ValueError(f"quantize: {self.quantize} is for test and predict on CPU (dynamic int8 kernels), not "
                             f"{'for training' if stage == 'fit' else 'on ' + device}: drop quantize, or run "
                             "test/predict with --trainer.accelerator cpu")
        if self._pretrained is not None and self.trainer.ckpt_path is None:
            self._load_pretrained_once()

    def _load_pretrained_once(self) -> None:
        pretrained, self._pretrained = self._pretrained, None
        self._loaded_from = pretrained.source
        try:
            notes = self.load_pretrained(pretrained)
        except ValueError as err:
            message = str(err)
            raise ValueError(message if message.startswith("init_from") else
                             f"init_from {pretrained.source!r}: {message}") from err
        rank_zero_info(f"Loaded pretrained weights from {pretrained.source} "
                       f"({len(pretrained.state)} tensors)" + "".join(f"; {n}" for n in notes))

    def untrained_heads(self) -> list[str]:
        """The new heads a ``validate``/``test`` of ``init_from`` itself measures as drawn (no step trained them)."""
        trainer = getattr(self, "_trainer", None)  # a task stepped by hand has none
        stage = trainer.state.fn if trainer is not None else None
        return list(self.new_heads) if stage in ("validate", "test") else []

    def untrained_note(self) -> str | None:
        """One line saying that this run's metrics are a random head's, or None."""
        heads = self.untrained_heads()
        if not heads:
            return None
        return (f"{' and '.join(heads)} new (init_from {self._loaded_from!r} has none) and untrained: these metrics "
                "are a randomly initialised head's on the source's encoder, not the source model's own")

    def log_untrained_heads(self, prefix: str) -> None:
        """Marks an epoch's metrics with ``<prefix>random_head: 1`` when ``untrained_heads`` made them."""
        if self.untrained_heads():
            self.log(f"{prefix}random_head", 1.0)

    def load_pretrained(self, pretrained: Pretrained) -> list[str]:
        """Puts ``init_from``'s weights into ``self.net``; returns notes on what was adapted or left new (and lists
        a head the source lacks in ``self.new_heads``)."""
        raise NotImplementedError(f"{type(self).__name__} does not load init_from weights")

    @staticmethod
    def load_encoder(encoder: nn.Module, pretrained: Pretrained) -> list[str]:
        """The source's text encoder, exactly (every tensor, every shape); LoRA updates are never in a source."""
        missing, unexpected = encoder.load_state_dict(pretrained.part("encoder."), strict=False)
        missing = [k for k in missing if ".lora_" not in k]
        if missing or unexpected:
            raise ValueError(f"init_from {pretrained.source!r} does not fit the encoder: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        return []

    def checkpoint_meta(self) -> dict[str, Any]:
        """What a checkpoint carries for bigmodel beside Lightning's entries: ``checkpoint["bigmodel"]``. The
        task's name (checked against a ``--ckpt_path``'s config) and, for a text encoder (``self.config``), its
        architecture (what ``init_from`` rebuilds). Extend the dict to add task-specific entries."""
        meta: dict[str, Any] = {"task": self.checkpoint_task}
        config = getattr(self, "config", None)
        if isinstance(config, EncoderConfig):
            meta["encoder_config"] = config.to_dict()
        return meta

    def configure_model(self) -> None:
        """Fine-tuning mode, then compilation; Lightning calls this before restoring a checkpoint (and
        ``load_from_checkpoint`` too), so a LoRA checkpoint finds its LoRA layers. Idempotent."""
        finetune = self.hparams.get("finetune", "full")
        if finetune != "full":
            if not isinstance(getattr(self.net, "encoder", None), nn.Module):
                raise ValueError(f"finetune: {finetune} needs a model on the shared encoder (net.encoder); "
                                 f"{type(self.net).__name__} has none: use finetune: full")
            if finetune == "lora":
                add_lora(self.net.encoder, self.lora)
            set_trainable(self.net, finetune)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    def on_validation_start(self) -> None:
        self._quantize()  # reached with quantize set only by validate: setup refuses it in fit

    def on_test_start(self) -> None:
        self._quantize()

    def on_predict_start(self) -> None:
        self._quantize()

    def _quantize(self) -> None:
        """After the checkpoint's float weights are in (Lightning restores them after ``setup``)."""
        if self.quantize and not getattr(self, "_quantized", False):
            from bigmodel.nn.quantize import quantize_int8

            self.net, count = quantize_int8(self.net)
            self._quantized = True
            rank_zero_info(f"quantize: {self.quantize}: {count} linear layers run in int8")

    def frozen_parameter_names(self) -> set[str]:
        return {name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def frozen_checksum(self) -> float:
        """Sum of |w| over the frozen parameters (float64): tells whether ``init_from`` still holds the weights a
        run of trainable-only checkpoints was trained on (a base file overwritten by further pretraining does not)."""
        frozen = [p.detach().abs().sum(dtype=torch.float64) for p in self.parameters() if not p.requires_grad]
        return float(torch.stack(frozen).sum()) if frozen else 0.0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``checkpoint["bigmodel"]`` from ``checkpoint_meta``; with ``checkpoint_weights: trainable`` the frozen
        parameters are left out of the state dict."""
        checkpoint[META_KEY] = self.checkpoint_meta()
        if self.hparams.get("checkpoint_weights", "all") != "trainable":
            return
        frozen = self.frozen_parameter_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        checkpoint.setdefault(META_KEY, {}).update(
            weights="trainable", base=self.hparams.init_from, base_checksum=self.frozen_checksum())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of trainable weights only is completed before Lightning loads it (strictly): the frozen base
        is read again from ``init_from``, checked against the checksum saved with it, and fills in the rest. Heads
        come from the checkpoint either way: none is untrained."""
        self.new_heads.clear()
        meta = checkpoint.get(META_KEY) or {}
        if meta.get("weights") != "trainable":
            self._pretrained = None
            return
        if self._pretrained is not None:  # load_from_checkpoint (a Trainer's setup has loaded it already)
            self._load_pretrained_once()
        source = self._loaded_from
        if source is None:
            raise ValueError(f"this checkpoint holds only the trainable weights (checkpoint_weights: trainable); "
                             f"the frozen rest is its init_from {meta.get('base')!r}: set model.init_args.init_from")
        if not math.isclose(self.frozen_checksum(), meta["base_checksum"], rel_tol=1e-9):
            raise ValueError(f"init_from {source!r} is not the frozen base this checkpoint was trained on (its "
                             f"weights differ from {meta.get('base')!r} then): give that run's base")
        saved = checkpoint["state_dict"]
        checkpoint["state_dict"] = {**{k: v for k, v in self.state_dict().items() if k not in saved}, **saved}
        self.new_heads.clear()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Dropout draws from a generator seeded by (seed, rank, epoch, batch): a run resumed mid-epoch makes the
        same draws as one that never stopped (Lightning does not checkpoint random states)."""
        self._batch_idx = batch_idx
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        torch.manual_seed(mix_seed(seed, self.global_rank, self.current_epoch, batch_idx))

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
        if self._bad_where and self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self._read_nonfinite()  # with the logging step, which reads the logged values back anyway

    def on_train_epoch_end(self) -> None:
        self._read_nonfinite()

    def on_train_end(self) -> None:
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
        from another device) trains as this run built its optimizer. The heads drawn for init_from train from here
        on: a test after this fit (same process, no checkpoint) measures trained heads."""
        self.new_heads.clear()
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                for key in ("fused", "foreach"):
                    if key in group and key in optimizer.defaults:
                        group[key] = optimizer.defaults[key]

    def on_fit_start(self) -> None:
        total, trainable = num_parameters(self.net), num_parameters(self.net, trainable_only=True)
        rank_zero_info(f"{type(self).__name__}: {total / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trainable, "
                       f"{100 * trainable / max(total, 1):.2f} %; finetune: {self.hparams.get('finetune', 'full')})")
        for logger in self.loggers:
            logger.log_metrics({"params/total": float(total), "params/trainable": float(trainable)}, step=0)

    def configure_optimizers(self):
        hp = self.hparams
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            if hp.schedule != "constant" or 0 < hp.warmup < 1:
                raise ValueError(
                    "the learning-rate schedule needs a length: set --trainer.max_steps or --trainer.max_epochs, "
                    "or use model.init_args.schedule: constant with warmup in steps"
                )
            total = 1
        # fused AdamW where torch has it, except under 16-mixed: a fused optimizer unscales inside its step, so
        # Lightning would not unscale the gradients before clipping them; the foreach one keeps that order
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        optimizer, scheduler = build_optimizer(
            self.net, hp.lr, hp.weight_decay, tuple(hp.betas), hp.eps, hp.schedule, hp.warmup,
            total_steps=max(1, int(total)), layer_decay=hp.get("layer_decay", 1.0), fused=False if scaled else None,
            decay=hp.get("decay", 0.1),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
