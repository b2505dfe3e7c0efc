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
from bigmodel.seeding import mix_seed
from bigmodel.tasks.optim import Schedule, build_optimizer


class Task(L.LightningModule):
    """Args (set under ``model.init_args`` in YAML):
        lr: peak learning rate of AdamW.
        weight_decay: applied to weight matrices and embeddings, never to biases or LayerNorm.
        betas, eps: AdamW's.
        schedule: ``linear`` or ``cosine`` decay to zero after warmup, or ``constant``.
        warmup: warmup length, as a fraction of all steps (< 1) or a number of steps (>= 1).
        nonfinite: what a NaN/inf gradient does: ``stop`` the run naming the step, ``skip`` that optimizer step
            (no parameter or optimizer-state update; counted in ``train/skipped_steps``), or ``off`` (no check,
            saves one host sync per optimizer step).
        compile: ``torch.compile`` the network in place (parameter names, hence checkpoints, stay unchanged).
            Pays off most for fixed shapes (images); text lengths go dynamic after the second one, and
            ``pad_to_multiple_of`` (data) bounds how many there are.
        finetune: which parameters train (``bigmodel.nn.peft``): ``full``; ``linear_probe`` (the encoder frozen,
            the head trained); ``bitfit`` (the encoder's biases and the head); ``lora`` (low-rank updates of the
            encoder's ``lora.targets`` layers and the head). Frozen parameters get no optimizer state.
        lora: rank, alpha, dropout and targets of ``finetune: lora``.
        layer_decay: layer-wise learning-rate decay, e.g. 0.8: each layer down from the head trains at that
            fraction of the one above (embeddings lowest); 1.0 is off.
        checkpoint_weights: ``all``, or ``trainable``: with a frozen encoder (``finetune`` other than ``full``),
            checkpoints hold only what trains (LoRA updates, biases, the head) and the buffers -- a small file --
            plus where the frozen rest came from (``init_from``, which must be set) and a checksum of it; resuming,
            testing, predicting, ``export`` and ``init_from`` rebuild the frozen part from that source.
        quantize: ``int8``: test and predict on CPU with dynamic int8 linear layers (``bigmodel.nn.quantize``;
            LoRA merged first). An inference setting: not stored in checkpoints, so it can be added at test time.

    Subclasses build ``self.net`` (a plain ``nn.Module``; a text encoder at ``self.net.encoder``), set
    ``checkpoint_task`` and implement the steps; see README, "Extending bigmodel".
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
        self.skipped_steps = 0
        self._announced_scaler = False
        self._pretrained: Pretrained | None = None  # init_from, read in __init__, loaded in setup
        self._loaded_from: str | None = None  # the init_from whose weights went in

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

    def load_pretrained(self, pretrained: Pretrained) -> list[str]:
        """Puts ``init_from``'s weights into ``self.net``; returns notes on what was adapted or left new."""
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
        is read again from ``init_from``, checked against the checksum saved with it, and fills in the rest."""
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

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Dropout draws from a generator seeded by (seed, rank, epoch, batch): a run resumed mid-epoch makes the
        same draws as one that never stopped (Lightning does not checkpoint random states)."""
        self._batch_idx = batch_idx
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        torch.manual_seed(mix_seed(seed, self.global_rank, self.current_epoch, batch_idx))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stops (or skips) a step with non-finite gradients before the parameters are touched.

        Under ``16-mixed`` the GradScaler owns overflows: it skips the step and lowers the scale, routinely in the
        first steps, so gradients are not checked here; only a scale that collapses (every step overflows: a NaN
        in the forward pass) stops the run. Under DDP gradients are already reduced, so ranks agree; under
        sharded strategies (FSDP) each rank sees its shard, so the decision is reduced across ranks."""
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
        grads = [g.to_local() if hasattr(g, "to_local") else g for p in self.parameters() if (g := p.grad) is not None]
        finite = not grads or bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())  # one host sync
        if self.trainer.world_size > 1 and not isinstance(self.trainer.strategy, L.pytorch.strategies.DDPStrategy):
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
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
        self.log("train/skipped_steps", float(self.skipped_steps))

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
        optimizer, scheduler = build_optimizer(
            self.net, hp.lr, hp.weight_decay, tuple(hp.betas), hp.eps, hp.schedule, hp.warmup,
            total_steps=max(1, int(total)), layer_decay=hp.get("layer_decay", 1.0),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
