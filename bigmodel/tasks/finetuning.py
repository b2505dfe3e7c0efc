"""Parts a task composes for fine-tuning a pretrained text encoder: which parameters train (``FineTuning``, with
adapter-only checkpoints) and int8 inference (``Int8Inference``).

Parts of their own (not of ``TaskBase``) because they assume the network layout of bigmodel's text models (a shared
encoder at ``net.encoder``, LoRA targets by bigmodel's layer names, ``nn.Linear`` layers to quantize) and add init
args, checkpoint entries and hooks a lab's own network may not fit. ``bigmodel.tasks.Task`` composes both; a task
on ``TaskBase`` leaves them out, or lists the ones it wants before ``TaskBase`` in its bases.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from typing import Any, Literal, get_args

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from bigmodel.nn.encoder import num_parameters
from bigmodel.nn.peft import Finetune, LoRAConfig, add_lora, set_trainable
from bigmodel.tasks.checkpoints import META_KEY, archived_copies, resolve

# how a command line sets the base of an adapter-only checkpoint (``bigmodel export`` names its own --init_from)
BASE_OPTION = "--model.init_args.init_from"
PROBES = ("linear_probe", "pooler_probe")  # modes that train nothing of the encoder: it runs in eval mode


class FineTuning:
    """Which parameters train, and checkpoints that hold only those.

    Args:
        finetune: which parameters train (``bigmodel.nn.peft``): ``full``; ``linear_probe`` (the encoder frozen
            and run in eval mode, without dropout, in training too; the head -- one linear layer on [CLS] or
            mean-pooled features -- trained); ``pooler_probe`` (the same with BERT's tanh pooler before it, also
            trained); ``bitfit`` (the encoder's biases and the head);
            ``lora`` (low-rank updates of the encoder's ``lora.targets`` projections and the head). Frozen
            parameters get no optimizer state.
        lora: rank, alpha, dropout, targets (``q``, ``k``, ``v``, ``proj``, ``up``, ``down``; ``qkv`` = [q, k, v])
            and rslora of ``finetune: lora`` (``bigmodel.nn.peft.LoRAConfig``).
        checkpoint_weights: ``all``, or ``trainable``: with a frozen encoder (``finetune`` other than ``full``),
            checkpoints hold only what trains (LoRA updates, biases, the head) and the buffers -- a small file --
            plus where the frozen rest came from (``init_from``, which must be set) and a checksum of it; resuming,
            testing, predicting, ``export`` and ``init_from`` rebuild the frozen part from that source.
    """

    def __init__(self, *args: Any, finetune: Finetune = "full", lora: LoRAConfig | None = None,
                 checkpoint_weights: Literal["all", "trainable"] = "all", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if checkpoint_weights not in ("all", "trainable"):
            raise ValueError(f"checkpoint_weights {checkpoint_weights!r}: choose all or trainable")
        if checkpoint_weights == "trainable" and finetune == "full":
            raise ValueError("checkpoint_weights: trainable keeps only what trains, and with finetune: full that is "
                             "everything: set finetune to lora, bitfit or linear_probe, or checkpoint_weights: all")
        if checkpoint_weights == "trainable" and not self.hparams.get("init_from"):
            raise ValueError("checkpoint_weights: trainable rebuilds the frozen encoder from init_from, which is "
                             "unset: set model.init_args.init_from (the frozen base), or checkpoint_weights: all")
        if finetune not in get_args(Finetune):
            raise ValueError(f"finetune {finetune!r}: choose one of {', '.join(get_args(Finetune))}")
        self.lora = LoRAConfig(**lora) if isinstance(lora, dict) else (lora or LoRAConfig())
        self.hparams["lora"] = asdict(self.lora)  # plain data: checkpoints load with weights_only

    def setup(self, stage: str) -> None:
        super().setup(stage)
        finetune = self.hparams.get("finetune", "full")
        if stage != "fit":
            return  # (a checkpoint trained so is still tested, predicted and exported)
        if finetune != "lora" and self.lora != LoRAConfig():  # e.g. lora.yaml, then finetune: full
            rank_zero_warn(f"lora settings are given but finetune is {finetune}, so they do nothing: set finetune: "
                           "lora to train LoRA updates, or drop them")
        if finetune == "bitfit" and not any(p.requires_grad for p in self.net.encoder.parameters()):
            raise ValueError("finetune: bitfit trains the encoder's bias terms, and this encoder has none (bias: "
                             "false, as ModernBERT): it would train only the head; use finetune: lora or "
                             "pooler_probe")

    def configure_model(self) -> None:
        """The fine-tuning mode, before compilation; Lightning calls this before restoring a checkpoint (and
        ``load_from_checkpoint`` too), so a LoRA checkpoint finds its LoRA layers. Idempotent."""
        finetune = self.hparams.get("finetune", "full")
        if finetune != "full":
            if not isinstance(getattr(self.net, "encoder", None), nn.Module):
                raise ValueError(f"finetune: {finetune} needs a model on the shared encoder (net.encoder); "
                                 f"{type(self.net).__name__} has none: use finetune: full")
            if finetune == "lora":
                add_lora(self.net.encoder, self.lora)
            set_trainable(self.net, finetune)
        super().configure_model()

    def train(self, mode: bool = True) -> "FineTuning":
        """A probe's frozen encoder stays in eval mode while the head trains: its features are the pretrained
        model's, not dropped-out ones (dropout in a frozen encoder is noise the head must learn around)."""
        super().train(mode)
        encoder = getattr(getattr(self, "net", None), "encoder", None)  # (configure_model refuses a net without)
        if mode and self.hparams.get("finetune", "full") in PROBES and isinstance(encoder, nn.Module):
            encoder.eval()
        return self

    def on_train_start(self) -> None:
        super().on_train_start()
        self.train()  # Lightning leaves modules as built (all training): put a probe's encoder in eval mode

    def frozen_parameter_names(self) -> set[str]:
        return {name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def frozen_checksum(self) -> float:
        """Sum of |w| over the frozen parameters (float64): tells whether ``init_from`` still holds the weights a
        run of trainable-only checkpoints was trained on (a base file overwritten by further pretraining does not)."""
        frozen = [p.detach().abs().sum(dtype=torch.float64) for p in self.parameters() if not p.requires_grad]
        return float(torch.stack(frozen).sum()) if frozen else 0.0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """With ``checkpoint_weights: trainable`` the frozen parameters are left out of the state dict."""
        super().on_save_checkpoint(checkpoint)
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
        meta = checkpoint.get(META_KEY) or {}
        if meta.get("weights") != "trainable":
            super().on_load_checkpoint(checkpoint)
            return
        if self._pretrained is not None:  # load_from_checkpoint (a Trainer's setup has loaded it already)
            self._load_pretrained_once()
        source = self._loaded_from
        if source is None:
            raise ValueError(f"this checkpoint holds only the trainable weights (checkpoint_weights: trainable); "
                             f"the frozen rest is its init_from {meta.get('base')!r}: set model.init_args.init_from")
        if not self._is_base(self.frozen_checksum(), meta["base_checksum"]):
            raise ValueError(self._wrong_base(source, meta))
        saved = checkpoint["state_dict"]
        checkpoint["state_dict"] = {**{k: v for k, v in self.state_dict().items() if k not in saved}, **saved}
        super().on_load_checkpoint(checkpoint)  # the other parts' and TaskBase's (heads trained, the schedule kept)

    @staticmethod
    def _is_base(checksum: float, saved: float) -> bool:
        return math.isclose(checksum, saved, rel_tol=1e-9)

    def _wrong_base(self, source: str, meta: dict[str, Any]) -> str:
        """The one-line refusal of a base whose frozen weights are not the checkpoint's: which option to set, and
        to which file when bigmodel archived the original (a fresh pretraining run under the same name moves the
        earlier run's checkpoints to ``checkpoints/previous/<time>/``)."""
        recorded, saved = str(meta.get("base")), meta["base_checksum"]
        same = _same_path(source, recorded)
        now = self.frozen_checksum()
        what = (f"its frozen weights changed since: checksum {now:.10g} now, {saved:.10g} then" if same else
                f"it was trained on {recorded!r}: frozen-weight checksum {now:.10g} here, {saved:.10g} there")
        archived = [c for path in (recorded, source) for c in archived_copies(path)]
        own = [] if same or not os.path.exists(os.path.expanduser(recorded)) else [recorded]
        candidates = [c for c in dict.fromkeys(own + archived) if not _same_path(c, source)]
        found = next((c for c in candidates if self._is_base(self._checksum_with_base(c), saved)), None)
        fix = f"set {BASE_OPTION} PATH to the base it was trained on"
        if found:
            fix = f"{'bigmodel archived that base as' if found in archived else 'that base is'} {found}: " \
                  f"set {BASE_OPTION} {found}"
        return f"init_from {source!r} is not the frozen base this checkpoint was trained on ({what}); {fix}"

    def _checksum_with_base(self, source: str) -> float:
        """``frozen_checksum`` with ``source`` loaded as the base (NaN when it does not fit); this task's weights
        are put back after."""
        kept, heads = {k: v.clone() for k, v in self.state_dict().items()}, list(self.new_heads)
        try:
            self.load_pretrained(resolve(source))
            return self.frozen_checksum()
        except (ValueError, OSError, KeyError):  # not readable, or another architecture: not the base
            return math.nan
        finally:
            self.load_state_dict(kept)
            self.new_heads[:] = heads


def _same_path(a: str, b: str) -> bool:
    return os.path.abspath(os.path.expanduser(a)) == os.path.abspath(os.path.expanduser(b))


class Int8Inference:
    """Test and predict on CPU with dynamic int8 linear layers.

    Args:
        quantize: ``int8``: test and predict on CPU with dynamic int8 linear layers (``bigmodel.nn.quantize``;
            LoRA merged first). An inference setting: not stored in checkpoints, so it can be added at test time.
    """

    def __init__(self, *args: Any, quantize: Literal["int8"] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # how to run inference is not how the model was trained: kept out of the checkpoint's hyper-parameters,
        # which Lightning's CLI lets override the command line (as CausalLMTask's decoding settings)
        self.quantize = self.hparams.pop("quantize", None)
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize {quantize!r}: choose int8 or null")

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device.type
        if self.quantize and (stage == "fit" or device != "cpu"):
            raise ValueError(f"quantize: {self.quantize} is for test and predict on CPU (dynamic int8 kernels), not "
                             f"{'for training' if stage == 'fit' else 'on ' + device}: drop quantize, or run "
                             "test/predict with --trainer.accelerator cpu")
        super().setup(stage)

    def on_validation_start(self) -> None:
        super().on_validation_start()
        self._quantize()  # reached with quantize set only by validate: setup refuses it in fit

    def on_test_start(self) -> None:
        super().on_test_start()
        self._quantize()

    def on_predict_start(self) -> None:
        super().on_predict_start()
        self._quantize()

    def _quantize(self) -> None:
        """After the checkpoint's float weights are in (Lightning restores them after ``setup``)."""
        if self.quantize and not getattr(self, "_quantized", False):
            from bigmodel.nn.quantize import quantize_int8

            # int8 layers hold their weights packed, not as Parameters: the counts a run records are the model's
            self.parameter_counts = {"total": num_parameters(self.net),
                                     "trainable": num_parameters(self.net, trainable_only=True)}
            self.net, count = quantize_int8(self.net)
            self._quantized = True
            rank_zero_info(f"quantize: {self.quantize}: {count} linear layers run in int8")
