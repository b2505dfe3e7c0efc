"""Image-text alignment: contrastive towers (CLIP), optional image-text matching with hard negatives (ALBEF),
retrieval recall both ways and zero-shot classification by text prompts.

Batches come from ``bigmodel.data.ImageTextDataModule``. Training batches are image-caption pairs with the ids that
say which captions describe which images; validation and test run the split's images and its
distinct captions, in one loader whose batches say which they hold; their embeddings are gathered and compared at the
end of the epoch.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from bigmodel.data.image_text import EVAL_CAPTIONS, EVAL_IMAGES, EVAL_KIND
from bigmodel.nn.convert import convert_hf_vit, is_hf_vit
from bigmodel.nn.image_text import (
    ImageTextModel,
    caption_relevance,
    contrastive_loss,
    gather_with_grad,
    hard_negatives,
    retrieval_recall,
    zero_shot_classifier,
)
from bigmodel.tasks.base import Task
from bigmodel.tasks.checkpoints import Pretrained, resolve
from bigmodel.tasks.backbones import backbone_spec, build_backbone

RECALL_AT = (1, 5, 10)


class ImageTextTask(Task):
    """Args:
        image_encoder: the image tower, a ``bigmodel.nn.VisionTransformer`` by class path (as a classifier's
            ``backbone``; built without a head).
        encoder, encoder_config: the text tower's preset and overrides (with ``init_from``: its architecture).
        vocab_size, class_names, num_classes: linked from the data module (class names: zero-shot classes).
        init_from: the text tower's weights: an MLM or text classifier of this project, or a Hugging Face
            BERT/RoBERTa directory or hub name (its tokenizer goes to ``data.init_args.tokenizer``).
        image_init_from: the image tower's: an image classification checkpoint of this project (a ViT), a
            Hugging Face ViT directory or a state-dict file; position embeddings are resampled to this image size.
        embed_dim: size of the shared embedding space.
        temperature: initial contrastive temperature (learned).
        fusion_layers: > 0 adds a fusion encoder (text tokens cross-attend to image patches) and an image-text
            matching loss on hard negatives drawn from the contrastive similarities (ALBEF).
        itm_weight: weight of the matching loss beside the contrastive one.
        text_pooling: ``mean`` of the caption's token states (default) or its ``cls`` state, see
            ``bigmodel.nn.image_text.ImageTextModel``.
        **kwargs: optimiser settings, see ``Task`` (``finetune`` must stay ``full``).
    """

    checkpoint_task = "image_text"

    def __init__(
        self,
        image_encoder: Callable[[int], nn.Module] | None = None,
        encoder: str = "bert-mini",
        encoder_config: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        class_names: list[str] | None = None,
        num_classes: int | None = None,
        init_from: str | None = None,
        image_init_from: str | None = None,
        embed_dim: int = 256,
        temperature: float = 0.07,
        fusion_layers: int = 0,
        itm_weight: float = 1.0,
        text_pooling: Literal["mean", "cls"] = "mean",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if image_encoder is None:
            raise ValueError("image_encoder is unset: give a ViT, e.g. {class_path: bigmodel.nn.VisionTransformer, "
                             "init_args: {config: vit-tiny}}")
        if vocab_size is None:
            raise ValueError("vocab_size is unset: it comes from the data module's tokenizer through the CLI link")
        if self.hparams.finetune != "full":
            raise ValueError(f"finetune: {self.hparams.finetune} is not available for image-text models; use full")
        if not isinstance(self.hparams.get("image_encoder"), dict):  # given in Python, not by class path (CLI)
            self.hparams["image_encoder"] = backbone_spec(image_encoder)
        overrides = {k: v for k, v in (encoder_config or {}).items() if k != "causal"}
        self.config = self.encoder_config_for(encoder, overrides, vocab_size, init_from, causal=False)
        self.net = ImageTextModel(build_backbone(image_encoder, 0), self.config, embed_dim, fusion_layers, temperature,
                                 text_pooling)
        self.class_names = list(class_names) if class_names else None
        self._eval: dict[str, list[torch.Tensor]] = {}

    # ---- weights from elsewhere -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)  # the text tower's init_from
        if self.hparams.image_init_from and stage == "fit" and self.trainer.ckpt_path is None:
            self.load_image_tower()

    def load_image_tower(self) -> None:
        """``image_init_from``'s ViT encoder into the image tower, once (its classification head is left out)."""
        source = self.hparams.image_init_from
        if getattr(self, "_image_loaded", False):
            return
        self._image_loaded = True
        pretrained = resolve(source)
        state = convert_hf_vit(pretrained.state) if is_hf_vit(pretrained.state) else pretrained.state
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        try:
            notes = self.net.image_encoder.load_pretrained(state)
        except ValueError as err:
            raise ValueError(f"image_init_from {source!r}: {err}") from err
        rank_zero_info(f"Loaded the image tower from {source}" + "".join(f"; {n}" for n in notes))

    def load_pretrained(self, pretrained: Pretrained) -> list[str]:
        return self.load_encoder(self.net.text_encoder, pretrained)

    # ---- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        mask = batch.get("attention_mask")
        out = self.net(batch["pixel_values"], batch["input_ids"], mask)
        # every rank's pairs are negatives for every other's (the gradient reaches each rank's own embeddings)
        images, offset = gather_with_grad(out.image_embeds)
        texts, _ = gather_with_grad(out.text_embeds)
        caption_sets, _ = gather_with_grad(batch["image_caption_ids"])
        caption_ids, _ = gather_with_grad(batch["caption_ids"])
        positives = caption_relevance(caption_sets, caption_ids)  # (N, N): also other images' identical captions
        rows = slice(offset, offset + len(out.image_embeds))
        scale = self.net.scale()
        loss = itc = contrastive_loss(images, texts, scale, positives, rows)
        if self.net.fusion is not None:
            local = positives[rows, rows]
            itm = self._matching_loss(out, mask, scale, local)
            loss = itc + self.hparams.itm_weight * itm
            self.log("train/itm_loss", itm)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/itc_loss", itc)
        self.log("train/temperature", 1 / scale.detach())
        with torch.no_grad():
            best = (images[rows] @ texts.T).argmax(-1)
            self.log("train/i2t_acc", positives[rows].gather(1, best[:, None]).float().mean())
        return loss

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint from before the clamp may hold a scale above the cap (a forward cap let Adam push it on):
        it loads clamped, so it evaluates as it trained."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict") or {}
        if "net.logit_scale" in state:
            state["net.logit_scale"] = state["net.logit_scale"].clamp(0, math.log(self.net.MAX_LOGIT_SCALE))

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """After each optimizer step (Lightning calls this once per accumulated step), the temperature's parameter
        is clamped to its cap, as OpenCLIP does."""
        super().optimizer_step(*args, **kwargs)
        self.net.clamp_logit_scale_()

    def _matching_loss(self, out, mask: torch.Tensor | None, scale: torch.Tensor,
                       positives: torch.Tensor) -> torch.Tensor:
        """Match / no-match on the batch's pairs and, for each image and each text, one hard negative drawn from
        the contrastive similarities among the captions that do not describe it (ALBEF)."""
        with torch.no_grad():
            similarity = scale * out.image_embeds.float() @ out.text_embeds.float().T
            neg_text, image_has = hard_negatives(similarity, positives)  # for each image, a text
            neg_image, text_has = hard_negatives(similarity.T, positives.T)  # for each text, an image
        text_states = torch.cat([out.text_states, out.text_states[neg_text], out.text_states])
        masks = None if mask is None else torch.cat([mask, mask[neg_text], mask])
        image_states = torch.cat([out.image_states, out.image_states, out.image_states[neg_image]])
        logits = self.net.match_logits(text_states, masks, image_states)
        b = len(out.image_embeds)
        labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)]).to(logits.device)
        weights = torch.cat([torch.ones_like(image_has, dtype=torch.float32), image_has.float(), text_has.float()])
        losses = F.cross_entropy(logits.float(), labels, reduction="none")
        return (losses * weights).sum() / weights.sum()

    # ---- evaluation -------------------------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Any]) -> None:
        keep, kind = self._eval.setdefault, batch.get(EVAL_KIND)
        if kind == EVAL_IMAGES:
            embeds, _ = self.net.encode_image(batch["pixel_values"])
            keep("image_embeds", []).append(embeds.float())
            keep("image_index", []).append(batch["image_index"])
            keep("image_caption_ids", []).append(batch["image_caption_ids"])
            if "labels" in batch:
                keep("labels", []).append(batch["labels"])
        elif kind == EVAL_CAPTIONS:
            embeds, _ = self.net.encode_text(batch["input_ids"], batch.get("attention_mask"))
            keep("text_embeds", []).append(embeds.float())
            keep("caption_ids", []).append(batch["caption_ids"])
        else:
            raise ValueError(f"image-text evaluation batches are {EVAL_IMAGES!r} or {EVAL_CAPTIONS!r} by their "
                             f"{EVAL_KIND!r}, got {kind!r}: evaluate with ImageTextDataModule's loaders")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self.log_global(self._evaluate("val/"), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.log_global(self._evaluate("test/"))

    def _gathered(self, key: str, pad: int | None = None) -> torch.Tensor:
        """This epoch's values of ``key`` from every rank (the samplers give all ranks the same number)."""
        parts = self._eval[key]
        if pad is not None:  # caption sets of different widths per batch
            width = max(p.shape[1] for p in parts)
            parts = [F.pad(p, (0, width - p.shape[1]), value=pad) for p in parts]
        local = torch.cat(parts)
        if self.trainer.world_size == 1:
            return local
        if pad is not None:  # and across ranks
            width = int(self.all_gather(torch.tensor(local.shape[1], device=self.device)).max())
            local = F.pad(local, (0, width - local.shape[1]), value=pad)
        return self.all_gather(local).flatten(0, 1)

    def _evaluate(self, prefix: str) -> dict[str, torch.Tensor]:
        """Recall@1/5/10 image->text and text->image over the split's images and distinct captions (and their
        sum, ``rsum``, the usual one-number summary), the contrastive loss over the whole split, and zero-shot
        accuracy when there are class names and labels."""
        if "image_embeds" not in self._eval or "text_embeds" not in self._eval:
            one_kind = "image_embeds" in self._eval or "text_embeds" in self._eval
            self._eval.clear()
            if one_kind and not self.trainer.sanity_checking:  # (the sanity check's few batches may be images only)
                split = prefix.rstrip("/")
                raise ValueError(f"the {split} batches evaluated held images but no captions (the split's image "
                                 f"batches come first, and limit_{split}_batches stopped before its captions): raise "
                                 f"trainer.limit_{split}_batches, or leave it unset")
            return {}
        index, caption_ids = self._gathered("image_index"), self._gathered("caption_ids")
        image_embeds, text_embeds = self._gathered("image_embeds"), self._gathered("text_embeds")
        caption_sets = self._gathered("image_caption_ids", pad=-1)
        labels = self._gathered("labels") if "labels" in self._eval else None
        self._eval.clear()
        # the distributed samplers repeat a few items to even out the ranks: one row per image and per caption
        images = image_embeds.new_zeros(int(index.max()) + 1, image_embeds.shape[1]).index_copy(0, index, image_embeds)
        sets = caption_sets.new_full((len(images), caption_sets.shape[1]), -1).index_copy(0, index, caption_sets)
        texts = text_embeds.new_zeros(int(caption_ids.max()) + 1, text_embeds.shape[1]).index_copy(
            0, caption_ids, text_embeds)
        relevant = caption_relevance(sets, torch.arange(len(texts), device=texts.device))  # (I, C)
        similarity = images @ texts.T
        # the loss over the images and captions with a match among those evaluated: all of them, unless
        # limit_val_batches stopped short (an image whose captions were not reached has no target: NaN)
        has_i, has_t = relevant.any(1), relevant.any(0)
        metrics = {f"{prefix}loss": contrastive_loss(images[has_i], texts[has_t], self.net.scale().detach(),
                                                     relevant[has_i][:, has_t])}
        for direction, sim, rel in (("i2t", similarity, relevant), ("t2i", similarity.T, relevant.T)):
            for k, value in retrieval_recall(sim, rel, RECALL_AT).items():
                metrics[f"{prefix}{direction}_r{k}"] = value
        metrics[f"{prefix}rsum"] = sum(v for k, v in metrics.items() if "_r" in k and not k.endswith("rsum"))
        classes = self._class_embeds()
        if classes is not None and labels is not None:
            label_of = labels.new_zeros(len(images)).index_copy(0, index, labels)
            metrics[f"{prefix}zero_shot_acc"] = ((images @ classes.T).argmax(-1) == label_of).float().mean()
        return metrics

    def _class_embeds(self) -> torch.Tensor | None:
        """(classes, D): the data module's zero-shot prompts (every template for every class) encoded and averaged
        per class. Every rank encodes all of them (a few dozen captions), so no gathering is needed."""
        datamodule = getattr(self.trainer, "datamodule", None)
        prompts = getattr(datamodule, "zero_shot_prompts", lambda: None)()
        if prompts is None or not self.class_names:
            return None
        prompts = {k: v.to(self.device) for k, v in prompts.items()}
        embeds, _ = self.net.encode_text(prompts["input_ids"], prompts.get("attention_mask"))
        return zero_shot_classifier(embeds, prompts["prompt_class"], len(self.class_names))

    # ---- prediction -------------------------------------------------------------------------------------------
    def on_predict_start(self) -> None:
        super().on_predict_start()
        self._classes = self._class_embeds()
        if self._classes is None:
            raise ValueError("predict classifies images zero-shot by their class names: set data.init_args."
                             "label_names (e.g. [cat, dog]) and zero_shot_templates")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        embeds, _ = self.net.encode_image(batch["pixel_values"])
        probs = (self.net.scale() * embeds.float() @ self._classes.T).softmax(-1)
        out = {"probs": probs, "pred": probs.argmax(-1)}
        if "path" in batch:  # a prediction row is named by its file, or else by its position in the split
            out["path"] = batch["path"]
        elif "image_index" in batch:
            out["index"] = batch["image_index"]
        return out
