"""What padding costs in text-classification fine-tuning: real (non-pad) tokens per second of training steps on a
real dataset's lengths, for the ways a batch can be ordered and padded, printed as a Markdown table.

    python -m bigmodel.commands.bench.lengths --train-file ../shared/data/sst2/train.tsv --text-column sentence
    python -m bigmodel.commands.bench.lengths --train-file ../shared/data/sst2/train.tsv --text-column sentence --hf

Rows: ``max_length`` pads every batch to ``--max-length`` (HF ``padding="max_length"``); ``longest`` is the data
module's default order (seeded shuffle) padded to each batch's longest text; ``grouped`` adds ``group_by_length``
and, ``grouped/8``, ``pad_to_multiple_of=8``. Batches come from ``TextClassificationDataModule`` itself (epoch 0),
taken at evenly spaced positions of the epoch so that every row sees the whole length range; each row times
``--steps`` training steps (forward, backward, AdamW) after ``--warmup``, in ``--rounds`` interleaved rounds (rows
share the machine's slow and busy moments). ``--hf`` adds ``transformers.BertForSequenceClassification`` of the
same shape (SDPA attention, built from its config: no download) on the ``longest`` and ``grouped`` batches;
``--unpad`` adds bigmodel with ``unpad: true`` (the padding's tokens skipped) on every row's batches. The
padding share over the whole epoch is exact (computed from all the lengths, not timed). Pure PyTorch: no
Lightning in the loop.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from bigmodel.data import TextClassificationDataModule
from bigmodel.data.sampling import token_lengths
from bigmodel.nn import EncoderConfig, SequenceClassifier
from bigmodel.tasks.optim import adamw, parameter_groups

WIKITEXT_TOKENIZER = "runs/wikitext2-mlm-mini/checkpoints/last.ckpt"

# name -> (group_by_length, padding: "max_length" or a pad_to_multiple_of (None: to the longest))
ROWS: dict[str, tuple[bool, Any]] = {
    "max_length": (False, "max_length"),
    "longest": (False, None),
    "grouped": (True, None),
    "grouped/8": (True, 8),
}


def data_module(args: argparse.Namespace, group_by_length: bool, pad: Any) -> TextClassificationDataModule:
    multiple = pad if isinstance(pad, int) else None
    return TextClassificationDataModule(
        args.tokenizer, train_files=args.train_file, text_column=args.text_column, label_column=args.label_column,
        max_length=args.max_length, batch_size=args.batch_size, seed=args.seed, group_by_length=group_by_length,
        pad_to_multiple_of=multiple,
        **({} if args.wordpiece_vocab_size is None else {"wordpiece_vocab_size": args.wordpiece_vocab_size}),
    )


def batches(args: argparse.Namespace, name: str) -> tuple[list[dict[str, torch.Tensor]], dict[str, float]]:
    """``--warmup + --steps`` batches at evenly spaced positions of epoch 0, and the whole epoch's padding."""
    group, pad = ROWS[name]
    dm = data_module(args, group, pad)
    dm.setup("fit")
    loader = dm.train_dataloader()
    if pad == "max_length":  # the same order, every batch padded to max_length
        loader.collate_fn.inner.padding, loader.collate_fn.inner.max_length = "max_length", args.max_length
    want = args.warmup + args.steps
    n = len(loader)
    positions = {round(i * (n - 1) / max(want - 1, 1)) for i in range(want)}
    lengths = token_lengths(dm.datasets["train"])
    order = [i for _, i in loader.sampler]
    real = padded = 0
    for start in range(0, len(order), args.batch_size):
        rows = [lengths[i] for i in order[start:start + args.batch_size]]
        width = args.max_length if pad == "max_length" else max(rows)
        if isinstance(pad, int):
            width = -(-width // pad) * pad
        real, padded = real + sum(rows), padded + width * len(rows)
    out = []
    for k, batch in enumerate(loader):
        if k in positions:
            batch.pop("text", None)
            out.append({k: v for k, v in batch.items() if k != "token_type_ids"})
        if len(out) == want:
            break
    return out, {"vocab_size": len(dm.tokenizer), "epoch_padding": 1 - real / padded, "batches": n}


def ours(config: EncoderConfig) -> tuple[torch.nn.Module, Callable]:
    model = SequenceClassifier(config, 2)
    return model, lambda b: model(b["input_ids"], b.get("attention_mask"))[0]


def huggingface(config: EncoderConfig) -> tuple[torch.nn.Module, Callable]:
    from transformers import BertConfig, BertForSequenceClassification

    hf_config = BertConfig(**{k: v for k, v in config.to_hf("bert").items() if k != "model_type"}, num_labels=2,
                           attn_implementation="sdpa")
    model = BertForSequenceClassification(hf_config)
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    return model, lambda b: model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask")).logits


def trainer_step(model: torch.nn.Module, forward: Callable) -> Callable[[dict[str, torch.Tensor]], None]:
    model.train()
    opt = adamw(parameter_groups(model, 0.01), 1e-4)

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss = F.cross_entropy(forward(batch), batch["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bigmodel.commands.bench.lengths", description=__doc__.split("\n\n")[0])
    p.add_argument("--train-file", required=True)
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--label-column", default="label")
    p.add_argument("--tokenizer", default=None,
                   help=f"default: {WIKITEXT_TOKENIZER} if present, else a WordPiece trained on the train file")
    p.add_argument("--wordpiece-vocab-size", type=int, default=None, help="without a tokenizer (default 8192)")
    p.add_argument("--preset", default="bert-mini")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=66)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--hf", action="store_true", help="also HF BertForSequenceClassification (sdpa)")
    p.add_argument("--unpad", action="store_true", help="also bigmodel with unpad: true on each row's batches")
    args = p.parse_args(argv)
    if args.tokenizer is None and Path(WIKITEXT_TOKENIZER).exists():
        args.tokenizer = WIKITEXT_TOKENIZER

    data = {name: batches(args, name) for name in args.rows}
    vocab = next(iter(data.values()))[1]["vocab_size"]
    config = EncoderConfig.from_name(args.preset, vocab_size=vocab)
    runs: dict[str, tuple[Callable, str]] = {}
    for name in args.rows:
        torch.manual_seed(0)  # every row starts from the same weights
        runs[f"bigmodel {name}"] = (trainer_step(*ours(config)), name)
        if args.unpad:
            torch.manual_seed(0)
            runs[f"bigmodel {name} unpad"] = (trainer_step(*ours(config.replace(unpad=True))), name)
    if args.hf:
        for name in (r for r in ("longest", "grouped", "grouped/8") if r in args.rows):
            torch.manual_seed(0)
            runs[f"HF BERT {name}"] = (trainer_step(*huggingface(config)), name)

    seconds = {key: [] for key in runs}
    for key, (step, name) in runs.items():  # warm-up once per row
        for batch in data[name][0][: args.warmup]:
            step(batch)
    for _ in range(args.rounds):
        for key, (step, name) in runs.items():
            start = time.perf_counter()
            for batch in data[name][0][args.warmup:]:
                step(batch)
            seconds[key].append(time.perf_counter() - start)

    print(f"\n{args.preset}, batch {args.batch_size}, fp32, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; {args.steps} steps x {args.rounds} rounds "
          f"after {args.warmup} warm-up, batches spread over epoch 0 of {args.train_file}\n")
    print("| run | padding over the epoch | mean padded length | real tokens/s (median, min-max of rounds) "
          "| vs max_length |")
    print("| --- | --- | --- | --- | --- |")
    reference = None
    for key, (_, name) in runs.items():
        timed = data[name][0][args.warmup:]
        tokens = sum(real_tokens(b) for b in timed)
        rates = [tokens / s for s in seconds[key]]
        median = statistics.median(rates)
        if key == "bigmodel max_length":
            reference = median
        width = statistics.mean(b["input_ids"].shape[1] for b in timed)
        ratio = f"{median / reference:.2f}x" if reference else "-"
        print(f"| {key} | {data[name][1]['epoch_padding']:.0%} | {width:.1f} | {median:,.0f} "
              f"({min(rates):,.0f}-{max(rates):,.0f}) | {ratio} |")


if __name__ == "__main__":
    main()
