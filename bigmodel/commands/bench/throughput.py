"""Training-step throughput of the encoder (``python -m bigmodel.commands.bench``, no tool flag): text presets
train the MLM objective on synthetic token ids (SDPA with and without a padding mask, the explicit softmax path,
``--compile``); ``vit-*`` presets train CIFAR-shaped classification on synthetic uint8 images, with and without the
on-device augmentation recipe (crop, flip, RandAugment, erasing, MixUp/CutMix), so the numbers say whether the data
path keeps the GPU fed. Each row is timed over ``--steps`` optimizer steps after ``--warmup`` steps. Defaults
(``defaults``): bert-base, 64 x 128, bf16 on a GPU; on CPU the CPU default every tool shares (bert-mini, 32 x 128,
fp32), with a note saying so.

    python -m bigmodel.commands.bench                                  # GPU: bert-base; CPU: bert-mini (a note says)
    python -m bigmodel.commands.bench --preset bert-base --batch-size 64 --seq-len 128 --dtype bf16 --compile
    python -m bigmodel.commands.bench --preset vit-cifar-small --batch-size 512 --dtype bf16 --compile
"""

from __future__ import annotations

import argparse
import math

import torch

from bigmodel.commands.bench.measure import (CPU_DEFAULTS, CPU_DTYPE, STRONG_AUGMENT, bench_config, default_device,
                                             mlm_step, time_steps, train_flops_per_token, vision_step)
from bigmodel.data.augment import AugmentConfig
from bigmodel.nn import EncoderConfig, VisionTransformer

GPU_DEFAULTS = {"preset": "bert-base", "batch_size": 64, "dtype": "bf16"}  # the README's table (an H100)
CPU_SHAPE = {**CPU_DEFAULTS, "dtype": CPU_DTYPE}
TIMING = {"steps": 20, "warmup": 5}
SHAPE_OPTIONS = {"preset": "--preset", "batch_size": "--batch-size", "dtype": "--dtype"}


def defaults(device: str) -> dict:
    """The options left out, on ``device``: the GPU table's bert-base bf16 at 64 x 128 on a GPU; on CPU the CPU
    default every bench tool shares (``measure.CPU_DEFAULTS``, fp32), since bert-base's step there takes ~17 s."""
    return {**(GPU_DEFAULTS if device == "cuda" else CPU_SHAPE), **TIMING}


def cpu_defaults_note(defaulted: list[str], gpu_defaults: dict | None = None) -> str | None:
    """One line naming the CPU defaults taken for the shape options left out (``defaulted``) and the GPU's defaults
    (``gpu_defaults``: the tool's, this one's by default) for those same options (never for one given: ``--preset
    vit-...`` is not bert-base); bert-base's step time only when every shape option was left out, the one shape it is
    for. None when every shape option was given."""
    gpu_defaults = GPU_DEFAULTS if gpu_defaults is None else gpu_defaults
    taken = [key for key in SHAPE_OPTIONS if key in defaulted]
    if not taken:
        return None
    chosen = " ".join(f"{SHAPE_OPTIONS[key]} {CPU_SHAPE[key]}" for key in taken)
    gpu = " ".join(f"{SHAPE_OPTIONS[key]} {gpu_defaults[key]}" for key in taken)
    if len(taken) < len(SHAPE_OPTIONS):
        return f"note: CPU defaults for the options not given: {chosen}; on a GPU they default to {gpu}"
    return (f"note: CPU defaults for the options not given: {chosen}; the GPU default (about 17 s a step on two "
            f"CPU cores) is {gpu}")


def _gib(value: float) -> str:
    """A GPU's peak memory; on CPU (no allocator statistics: NaN) a dash, not 'nan'."""
    return "–" if math.isnan(value) else f"{value:.1f}"


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


def run(cfg: EncoderConfig, batch: int, seq: int, dtype: str, steps: int, warmup: int, device: str,
        explicit: bool, padded: bool, compile: bool) -> dict:
    step, model, _ = mlm_step(cfg, batch, seq, dtype, device, explicit, padded, compile)
    elapsed = time_steps(step, steps, warmup, device)
    tokens = batch * seq / elapsed
    return {
        "ms_per_step": 1000 * elapsed,
        "tokens_per_s": tokens,
        "tflops": tokens * train_flops_per_token(model, seq, int(0.15 * batch * seq) / (batch * seq)) / 1e12,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
    }


def from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    device = default_device()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    note = cpu_defaults_note(getattr(args, "defaulted", [])) if device == "cpu" else None
    if note:
        print(note, flush=True)
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
                  f"{_gib(r['peak_mem_gb'])} |", flush=True)
        return
    cfg = bench_config(args)
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
              f"{_gib(r['peak_mem_gb'])} |", flush=True)
