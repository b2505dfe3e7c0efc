"""Candidate levers on the CPU MLM step (``--profile --levers``): the plain fp32 step against bf16 autocast,
``torch.compile`` of each encoder block, torch's own dropout masks (the step before bigmodel's cheaper CPU mask) and
one thread, interleaved in one process, with the CPU's bf16 flags and
both matmul ceilings measured in the run.

    python -m bigmodel.commands.bench --profile --levers --rounds 7      # CPU default: bert-mini, batch 32 x 128
    python -m bigmodel.commands.bench --profile --levers --no-compile    # without the ~2-minute compilation
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from bigmodel.commands.bench.measure import (Contender, cpu_flags, interleave, matmul_peak, mlm_batch, mlm_step,
                                             plain_contender)
from bigmodel.nn import EncoderConfig, dropout

BASELINE = "fp32 eager (baseline)"
COMPILED = "torch.compile of each block"
TORCH_MASKS = "torch's dropout masks (F.dropout; SDPA's dropout fallback)"


def _threads(window: Callable[[int], float], threads: int) -> Callable[[int], float]:
    """``window`` run with ``threads`` torch threads, the setting restored after."""
    def run(n: int) -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return window(n)
        finally:
            torch.set_num_threads(before)
    return run


def _torch_masks(window: Callable[[int], float]) -> Callable[[int], float]:
    """``window`` with dropout drawn as torch draws it (``nn/dropout.py``'s switch), restored after: the path
    before bigmodel's cheaper CPU mask, so its row reads as the lever's before/after."""
    def run(n: int) -> float:
        dropout.CHEAP_CPU_MASK = False
        try:
            return window(n)
        finally:
            dropout.CHEAP_CPU_MASK = True
    return run


def levers(cfg: EncoderConfig, batch: int = 32, seq: int = 128, window: int = 2, warmup: int = 1, rounds: int = 7,
           matmul_size: int = 2048, compile: bool = True) -> dict:
    """The plain fp32 step against candidate levers, interleaved in one process (``interleave``): bf16 autocast,
    ``torch.compile`` of each encoder block (inductor; its compile seconds: the warm-up window less the baseline's),
    torch's dropout masks instead of bigmodel's cheaper CPU ones (``nn/dropout.py``), and one thread instead of
    ``torch.get_num_threads()``. Per lever the median over rounds of (baseline window /
    lever window): above 1 is faster. Also the fp32 and bf16 matmul ceilings and the CPU's bf16 flags."""
    data = mlm_batch(cfg.vocab_size, batch, seq, "cpu")
    threads = torch.get_num_threads()
    built = {BASELINE: mlm_step(cfg, batch, seq, "fp32", "cpu", data=data),
             "bf16 autocast": mlm_step(cfg, batch, seq, "bf16", "cpu", data=data)}
    if compile:
        built[COMPILED] = mlm_step(cfg, batch, seq, "fp32", "cpu", data=data)
        for layer in built[COMPILED][1].encoder.layers:
            layer.compile()
    if cfg.hidden_dropout or cfg.attention_dropout:
        built[TORCH_MASKS] = mlm_step(cfg, batch, seq, "fp32", "cpu", data=data)
    if threads > 1:
        built[f"1 thread (not {threads})"] = mlm_step(cfg, batch, seq, "fp32", "cpu", data=data)
    contenders: list[Contender] = []
    first: dict[str, float] = {}  # seconds of each contender's first window: the warm-up (and compilation)
    for name, (step, model, opt) in built.items():
        c = plain_contender(name, "text", step, model, opt, "cpu", batch * seq, 0.0, 0.0)
        window_fn = (_threads(c.window, 1) if name.startswith("1 thread") else _torch_masks(c.window)
                     if name == TORCH_MASKS else c.window)

        def timed(n: int, name: str = name, window_fn: Callable[[int], float] = window_fn) -> float:
            start = time.perf_counter()
            out = window_fn(n)
            first.setdefault(name, time.perf_counter() - start)
            return out

        c.window = timed
        contenders.append(c)
    timings = interleave(contenders, window, warmup, rounds, "cpu")
    base = timings[BASELINE]["windows"]
    rows = []
    for c in contenders:
        ratios = [b / w for b, w in zip(base, timings[c.name]["windows"])]
        rows.append({"lever": c.name, "median_speedup": statistics.median(ratios), "speedups": ratios,
                     "ms_per_step": 1000 * statistics.median(timings[c.name]["windows"]), "warmup_s": first[c.name]})
        if c.name == COMPILED:
            rows[-1]["compile_s"] = first[c.name] - first[BASELINE]
    return {"threads": threads, "flags": cpu_flags(), "rounds": rounds, "window": window, "batch": batch,
            "seq_len": seq, "matmul_fp32_flops": matmul_peak("cpu", torch.float32, matmul_size),
            "matmul_bf16_flops": matmul_peak("cpu", torch.bfloat16, matmul_size), "rows": rows}


def levers_table(out: dict, name: str) -> str:
    """A line saying what ran and the ceilings, then one Markdown row per lever."""
    lines = [f"{name} MLM, batch {out['batch']} x {out['seq_len']}, {out['threads']} threads; CPU flags "
             f"{out['flags']}; matmul ceiling fp32 {out['matmul_fp32_flops'] / 1e9:,.1f}, bf16 "
             f"{out['matmul_bf16_flops'] / 1e9:,.1f} GFLOP/s; median of {out['rounds']} interleaved rounds of "
             f"{out['window']}-step windows",
             "| lever | ms/step (median) | speedup vs fp32 eager (median of rounds) | per round | warm-up s |",
             "|---|---:|---:|---|---:|"]
    for r in out["rows"]:
        compiled = f" (compile ~{r['compile_s']:.0f} s)" if "compile_s" in r else ""
        lines.append(f"| {r['lever']} | {r['ms_per_step']:,.0f} | {r['median_speedup']:.3f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['speedups'])} | {r['warmup_s']:.1f}{compiled} |")
    return "\n".join(lines)
