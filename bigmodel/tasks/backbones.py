"""What ``ClassificationTask`` classifies with, and how its checkpoints name it.

A network comes by class path -- an image backbone (``backbone``, called ``backbone(num_classes)``) or a text encoder
of one's own (``encoder``, called ``encoder(vocab_size)``) -- or, for text, as a preset of the shared encoder. A
network given by class path is stored as ``{class_path, init_args}`` in the hyper-parameters (what the CLI stores),
so test, predict, ``load_from_checkpoint`` and ``export`` rebuild it from the checkpoint alone.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from bigmodel.nn.heads import POOLINGS, ClassificationHead, Pooling
from bigmodel.tasks.checkpoints import Pretrained


def backbone_spec(backbone: Any) -> dict[str, Any] | None:
    """A class, function or ``functools.partial`` of one as ``{class_path, init_args}`` -- what the CLI stores --
    so checkpoints stay plain data and ``load_from_checkpoint`` can rebuild the backbone."""
    func, kwargs = backbone, {}
    if isinstance(backbone, functools.partial) and not backbone.args:
        func, kwargs = backbone.func, dict(backbone.keywords)
    path = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', '')}"
    if "<" in path or not callable(func) or path.startswith("."):
        rank_zero_warn(f"backbone {backbone!r} cannot be named by an import path: checkpoints will not rebuild it "
                       "(pass backbone= to load_from_checkpoint, or use a class or functools.partial of one)")
        return None
    return {"class_path": path, "init_args": kwargs}


def build_backbone(backbone: Any, size: int) -> nn.Module:
    """``backbone(size)``: ``size`` is the class count of an image backbone, the vocabulary of a text encoder."""
    if isinstance(backbone, dict):  # {class_path, init_args}: a checkpoint's hyper-parameters read outside the CLI
        module, _, name = backbone["class_path"].rpartition(".")
        backbone = functools.partial(getattr(importlib.import_module(module), name), **backbone.get("init_args", {}))
    return backbone(size)


class EncoderClassifier(nn.Module):
    """A text encoder of one's own under bigmodel's classification head (pooling, dropout, linear layer): what
    ``SequenceClassifier`` is for the shared encoder, with the same ``(logits, encoder output)`` result.

    The encoder is ``self.encoder`` (so ``finetune: linear_probe`` or ``bitfit`` freeze it), has ``hidden_size``,
    and maps ``(input_ids, attention_mask)`` to ``(B, S, hidden_size)`` states (or an output with
    ``last_hidden_state``)."""

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.1, pooling: Pooling = "mean") -> None:
        super().__init__()
        hidden_size = getattr(encoder, "hidden_size", None)
        if not isinstance(hidden_size, int):
            raise ValueError(f"text encoder {type(encoder).__name__} has no hidden_size: set self.hidden_size to the "
                             "width of the states it returns, which the classification head reads")
        self.encoder = encoder
        self.head = ClassificationHead(hidden_size, num_classes, dropout, pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        out = self.encoder(input_ids, attention_mask)
        return self.head(getattr(out, "last_hidden_state", out), attention_mask), out


def choose_pooling(pooling: Pooling | None, finetune: str, pretrained: Pretrained | None,
                   own_encoder: bool = False) -> tuple[Pooling, str]:
    """The text classifier's pooling and why: set, the source's declared one, or the default (an encoder of one's
    own: the mean over real tokens; the shared one: the mode's)."""
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    if finetune == "linear_probe" and pooling == "pooler":
        raise ValueError("finetune: linear_probe trains one linear layer, and pooling: pooler puts BERT's tanh "
                         "pooler (a trained dense layer) before it: use finetune: pooler_probe for that, or "
                         "pooling: cls or mean")
    if finetune == "pooler_probe" and pooling not in (None, "pooler"):
        raise ValueError(f"finetune: pooler_probe trains BERT's tanh pooler and the classifier, which pooling: "
                         f"{pooling} does not have: use finetune: linear_probe, or pooling: pooler")
    if pooling is not None:
        return pooling, "set by model.init_args.pooling"
    if finetune == "pooler_probe":
        return "pooler", "finetune: pooler_probe"
    declared = pretrained.pooling if pretrained is not None else None
    if declared in POOLINGS:
        where = "sentence-transformers Pooling config" if pretrained.kind == "huggingface" else "checkpoint"
        return declared, f"the source's own, from its {where}"
    if own_encoder:
        return "mean", "an encoder by class path: the mean over real tokens"
    unknown = f"the source's {declared} pooling is not one of {', '.join(POOLINGS)}; " if declared else \
        "the source declares none; "
    if finetune == "linear_probe":
        return "cls", unknown + "a linear probe reads [CLS] without the tanh pooler"
    return "pooler", unknown + "BERT's classifier"
