"""What a model makes of a few fixed validation examples, in TensorBoard: attention heatmaps and rollouts (text and
images), MLM guesses at the masked positions, and an image-text model's top captions per image. The drawing itself
is ``bigmodel.utils.figures``; these callbacks choose the examples and when to draw. Progress and scalars are in
``bigmodel.run.progress``; configs may name either group by its old home, ``bigmodel.run.monitoring``.

The few examples drawn go through the encoder's explicit attention path once per validation, and figures are
rendered on rank zero only.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from bigmodel.data.image_text import EVAL_CAPTIONS, EVAL_IMAGES, EVAL_KIND
from bigmodel.nn.encoder import TransformerEncoder
from bigmodel.nn.vision import attention_rollout, cls_attention_maps
from bigmodel.run.progress import sharded
from bigmodel.utils.tensorboard import add_figure, tensorboards


def _first(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` examples of a batch, on the CPU (per-example tensors only)."""
    size = next(len(v) for v in batch.values() if torch.is_tensor(v) and v.dim() > 0)
    return {k: v[:n].detach().cpu() for k, v in batch.items()
            if torch.is_tensor(v) and v.dim() > 0 and len(v) == size and k != "masked_positions"}


def _class_name(names: list[str] | None, index: torch.Tensor) -> str:
    return names[int(index)] if names else str(int(index))


class AttentionMaps(Callback):
    """Attention of a few fixed validation examples, drawn every ``every_n_epochs`` validations: text as per-head
    heatmaps of the chosen layers (default: first and last) with the rollout from [CLS] over the tokens; images as
    the picture with the last layer's [CLS] attention per head and the rollout over the patch grid."""

    def __init__(self, every_n_epochs: int = 1, num_examples: int = 1, layers: list[int] | None = None,
                 max_heads: int = 16, max_tokens: int = 40) -> None:
        """``every_n_epochs: 0`` switches it off; ``layers`` indexes from 0 (negative from the end)."""
        self.every_n_epochs = every_n_epochs
        self.num_examples = num_examples
        self.layers = layers
        self.max_heads = max_heads
        self.max_tokens = max_tokens
        self.examples: dict[str, torch.Tensor] | None = None

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.examples is None and batch_idx == 0 and dataloader_idx == 0 and isinstance(batch, dict):
            self.examples = _first(batch, self.num_examples)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        encoder = getattr(getattr(pl_module, "net", None), "encoder", None)
        if (not self.every_n_epochs or trainer.sanity_checking or self.examples is None or sharded(trainer)
                or not isinstance(encoder, TransformerEncoder) or (trainer.current_epoch + 1) % self.every_n_epochs
                or not trainer.is_global_zero or not tensorboards(trainer)):
            return
        batch = {k: v.to(pl_module.device) for k, v in self.examples.items()}
        inputs = batch.get("input_ids", batch.get("pixel_values"))
        if inputs is None:
            return
        extra = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        with torch.no_grad():  # rank zero alone: the plain encoder (not the DDP wrapper) runs no collective
            attentions = encoder(inputs, batch.get("attention_mask"), True, **extra).attentions
        attentions = tuple(a.float().cpu() for a in attentions)
        if "input_ids" in batch:
            self._draw_text(trainer, attentions, encoder.config.causal)
        else:
            self._draw_images(trainer, pl_module, attentions)

    def _draw_text(self, trainer: L.Trainer, attentions: tuple[torch.Tensor, ...], causal: bool) -> None:
        from bigmodel.utils import figures as visuals

        tokenizer = getattr(trainer.datamodule, "tokenizer", None)
        layers = sorted({i % len(attentions) for i in (self.layers if self.layers is not None else [0, -1])})
        rollout = attention_rollout(attentions)
        for i, ids in enumerate(self.examples["input_ids"]):
            mask = self.examples.get("attention_mask")
            n = int(mask[i].sum()) if mask is not None else len(ids)  # the real tokens; padding is not drawn
            tokens = (tokenizer.convert_ids_to_tokens(ids[:n].tolist()) if tokenizer is not None
                      else [str(t) for t in ids[:n].tolist()])
            heads = list(range(min(attentions[0].shape[1], self.max_heads)))
            for layer in layers:
                fig = visuals.attention_heads(attentions[layer][i, :, :n, :n], tokens,
                                              f"example {i}, layer {layer}", heads, self.max_tokens)
                add_figure(trainer, f"attention/example{i}/layer{layer}", fig)
            if not causal:  # a causal first token sees only itself: nothing to roll out
                add_figure(trainer, f"attention/example{i}/rollout",
                          visuals.token_rollout(rollout[i, :n], tokens, max_tokens=self.max_tokens))

    def _draw_images(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     attentions: tuple[torch.Tensor, ...]) -> None:
        from bigmodel.utils import figures as visuals

        pixels = self.examples["pixel_values"]
        patches = attentions[-1].shape[-1] - 1
        side = math.isqrt(patches)
        grid = (side, patches // side) if side * (patches // side) == patches else None
        if grid is None:
            return
        per_head = cls_attention_maps(attentions, grid)[:, : self.max_heads]
        rollout = attention_rollout(attentions, grid)
        names = getattr(pl_module, "class_names", None)
        with torch.no_grad():
            logits = pl_module.net(pixels.to(pl_module.device))
        predicted = logits.argmax(-1).cpu() if torch.is_tensor(logits) and logits.dim() == 2 else None
        labels = self.examples.get("labels")
        for i, image in enumerate(pixels):
            maps = torch.cat([per_head[i], rollout[i][None]])
            titles = [f"head {h}" for h in range(len(per_head[i]))] + ["rollout"]
            title = "[CLS] attention, last layer"
            if labels is not None and labels.dim() == 1:
                title += f", label {_class_name(names, labels[i])}"
            if predicted is not None:
                title += f", predicted {_class_name(names, predicted[i])}"
            add_figure(trainer, f"attention/example{i}", visuals.image_attention(image, maps, titles, title))


class MaskedPredictions(Callback):
    """What the MLM head puts at the masked positions of a few fixed validation sentences (top ``k`` with
    probabilities), as TensorBoard text each validation: the model learning words, readable."""

    def __init__(self, num_examples: int = 2, top_k: int = 5) -> None:
        """``num_examples: 0`` switches it off."""
        self.num_examples = num_examples
        self.top_k = top_k
        self.examples: dict[str, torch.Tensor] | None = None

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if (self.num_examples and self.examples is None and batch_idx == 0 and isinstance(batch, dict)
                and "masked_positions" in batch):
            ids = batch["input_ids"][: self.num_examples].detach().cpu()
            positions = batch["masked_positions"].detach().cpu()
            labels = batch["masked_labels"].detach().cpu()
            keep = (positions < ids.numel()) & (labels != -100)  # the shown examples; not the count's padding
            original = ids.clone().view(-1)
            original[positions[keep]] = labels[keep]
            self.examples = {"input_ids": ids, "original": original.view_as(ids), "positions": positions[keep]}
            for key in ("attention_mask", "document_ids"):  # packed documents kept apart, as validation reads them
                if batch.get(key) is not None:
                    self.examples[key] = batch[key][: self.num_examples].detach().cpu()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = getattr(pl_module, "net", None)
        if (trainer.sanity_checking or self.examples is None or not hasattr(net, "mlm_head") or sharded(trainer)
                or not trainer.is_global_zero or not tensorboards(trainer)):
            return
        tokenizer = trainer.datamodule.tokenizer
        ex = self.examples
        mask, documents = (ex.get(key) for key in ("attention_mask", "document_ids"))
        with torch.no_grad():
            logits = net(ex["input_ids"].to(pl_module.device), ex["positions"].to(pl_module.device),
                         mask.to(pl_module.device) if mask is not None else None,
                         documents.to(pl_module.device) if documents is not None else None)
        probs, top = logits.float().softmax(-1).topk(self.top_k, dim=-1)
        seq = ex["input_ids"].shape[1]
        rows, shown = [], set()
        for flat, p, t in zip(ex["positions"].tolist(), probs.cpu(), top.cpu()):
            i, j = divmod(flat, seq)
            if i not in shown:
                shown.add(i)
                masked = tokenizer.decode(ex["input_ids"][i], skip_special_tokens=False).replace("[PAD]", "").strip()
                rows.append(f"\n**example {i}:** {masked}\n\n| true | top {self.top_k} |\n|---|---|")
            guesses = ", ".join(f"{tokenizer.convert_ids_to_tokens(int(tok))} {float(pr):.2f}" for pr, tok in zip(p, t))
            rows.append(f"| {tokenizer.convert_ids_to_tokens(int(ex['original'][i, j]))} | {guesses} |")
        for writer in tensorboards(trainer):
            writer.add_text("mlm/predictions", "\n".join(rows), trainer.global_step)


class RetrievalExamples(Callback):
    """An image-text model's retrieval at a glance: a few fixed validation images, each beside the ``top_k`` of the
    split's captions it ranks highest (ticked when they describe it), every ``every_n_epochs`` validations, as a
    figure and as a text table (the browser draws any script; matplotlib needs an installed font for CJK captions,
    ``bigmodel.utils.figures.text_font``, and a run without one says so once, in a note line). Under DDP rank zero ranks the captions
    of its own share (the title says how many)."""

    def __init__(self, every_n_epochs: int = 1, num_examples: int = 2, top_k: int = 5) -> None:
        """``every_n_epochs: 0`` switches it off."""
        self.every_n_epochs = every_n_epochs
        self.num_examples = num_examples
        self.top_k = top_k
        self.examples: dict[str, torch.Tensor] | None = None
        self._captions: list[dict[str, torch.Tensor]] = []
        self._noted_glyphs = False

    def _due(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        net = getattr(pl_module, "net", None)
        return bool(self.every_n_epochs and self.num_examples and not trainer.sanity_checking
                    and hasattr(net, "encode_image") and hasattr(net, "encode_text") and not sharded(trainer)
                    and (trainer.current_epoch + 1) % self.every_n_epochs == 0 and trainer.is_global_zero
                    and tensorboards(trainer))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._captions = []

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(batch, dict) or not self._due(trainer, pl_module):
            return
        if batch.get(EVAL_KIND) == EVAL_IMAGES and self.examples is None:  # the first image batch, kept for good
            self.examples = _first(batch, self.num_examples)
        elif batch.get(EVAL_KIND) == EVAL_CAPTIONS:  # every caption batch
            self._captions.append({k: v.detach().cpu() for k, v in batch.items() if torch.is_tensor(v)})

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.examples is None or not self._captions or not self._due(trainer, pl_module):
            return
        from bigmodel.utils import figures as visuals

        net, device = pl_module.net, pl_module.device
        with torch.no_grad():
            texts = torch.cat([net.encode_text(b["input_ids"].to(device), None if b.get("attention_mask") is None
                                               else b["attention_mask"].to(device))[0].float().cpu()
                               for b in self._captions])
            images = net.encode_image(self.examples["pixel_values"].to(device))[0].float().cpu()
        ids = torch.cat([b["caption_ids"] for b in self._captions])
        words = self._caption_texts(trainer, ids)
        scores, top = (images @ texts.T).topk(min(self.top_k, len(ids)), dim=-1)
        names = getattr(pl_module, "class_names", None)
        for i, image in enumerate(self.examples["pixel_values"]):
            described = set(self.examples["image_caption_ids"][i].tolist()) - {-1}
            title = f"validation image {i}: its top {len(top[i])} of {len(ids)} captions"
            if "labels" in self.examples:
                title += f", label {_class_name(names, self.examples['labels'][i])}"
            shown, hits = [words[j] for j in top[i]], [int(ids[j]) in described for j in top[i]]
            figure = visuals.retrieval_example(image, shown, scores[i], hits, title)
            self._note_missing_glyphs(visuals.missing_glyphs([title, *shown], visuals.text_font(8)))
            with warnings.catch_warnings():  # matplotlib's one warning per missing glyph and figure: said once above
                warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
                add_figure(trainer, f"retrieval/example{i}", figure)
            table = "\n".join(f"| {rank + 1} | {'✓' if hit else ''} | {text} | {float(score):.3f} |"
                              for rank, (text, hit, score) in enumerate(zip(shown, hits, scores[i])))
            for writer in tensorboards(trainer):  # the browser draws every script, whatever fonts matplotlib has
                writer.add_text(f"retrieval/example{i}", f"**{title}**\n\n| rank | describes it | caption | "
                                f"cosine |\n|---|---|---|---|\n{table}", trainer.global_step)
        self._captions = []

    def _caption_texts(self, trainer: L.Trainer, ids: torch.Tensor) -> list[str]:
        """The captions as written (the split's own texts by id); decoded from their tokens when the data module
        keeps no texts (decoding lowercases, drops unknown words and spaces out CJK characters)."""
        split = getattr(trainer.datamodule, "splits", {}).get("validation")
        if split is not None and len(split.captions) > int(ids.max()):
            return [split.captions[int(c)] for c in ids]
        tokenizer = trainer.datamodule.tokenizer
        return [tokenizer.decode(row, skip_special_tokens=True) for b in self._captions for row in b["input_ids"]]

    def _note_missing_glyphs(self, missing: list[str]) -> None:
        """Once per run: which characters the figures draw as boxes and the font that would draw them."""
        if missing and not self._noted_glyphs:
            self._noted_glyphs = True
            from matplotlib import get_cachedir

            from bigmodel.utils.figures import CJK_FONT_PACKAGE

            shown = "".join(missing[:10]) + ("..." if len(missing) > 10 else "")
            # a note, not a warning: most machines have no CJK font, and only the figures' glyphs are missing
            rank_zero_info(f"note: the retrieval figures draw caption characters as boxes ({shown}): no installed "
                           f"font has them; install {CJK_FONT_PACKAGE} and delete {get_cachedir()}/fontlist-*.json "
                           "so matplotlib finds it. TensorBoard's Text tab shows the captions (retrieval/exampleN)")
