"""What int8 inference costs and saves (``--int8 CKPT --test-files ...``): a trained classifier checkpoint, float vs
dynamic int8 linear layers (``bigmodel.nn.quantize``) on CPU: weights on disk, latency per batch of a real test
file, accuracy, predictions equal to the float model's.

    python -m bigmodel.commands.bench --int8 runs/sst2-mini/checkpoints/best.ckpt --test-files ../shared/data/sst2/test.tsv
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from bigmodel.commands.bench.measure import mib
from bigmodel.nn.peft import merge_lora
from bigmodel.nn.quantize import quantize_int8, state_dict_bytes

DEFAULTS = {"batch_size": 64, "warmup": 5}


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8", metavar="CKPT", help="a classifier checkpoint: fp32 vs dynamic int8 on CPU")
    p.add_argument("--test-files", nargs="+", help="with --int8: labelled test file(s), read as the run read its data")


def from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.test_files:
        p.error("--int8 needs --test-files (a labelled test file)")
    rows = run_int8(args.int8, args.test_files, args.batch_size, args.warmup)
    agree = (rows["fp32"]["pred"] == rows["int8"]["pred"]).float().mean().item()
    print(f"{args.int8}: {rows['fp32']['n']} test texts, batch {args.batch_size}, CPU ({torch.get_num_threads()} "
          f"threads), torch {torch.__version__}, quantized engine {torch.backends.quantized.engine}")
    print("| weights | state dict MiB | ms per batch (median) | test accuracy | predictions equal to fp32 |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {mib(r['bytes'])} | {r['ms_per_batch']:.1f} | {100 * r['accuracy']:.2f} % | "
              f"{100 * (agree if name == 'int8' else 1.0):.1f} % |")
