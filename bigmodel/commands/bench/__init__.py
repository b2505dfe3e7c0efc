"""``bigmodel bench`` (also ``python -m bigmodel.commands.bench``): what the encoder costs, as Markdown tables for the
README. One module per tool, each with its own defaults; this file only picks the tool from the command line.

    python -m bigmodel.commands.bench            # GPU: bert-base, 64 x 128, bf16; CPU: bert-mini, 32 x 128, fp32
    python -m bigmodel.commands.bench --preset bert-base --batch-size 64 --seq-len 128 --dtype bf16 --compile
    python -m bigmodel.commands.bench --preset vit-cifar-small --batch-size 512 --dtype bf16 --compile
    python -m bigmodel.commands.bench --finetune full lora --preset bert-base --batch-size 8 --seq-len 128
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
from types import ModuleType

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
    """The options every tool reads (their defaults differ by tool: each module's ``DEFAULTS`` or
    ``defaults(device)``), then each tool's."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu, cpu = _tool("throughput").GPU_DEFAULTS, _tool("throughput").CPU_SHAPE
    p.add_argument("--preset", help=f"encoder preset (default {gpu['preset']} on a GPU, {cpu['preset']} on CPU; with "
                                    f"--compare, --profile or --adversarial {cpu['preset']})")
    p.add_argument("--vocab-size", type=int, help="default: the preset's own (BERT 30,522, ModernBERT 50,368)")
    p.add_argument("--batch-size", type=int, help=f"default {gpu['batch_size']} on a GPU, {cpu['batch_size']} on CPU; "
                                                  f"with --compare, --profile or --adversarial {cpu['batch_size']}")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--dtype", choices=["fp32", "bf16"], help=f"default {gpu['dtype']} on a GPU, {cpu['dtype']} on CPU "
                                                             "(--compare: bf16-mixed on GPU, fp32 on CPU)")
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


def resolve(argv: list[str], prog: str = PROG,
            device: str | None = None) -> tuple[argparse.ArgumentParser, ModuleType, argparse.Namespace]:
    """The tool the options pick and its arguments, each option left out taking that tool's default on ``device``
    (default: this machine's): ``defaults(device)`` where the tool has one, else its ``DEFAULTS``. Runs nothing;
    ``args.defaulted`` names the options that took a default (a tool may say so)."""
    p = parser(prog)
    args = p.parse_args(argv)
    module = _tool(next(module for option, module in TOOLS if option is None or getattr(args, option)))
    if hasattr(module, "defaults"):
        from bigmodel.commands.bench.measure import default_device
        table = module.defaults(device or default_device())
    else:
        table = module.DEFAULTS
    args.defaulted = [key for key in table if getattr(args, key) is None]
    for key in args.defaulted:
        setattr(args, key, table[key])
    args.prog, args.argv = prog, argv  # the command as the results record it
    return p, module, args


def main(argv: list[str] | None = None, prog: str = PROG) -> None:
    """Runs the first tool whose option is given, with that tool's defaults for the options left out."""
    p, module, args = resolve(list(sys.argv[1:] if argv is None else argv), prog)
    module.from_args(p, args)
