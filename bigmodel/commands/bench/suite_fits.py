"""The suite's parts that fit through Lightning's Trainer to the end: a short ``16-mixed`` fit, and FSDP on one GPU
(fit, sharded save, resume, clipping) at the 1.2B experiment's width with fewer layers."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from bigmodel.commands.bench.measure import mlm_batch
from bigmodel.commands.bench.loop import mlm_task
from bigmodel.commands.bench.suite_parts import ROOT, SKIPPED, Sizes, config_of
from bigmodel.nn import EncoderConfig

FSDP_FRAGMENT = ROOT / "experiments/trainer/fsdp-bf16.yaml"
FSDP_EXPERIMENT = ROOT / "experiments/pretrain/encoder_1b_fsdp.yaml"


def _trainer(device: str, root: str, precision: str, max_steps: int, callbacks: list, **kwargs: Any):
    """A Trainer as ``bigmodel fit`` builds one for a short run (TensorBoard logger, LR monitor, ``ProgressLog``),
    without the CLI (which needs jsonargparse)."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import TensorBoardLogger

    from bigmodel.run.progress import ProgressLog

    return L.Trainer(accelerator=device, devices=1, precision=precision, max_steps=max_steps,
                     logger=TensorBoardLogger(root, name="suite"), default_root_dir=root,
                     callbacks=[LearningRateMonitor(logging_interval="step"), ProgressLog(lines=False), *callbacks],
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     log_every_n_steps=max(1, min(20, max_steps // 2)), **kwargs)


def _loader(cfg: EncoderConfig, batch: int, seq: int, n: int):
    from torch.utils.data import DataLoader

    torch.manual_seed(1)
    return DataLoader([mlm_batch(cfg.vocab_size, batch, seq, "cpu") for _ in range(n)], batch_size=None)


def part_fit_16_mixed(s: Sizes, device: str, root: str) -> dict:
    """(c) A short ``16-mixed`` fit to its end: GradScaler, the task's non-finite check beside it, validation and a
    checkpoint. A CPU has no fp16 GradScaler path in Lightning: the smoke run fits ``bf16-mixed``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg = config_of(s.fit_text, max_position_embeddings=max(512, s.seq))
    task = mlm_task(cfg, lr=1e-4, warmup=0.1)
    precision = "16-mixed" if device == "cuda" else "bf16-mixed"
    ckpt = ModelCheckpoint(dirpath=f"{root}/ckpt", monitor="val/loss", save_last=True)
    trainer = _trainer(device, root, precision, s.fit_steps, [ckpt], val_check_interval=max(1, s.fit_steps // 2),
                       limit_val_batches=2)
    start = time.perf_counter()
    trainer.fit(task, _loader(cfg, s.small_batch, s.seq, s.fit_steps), _loader(cfg, s.small_batch, s.seq, 2))
    seconds = time.perf_counter() - start
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return {"rows": [{"precision": precision, "steps": trainer.global_step, "of": s.fit_steps,
                      "finished": trainer.state.status.value == "finished",
                      "train/loss": float(trainer.callback_metrics["train/loss"]),
                      "val/loss": float(trainer.callback_metrics["val/loss"]), "skipped steps": task.skipped_steps,
                      "loss scale": scaler.get_scale() if scaler is not None else None,
                      "last.ckpt": Path(ckpt.last_model_path).exists(), "s (fit)": seconds}],
            "notes": [f"{s.fit_text[0]}, batch {s.small_batch} x {s.seq}, synthetic tokens"]
            + ([] if device == "cuda" else ["16-mixed: " + SKIPPED + " (bf16-mixed on CPU instead)"])}


def _fsdp_strategy():
    """``experiments/trainer/fsdp-bf16.yaml``'s strategy, built from the file (class paths imported)."""
    spec = yaml.safe_load(FSDP_FRAGMENT.read_text())["trainer"]["strategy"]
    args = dict(spec["init_args"])
    args["auto_wrap_policy"] = {_import(path) for path in args["auto_wrap_policy"]}
    return _import(spec["class_path"])(**args)


def _import(path: str) -> Any:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


class _Clipping:
    """Wraps a task's ``configure_gradient_clipping`` to record the total gradient norm before and after it."""

    def __init__(self, task) -> None:
        self.norms: list[tuple[float, float]] = []
        self.inner = task.configure_gradient_clipping
        task.configure_gradient_clipping = self

    def __call__(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        before = float(torch.nn.utils.get_total_norm(grads))
        self.inner(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.norms.append((before, float(torch.nn.utils.get_total_norm(grads))))


def part_fsdp(s: Sizes, device: str, root: str) -> dict:
    """(d) The 1.2B experiment's MLM (24 x 2048, FFN 8192, activation checkpointing) cut to ``fsdp_layers``
    layers, under the FSDP fragment's strategy on one GPU (FULL_SHARD of one rank): fit, sharded save, resume from
    it, gradient clipping by norm through the FSDP branch. On CPU (Lightning refuses FSDP there) the same fit, save,
    resume and clipping run with the default strategy."""
    from lightning.pytorch import Callback
    from lightning.pytorch.callbacks import ModelCheckpoint

    experiment = yaml.safe_load(FSDP_EXPERIMENT.read_text())
    init = experiment["model"]["init_args"]
    clip = 0.5
    if device == "cuda":
        cfg = EncoderConfig.from_name(init["encoder"], **init["encoder_config"], num_layers=s.fsdp_layers,
                                      vocab_size=30522)
        precision, seq = "bf16-mixed", s.fsdp_seq
    else:
        cfg = config_of(s.text, activation_checkpointing=True)
        precision, seq = "32-true", s.seq
    starts: list[int] = []

    class StartStep(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            starts.append(trainer.global_step)

    rows, ckpt_path = [], None
    for phase, steps in (("fit, save", s.fsdp_steps), ("resume from it", s.fsdp_steps + 2)):
        task = mlm_task(cfg, lr=float(init["lr"]), betas=tuple(init["betas"]), warmup=1)
        clipping = _Clipping(task)
        ckpt = ModelCheckpoint(dirpath=f"{root}/ckpt", save_last=True, every_n_train_steps=s.fsdp_steps)
        trainer = _trainer(device, root, precision, steps, [ckpt, StartStep()],
                           strategy=_fsdp_strategy() if device == "cuda" else "auto",
                           gradient_clip_val=clip, limit_val_batches=0)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.fit(task, _loader(cfg, s.fsdp_batch, seq, steps), ckpt_path=ckpt_path)
        seconds = time.perf_counter() - start
        ckpt_path = ckpt.last_model_path
        before, after = max(n[0] for n in clipping.norms), max(n[1] for n in clipping.norms)
        rows.append({"phase": phase, "strategy": type(trainer.strategy).__name__, "first step": starts[-1],
                     "last step": trainer.global_step,
                     "saved": None if starts[-1] else "directory (sharded)" if Path(ckpt_path).is_dir() else "file",
                     "max grad norm before clip": before, f"after (clip {clip})": after,
                     "s": seconds, "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None})
    notes = [f"{cfg.num_layers} x {cfg.hidden_size}, FFN {cfg.intermediate_size}, "
             f"{sum(p.numel() for p in task.parameters()) / 1e6:,.3g} M parameters, batch {s.fsdp_batch} x {seq}"]
    if device != "cuda":
        notes.append(f"FSDP: {SKIPPED} (Lightning runs FSDP on GPUs only); built the fragment's strategy: "
                     f"{type(_fsdp_strategy()).__name__}")
    return {"rows": rows, "notes": notes}
