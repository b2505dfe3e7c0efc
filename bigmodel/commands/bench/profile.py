"""Where the CPU MLM training step's time goes (``--profile``): ``torch.profiler`` self CPU time by category, beside
the useful FLOP/s as a fraction of the fp32 matmul ceiling measured in the same run. ``--levers``: the plain step
against the candidate levers instead (``levers``).

    python -m bigmodel.commands.bench --profile                     # CPU default: bert-mini, batch 32 x 128
    python -m bigmodel.commands.bench --profile --smoke             # a tiny shape, seconds

The two bigmodel rows of ``--compare`` (plain PyTorch; ``MLMTask`` through Lightning's loop) are timed unprofiled in
interleaved windows (the fraction of the ceiling comes from these), then each profiled over a few steps. Every
event's *self* time goes to exactly one category (``categories``), so the categories add up to the profiled step.
In Lightning's loop forward and backward run inside ``Optimizer.step`` (the closure) and are labelled as phases, so
they are not the optimizer's. What each category
and "everything else" hold: the bench README, "Where the CPU step's time goes".
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from bigmodel.commands.bench.levers import levers, levers_table
from bigmodel.commands.bench.loop import lightning_contender, quiet_lightning
from bigmodel.commands.bench.measure import (CPU_DEFAULTS, bench_config, cpu_name, interleave, matmul_peak,
                                             mlm_batch, mlm_step, plain_contender, train_flops_per_token)
from bigmodel.commands.bench.categories import PHASE, STEP, NAMES, categorise, module_labels
from bigmodel.nn import EncoderConfig

DEFAULTS = {**CPU_DEFAULTS, "steps": 2, "warmup": 2, "rounds": 5}
PLAIN, LIGHTNING = "bigmodel MLM, plain PyTorch", "bigmodel MLMTask, Lightning Trainer"  # as --compare names them
def _result(prof: profile, steps: int, wall: float) -> dict:
    """Per step: the categories' self time, "everything else" by op (largest first), profiled and wall time."""
    times, other, total = categorise(list(prof.events()))
    return {"categories": {k: v / steps for k, v in times.items()},
            "other": {k: v / steps for k, v in sorted(other.items(), key=lambda kv: -kv[1])},
            "profiled_s": total / steps, "wall_s": wall / steps}


def profile_plain(step: Callable[[], Any], model: nn.Module, steps: int) -> dict:
    """Profiles ``steps`` calls of a plain step (one warm-up call first): ``_result``."""
    step()
    with module_labels(model), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            with record_function(STEP):
                step()
        wall = time.perf_counter() - start
    return _result(prof, steps, wall)


class ProfileWindow(Callback):
    """Profiles batches ``after`` + 1 ... ``after`` + ``steps`` of a Lightning fit in the trainer's own thread (the
    profiler sees only the thread that starts it): each a ``STEP`` span from one batch's end to the next, so the
    loop's work between batches counts; the task's ``training_step`` and ``backward`` run as ``PHASE`` spans."""

    def __init__(self, task: L.LightningModule, after: int, steps: int) -> None:
        self.after, self.steps, self.count, self.wall = after, steps, 0, 0.0
        self.stack, self.prof, self.span = ExitStack(), profile(activities=[ProfilerActivity.CPU]), None
        self.result: dict | None = None  # ``_result`` once the window is profiled
        for hook in ("training_step", "backward"):
            setattr(task, hook, self._phase(getattr(task, hook)))
        self.task = task

    @staticmethod
    def _phase(fn: Callable) -> Callable:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with record_function(PHASE):
                return fn(*args, **kwargs)
        return wrapped

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.count += 1
        if self.count == self.after:
            self.stack.enter_context(module_labels(self.task))
            self.stack.enter_context(self.prof)
            self.wall = time.perf_counter()
        elif self.after < self.count <= self.after + self.steps:
            self.span.__exit__(None, None, None)
        if self.count == self.after + self.steps:
            self.wall = time.perf_counter() - self.wall
            self.stack.close()
            self.result = _result(self.prof, self.steps, self.wall)
        elif self.after <= self.count < self.after + self.steps:
            self.span = record_function(STEP).__enter__()


def profile_step(cfg: EncoderConfig, batch: int = 32, seq: int = 128, steps: int = 3, warmup: int = 2,
                 rounds: int = 5, window: int = 2, matmul_size: int = 2048, lightning: bool = True) -> dict:
    """The fp32 matmul ceiling, the two bigmodel rows of ``--compare`` timed in interleaved windows (median), then
    each profiled over ``steps`` steps (``profile_plain``, ``ProfileWindow``). CPU only."""
    peak = matmul_peak("cpu", torch.float32, matmul_size)
    data = mlm_batch(cfg.vocab_size, batch, seq, "cpu")
    fraction = len(data["masked_positions"]) / (batch * seq)
    step, model, opt = mlm_step(cfg, batch, seq, "fp32", "cpu", data=data)
    useful = train_flops_per_token(model, seq, fraction)
    contenders = [plain_contender(PLAIN, "text", step, model, opt, "cpu", batch * seq, useful, useful)]
    timed = warmup + rounds * window
    with quiet_lightning() as root:
        try:
            if lightning:
                contender, loop = lightning_contender(LIGHTNING, cfg, data, timed + steps + 3, "cpu", "32-true", root,
                                                      useful)
                contenders.append(contender)
                # from the end of the batch after the timed windows: the loop pauses the fit at their end
                watcher = ProfileWindow(loop.task, timed + 1, steps)
                loop.trainer.callbacks.insert(0, watcher)
            timings = interleave(contenders, window, warmup, rounds, "cpu")
            profiles = {PLAIN: profile_plain(step, model, steps)}
            if lightning:
                loop.window(steps + 2)
                profiles[LIGHTNING] = watcher.result
        finally:
            for c in contenders:
                c.close()
    rows = []
    for c in contenders:
        seconds = statistics.median(timings[c.name]["windows"])
        rows.append({"contender": c.name, "ms_per_step": 1000 * seconds, "tokens_per_s": batch * seq / seconds,
                     "useful_flops_per_token": useful, "ceiling_fraction": batch * seq * useful / seconds / peak,
                     "profile": profiles[c.name]})
    return {"device": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "matmul_peak_flops": peak, "matmul_size": matmul_size, "batch": batch, "seq_len": seq,
            "mask_fraction": fraction, "rounds": rounds, "window": window, "profiled_steps": steps, "rows": rows}


def table(result: dict, other_rows: int = 6) -> str:
    """One Markdown table (a column pair per contender: ms per step under the profiler, share), the unprofiled step
    and its fraction of the ceiling below the categories, and what "everything else" holds under the table."""
    rows = result["rows"]
    ceiling = f"useful FLOP/s, fraction of the {result['matmul_peak_flops'] / 1e9:,.1f} GFLOP/s fp32 matmul ceiling"

    def row(label: str, cell: Callable[[dict, dict], str]) -> str:
        return f"| {label} | " + " | ".join(cell(r, r["profile"]) for r in rows) + " |"

    lines = [row("category", lambda r, p: f"{r['contender']}: ms/step (profiled) | share"),
             "|---|" + "---:|---:|" * len(rows)]
    lines += [row(cat, lambda r, p, cat=cat: f"{1000 * p['categories'][cat]:,.1f} | "
                                             f"{100 * p['categories'][cat] / p['profiled_s']:.1f} %") for cat in NAMES]
    lines += [row("**profiled step (sum)**", lambda r, p: f"**{1000 * sum(p['categories'].values()):,.1f}** | 100 %"),
              row("wall clock, profiled", lambda r, p: f"{1000 * p['wall_s']:,.1f} | "),
              row("**unprofiled step (median, interleaved)**", lambda r, p: f"**{r['ms_per_step']:,.1f}** | "),
              row(ceiling, lambda r, p: f"{r['tokens_per_s'] * r['useful_flops_per_token'] / 1e9:,.1f} G | "
                                        f"**{100 * r['ceiling_fraction']:.1f} %**")]
    for r in rows:
        parts = ", ".join(f"{name} {1000 * s:.1f}" for name, s in list(r["profile"]["other"].items())[:other_rows])
        lines.append(f"\n{r['contender']}, everything else (ms/step): {parts}")
    return "\n".join(lines)


SMOKE = EncoderConfig.from_name("bert-tiny", num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                                vocab_size=100, max_position_embeddings=32)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", action="store_true",
                   help="where the CPU MLM step's time goes (torch.profiler, by category; plain PyTorch and through "
                        "Lightning's loop) beside the fraction of the fp32 matmul ceiling measured in the run; "
                        "defaults: bert-mini, batch 32 x 128, 2 warm-up steps, 5 rounds of 2-step windows")
    p.add_argument("--profiled-steps", type=int, default=3, help="with --profile: steps profiled per row")
    p.add_argument("--threads", type=int, help="with --profile: torch.set_num_threads (default: torch's)")
    p.add_argument("--no-lightning", action="store_true", help="with --profile: the plain PyTorch step only")
    p.add_argument("--levers", action="store_true",
                   help="with --profile, instead of the profile: the plain fp32 step against bf16 autocast, compiled "
                        "blocks and one thread, interleaved (median speedup over --rounds)")
    p.add_argument("--no-compile", action="store_true", help="with --profile --levers: no torch.compile row")
    p.add_argument("--smoke", action="store_true",
                   help="with --profile: a tiny shape (2 layers of width 32, vocabulary 100, batch 2 x 16, a 64 x 64 "
                        "matmul ceiling, 1 round) in place of the shape options: the code path, seconds")


def from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.dtype or args.compile:
        p.error("--profile times the fp32 CPU step and takes no --dtype or --compile (--levers has bf16 autocast "
                "and torch.compile rows; --no-compile leaves the latter out)")
    if torch.cuda.is_available():
        print("note: this profile is of the CPU step; the GPU is not used")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = SMOKE if args.smoke else bench_config(args)
    name = "smoke shape" if args.smoke else args.preset
    batch, seq = (2, 16) if args.smoke else (args.batch_size, args.seq_len)
    steps, warmup, rounds, size = (1, 1, 1, 64) if args.smoke else (args.steps, args.warmup, args.rounds, 2048)
    if args.levers:
        print(levers_table(levers(cfg, batch, seq, steps, warmup, rounds, size, compile=not args.no_compile), name))
        return
    result = profile_step(cfg, batch, seq, 2 if args.smoke else args.profiled_steps, warmup, rounds, steps, size,
                          lightning=not args.no_lightning)
    print(f"{name} MLM, batch {batch} x {seq}, {100 * result['mask_fraction']:.0f} % masked, fp32, AdamW; "
          f"{result['device']}, {result['threads']} threads, torch {result['torch']}; self CPU time under "
          f"torch.profiler over {result['profiled_steps']} steps; unprofiled: median of {rounds} interleaved windows "
          f"of {steps} steps after {warmup}; fp32 matmul ceiling ({size}^3 torch.mm) measured in this run")
    print(table(result))
