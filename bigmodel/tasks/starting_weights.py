"""What ``init_from`` does to a task (``StartingWeights``, a base of ``TaskBase``): the architecture it dictates,
its weights loaded once when a run starts from them, and the heads it lacks (drawn, and untrained until a step
trains them, which the metrics of a ``validate``/``test`` then say). A module of its own so ``base.py`` holds the
rest of what every task shares."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from bigmodel.nn import EncoderConfig
from bigmodel.tasks.checkpoints import Pretrained, check_vocabulary, resolve, text_config


class StartingWeights:
    """The ``init_from`` side of a task. ``TaskBase.__init__`` sets its state: ``_pretrained`` (read in
    ``__init__``, loaded in ``setup`` by ``_load_pretrained_once``), ``_loaded_from`` (the source whose weights
    went in) and ``new_heads`` (the heads the source lacks); subclasses implement ``load_pretrained``."""

    _pretrained: Pretrained | None
    _loaded_from: str | None
    new_heads: list[str]

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
            self.log_global({f"{prefix}random_head": 1.0})

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
