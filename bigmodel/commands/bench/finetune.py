"""What fine-tuning modes cost (``--finetune full lora bitfit linear_probe pooler_probe``: every mode of
``bigmodel.nn.peft.Finetune``): one classification training step per mode on a 2-class head with the pooling
training gives that mode (``choose_pooling``: a linear probe reads [CLS], the others BERT's tanh pooler), each in a
fresh process so that its peak resident memory (``getrusage`` max RSS: every CPU tensor is in it, unlike
``tracemalloc``) is its own; on a GPU, ``max_memory_allocated``. LoRA at its default (rank 8 on q, v). Defaults
(``defaults``): bert-base, batch 64 on a GPU; on CPU the CPU default every bench tool shares (bert-mini, batch 32),
with a note saying so; always 128 tokens and fp32 (the one precision it measures: ``--dtype bf16`` is refused).

    python -m bigmodel.commands.bench --finetune full lora --preset bert-base --batch-size 8 --seq-len 128
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import get_args

import torch

from bigmodel.commands.bench.measure import CPU_DEFAULTS, bench_config, default_device, mib
from bigmodel.commands.bench.throughput import cpu_defaults_note
from bigmodel.nn import EncoderConfig, SequenceClassifier, num_parameters
from bigmodel.nn.peft import Finetune, LoRAConfig, add_lora, set_trainable
from bigmodel.tasks.backbones import choose_pooling
from bigmodel.tasks.optim import adamw, parameter_groups

MODES = list(get_args(Finetune))  # the project's one list: a new mode is a choice here at once
GPU_DEFAULTS = {"preset": "bert-base", "batch_size": 64}
TIMING = {"steps": 20, "warmup": 5, "dtype": "fp32"}  # fp32 training: the one precision it measures


def defaults(device: str) -> dict:
    """The options left out, on ``device``: bert-base at batch 64 on a GPU; on CPU the CPU default every bench tool
    shares (``measure.CPU_DEFAULTS``): full fine-tuning of bert-base at 64 x 128 takes minutes a step there."""
    return {**(GPU_DEFAULTS if device == "cuda" else CPU_DEFAULTS), **TIMING}


def run_finetune(cfg: EncoderConfig, finetune: str, batch: int, seq: int, steps: int, warmup: int, device: str,
                 lora: LoRAConfig) -> dict:
    """One fine-tuning mode's training step on a 2-class head; run it in a fresh process (``finetune_rows``)."""
    torch.manual_seed(0)
    model = SequenceClassifier(cfg, 2, pooling=choose_pooling(None, finetune, None)[0]).to(device)
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--finetune", nargs="+", choices=MODES,
                   help="memory and step time of these fine-tuning modes (a 2-class head; LoRA: rank 8 on q, v, the "
                        "LoRA default)")


def from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.dtype != "fp32":
        p.error("--finetune measures fp32 training (use --dtype fp32)")
    if args.preset.startswith("vit"):
        p.error(f"--finetune measures text classifiers; give a text --preset (e.g. bert-base), not {args.preset}")
    device = default_device()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    shape = [k for k in getattr(args, "defaulted", []) if k != "dtype"]  # fp32 everywhere: not a CPU default
    note = cpu_defaults_note(shape, GPU_DEFAULTS) if device == "cpu" else None
    if note:
        print(note, flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    cfg = bench_config(args)
    rows = finetune_rows(cfg, args.finetune, args.batch_size, args.seq_len, args.steps, args.warmup, device,
                         LoRAConfig(rank=8))
    memory = "peak GPU MiB (allocated)" if device == "cuda" else "peak RSS MiB | of it, added by training"
    print(f"{args.preset} + 2-class head, batch {args.batch_size} x {args.seq_len} tokens, fp32, AdamW, {name}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms/step: median of {args.steps} after "
          f"{args.warmup}")
    print(f"| finetune | trainable parameters | AdamW state MiB | trainable weights MiB | {memory} | ms/step |")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if device == "cpu" else ""))
    for mode, r in rows.items():
        built = f" | {mib(r['peak_bytes'] - r['built_bytes'])}" if device == "cpu" else ""
        print(f"| {mode} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f} %) | "
              f"{mib(r['optimizer_bytes'])} | {mib(r['weight_bytes'])} | {mib(r['peak_bytes'])}{built} | "
              f"{r['ms_per_step']:.0f} |", flush=True)
