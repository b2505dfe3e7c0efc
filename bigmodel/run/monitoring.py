"""Watching a run: progress lines for batch jobs, throughput and gradient-norm scalars, attention heatmaps and MLM
guesses in TensorBoard, and the best monitored score in the HParams tab.

Everything here runs at logging or validation boundaries, never in the training step: the few examples drawn go
through the encoder's explicit attention path once per validation, and figures are rendered on rank zero only.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from bigmodel.utils.tensorboard import add_figure, tensorboards
from bigmodel.data.image_text import EVAL_CAPTIONS, EVAL_IMAGES, EVAL_KIND
from bigmodel.nn.encoder import TransformerEncoder
from bigmodel.nn.vision import attention_rollout, cls_attention_maps


def _sharded(trainer: L.Trainer) -> bool:
    """FSDP gathers a layer's weights only inside the wrapped model's own forward: calling the encoder or the MLM
    head directly from a callback would read shards (or wait forever on rank zero alone), so the drawings skip it."""
    return isinstance(trainer.strategy, FSDPStrategy)


def _first(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` examples of a batch, on the CPU (per-example tensors only)."""
    size = next(len(v) for v in batch.values() if torch.is_tensor(v) and v.dim() > 0)
    return {k: v[:n].detach().cpu() for k, v in batch.items()
            if torch.is_tensor(v) and v.dim() > 0 and len(v) == size and k != "masked_positions"}


def _class_name(names: list[str] | None, index: torch.Tensor) -> str:
    return names[int(index)] if names else str(int(index))


def _format_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def interactive() -> bool:
    """Output goes to a terminal (not a file, as in SLURM or nohup): progress bars there, ProgressLog lines else."""
    return sys.stdout.isatty()


class ProgressLog(Callback):
    """A progress line every ``every_seconds`` when output goes to a file (SLURM, nohup), where the interactive bar
    writes nothing readable; samples/s and tokens/s (padded), MFU on a GPU whose peak FLOPs are known, and the
    gradient norm before clipping as TensorBoard scalars at the trainer's ``log_every_n_steps``.

    Timing needs no device synchronisation: over a logging interval of many steps the host clock tracks the device.
    """

    def __init__(self, every_seconds: float = 60.0, lines: bool | None = None) -> None:
        self.every_seconds = every_seconds
        self.lines = lines  # None: only when stdout is not a terminal
        self._last_line = self._t0 = self._interval_start = 0.0
        self._samples = self._tokens = self._step = self._start_step = 0
        self._speed: dict[str, float] = {}
        self._validation_start = 0.0
        self._flops_per_token: float | None = None
        self._peak: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.lines is None:
            self.lines = not interactive()
        self._t0 = self._interval_start = self._last_line = time.perf_counter()
        self._samples = self._tokens = 0
        self._step = self._start_step = trainer.global_step  # a resumed run's elapsed time covers only its own steps
        encoder = next((m for m in pl_module.modules() if isinstance(m, TransformerEncoder)), None)
        if encoder is not None and trainer.strategy.root_device.type == "cuda":
            # 6 N per token for the matmuls forward and backward (Kaplan et al.), attention scores excluded
            matmul = sum(p.numel() for n, p in encoder.named_parameters() if p.dim() == 2 and "embeddings" not in n)
            self._flops_per_token = 6.0 * matmul
            dtype = torch.bfloat16 if "bf16" in str(trainer.precision) else (
                torch.float16 if "16" in str(trainer.precision) else torch.float32)
            self._peak = get_available_flops(trainer.strategy.root_device, dtype)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if isinstance(batch, dict):
            ids = batch.get("input_ids")
            first = next((v for v in batch.values() if torch.is_tensor(v) and v.dim() > 0), None)
            self._samples += len(first) if first is not None else 0
            self._tokens += ids.numel() if ids is not None else 0
        step = trainer.global_step
        if step == self._step:  # accumulating: not an optimizer step
            return
        self._step = step
        if step % trainer.log_every_n_steps == 0:
            self._log_speed(trainer, step)
        now = time.perf_counter()
        if self.lines and now - self._last_line >= self.every_seconds:
            self._last_line = now
            self._print_line(trainer, step, now)

    def _log_speed(self, trainer: L.Trainer, step: int) -> None:
        now = time.perf_counter()
        seconds, world = now - self._interval_start, trainer.world_size
        if seconds <= 0 or not self._samples:
            return
        metrics = {"perf/samples_per_sec": self._samples * world / seconds}
        if self._tokens:
            metrics["perf/tokens_per_sec"] = self._tokens * world / seconds
            if self._flops_per_token and self._peak:
                metrics["perf/mfu"] = self._tokens * self._flops_per_token / seconds / self._peak
        self._interval_start, self._samples, self._tokens = now, 0, 0
        self._speed = metrics
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    @rank_zero_only
    def _print_line(self, trainer: L.Trainer, step: int, now: float) -> None:
        total = trainer.estimated_stepping_batches
        elapsed = now - self._t0
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}" if trainer.max_epochs and
                 trainer.max_epochs > 0 else f"epoch {trainer.current_epoch + 1}"]
        if math.isfinite(total) and total > 0:
            left = elapsed / max(step - self._start_step, 1) * (total - step)
            parts.append(f"step {step}/{int(total)} ({100 * step / total:.1f} %)")
        else:
            left = None
            parts.append(f"step {step}")
        shown = {k: v for k, v in trainer.progress_bar_metrics.items() if not k.startswith(("v_num", "val/"))}
        parts += [f"{k} {v:.4g}" for k, v in shown.items()]
        if "perf/samples_per_sec" in self._speed:
            parts.append(f"{self._speed['perf/samples_per_sec']:.0f} samples/s")
        parts.append(f"elapsed {_format_time(elapsed)}" + (f", left {_format_time(left)}" if left is not None else ""))
        rank_zero_info(" | ".join(parts))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        # the step about to happen is global_step + 1's update; log with the other scalars of a logging step
        if (trainer.global_step + 1) % trainer.log_every_n_steps or _sharded(trainer):  # FSDP: shards, not the norm
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            pl_module.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=False)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":  # the training speed leaves validation time out
            self._interval_start += time.perf_counter() - self._validation_start
        if self.lines and not trainer.sanity_checking and trainer.state.fn == "fit":
            shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            rank_zero_info(f"validation at step {trainer.global_step}: "
                           + " | ".join(f"{k} {v:.4g}" for k, v in shown.items()))


class BestScoreHParam(Callback):
    """The HParams tab lists every run's hyper-parameters with ``hp_metric``: make that the best value of the
    checkpoint's monitored metric so far in a fit. Lightning's TensorBoardLogger would write a placeholder -1 at the
    start of every run (and of every test and predict, which measure no monitored value): that placeholder is
    switched off, and the hyper-parameters reach the HParams tab with the first real value instead."""

    def __init__(self) -> None:
        self._listed: set[int] = set()  # the loggers whose HParams entry is written

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:  # before Lightning logs the hyper-parameters
            if isinstance(logger, TensorBoardLogger):
                logger._default_hp_metric = False  # its init argument default_hp_metric, which configs set rarely
        self._listed.clear()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ckpt = trainer.checkpoint_callback
        monitor = getattr(ckpt, "monitor", None)
        current = trainer.callback_metrics.get(monitor) if monitor else None
        if (trainer.sanity_checking or current is None or not trainer.is_global_zero
                or trainer.state.fn != "fit"):
            return
        # the checkpoint callback updates its best after this hook (Lightning runs it last); a resumed run's best
        # comes from its state
        scores = [float(current)] + ([float(ckpt.best_model_score)] if ckpt.best_model_score is not None else [])
        best = max(scores) if ckpt.mode == "max" else min(scores)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and id(logger) not in self._listed:
                self._listed.add(id(logger))
                logger.log_hyperparams(logger.hparams, {"hp_metric": best}, step=trainer.global_step)
            else:
                logger.log_metrics({"hp_metric": best}, step=trainer.global_step)


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
        if (not self.every_n_epochs or trainer.sanity_checking or self.examples is None or _sharded(trainer)
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
            if "attention_mask" in batch and batch["attention_mask"] is not None:
                self.examples["attention_mask"] = batch["attention_mask"][: self.num_examples].detach().cpu()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = getattr(pl_module, "net", None)
        if (trainer.sanity_checking or self.examples is None or not hasattr(net, "mlm_head") or _sharded(trainer)
                or not trainer.is_global_zero or not tensorboards(trainer)):
            return
        tokenizer = trainer.datamodule.tokenizer
        ex = self.examples
        mask = ex.get("attention_mask")
        with torch.no_grad():
            logits = net(ex["input_ids"].to(pl_module.device), ex["positions"].to(pl_module.device),
                         mask.to(pl_module.device) if mask is not None else None)
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
    split's captions it ranks highest (ticked when they describe it), every ``every_n_epochs`` validations. Under
    DDP rank zero ranks the captions of its own share (the title says how many)."""

    def __init__(self, every_n_epochs: int = 1, num_examples: int = 2, top_k: int = 5) -> None:
        """``every_n_epochs: 0`` switches it off."""
        self.every_n_epochs = every_n_epochs
        self.num_examples = num_examples
        self.top_k = top_k
        self.examples: dict[str, torch.Tensor] | None = None
        self._captions: list[dict[str, torch.Tensor]] = []

    def _due(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        net = getattr(pl_module, "net", None)
        return bool(self.every_n_epochs and self.num_examples and not trainer.sanity_checking
                    and hasattr(net, "encode_image") and hasattr(net, "encode_text") and not _sharded(trainer)
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
        tokenizer = trainer.datamodule.tokenizer
        words = [tokenizer.decode(row, skip_special_tokens=True) for b in self._captions for row in b["input_ids"]]
        scores, top = (images @ texts.T).topk(min(self.top_k, len(ids)), dim=-1)
        names = getattr(pl_module, "class_names", None)
        for i, image in enumerate(self.examples["pixel_values"]):
            described = set(self.examples["image_caption_ids"][i].tolist()) - {-1}
            title = f"validation image {i}: its top {len(top[i])} of {len(ids)} captions"
            if "labels" in self.examples:
                title += f", label {_class_name(names, self.examples['labels'][i])}"
            add_figure(trainer, f"retrieval/example{i}", visuals.retrieval_example(
                image, [words[j] for j in top[i]], scores[i], [int(ids[j]) in described for j in top[i]], title))
        self._captions = []
