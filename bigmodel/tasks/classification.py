"""Classification for text and images: one task, two kinds of backbone.

Text: an encoder + pooling + classifier; the encoder is a preset of the shared one, from scratch or from an MLM
checkpoint (``init_from``), or one of one's own by class path (``encoder(vocab_size)``, see ``tasks/backbones.py``).
Images (or anything else): a ``backbone`` built from its class path, ``backbone(num_classes)`` maps
``batch["pixel_values"]`` to logits. Loss, metrics, confusion matrix and predictions are the same code for both.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from lightning.pytorch.utilities import rank_zero_info

from bigmodel.data.images import EvalPreprocessing
from bigmodel.nn import EncoderConfig, SequenceClassifier
from bigmodel.nn.adversarial import AdversarialConfig, Adversary, embedding_layer
from bigmodel.nn.convert import load_matching
from bigmodel.nn.distillation import distillation_loss
from bigmodel.nn.heads import ClassificationHead, Pooling
from bigmodel.tasks.backbones import (  # noqa: F401 (backbone_spec, build_backbone: imported from here too)
    EncoderClassifier,
    backbone_spec,
    build_backbone,
    choose_pooling,
)
from bigmodel.tasks.base import Task
from bigmodel.tasks.checkpoints import Pretrained, resolve
from bigmodel.tasks.classification_eval import ClassificationEvaluation
from bigmodel.tasks.distillation import load_teacher  # noqa: F401 (imported from here too)

# distillation's settings when unset: any other value without a distill_from is refused by a fit
DISTILL_DEFAULTS = {"distill_temperature": 2.0, "distill_weight": 0.5}


class ClassificationTask(ClassificationEvaluation, Task):
    """Backbone -> logits, cross-entropy (training: with label smoothing, soft targets from MixUp/CutMix; evaluation:
    plain); accuracy, macro F1/precision/recall (+ top-5 above 10 classes); confusion matrix at test time
    (``ClassificationEvaluation``).

    Args:
        num_classes, class_names: linked from the data module.
        backbone: an image (or other) model by class path, e.g. ``bigmodel.nn.VisionTransformer``,
            ``bigmodel.nn.ResNet18``, ``bigmodel.nn.SmallCNN``; called as ``backbone(num_classes)``. Unset: the text
            classifier on the shared encoder, set by the next four arguments.
        encoder: the text encoder: a preset of the shared one (``bert-tiny``, ...), or an encoder of one's own by
            class path with its ``init_args``, called as ``encoder(vocab_size)``: it has ``hidden_size`` and maps
            ``(input_ids, attention_mask)`` to ``(B, S, hidden_size)`` states, under bigmodel's pooling and
            classifier (``tasks.backbones.EncoderClassifier``); checkpoints store the class path and rebuild it.
        encoder_config: the preset's architecture overrides when training from scratch (ignored in favour of the
            checkpoint's architecture with ``init_from``; ``encoder_config`` may still change dropout there).
        vocab_size: linked from the data module's tokenizer; must equal the checkpoint's.
        init_from: where the weights start (see ``bigmodel.tasks.checkpoints.resolve``). Text: a checkpoint of this
            project's MLM or text-classification task, or a Hugging Face BERT/RoBERTa directory or hub name (with or
            without a head); its encoder (and pooler) are loaded, its classifier too when it has the same classes,
            else the classifier is new. With a backbone: an image classification checkpoint of this project, a
            state-dict file or a Hugging Face model directory such as an ImageNet ViT; a head of another class
            count and position embeddings of another image size are adapted.
        classifier_dropout: text head dropout.
        pooling: what the text classifier reads: ``pooler`` ([CLS] through BERT's tanh pooler, as
            ``BertForSequenceClassification``), ``cls`` (the [CLS] state) or ``mean`` (over real tokens). Unset: the
            source's own when it declares one (a sentence-transformers model's Pooling config, a classifier
            checkpoint's), else ``mean`` for an encoder by class path, ``cls`` for ``finetune: linear_probe`` and
            ``pooler`` otherwise. The load message says which and why.
        label_smoothing: cross-entropy label smoothing of the training loss (``train/loss``); ``val/loss`` and
            ``test/loss`` are the plain cross-entropy.
        adversarial: FGM or PGD on the embedding output (``{method: fgm, epsilon: 0.02}``, ``{method: pgd,
            epsilon: 0.02, steps: 3}``; ``bigmodel.nn.adversarial``), on top of any fine-tuning mode; the loss is
            clean + adversarial.
        distill_from: a trained classification checkpoint (not a prompt one) of the same classes (and tokenizer,
            for text) as teacher: the loss becomes ``(1 - distill_weight) * cross-entropy + distill_weight * T^2 * KL`` with
            the teacher's softened probabilities (``distill_temperature``). The teacher runs in eval mode without
            gradients, only in ``fit``, and is not saved in this model's checkpoints.
        **kwargs: optimiser and fine-tuning settings, see ``Task``.
    """

    checkpoint_task = "classification"  # checkpoint["bigmodel"]["task"]: the CLI checks a --ckpt_path against it

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        backbone: Callable[[int], nn.Module] | None = None,
        encoder: str | Callable[[int], nn.Module] = "bert-tiny",
        encoder_config: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        init_from: str | None = None,
        classifier_dropout: float = 0.1,
        pooling: Pooling | None = None,
        label_smoothing: float = 0.0,
        adversarial: AdversarialConfig | None = None,
        distill_from: str | None = None,
        distill_temperature: float = DISTILL_DEFAULTS["distill_temperature"],
        distill_weight: float = DISTILL_DEFAULTS["distill_weight"],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes is None or num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (linked from the data module), got {num_classes}")
        self.adversary: Adversary | None = None
        if adversarial is not None:
            config = AdversarialConfig(**adversarial) if isinstance(adversarial, dict) else adversarial
            self.hparams["adversarial"] = asdict(config)  # plain data: checkpoints load with weights_only
            if self.hparams.compile:
                raise ValueError("adversarial training hooks the embedding layer at every step, which a compiled "
                                 "network would recompile for: set compile: false")
            self.adversary = Adversary(config)
        if distill_temperature <= 0 or not 0 <= distill_weight <= 1:
            raise ValueError(f"distillation needs distill_temperature > 0 and distill_weight in [0, 1], got "
                             f"{distill_temperature} and {distill_weight}")
        self._teacher: nn.Module | None = None
        self.config: EncoderConfig | None = None  # the shared encoder's architecture (None: a network by class path)
        self.reads_text = backbone is None
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self._pooling_reason = ""
        if backbone is not None and (pooling is not None or self.hparams.finetune == "pooler_probe"):
            raise ValueError("pooling and finetune: pooler_probe are for the text classifier; an image backbone has "
                             "its own head: unset them")
        if backbone is not None:
            if not isinstance(self.hparams.get("backbone"), dict):  # given in Python, not by class path (CLI)
                self.hparams["backbone"] = backbone_spec(backbone)
            self.net = build_backbone(backbone, num_classes)
            if init_from:
                self._pretrained = resolve(init_from)
                if self._pretrained.config is not None or self._pretrained.kind == "mlm" or (
                        self._pretrained.kind == "classification" and self._pretrained.backbone is None):
                    raise ValueError(f"init_from {init_from!r} is a text model; a backbone needs an image "
                                     "classification checkpoint or a pretrained state dict")
        elif not isinstance(encoder, str):
            self.net = self._encoder_classifier(num_classes, encoder, encoder_config, vocab_size, init_from,
                                                classifier_dropout, pooling)
        else:
            self.net = self._text_classifier(num_classes, encoder, encoder_config, vocab_size, init_from,
                                             classifier_dropout, pooling)
            if self.adversary is not None and self.config.unpad:  # its perturbation norm is per sentence
                raise ValueError("adversarial training perturbs each sentence's padded embeddings, which unpad: true "
                                 "does not build: set encoder_config: {unpad: false}")
        self.init_evaluation(num_classes)

    def _text_classifier(
        self, num_classes: int, encoder: str, encoder_config: dict[str, Any] | None, vocab_size: int | None,
        init_from: str | None, classifier_dropout: float, pooling: Pooling | None,
    ) -> SequenceClassifier:
        if vocab_size is None:
            raise ValueError(
                "vocab_size is unset: it comes from a text data module's tokenizer through the CLI link "
                "(for images, set model.init_args.backbone)"
            )
        self.config = self.encoder_config_for(encoder, encoder_config, vocab_size, init_from)
        if self.config.causal and init_from:
            raise ValueError(f"init_from {init_from!r} is a causal encoder: its first token ([CLS]) sees nothing after "
                             "it, so it cannot classify; start from an MLM or a Hugging Face BERT/RoBERTa")
        pooling, self._pooling_reason = self._choose_pooling(pooling)
        self.hparams["pooling"] = pooling  # resolved: a checkpoint rebuilds the same head without its source
        return SequenceClassifier(self.config, num_classes, classifier_dropout, pooling)

    def _choose_pooling(self, pooling: Pooling | None) -> tuple[Pooling, str]:
        return choose_pooling(pooling, self.hparams.finetune, self._pretrained, own_encoder=self.config is None)

    def _encoder_classifier(
        self, num_classes: int, encoder: Callable[[int], nn.Module] | dict[str, Any],
        encoder_config: dict[str, Any] | None, vocab_size: int | None, init_from: str | None,
        classifier_dropout: float, pooling: Pooling | None,
    ) -> EncoderClassifier:
        """A text encoder of one's own under bigmodel's head; ``init_from`` a checkpoint of the same network."""
        if vocab_size is None:
            raise ValueError("vocab_size is unset: it comes from a text data module's tokenizer through the CLI link")
        if encoder_config:
            raise ValueError("encoder_config sets the shared encoder's architecture; an encoder by class path takes "
                             "its settings in its own init_args: move them there")
        if not isinstance(self.hparams.get("encoder"), dict):  # given in Python, not by class path (CLI)
            self.hparams["encoder"] = backbone_spec(encoder)
        if init_from:
            self._pretrained = resolve(init_from)
            if self._pretrained.config is not None or self._pretrained.backbone is not None:
                raise ValueError(f"init_from {init_from!r} is not a network of this encoder; an encoder by class "
                                 "path starts from a classification checkpoint of the same encoder")
        pooling, self._pooling_reason = self._choose_pooling(pooling)
        self.hparams["pooling"] = pooling
        return EncoderClassifier(build_backbone(encoder, vocab_size), num_classes, classifier_dropout, pooling)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A ``linear_probe`` checkpoint from before the probe became one linear layer holds BERT's tanh pooler: it
        loads as what it is, a ``pooler_probe`` (its head rebuilt with the pooler before the weights go in)."""
        state = checkpoint.get("state_dict") or {}
        head = getattr(self.net, "head", None)  # a SequenceClassifier's (a prompt task scores with its MLM head)
        if isinstance(head, ClassificationHead) and head.pooler is None and "net.head.pooler.dense.weight" in state:
            old = self.net.head.classifier
            head = ClassificationHead.for_encoder(self.config, old.out_features, self.hparams.classifier_dropout)
            self.net.head = head.to(device=old.weight.device, dtype=old.weight.dtype)
            self.hparams["pooling"], self.hparams["finetune"] = "pooler", "pooler_probe"
            rank_zero_info("This checkpoint's head has BERT's tanh pooler (a linear_probe from before the probe became "
                           "one linear layer): loaded as finetune: pooler_probe, pooling: pooler")
        super().on_load_checkpoint(checkpoint)

    def load_pretrained(self, pretrained: Pretrained) -> list[str]:
        if self.config is None:  # a ViT knows foreign layouts and resamples positions; any backbone may get a new head
            state = pretrained.state
            return self.net.load_pretrained(state) if hasattr(self.net, "load_pretrained") else \
                load_matching(self.net, state)
        notes = self.load_encoder(self.net.encoder, pretrained)
        pooler, classifier = pretrained.part("head.pooler."), pretrained.part("head.classifier.")
        head = self.net.head
        notes.append(f"pooling: {head.pooling} ({self._pooling_reason})")
        if head.pooler is not None and pooler:
            head.pooler.load_state_dict(pooler)
        elif head.pooler is not None:
            notes.append("new pooler (the source has none)")
        if pretrained.max_seq_length:
            notes.append(f"the source was trained on at most {pretrained.max_seq_length} tokens per text")
        same = classifier and classifier["weight"].shape == self.net.head.classifier.weight.shape and (
            pretrained.class_names is None or list(pretrained.class_names) == list(self.class_names))
        if same:
            self.net.head.classifier.load_state_dict(classifier)
            notes.append(f"classifier loaded ({len(self.class_names)} classes)")
        else:
            had = f" (the source's: {pretrained.class_names or classifier['weight'].shape[0]})" if classifier else ""
            notes.append(f"new classifier for {len(self.class_names)} classes {self.class_names}{had}")
            self.new_heads.append("classifier")
        return notes

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        if not self.reads_text:
            return self.net(batch["pixel_values"])
        logits, _ = self.net(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        return logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss: cross-entropy with ``label_smoothing`` (evaluation reports the plain one)."""
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.hparams.label_smoothing)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        changed = [f"{key} {self.hparams.get(key, value)}" for key, value in DISTILL_DEFAULTS.items()
                   if self.hparams.get(key, value) != value]
        if stage == "fit" and changed and not self.hparams.get("distill_from"):  # it would train without a teacher
            raise ValueError(f"{' and '.join(changed)} set, but distill_from is unset, so nothing would be distilled: "
                             "set model.init_args.distill_from to the teacher's checkpoint, or drop them")
        if stage == "fit" and self.hparams.get("distill_from") and self._teacher is None:
            object.__setattr__(self, "_teacher", load_teacher(self.hparams.distill_from, self))  # not a submodule

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        labels = batch["labels"]  # class ids, or (B, classes) probabilities after MixUp/CutMix
        if self.adversary is None:
            logits = self(batch)
            loss = self._loss(logits, labels)
        else:
            with self.adversary.attach(embedding_layer(self.net)):
                logits = self(batch)
                loss = self._loss(logits, labels)
                adversarial = self.adversary.loss(loss, lambda: self._loss(self(batch), labels))
            self.log("train/adv_loss", adversarial)
            loss = loss + adversarial
        if self._teacher is not None:
            teacher = self._teacher.to(self.device)
            with torch.no_grad():
                teacher_logits = teacher(batch)
            soft = distillation_loss(logits, teacher_logits, self.hparams.distill_temperature)
            self.log("train/distill_loss", soft)
            weight = self.hparams.distill_weight
            loss = (1 - weight) * loss + weight * soft
        self.log("train/loss", loss, prog_bar=True)
        hard = labels.argmax(-1) if labels.is_floating_point() else labels
        self.log("train/acc", (logits.argmax(-1) == hard).float().mean())
        return loss

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = self(batch).float().softmax(-1)
        out = {"probs": probs, "pred": probs.argmax(-1)}
        for key in ("text", "path"):  # what the rows of the prediction file are named by
            if batch.get(key) is not None:
                out[key] = batch[key]
        if "image_index" in batch:  # a split's images without files: their position in it
            out["index"] = batch["image_index"]
        return out

    def checkpoint_meta(self) -> dict[str, Any]:
        """Class names; a text model's pooling and encoder; an image model's backbone and, from a data module that
        offers ``eval_preprocessing`` (``ImageDataModule``), its images' size and normalisation (``export`` writes
        them as the model's image processor). A checkpoint written without a trainer has none."""
        meta = {**super().checkpoint_meta(), "class_names": self.class_names}
        if isinstance(self.net, (SequenceClassifier, EncoderClassifier)):
            meta["pooling"] = self.net.head.pooling
        if isinstance(self.net, EncoderClassifier):  # a text model (init_from reads it as one), of this encoder
            meta["encoder"] = f"{type(self.net.encoder).__module__}.{type(self.net.encoder).__qualname__}"
        elif not self.reads_text:
            meta["backbone"] = f"{type(self.net).__module__}.{type(self.net).__qualname__}"
            preprocessing = getattr(getattr(self._trainer, "datamodule", None), "eval_preprocessing", None)
            recorded = dict(preprocessing()) if callable(preprocessing) else {}  # ImageDataModule's, for export
            if set(EvalPreprocessing.__annotations__) <= set(recorded):  # (another module's method of that name: not)
                meta["image_preprocessing"] = recorded
        return meta

