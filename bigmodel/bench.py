"""Training-step throughput of the encoder, printed as a Markdown table for the README.

    python -m bigmodel.bench --preset bert-base --batch-size 64 --seq-len 128 --dtype bf16 --compile
    python -m bigmodel.bench --preset vit-cifar-small --batch-size 512 --dtype bf16 --compile

Text presets train the MLM objective on synthetic token ids; ``vit-*`` presets train CIFAR-shaped classification
on synthetic uint8 images, with and without the on-device augmentation recipe (crop, flip, RandAugment, erasing,
MixUp/CutMix), so the numbers say whether the data path keeps the GPU fed. Each row is timed over ``--steps``
optimizer steps after ``--warmup`` steps (throughput does not depend on the pixel or token values). Pure PyTorch:
no Lightning in the loop.
"""

from __future__ import annotations

import argparse
import time

import torch

from bigmodel.data.augment import AugmentConfig, BatchAugment, batch_mixer
from bigmodel.nn import EncoderConfig, MaskedLanguageModel, VisionTransformer, num_parameters
from bigmodel.tasks.optim import parameter_groups


def _train_flops_per_token(model: MaskedLanguageModel, seq_len: int, mask_fraction: float) -> float:
    """6 x (parameters used per token) + attention; the tied decoder runs only at the masked positions."""
    cfg = model.config
    embeddings = sum(p.numel() for p in model.encoder.embeddings.parameters())
    dense = num_parameters(model) - embeddings
    decoder = cfg.vocab_size * cfg.hidden_size * mask_fraction
    attention = 2 * 2 * cfg.num_layers * seq_len * cfg.hidden_size  # QK^T and AV, forward
    return 6 * (dense + decoder) + 3 * attention


def time_steps(step, steps: int, warmup: int, device: str) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (compilation, allocator warm-up)."""
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def run_vision(preset: str, batch: int, dtype: str, steps: int, warmup: int, device: str, augment: bool,
               compile: bool, num_classes: int = 10) -> dict:
    torch.manual_seed(0)
    model = VisionTransformer(num_classes, preset).to(device)
    size = model.config.image_size
    opt = torch.optim.AdamW(parameter_groups(model, 0.05), lr=1e-4)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    recipe = AugmentConfig(crop_padding=4, horizontal_flip=True, auto_augment="randaugment", random_erasing=0.25,
                           mixup_alpha=0.8, cutmix_alpha=1.0)
    augment_batch = BatchAugment(recipe if augment else None, None, (0.5,) * 3, (0.25,) * 3)
    mixer = batch_mixer(recipe, num_classes) if augment else None
    if compile:
        model.compile()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        x, y = augment_batch(images), labels
        if mixer is not None:
            x, y = mixer(x, y)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    elapsed = time_steps(step, steps, warmup, device)
    return {
        "ms_per_step": 1000 * elapsed,
        "images_per_s": batch / elapsed,
        "cifar_epoch_s": 50_000 * elapsed / batch,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
    }


def run(cfg: EncoderConfig, batch: int, seq: int, dtype: str, steps: int, warmup: int, device: str,
        explicit: bool, padded: bool, compile: bool) -> dict:
    torch.manual_seed(0)
    model = MaskedLanguageModel(cfg).to(device)
    opt = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-4)  # as in training (tasks/optim.py)
    ids = torch.randint(5, cfg.vocab_size, (batch, seq), device=device)
    n_sel = int(0.15 * batch * seq)
    positions = torch.randperm(batch * seq, device=device)[:n_sel].sort().values
    labels = torch.randint(5, cfg.vocab_size, (n_sel,), device=device)
    mask = None
    if padded:
        mask = torch.ones(batch, seq, dtype=torch.long, device=device)
        mask[: batch // 2, seq * 3 // 4 :] = 0
    if explicit:  # route every layer through the explicit softmax path
        for layer in model.encoder.layers:
            attn_forward = layer.attn.forward
            layer.attn.forward = lambda x, m=None, need_weights=False, f=attn_forward: f(x, m, True)
    step_model = torch.compile(model) if compile else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> torch.Tensor:
        with autocast:
            logits = step_model(ids, positions, mask)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    elapsed = time_steps(step, steps, warmup, device)
    tokens = batch * seq / elapsed
    return {
        "ms_per_step": 1000 * elapsed,
        "tokens_per_s": tokens,
        "tflops": tokens * _train_flops_per_token(model, seq, n_sel / (batch * seq)) / 1e12,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="bert-base")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="add a torch.compile row")
    args = p.parse_args()
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
