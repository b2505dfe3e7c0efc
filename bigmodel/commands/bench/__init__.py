"""``bigmodel bench`` (also ``python -m bigmodel.commands.bench``): what the encoder costs, as Markdown tables for the
README. One module per tool, each with its own defaults; this file only picks the tool from the command line.

    python -m bigmodel.commands.bench --preset bert-base --batch-size 64 --seq-len 128 --dtype bf16 --compile
    python -m bigmodel.commands.bench --preset vit-cifar-small --batch-size 512 --dtype bf16 --compile
    python -m bigmodel.commands.bench --finetune full lora --preset bert-base --batch-size 8 --seq-len 128 --dtype fp32
    python -m bigmodel.commands.bench --int8 runs/sst2-mini/checkpoints/best.ckpt --test-files ../shared/data/sst2/test.tsv
    python -m bigmodel.commands.bench --compare --json bench.json                              # CPU: bert-mini, 32 x 128
    python -m bigmodel.commands.bench --compare --preset bert-base --batch-size 256 --seq-len 128 --compile \\
        --vision-preset vit-base --vision-batch-size 256 --json bench.json          # GPU
    python -m bigmodel.commands.bench --suite gpu --out bench-gpu
    python -m bigmodel.commands.bench --profile                                       # CPU: bert-mini, 32 x 128

Tools: ``throughput`` (the default: training-step throughput of a text or ``vit-*`` preset), ``compare`` (bigmodel
vs Hugging Face and timm against the matmul ceiling measured in the run), ``finetune`` (memory and step time of the
fine-tuning modes), ``int8`` (a trained classifier, float vs dynamic int8 on CPU), ``adversarial`` (clean vs FGM vs
PGD steps), ``suite`` (every pending GPU measurement in one time-boxed run) and ``profile`` (where the CPU MLM step's
time goes, by category, against the matmul ceiling; with ``--levers`` the candidate levers, ``levers``). ``lengths``
is a command of its own (``python -m bigmodel.commands.bench.lengths``: what padding costs on a real dataset's
lengths). Shared measuring
code: ``measure`` (steps, FLOPs, timing, interleaved contenders) and ``loop`` (the Lightning loop as a contender).
Pure PyTorch in the timed loops, except the rows that say Lightning.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

PROG = "python -m bigmodel.commands.bench"

# (the option that picks the tool, its module under bigmodel.commands.bench), first match wins; None: the default
TOOLS: list[tuple[str | None, str]] = [
    ("suite", "suite"),
    ("compare", "compare"),
    ("profile", "profile"),
    ("adversarial", "adversarial"),
    ("int8", "int8"),
    ("finetune", "finetune"),
    (None, "throughput"),
]


def _tool(module: str):
    return import_module(f"{__name__}.{module}")


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The options every tool reads (their defaults differ by tool: each module's ``DEFAULTS``), then each tool's."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="encoder preset (default bert-base; with --compare, --profile or --adversarial "
                                    "bert-mini)")
    p.add_argument("--vocab-size", type=int, help="default: the preset's own (BERT 30,522, ModernBERT 50,368)")
    p.add_argument("--batch-size", type=int, help="default 64; with --compare, --profile or --adversarial 32")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="default bf16 (--compare: bf16-mixed on GPU, fp32 on CPU)")
    p.add_argument("--steps", type=int, help="timed steps (default 20; with --compare or --profile steps per "
                                             "window, 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 5; with --compare or --profile 2)")
    p.add_argument("--rounds", type=int, help="with --compare/--profile/--adversarial: interleaved rounds "
                                              "(median of the windows; default 5)")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows")
    for _, module in TOOLS:
        add_arguments = getattr(_tool(module), "add_arguments", None)
        if add_arguments is not None:
            add_arguments(p)
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> None:
    """Runs the first tool whose option is given, with that tool's defaults for the options left out."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser(prog)
    args = p.parse_args(argv)
    module = _tool(next(module for option, module in TOOLS if option is None or getattr(args, option)))
    for key, value in module.DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.prog, args.argv = prog, argv  # the command as the results record it
    module.from_args(p, args)
