"""Training-step throughput of the encoder, and what fine-tuning modes and int8 inference cost, printed as Markdown
tables for the README.

    python -m bigmodel.commands.bench --preset bert-base --batch-size 64 --seq-len 128 --dtype bf16 --compile
    python -m bigmodel.commands.bench --preset vit-cifar-small --batch-size 512 --dtype bf16 --compile
    python -m bigmodel.commands.bench --finetune full lora --preset bert-base --batch-size 8 --seq-len 128 --dtype fp32
    python -m bigmodel.commands.bench --int8 runs/sst2-mini/checkpoints/best.ckpt --test-files ../shared/data/sst2/test.tsv
    python -m bigmodel.commands.bench --compare --json bench.json                              # CPU: bert-mini, 32 x 128
    python -m bigmodel.commands.bench --compare --preset bert-base --batch-size 256 --seq-len 128 --compile \
        --vision-preset vit-base --vision-batch-size 256 --json bench.json          # GPU

Text presets train the MLM objective on synthetic token ids; ``vit-*`` presets train CIFAR-shaped classification
on synthetic uint8 images, with and without the on-device augmentation recipe (crop, flip, RandAugment, erasing,
MixUp/CutMix), so the numbers say whether the data path keeps the GPU fed. Each row is timed over ``--steps``
optimizer steps after ``--warmup`` steps (throughput does not depend on the pixel or token values). Pure PyTorch:
no Lightning in the loop.

``--finetune``: one classification training step per mode (``full``, ``lora``, ``bitfit``, ``linear_probe``), each in a
fresh process so that its peak resident memory (``getrusage`` max RSS: every CPU tensor is in it, unlike
``tracemalloc``) is its own; on a GPU, ``max_memory_allocated``. ``--int8``: a trained classifier checkpoint, float
vs dynamic int8 linear layers (``bigmodel.nn.quantize``) on CPU: weights on disk, latency per batch of a real test
file, accuracy.

``--compare``: side by side in one process, the same device, batch and precision (bf16-mixed on a GPU, fp32 on CPU)
and AdamW (fused where torch has it, as the tasks build it: ``tasks.optim.adamw``): bigmodel's MLM step in plain
PyTorch, the same through Lightning's loop (``MLMTask`` + ``Trainer``), Hugging Face's ``BertForMaskedLM`` of
the same shape (the reference), and bigmodel's ViT vs timm's when timm is installed; eager and, with
``--compile``, compiled. Rounds of short windows take turns (``interleave``) so machine
noise hits all rows alike; the median window counts. One Markdown table; ``--json`` writes it with the device,
versions, command and date.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import logging
import multiprocessing
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import Callback
from torch import nn

from bigmodel.data.augment import AugmentConfig, BatchAugment, batch_mixer
from bigmodel.nn import EncoderConfig, MaskedLanguageModel, SequenceClassifier, VisionTransformer, num_parameters
from bigmodel.nn.peft import LoRAConfig, add_lora, merge_lora, set_trainable
from bigmodel.nn.quantize import quantize_int8, state_dict_bytes
from bigmodel.tasks.optim import adamw, parameter_groups


def _train_flops_per_token(model: nn.Module, seq_len: int, head_fraction: float) -> float:
    """6 x (weights used per token) + attention, forward and backward. The encoder's matmuls run at every token
    (embedding lookups are free); the head at ``head_fraction`` of them: an MLM head at the masked positions (its
    decoder is the tied word-embedding matrix), a ViT's classifier at the [CLS] token (1 / seq_len)."""
    cfg = model.config
    dense = num_parameters(model.encoder) - num_parameters(model.encoder.embeddings)
    head = num_parameters(model) - num_parameters(model.encoder)
    if isinstance(model, MaskedLanguageModel):
        head += cfg.vocab_size * cfg.hidden_size
    attention = 2 * 2 * cfg.num_layers * seq_len * cfg.hidden_size  # QK^T and AV, forward
    return 6 * (dense + head_fraction * head) + 3 * attention


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """FLOP/s of a large square ``torch.mm`` (2 n^3 FLOPs) on this device in this dtype, the best of ``repeats``
    timed products after one warm-up: the machine's practical matrix ceiling, measured in the run that it divides
    (MFU against a datasheet peak says as much about the datasheet as about the code)."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)
    _synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def time_steps(step, steps: int, warmup: int, device: str) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (compilation, allocator warm-up)."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    return (time.perf_counter() - start) / steps


def train_step(loss_fn, opt: torch.optim.Optimizer, autocast: torch.autocast):
    """One optimizer step as every plain-PyTorch row runs it: forward (under ``autocast``), backward, AdamW step,
    gradients set to None."""

    def step() -> torch.Tensor:
        with autocast:
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def mlm_batch(vocab_size: int, batch: int, seq: int, device: str, mask_fraction: float = 0.15) -> dict:
    """A synthetic MLM batch as ``MLMCollator`` makes them, without padding: token ids, a fixed number of selected
    positions (flat indices into B*S, sorted) and their labels."""
    n_sel = int(mask_fraction * batch * seq)
    return {"input_ids": torch.randint(5, vocab_size, (batch, seq), device=device),
            "masked_positions": torch.randperm(batch * seq, device=device)[:n_sel].sort().values,
            "masked_labels": torch.randint(5, vocab_size, (n_sel,), device=device)}


STRONG_AUGMENT = AugmentConfig(crop_padding=4, horizontal_flip=True, auto_augment="randaugment", random_erasing=0.25,
                               mixup_alpha=0.8, cutmix_alpha=1.0)


def vision_step(model: nn.Module, image_size: int, batch: int, dtype: str, device: str, augment: bool,
                num_classes: int = 10, recipe: AugmentConfig = STRONG_AUGMENT):
    """A classification training step on synthetic uint8 images for any ``(B, C, H, W) -> (B, classes)`` model
    (bigmodel's ViT, timm's), with or without the on-device augmentation ``recipe``."""
    opt = adamw(parameter_groups(model, 0.05), 1e-4)
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    augment_batch = BatchAugment(recipe if augment else None, None, (0.5,) * 3, (0.25,) * 3)
    mixer = batch_mixer(recipe, num_classes) if augment else None

    def loss() -> torch.Tensor:
        x, y = augment_batch(images), labels
        if mixer is not None:
            x, y = mixer(x, y)
        return torch.nn.functional.cross_entropy(model(x).float(), y)

    return train_step(loss, opt, torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")), opt


def run_vision(preset: str | EncoderConfig, batch: int, dtype: str, steps: int, warmup: int, device: str,
               augment: bool, compile: bool, num_classes: int = 10, recipe: AugmentConfig = STRONG_AUGMENT) -> dict:
    torch.manual_seed(0)
    model = VisionTransformer(num_classes, preset).to(device)
    if compile:
        model.compile()
    step, _ = vision_step(model, model.config.image_size, batch, dtype, device, augment, num_classes, recipe)
    elapsed = time_steps(step, steps, warmup, device)
    return {
        "ms_per_step": 1000 * elapsed,
        "images_per_s": batch / elapsed,
        "cifar_epoch_s": 50_000 * elapsed / batch,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
    }


def mlm_step(cfg: EncoderConfig, batch: int, seq: int, dtype: str, device: str, explicit: bool = False,
             padded: bool = False, compile: bool | str = False, data: dict | None = None):
    """bigmodel's MLM training step in plain PyTorch: the vocabulary logits only at the masked positions. Returns
    the step, the model and its optimizer. ``data``: an ``mlm_batch`` to train on (default: a new one).
    ``compile``: a ``torch.compile`` mode (e.g. ``"reduce-overhead"``: CUDA graphs) or True (the default mode)."""
    torch.manual_seed(0)
    model = MaskedLanguageModel(cfg).to(device)
    opt = adamw(parameter_groups(model, 0.01), 1e-4)  # as in training (tasks/optim.py)
    data = mlm_batch(cfg.vocab_size, batch, seq, device) if data is None else data
    mask = None
    if padded:
        mask = torch.ones(batch, seq, dtype=torch.long, device=device)
        mask[: batch // 2, seq * 3 // 4 :] = 0
    if explicit:  # route every layer through the explicit softmax path
        for layer in model.encoder.layers:
            attn_forward = layer.attn.forward
            layer.attn.forward = lambda x, m=None, need_weights=False, f=attn_forward: f(x, m, True)
    step_model = torch.compile(model, mode=compile if isinstance(compile, str) else None) if compile else model

    def loss() -> torch.Tensor:
        logits = step_model(data["input_ids"], data["masked_positions"], mask)
        return torch.nn.functional.cross_entropy(logits.float(), data["masked_labels"])

    return train_step(loss, opt, torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")), model, opt


def run(cfg: EncoderConfig, batch: int, seq: int, dtype: str, steps: int, warmup: int, device: str,
        explicit: bool, padded: bool, compile: bool) -> dict:
    step, model, _ = mlm_step(cfg, batch, seq, dtype, device, explicit, padded, compile)
    elapsed = time_steps(step, steps, warmup, device)
    tokens = batch * seq / elapsed
    return {
        "ms_per_step": 1000 * elapsed,
        "tokens_per_s": tokens,
        "tflops": tokens * _train_flops_per_token(model, seq, int(0.15 * batch * seq) / (batch * seq)) / 1e12,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
    }


def run_finetune(cfg: EncoderConfig, finetune: str, batch: int, seq: int, steps: int, warmup: int, device: str,
                 lora: LoRAConfig) -> dict:
    """One fine-tuning mode's training step on a 2-class head; run it in a fresh process (``finetune_rows``)."""
    torch.manual_seed(0)
    model = SequenceClassifier(cfg, 2).to(device)
    if finetune == "lora":
        add_lora(model.encoder, lora)
    set_trainable(model, finetune)
    opt = adamw(parameter_groups(model, 0.01), 1e-4)  # frozen parameters are not in it
    ids = torch.randint(5, cfg.vocab_size, (batch, seq), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # torch, the libraries and the model

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(ids)[0].float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    trainable = [p for p in model.parameters() if p.requires_grad]
    weight_bytes = sum(p.numel() * p.element_size() for p in trainable)
    return {
        "trainable": sum(p.numel() for p in trainable), "total": num_parameters(model),
        "optimizer_bytes": sum(t.numel() * t.element_size() for state in opt.state.values()
                               for t in state.values() if torch.is_tensor(t)),
        "weight_bytes": weight_bytes,
        "peak_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "built_bytes": built, "ms_per_step": 1000 * statistics.median(times),
    }


def finetune_rows(cfg: EncoderConfig, modes: list[str], batch: int, seq: int, steps: int, warmup: int,
                  device: str, lora: LoRAConfig) -> dict[str, dict]:
    """``run_finetune`` per mode, each in its own fresh (spawned) process: max RSS is a process's high-water mark."""
    rows = {}
    for mode in modes:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows[mode] = pool.submit(run_finetune, cfg, mode, batch, seq, steps, warmup, device, lora).result()
    return rows


def adversarial_rows(cfg: EncoderConfig, batch: int, seq: int, steps: int, warmup: int, rounds: int, device: str,
                     pgd_steps: int = 3) -> dict[str, float]:
    """ms per fine-tuning step of a 2-class classifier: clean, + FGM, + PGD-``pgd_steps`` (the task's own
    ``Adversary`` on the word embeddings), interleaved; what adversarial training adds to each step."""
    from bigmodel.nn.adversarial import AdversarialConfig, Adversary, embedding_layer

    ids = torch.randint(5, cfg.vocab_size, (batch, seq), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    contenders = []
    for name, config in (("clean", None), ("FGM", AdversarialConfig("fgm")),
                         (f"PGD-{pgd_steps}", AdversarialConfig("pgd", steps=pgd_steps))):
        torch.manual_seed(0)
        model = SequenceClassifier(cfg, 2).to(device)
        opt = adamw(parameter_groups(model, 0.01), 1e-5)

        def loss_fn(model=model, adversary=Adversary(config) if config else None) -> torch.Tensor:
            def loss() -> torch.Tensor:
                return nn.functional.cross_entropy(model(ids)[0].float(), labels)

            if adversary is None:
                return loss()
            with adversary.attach(embedding_layer(model)):
                clean = loss()
                return clean + adversary.loss(clean, loss)

        step = train_step(loss_fn, opt, torch.autocast(device, enabled=False))
        contenders.append(_plain(name, "text", step, model, opt, device, batch * seq, 0.0, 0.0))
    timings = interleave(contenders, steps, warmup, rounds, device)
    return {name: 1000 * statistics.median(t["windows"]) for name, t in timings.items()}


def run_int8(ckpt_path: str, test_files: list[str], batch: int, warmup: int = 2, repeats: int = 3) -> dict[str, dict]:
    """A classifier checkpoint in float and with dynamic int8 linear layers, on CPU over a labelled test file
    (read as the checkpoint's run read its data): state-dict bytes, median ms per batch, accuracy, predictions.
    The two models take turns on every batch (in alternating order), ``repeats`` passes over the file, so that a
    busy machine slows both alike."""
    from bigmodel.data import TextClassificationDataModule
    from bigmodel.tasks import ClassificationTask

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    data_args = {k: v for k, v in (ckpt.get("datamodule_hyper_parameters") or {}).items()
                 if k in ("text_column", "text_pair_column", "label_column", "column_names", "max_length")}
    adapters = (ckpt.get("bigmodel") or {}).get("weights") == "trainable"  # only these need their init_from
    task = ClassificationTask.load_from_checkpoint(ckpt_path, map_location="cpu", **({} if adapters else
                                                                                     {"init_from": None}))
    data = TextClassificationDataModule(tokenizer=ckpt_path, test_files=test_files, label_names=task.class_names,
                                        batch_size=batch, num_workers=0, **data_args)
    data.setup("test")
    batches = list(data.test_dataloader())
    nets = {"fp32": task.net.eval()}
    merge_lora(nets["fp32"])  # as an exported model runs: LoRA costs nothing at inference in either precision
    nets["int8"] = quantize_int8(copy.deepcopy(nets["fp32"]))[0]
    times: dict[str, list[float]] = {name: [] for name in nets}
    preds: dict[str, list[torch.Tensor]] = {name: [] for name in nets}
    schedule = [batches[i % len(batches)] for i in range(warmup)] + batches * repeats
    with torch.inference_mode():
        for i, b in enumerate(schedule):
            for name in (list(nets) if i % 2 else list(nets)[::-1]):
                start = time.perf_counter()
                logits = nets[name](b["input_ids"], b.get("attention_mask"), b.get("token_type_ids"))[0]
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
                    if i < warmup + len(batches):
                        preds[name].append(logits.argmax(-1))
    labels = torch.cat([b["labels"] for b in batches])
    rows = {}
    for name, net in nets.items():
        pred = torch.cat(preds[name])
        rows[name] = {"bytes": state_dict_bytes(net), "ms_per_batch": 1000 * statistics.median(times[name]),
                      "accuracy": (pred == labels).float().mean().item(), "pred": pred, "n": len(labels)}
    return rows


# -- Side by side: bigmodel (plain PyTorch, and through Lightning's loop) vs Hugging Face and timm, in one process.


@dataclass
class Contender:
    """One row of the comparison. ``window(n)`` trains n steps and returns seconds per step."""

    name: str
    family: str  # "text" (throughput in tokens) or "vision" (in images)
    window: Callable[[int], float]
    items_per_step: int
    useful_flops: float  # per token or image: what the task needs (bigmodel's count, the same for every row)
    computed_flops: float  # per token or image: what this implementation computes
    state_bytes: Callable[[], int]  # held between steps: weights and optimizer state
    reference: bool = False  # the row the others' ratio is to (HF eager, timm eager)
    close: Callable[[], None] = lambda: None


def _state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    tensors = list(model.parameters()) + [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _plain(name: str, family: str, step, model: nn.Module, opt: torch.optim.Optimizer, device: str, items: int,
           useful: float, computed: float, reference: bool = False) -> Contender:
    return Contender(name, family, lambda n: time_steps(step, n, 0, device), items, useful, computed,
                     lambda: _state_bytes(model, opt), reference)


def hf_mlm_step(cfg: EncoderConfig, data: dict, dtype: str, device: str, compile: bool):
    """``transformers.BertForMaskedLM`` of the same shape (SDPA attention) on the same batch, as Hugging Face
    computes MLM: vocabulary logits at every position, labels -100 outside the masked ones."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**cfg.to_hf("bert"), attn_implementation="sdpa")).to(device).train()
    opt = adamw(parameter_groups(model, 0.01), 1e-4)
    ids = data["input_ids"]
    labels = torch.full_like(ids, -100)
    labels.view(-1)[data["masked_positions"]] = data["masked_labels"]
    step_model = torch.compile(model) if compile else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")
    return train_step(lambda: step_model(input_ids=ids, labels=labels).loss, opt, autocast), model, opt


class LightningLoop(Callback):
    """bigmodel's ``MLMTask`` trained by a ``lightning.Trainer`` in a thread that runs only when asked:
    ``window(n)`` lets it train n batches and returns seconds per batch, timed from the end of the batch before
    the window to the end of its last, so the loop's own work between batches (fetching and moving the batch,
    logging, hooks) counts. The trainer is ``bigmodel fit``'s for a run without validation: its precision, the
    task's optimizer, LR schedule and non-finite check, a TensorBoard logger (in a temporary directory),
    ``LearningRateMonitor`` and ``ProgressLog``; no progress bar (it would print into the table), no checkpoints,
    no gradient clipping (the plain rows have none)."""

    def __init__(self, task: L.LightningModule, batch: dict, total_steps: int, device: str, precision: str,
                 root: str, log_every_n_steps: int = 20) -> None:
        from lightning.pytorch.callbacks import LearningRateMonitor
        from lightning.pytorch.loggers import TensorBoardLogger
        from torch.utils.data import DataLoader

        from bigmodel.run.progress import ProgressLog

        self.task, self.device = task, device
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self._todo = self._count = 0
        self._start = self._seconds = 0.0
        self._error: BaseException | None = None
        self._stop = self._finished = False
        batch = {k: v.cpu() for k, v in batch.items()}  # a data loader's batch: the loop moves it to the device
        self._loader = DataLoader([batch] * total_steps, batch_size=None, pin_memory=device == "cuda")
        self.trainer = L.Trainer(
            accelerator=device, devices=1, precision=precision, max_steps=total_steps,
            logger=TensorBoardLogger(root, name="bench"), log_every_n_steps=log_every_n_steps,
            callbacks=[LearningRateMonitor(logging_interval="step"), ProgressLog(lines=False), self],
            enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
            limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=root,
        )
        self._thread = threading.Thread(target=self._fit, daemon=True)

    def _fit(self) -> None:
        try:
            self.trainer.fit(self.task, train_dataloaders=self._loader)
        except BaseException as err:  # noqa: B036 (handed to the main thread)
            self._error = err
        finally:
            self._finished = True
            self._done.release()

    def window(self, steps: int) -> float:
        self._todo = steps
        if self._thread.is_alive():
            self._go.release()
        else:
            self._thread.start()  # setup (and compilation) happen in the first window: the warm-up
        self._done.acquire()
        if self._error is not None:
            raise RuntimeError(f"the Lightning contender failed: {self._error!r}") from self._error
        if self._finished:
            raise RuntimeError("the Lightning fit ended before its window did")
        return self._seconds / steps

    def close(self) -> None:
        if self._thread.is_alive():
            self._stop = True
            self._go.release()
            self._thread.join()

    def state_bytes(self) -> int:
        return _state_bytes(self.task, self.trainer.optimizers[0])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._count += 1
        if self._count < self._todo:
            return
        _synchronize(self.device)
        self._seconds = time.perf_counter() - self._start
        self._done.release()
        self._go.acquire()  # the other contenders run now
        if self._stop:
            trainer.should_stop = True
            return
        self._count = 0
        self._start = time.perf_counter()


def timm_vit(config: EncoderConfig, num_classes: int) -> nn.Module:
    """timm's ``VisionTransformer`` of a ViT preset's shape ([CLS] pooling, pre-LN, LayerNorm eps 1e-6, no
    dropout: as the ``vit-*`` presets)."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    return TimmViT(img_size=config.image_size, patch_size=config.patch_size, in_chans=config.num_channels,
                   num_classes=num_classes, embed_dim=config.hidden_size, depth=config.num_layers,
                   num_heads=config.num_heads, mlp_ratio=config.intermediate_size / config.hidden_size,
                   qkv_bias=config.qkv_bias, global_pool="token")


def interleave(contenders: list[Contender], steps: int, warmup: int, rounds: int, device: str) -> dict[str, dict]:
    """Round-robin: every contender warms up (compiles) once, then ``rounds`` rounds of one ``steps``-step window
    each, each round starting one contender later, so that a busy machine slows all alike. Per contender: the
    seconds per step of each window and, on a GPU, the largest rise of allocated memory over a window."""
    for c in contenders:
        c.window(warmup)
    out = {c.name: {"windows": [], "rise": 0} for c in contenders}
    for r in range(rounds):
        for c in contenders[r % len(contenders):] + contenders[: r % len(contenders)]:
            if device == "cuda":
                _synchronize(device)
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            out[c.name]["windows"].append(c.window(steps))
            if device == "cuda":
                out[c.name]["rise"] = max(out[c.name]["rise"], torch.cuda.max_memory_allocated() - base)
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _versions() -> dict[str, str | None]:
    import importlib.metadata

    found = {}
    for package in ("torch", "transformers", "lightning", "timm"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def compare(cfg: EncoderConfig, batch: int = 32, seq: int = 128, steps: int = 2, warmup: int = 2, rounds: int = 5,
            compile: bool = False, vision: EncoderConfig | None = None, vision_batch: int = 64,
            device: str | None = None, json_path: str | None = None, command: str | None = None,
            matmul_size: int | None = None) -> dict:
    """MLM training steps of bigmodel (plain PyTorch; ``MLMTask`` through Lightning's loop) and Hugging Face's
    ``BertForMaskedLM`` of the same shape, and ViT classification steps of bigmodel and timm (when installed), on
    the same device, batch and precision (bf16-mixed on a GPU, fp32 on CPU) with AdamW, eager and with
    ``compile`` compiled too, timed in interleaved rounds (``interleave``). Returns (and with ``json_path`` writes)
    the rows with the device, versions, command and date. Useful MFU is against ``matmul_peak`` measured here
    first (bf16 on a GPU, fp32 on CPU; ``matmul_size`` default 8192 and 2048)."""
    from bigmodel.tasks import MLMTask

    if warmup < 1 or steps < 1 or rounds < 1:
        raise ValueError("compare needs warmup, steps and rounds >= 1 (the first window sets up and compiles)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = "bf16" if device == "cuda" else "fp32"
    peak_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    peak_flops = matmul_peak(device, peak_dtype, matmul_size or (8192 if device == "cuda" else 2048))
    data = mlm_batch(cfg.vocab_size, batch, seq, device)
    fraction = len(data["masked_positions"]) / (batch * seq)
    timm_found = importlib.util.find_spec("timm") is not None
    notes = []
    if vision is not None and not timm_found:
        notes.append("timm is not installed: the ViT rows have no timm reference (bigmodel's ViT only)")
    total_steps = warmup + rounds * steps
    contenders: list[Contender] = []
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(does not have many workers|GPU available but not used|"
                                                  r"no `val_dataloader`|smaller than the logging interval|LeafSpec).*")
        quiet.setLevel(logging.WARNING)
        try:
            for compiled in [False, True] if compile else [False]:
                tag = " + torch.compile" if compiled else ""
                step, model, opt = mlm_step(cfg, batch, seq, dtype, device, compile=compiled, data=data)
                useful = _train_flops_per_token(model, seq, fraction)
                contenders.append(_plain(f"bigmodel MLM, plain PyTorch{tag}", "text", step, model, opt, device,
                                         batch * seq, useful, useful))
                torch.manual_seed(0)
                overrides = {k: v for k, v in cfg.to_dict().items() if k != "vocab_size"}
                task = MLMTask(encoder="bert-tiny", encoder_config=overrides, vocab_size=cfg.vocab_size, lr=1e-4,
                               weight_decay=0.01, compile=compiled)
                loop = LightningLoop(task, data, total_steps, device, "bf16-mixed" if dtype == "bf16" else "32-true",
                                     f"{root}/{len(contenders)}")
                contenders.append(Contender(f"bigmodel MLMTask, Lightning Trainer{tag}", "text", loop.window,
                                            batch * seq, useful, useful, loop.state_bytes, close=loop.close))
                step, hf_model, hf_opt = hf_mlm_step(cfg, data, dtype, device, compiled)
                computed = _train_flops_per_token(model, seq, 1.0)  # the same matmuls, the head at every token
                contenders.append(_plain(f"HF BertForMaskedLM (sdpa){tag}", "text", step, hf_model, hf_opt, device,
                                         batch * seq, useful, computed, reference=not compiled))
                if vision is not None:
                    torch.manual_seed(0)
                    vit = VisionTransformer(10, vision).to(device)
                    if compiled:
                        vit.compile()
                    tokens = 1 + (vision.image_size // vision.patch_size) ** 2
                    per_image = tokens * _train_flops_per_token(vit, tokens, 1 / tokens)
                    step, opt = vision_step(vit, vision.image_size, vision_batch, dtype, device, augment=False)
                    contenders.append(_plain(f"bigmodel ViT{tag}", "vision", step, vit, opt, device, vision_batch,
                                             per_image, per_image))
                    if timm_found:
                        torch.manual_seed(0)
                        theirs = timm_vit(vision, 10).to(device)
                        if compiled:
                            theirs.compile()
                        step, opt = vision_step(theirs, vision.image_size, vision_batch, dtype, device, augment=False)
                        contenders.append(_plain(f"timm VisionTransformer{tag}", "vision", step, theirs, opt, device,
                                                 vision_batch, per_image, per_image, reference=not compiled))
            timings = interleave(contenders, steps, warmup, rounds, device)
        finally:
            for c in contenders:
                c.close()
            quiet.setLevel(level)
    per_s = {c.name: c.items_per_step / statistics.median(timings[c.name]["windows"]) for c in contenders}
    references = {c.family: per_s[c.name] for c in contenders if c.reference}
    rows = []
    for c in contenders:
        ref = references.get(c.family)
        rows.append({
            "contender": c.name, "family": c.family, "unit": "tokens" if c.family == "text" else "images",
            "per_s": per_s[c.name], "ms_per_step": 1000 * statistics.median(timings[c.name]["windows"]),
            "ratio": per_s[c.name] / ref if ref else None,
            "useful_flops": c.useful_flops, "computed_flops": c.computed_flops,
            "mfu": per_s[c.name] * c.useful_flops / peak_flops,
            "peak_mem_gib": (c.state_bytes() + timings[c.name]["rise"]) / 2**30 if device == "cuda" else None,
            "windows_s_per_step": timings[c.name]["windows"],
        })
    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command, "device": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "precision": "bf16-mixed" if dtype == "bf16" else "fp32", "versions": _versions(),
        "text": {**{k: getattr(cfg, k) for k in ("num_layers", "hidden_size", "num_heads", "intermediate_size",
                                                 "vocab_size")}, "batch": batch, "seq_len": seq,
                 "mask_fraction": fraction},
        "vision": None if vision is None else {
            **{k: getattr(vision, k) for k in ("num_layers", "hidden_size", "num_heads", "intermediate_size",
                                               "image_size", "patch_size")}, "batch": vision_batch},
        "timing": {"warmup_steps": warmup, "steps_per_window": steps, "rounds": rounds,
                   "matmul_peak_flops": peak_flops, "matmul_dtype": str(peak_dtype).removeprefix("torch."),
                   "datasheet_bf16_flops": get_available_flops(torch.device(device), torch.bfloat16)
                   if device == "cuda" else None},
        "notes": notes, "rows": rows,
    }
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return result


def comparison_table(result: dict) -> str:
    """The rows of ``compare`` as one Markdown table."""

    def number(x: float | None, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    peak = result["timing"]["matmul_peak_flops"]
    lines = [f"| contender | throughput | × reference | useful FLOPs per token/image | computed FLOPs per token/image "
             f"| useful MFU (of {peak / 1e12:,.3g} TFLOP/s {result['timing']['matmul_dtype']} matmul) | peak GiB | "
             "ms/step |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        unit = "tok/s" if r["unit"] == "tokens" else "img/s"
        lines.append(
            f"| {r['contender']} | {r['per_s']:,.0f} {unit} | {number(r['ratio'], '.2f')} | "
            f"{r['useful_flops'] / 1e6:,.1f} M | {r['computed_flops'] / 1e6:,.1f} M | "
            f"{'–' if r['mfu'] is None else format(100 * r['mfu'], '.1f') + ' %'} | "
            f"{number(r['peak_mem_gib'], '.2f')} | {r['ms_per_step']:,.0f} |")
    return "\n".join(lines)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def compare_main(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.dtype or args.finetune or args.int8:
        p.error("--compare sets the precision itself (bf16-mixed on a GPU, fp32 on CPU) and takes no --dtype, "
                "--finetune or --int8")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    preset = args.preset or "bert-mini"
    cfg = EncoderConfig.from_name(preset, vocab_size=args.vocab_size, max_position_embeddings=max(512, args.seq_len))
    vision = None if args.vision_preset == "none" else EncoderConfig.from_name(args.vision_preset)
    batch, steps = args.batch_size or 32, args.steps or 2
    warmup = 2 if args.warmup is None else args.warmup
    result = compare(cfg, batch, args.seq_len, steps, warmup, args.rounds, args.compile, vision,
                     args.vision_batch_size, device, args.json, "python -m bigmodel.commands.bench " + " ".join(sys.argv[1:]))
    v = result["versions"]
    print(f"{preset} MLM: batch {batch} x {args.seq_len} tokens, {100 * result['text']['mask_fraction']:.0f} % "
          f"masked" + (f"; {args.vision_preset}: batch {args.vision_batch_size} images" if vision else "") +
          f"; {result['precision']}, AdamW; {result['device']}, {result['threads']} threads; torch {v['torch']}, "
          f"transformers {v['transformers']}, lightning {v['lightning']}, timm {v['timm'] or '(not installed)'}; "
          f"median of {args.rounds} interleaved windows of {steps} steps after {warmup} warm-up steps; matmul ceiling "
          f"{result['timing']['matmul_peak_flops'] / 1e12:,.3g} TFLOP/s ({result['timing']['matmul_dtype']}, "
          "measured in this run)")
    for note in result["notes"]:
        print(f"note: {note}")
    print(comparison_table(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", action="store_true",
                   help="bigmodel (plain PyTorch and through Lightning's loop) vs HF BertForMaskedLM and timm's ViT, "
                        "interleaved in one process; defaults: bert-mini, batch 32 x 128, 2 warm-up steps, 5 rounds "
                        "of 2-step windows")
    p.add_argument("--preset", help="encoder preset (default bert-base; with --compare bert-mini)")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--batch-size", type=int, help="default 64; with --compare 32")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="default bf16 (--compare: bf16-mixed on GPU, fp32 on CPU)")
    p.add_argument("--steps", type=int, help="timed steps (default 20; with --compare steps per window, 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 5; with --compare 2)")
    p.add_argument("--rounds", type=int, default=5,
                   help="with --compare/--adversarial: interleaved rounds (median of the windows)")
    p.add_argument("--vision-preset", default="vit-cifar-tiny",
                   help="with --compare: the ViT of the vision rows ('none': no vision rows)")
    p.add_argument("--vision-batch-size", type=int, default=64, help="with --compare: images per step")
    p.add_argument("--json", metavar="PATH", help="with --compare: write the rows, device, versions, command, date")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows")
    p.add_argument("--finetune", nargs="+", choices=["full", "lora", "bitfit", "linear_probe"],
                   help="memory and step time of these fine-tuning modes (a 2-class head; LoRA: rank 8 on q, v, the LoRA default)")
    p.add_argument("--int8", metavar="CKPT", help="a classifier checkpoint: fp32 vs dynamic int8 on CPU")
    p.add_argument("--adversarial", action="store_true",
                   help="fine-tuning step time: clean vs FGM vs PGD-3 (a 2-class head, fp32, interleaved rounds; "
                        "default bert-mini, batch 32, 2 steps a window)")
    p.add_argument("--test-files", nargs="+", help="with --int8: labelled test file(s), read as the run read its data")
    p.add_argument("--suite", choices=["gpu", "cpu-smoke"],
                   help="every pending GPU measurement in one time-boxed run (bigmodel.commands.bench_suite); cpu-smoke: the "
                        "same code paths at tiny shapes, seconds a part")
    p.add_argument("--out", metavar="DIR", help="with --suite: where suite.json and suite.md go")
    p.add_argument("--parts", nargs="+", help="with --suite: only these parts (default: all)")
    args = p.parse_args()
    if args.suite:
        from bigmodel.commands.bench_suite import run_suite

        if not args.out:
            p.error("--suite needs --out DIR (suite.json and suite.md are written there)")
        # the command as committed results record it: no absolute path of the machine that ran it
        argv = [Path(a).name if Path(a).is_absolute() else a for a in sys.argv[1:]]
        run_suite(args.suite, args.out, args.parts, "python -m bigmodel.commands.bench " + " ".join(argv))
        return
    if args.compare:
        compare_main(p, args)
        return
    if args.adversarial:
        args.preset, args.batch_size = args.preset or "bert-mini", args.batch_size or 32
        args.steps, args.warmup = args.steps or 2, 1 if args.warmup is None else args.warmup
        cfg = EncoderConfig.from_name(args.preset, vocab_size=args.vocab_size,
                                      max_position_embeddings=max(512, args.seq_len))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        rows = adversarial_rows(cfg, args.batch_size, args.seq_len, args.steps, args.warmup, args.rounds, device)
        print(f"{args.preset} + 2-class head, batch {args.batch_size} x {args.seq_len}, fp32, AdamW, {device}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.rounds} interleaved windows of "
              f"{args.steps} steps after {args.warmup}")
        print("| fine-tuning step | ms/step | x clean |\n|---|---:|---:|")
        for name, ms in rows.items():
            print(f"| {name} | {ms:.0f} | {ms / rows['clean']:.2f} |")
        return
    args.preset, args.batch_size = args.preset or "bert-base", args.batch_size or 64
    args.dtype, args.steps = args.dtype or "bf16", args.steps or 20
    args.warmup = 5 if args.warmup is None else args.warmup
    if args.int8:
        if not args.test_files:
            p.error("--int8 needs --test-files (a labelled test file)")
        rows = run_int8(args.int8, args.test_files, args.batch_size, args.warmup)
        agree = (rows["fp32"]["pred"] == rows["int8"]["pred"]).float().mean().item()
        print(f"{args.int8}: {rows['fp32']['n']} test texts, batch {args.batch_size}, CPU ({torch.get_num_threads()} "
              f"threads), torch {torch.__version__}, quantized engine {torch.backends.quantized.engine}")
        print("| weights | state dict MiB | ms per batch (median) | test accuracy | predictions equal to fp32 |")
        print("|---|---:|---:|---:|---:|")
        for name, r in rows.items():
            print(f"| {name} | {_mib(r['bytes'])} | {r['ms_per_batch']:.1f} | {100 * r['accuracy']:.2f} % | "
                  f"{100 * (agree if name == 'int8' else 1.0):.1f} % |")
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    if args.preset.startswith("vit"):
        print(f"{args.preset}, batch {args.batch_size} synthetic uint8 images, {args.dtype}, {name}, "
              f"torch {torch.__version__}")
        print("| setting | ms/step | images/s | s per CIFAR epoch (50k) | peak GiB |")
        print("|---|---:|---:|---:|---:|")
        for label, augment, comp in [("model only", False, False), ("+ on-device augmentation", True, False)] + (
            [("model only + torch.compile", False, True), ("+ on-device augmentation + compile", True, True)]
            if args.compile else []
        ):
            r = run_vision(args.preset, args.batch_size, args.dtype, args.steps, args.warmup, device, augment, comp)
            print(f"| {label} | {r['ms_per_step']:.1f} | {r['images_per_s']:,.0f} | {r['cifar_epoch_s']:.1f} | "
                  f"{r['peak_mem_gb']:.1f} |", flush=True)
        return
    cfg = EncoderConfig.from_name(args.preset, vocab_size=args.vocab_size, max_position_embeddings=max(512, args.seq_len))
    if args.finetune:
        if args.dtype != "fp32":
            p.error("--finetune measures fp32 training (use --dtype fp32)")
        rows = finetune_rows(cfg, args.finetune, args.batch_size, args.seq_len, args.steps, args.warmup, device,
                             LoRAConfig(rank=8))
        memory = "peak GPU MiB (allocated)" if device == "cuda" else "peak RSS MiB | of it, added by training"
        print(f"{args.preset} + 2-class head, batch {args.batch_size} x {args.seq_len} tokens, fp32, AdamW, {name}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms/step: median of {args.steps} after "
              f"{args.warmup}")
        print(f"| finetune | trainable parameters | AdamW state MiB | trainable weights MiB | {memory} | ms/step |")
        print("|---|---:|---:|---:|---:|---:|" + ("---:|" if device == "cpu" else ""))
        for mode, r in rows.items():
            built = f" | {_mib(r['peak_bytes'] - r['built_bytes'])}" if device == "cpu" else ""
            print(f"| {mode} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f} %) | "
                  f"{_mib(r['optimizer_bytes'])} | {_mib(r['weight_bytes'])} | {_mib(r['peak_bytes'])}{built} | "
                  f"{r['ms_per_step']:.0f} |", flush=True)
        return
    print(f"{args.preset}, batch {args.batch_size} x {args.seq_len} tokens, {args.dtype}, {name}, torch {torch.__version__}")
    print("| setting | ms/step | tokens/s | model TFLOP/s | peak GiB |")
    print("|---|---:|---:|---:|---:|")
    rows = [("SDPA, no padding mask (flash)", False, False, False),
            ("SDPA, padding mask", False, True, False),
            ("explicit softmax path (weights)", True, False, False)]
    if args.compile:
        rows.append(("SDPA + torch.compile", False, False, True))
    for label, explicit, padded, comp in rows:
        r = run(cfg, args.batch_size, args.seq_len, args.dtype, args.steps, args.warmup, device, explicit, padded, comp)
        print(f"| {label} | {r['ms_per_step']:.1f} | {r['tokens_per_s']:,.0f} | {r['tflops']:.1f} | "
              f"{r['peak_mem_gb']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
