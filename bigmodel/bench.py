"""Training-step throughput of the encoder, and what fine-tuning modes and int8 inference cost, printed as Markdown
tables for the README.

    python -m bigmodel.bench --preset bert-base --batch-size 64 --seq-len 128 --dtype bf16 --compile
    python -m bigmodel.bench --preset vit-cifar-small --batch-size 512 --dtype bf16 --compile
    python -m bigmodel.bench --finetune full lora --preset bert-base --batch-size 8 --seq-len 128 --dtype fp32
    python -m bigmodel.bench --int8 runs/sst2-mini/checkpoints/best.ckpt --test-files ../shared/data/sst2/test.tsv

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
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from bigmodel.data.augment import AugmentConfig, BatchAugment, batch_mixer
from bigmodel.nn import EncoderConfig, MaskedLanguageModel, SequenceClassifier, VisionTransformer, num_parameters
from bigmodel.nn.peft import LoRAConfig, add_lora, merge_lora, set_trainable
from bigmodel.nn.quantize import quantize_int8, state_dict_bytes
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


def run_finetune(cfg: EncoderConfig, finetune: str, batch: int, seq: int, steps: int, warmup: int, device: str,
                 lora: LoRAConfig) -> dict:
    """One fine-tuning mode's training step on a 2-class head; run it in a fresh process (``finetune_rows``)."""
    torch.manual_seed(0)
    model = SequenceClassifier(cfg, 2).to(device)
    if finetune == "lora":
        add_lora(model.encoder, lora)
    set_trainable(model, finetune)
    opt = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-4)  # frozen parameters are not in it
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


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


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
    p.add_argument("--finetune", nargs="+", choices=["full", "lora", "bitfit", "linear_probe"],
                   help="memory and step time of these fine-tuning modes (a 2-class head; LoRA: rank 8 on qkv, proj)")
    p.add_argument("--int8", metavar="CKPT", help="a classifier checkpoint: fp32 vs dynamic int8 on CPU")
    p.add_argument("--test-files", nargs="+", help="with --int8: labelled test file(s), read as the run read its data")
    args = p.parse_args()
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
                             LoRAConfig(rank=8, targets=("qkv", "proj")))
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
