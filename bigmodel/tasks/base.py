"""What every task shares (``TaskBase``: optimiser settings, ``init_from`` (its part: ``starting_weights.py``), the
checkpoint entry, compilation, per-batch reseeding) and ``Task``, the base bigmodel's own tasks subclass: ``TaskBase``
with the parts in ``finetuning.py`` (fine-tuning modes, adapter-only checkpoints, int8 inference) and ``guards.py``
(the non-finite check and the clipping that shares its norm).

Subclass ``Task`` to get everything bigmodel's tasks have (the same init args and checkpoints as before the split);
subclass ``TaskBase`` for a network the parts do not fit, and list the parts you want before it in the bases."""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import BatchSizeFinder, LearningRateFinder
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from bigmodel.nn import EncoderConfig, num_parameters
from bigmodel.nn.embeddings import max_sequence_length
from bigmodel.tasks.checkpoints import META_KEY, TASKS, Pretrained
from bigmodel.tasks.finetuning import FineTuning, Int8Inference
from bigmodel.tasks.guards import NonFiniteGuard
from bigmodel.tasks.optim import Schedule, build_optimizer, optimizer_steps, schedule_change
from bigmodel.tasks.parts import drop_left_out, reading_checkpoint
from bigmodel.tasks.starting_weights import StartingWeights
from bigmodel.utils.formatting import count, share
from bigmodel.utils.seeding import mix_seed

_GLOBAL_KEYS: set[str] = set()  # keys log_global has silenced Lightning's sync_dist advice for (once each)


def check_data_length(config: EncoderConfig, data: dict[str, Any], whose: str, source: str = "",
                      more: str = "") -> None:
    """The data's longest sequence (``data``: the data module's ``max_length`` or ``block_size``) must have positions
    in ``whose`` encoder (the task's, a distillation teacher's, named by ``source``): refused at setup, not by the
    embedding at the first batch that long (possibly deep into training). ``more``: a fix beside a shorter length."""
    name = next((n for n in ("max_length", "block_size") if data.get(n) is not None), None)
    if name is None:
        return
    length, limit = data[name], max_sequence_length(config)
    if length > limit:
        offset = f" less the offset {config.position_offset}" if config.position_offset else ""
        raise ValueError(f"data.init_args.{name} {length} is longer than {whose} {limit} positions "
                         f"({source}max_position_embeddings {config.max_position_embeddings}{offset}); set "
                         f"data.init_args.{name} to at most {limit}{more}")


class TaskBase(StartingWeights, L.LightningModule):
    """Args (set under ``model.init_args`` in YAML):
        lr: peak learning rate of AdamW.
        weight_decay: applied to weight matrices and embeddings, never to biases or LayerNorm.
        betas, eps: AdamW's.
        schedule: ``linear`` or ``cosine`` decay to zero after warmup, ``constant``, or warmup-stable-decay
            (``wsd``: the peak lr held after warmup, then a linear decay to zero over the last ``decay`` steps;
            ``wsd_sqrt``: that decay as 1 - sqrt(progress), ModernBERT's).
        warmup: warmup length, as a fraction of all steps (< 1) or a number of steps (>= 1).
        decay: length of ``wsd``'s final decay, as ``warmup`` (ignored by the other schedules).
        compile: ``torch.compile`` the network in place (parameter names, hence checkpoints, stay unchanged).
            Pays off most for fixed shapes (images). Variable text lengths do not compile once per length: the
            first length gets a static graph, the second a graph with a dynamic length that serves the rest
            (a batch without padding, which has no attention mask, is one more graph); ``pad_to_multiple_of``
            (data) bounds the lengths, ``masked_positions_multiple_of`` the MLM's masked counts.
        layer_decay: layer-wise learning-rate decay, e.g. 0.8: each layer down from the head trains at that
            fraction of the one above (embeddings lowest); 1.0 is off.

    Subclasses build ``self.net`` (a plain ``nn.Module``; a text encoder at ``self.net.encoder``), set
    ``checkpoint_task`` and implement the steps; see experiments/extending/README.md.
    """

    net: nn.Module
    # checkpoint["bigmodel"]["task"]: `--ckpt_path` is checked against it, and init_from reads it; give each task
    # its own name
    checkpoint_task: ClassVar[str | None] = None
    # the learning-rate schedule's length (saved in checkpoints) and, while a fit resumes, the checkpoint's
    # (steps, resumed step, lr there)
    _schedule_steps: int | None = None
    _built_lr: float | None = None  # the lr the optimizer was built with
    _resumed_schedule: tuple[int, int, float] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A class that names its checkpoints is found by that name (a trainable-only checkpoint read by init_from
        or ``export`` is completed by its own task); subclasses that keep their parent's name do not replace it."""
        super().__init_subclass__(**kwargs)
        if vars(cls).get("checkpoint_task"):
            TASKS.setdefault(cls.checkpoint_task, cls)

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        schedule: Schedule = "linear",
        warmup: float = 0.06,
        decay: float = 0.1,
        compile: bool = False,
        layer_decay: float = 1.0,
        **left_out: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # collects the init args of the parts and the subclass too
        drop_left_out(self, left_out)  # settings of parts this class leaves out (parts.py)
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self._pretrained: Pretrained | None = None  # init_from, read in __init__, loaded in setup
        self._loaded_from: str | None = None  # the init_from whose weights went in
        self.new_heads: list[str] = []  # heads init_from lacks (load_pretrained draws them): random until trained

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> Any:
        """Lightning's, except that a checkpoint written while the task had a part it now leaves out (a lab's task
        moved from ``Task`` to ``TaskBase``) still loads (``parts.drop_left_out``)."""
        with reading_checkpoint():
            return super().load_from_checkpoint(*args, **kwargs)

    def setup(self, stage: str) -> None:
        """``init_from`` weights go in when a run starts from them (fit, or validate/test of a published model); a
        run restored from its own checkpoint (a resumed fit, test or predict of a trained model) then gets the
        checkpoint's (the CLI leaves init_from unset there, unless the checkpoint holds only the trainable ones)."""
        self._check_data_length()
        if self._pretrained is not None and self.trainer.ckpt_path is None:
            self._load_pretrained_once()

    def data_hparams(self) -> dict[str, Any]:
        """The hyper-parameters of the trainer's data module (``max_length``, ...); a task set up by hand has none."""
        return getattr(getattr(self._trainer, "datamodule", None), "hparams", {})

    def _check_data_length(self) -> None:
        """The data's longest sequence must have positions in the text encoder (``check_data_length``)."""
        config = getattr(self, "config", None)
        if isinstance(config, EncoderConfig):
            from_preset = not (self.hparams.get("init_from") or getattr(self._trainer, "ckpt_path", None))
            more = ", or give the encoder more (model.init_args.encoder_config.max_position_embeddings)" \
                if from_preset else ""
            check_data_length(config, self.data_hparams(), "the encoder's", more=more)

    def log_global(self, values: Mapping[str, torch.Tensor | float], **kwargs: Any) -> None:
        """Logs epoch values that are the same on every rank already (torchmetrics synced them, or all_gather):
        no all-reduce, and without Lightning's advice to add ``sync_dist=True``, which it gives under DDP for any
        epoch value logged without it (silenced for these keys only)."""
        for key in set(values) - _GLOBAL_KEYS:
            warnings.filterwarnings("ignore", message=re.escape(f"It is recommended to use `self.log({key!r}, "),
                                    category=PossibleUserWarning)
            _GLOBAL_KEYS.add(key)
        self.log_dict(dict(values), sync_dist=False, **kwargs)

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
        """Compilation; Lightning calls this before restoring a checkpoint (and ``load_from_checkpoint`` too).
        Idempotent."""
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``checkpoint["bigmodel"]`` from ``checkpoint_meta``, and the length the learning-rate schedule was built
        for (``schedule_steps``): a resumed fit of another length says that its schedule differs."""
        checkpoint[META_KEY] = self.checkpoint_meta()
        if self._schedule_steps is not None:
            checkpoint[META_KEY]["schedule_steps"] = self._schedule_steps
        # the training loader's state is the data module's (``data.base.ResumableLoader`` holds none): Lightning's
        # empty entry would make a resume with another, plain loader fail ("0 stateful loaders, but found 1 states")
        loops = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        fit_loop = loops.get("state_dict") or {}
        if fit_loop.get("combined_loader") and not any(fit_loop["combined_loader"]):
            del fit_loop["combined_loader"]
        # a fit that max_steps (or a stop at a validation) ended before its epoch's last batch: Lightning counts the
        # epoch as processed (and as completed too when last.ckpt is written at the fit's end, after a validation
        # mid-epoch), and a resume with a longer schedule would start the next one, skipping the rest of this
        # epoch. Recorded as the mid-epoch state it is (the epoch started, not finished), the resume goes on after
        # the last batch trained.
        epochs, batches = loops.get("epoch_progress"), loops.get("epoch_loop.batch_progress")
        if epochs and batches and batches.get("is_last_batch") is False:
            for counts in (epochs["current"], epochs["total"]):
                counts["processed"] = counts["completed"] = min(counts["completed"], max(counts["started"] - 1, 0))
            checkpoint["epoch"] = epochs["current"]["completed"]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's weights replace init_from's (so none is read), heads included: none is untrained. A
        Trainer resuming a fit keeps the schedule's length, step and lr to compare with the one it builds."""
        self.new_heads.clear()
        self._pretrained = None
        saved = (checkpoint.get(META_KEY) or {}).get("schedule_steps")
        schedulers = checkpoint.get("lr_schedulers") or [{}]
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if fitting and saved and "last_epoch" in schedulers[0]:
            self._resumed_schedule = (saved, schedulers[0]["last_epoch"], max(schedulers[0].get("_last_lr") or [0.0]))

    def _say_schedule_change(self) -> None:
        """One line when a resumed fit's schedule is built for another number of steps than the checkpoint's (a
        larger ``max_steps``): the schedule is recomputed over the new length from the resumed step, so the lr may
        jump. Called at train start, when every strategy has built the schedule and restored its state."""
        resumed, self._resumed_schedule = self._resumed_schedule, None
        configs = self.trainer.lr_scheduler_configs
        if resumed is not None and configs and resumed[0] != self._schedule_steps:
            rank_zero_warn(schedule_change(*resumed, self._schedule_steps, configs[0].scheduler))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Dropout draws from a generator seeded by (seed, rank, epoch, batch): a run resumed mid-epoch makes the
        same draws as one that never stopped (Lightning does not checkpoint random states)."""
        self._batch_idx = batch_idx
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        torch.manual_seed(mix_seed(seed, self.global_rank, self.current_epoch, batch_idx))

    def on_train_start(self) -> None:
        """The heads drawn for init_from train from here on: a test after this fit (same process, no checkpoint)
        measures trained heads. A resumed fit's schedule of another length is said here."""
        self.new_heads.clear()
        self._say_schedule_change()

    def on_fit_start(self) -> None:
        self._rebuild_after_tuners()
        total, trainable = num_parameters(self.net), num_parameters(self.net, trainable_only=True)
        mode = f"; finetune: {self.hparams.finetune}" if "finetune" in self.hparams else ""
        rank_zero_info(f"{type(self).__name__}: {count(total)} parameters ({count(trainable)} trainable, "
                       f"{share(trainable, total)}{mode})")
        for logger in self.loggers:
            logger.log_metrics({"params/total": float(total), "params/trainable": float(trainable)}, step=0)

    def _rebuild_after_tuners(self) -> None:
        """Lightning's LearningRateFinder and BatchSizeFinder run as a fit starts, after the optimizer and its lr
        schedule were built: the schedule kept the configured lr as its base (training ran at it while the
        checkpoint recorded the finder's) and the configured batch size's length (a larger batch: the lr came
        down to zero and rose again). Both are rebuilt with what they found (before a resume restores their state)."""
        trainer = self._trainer  # (None: a hook called by hand, outside a fit)
        if trainer is None or self._built_lr is None or not any(
                isinstance(cb, (LearningRateFinder, BatchSizeFinder)) for cb in trainer.callbacks):
            return  # (or a task whose own configure_optimizers builds no bigmodel schedule)
        if self.hparams.get("lr") != self._built_lr or self._schedule_length() != self._schedule_steps:
            trainer.strategy.setup_optimizers(trainer)

    def fused_adamw(self) -> bool | None:
        """Whether AdamW is fused (None: where torch has it). Not under 16-mixed: a fused optimizer unscales inside
        its step, so Lightning would not unscale the gradients before clipping them (the foreach one keeps that
        order); nor where Lightning's clipping refuses a fused optimizer (mixed precision with gradient_clip_val;
        ``NonFiniteGuard`` clips it itself)."""
        plugin = self.trainer.precision_plugin
        if getattr(plugin, "scaler", None) is not None:
            return False
        return False if self.trainer.gradient_clip_val and isinstance(plugin, MixedPrecision) else None

    def _schedule_length(self) -> int:
        """The number of steps the lr schedule is built for."""
        hp, total = self.hparams, optimizer_steps(self.trainer)
        if not math.isfinite(total):
            if hp.schedule != "constant" or 0 < hp.warmup < 1:
                raise ValueError(
                    "the learning-rate schedule needs a length: set --trainer.max_steps or --trainer.max_epochs, "
                    "or use model.init_args.schedule: constant with warmup in steps"
                )
            total = 1
        return max(1, int(total))

    def configure_optimizers(self):
        hp = self.hparams
        total = self._schedule_length()
        optimizer, scheduler = build_optimizer(
            self.net, hp.lr, hp.weight_decay, tuple(hp.betas), hp.eps, hp.schedule, hp.warmup,
            total_steps=total, layer_decay=hp.get("layer_decay", 1.0), fused=self.fused_adamw(),
            decay=hp.get("decay", 0.1),
        )
        self._schedule_steps = total  # saved with the checkpoint
        self._built_lr = hp.lr  # (``_rebuild_after_tuners``)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class Task(Int8Inference, FineTuning, NonFiniteGuard, TaskBase):
    """``TaskBase`` with every part bigmodel's tasks have: ``Int8Inference`` (``quantize``), ``FineTuning``
    (``finetune``, ``lora``, ``checkpoint_weights``) and ``NonFiniteGuard`` (``nonfinite``, the clipping). Its init
    args are the parts' and ``TaskBase``'s, by keyword; see each for what they mean."""
