"""The GPU suite's sizes and the parts that time steps (``suite``; the parts that fit to the end are in
``suite_fits``): the matmul ceilings; ``--compare`` at bert-base (seq 128, batch 256, bf16) with the CIFAR recipe's
ViT vs timm, eager and compiled, useful MFU against the bf16 matmul measured in the run, then at modernbert-base vs
transformers' ModernBertForMaskedLM (with and without document masks); the MLM step with static masked counts
(``masked_positions_multiple_of``) eager, compiled and with CUDA graphs; a short ``16-mixed`` fit to its end; FSDP on
one GPU (the fragment's strategy, sharded save, resume, the clipping path) at the 1.2B experiment's width with fewer
layers; the CIFAR-10 ViT recipe's seconds per epoch on synthetic uint8 images with its on-device augmentation; the
Lightning loop with and without the non-finite check. ``cpu-smoke``: the same code paths at tiny shapes, seconds a
part."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from bigmodel.commands.bench.compare import compare
from bigmodel.commands.bench.loop import lightning_contender
from bigmodel.commands.bench.measure import (Contender, interleave, matmul_peak, mlm_batch, mlm_step,
                                             plain_contender)
from bigmodel.commands.bench.throughput import run_vision
from bigmodel.nn import EncoderConfig

ROOT = Path(__file__).resolve().parents[3]  # the project: bigmodel/commands/bench/ -> .
CIFAR_RECIPE = ROOT / "experiments/vision/cifar10_vit.yaml"
SKIPPED = "skipped: needs CUDA"


@dataclass(frozen=True)
class Sizes:
    """The shapes and time boxes of one suite."""

    text: tuple[str, dict]  # encoder preset and overrides of the MLM rows
    modern_text: tuple[str, dict]  # the same for the ModernBERT-shaped rows (vs transformers' ModernBertForMaskedLM)
    batch: int
    seq: int
    vision: tuple[str, dict]  # the ViT of the compare rows and of the CIFAR part
    vision_batch: int
    small_batch: int  # CUDA graphs and the non-finite check: a step short enough for launches to matter
    steps: int  # per timed window
    warmup: int
    rounds: int
    matmul: int
    masked_multiple: int
    fit_text: tuple[str, dict]
    fit_steps: int
    fsdp_layers: int
    fsdp_batch: int
    fsdp_seq: int
    fsdp_steps: int
    budgets: dict[str, float] = field(default_factory=dict)  # seconds per part (default 60)


_TINY_TEXT = ("bert-tiny", {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                            "vocab_size": 100, "max_position_embeddings": 64})


# every ModernBERT switch at a tiny shape: layers 0 and 3 global, an 8-token window (local layers matter at seq 16)
_TINY_MODERN = ("modernbert-mini", {**_TINY_TEXT[1], "num_layers": 4, "intermediate_size": 48, "sliding_window": 8})


_TINY_VIT = ("vit-cifar-tiny", {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                                "image_size": 8, "patch_size": 4})


SUITES: dict[str, Sizes] = {
    "gpu": Sizes(text=("bert-base", {}), modern_text=("modernbert-base", {}), batch=256, seq=128, vision=("vit-cifar-small", {}), vision_batch=512,
                 small_batch=64, steps=5, warmup=3, rounds=3, matmul=8192, masked_multiple=64,
                 fit_text=("bert-small", {}), fit_steps=60, fsdp_layers=2, fsdp_batch=8, fsdp_seq=512,
                 fsdp_steps=6,
                 budgets={"matmul": 15, "compare": 60, "compare-compiled": 140, "cuda-graphs": 70,
                          "fit-16-mixed": 35, "fsdp": 60, "cifar-epoch": 70, "nonfinite": 30,  # 480 s: 8 minutes
                          "compare-modernbert": 120}),  # last: 10 minutes in all, the device's limit per call
    "cpu-smoke": Sizes(text=_TINY_TEXT, modern_text=_TINY_MODERN, batch=2, seq=16, vision=_TINY_VIT, vision_batch=2, small_batch=2, steps=1,
                       warmup=1, rounds=1, matmul=64, masked_multiple=4, fit_text=_TINY_TEXT, fit_steps=2,
                       fsdp_layers=1, fsdp_batch=2, fsdp_seq=16, fsdp_steps=2),
}


def config_of(spec: tuple[str, dict], **extra: Any) -> EncoderConfig:
    return EncoderConfig.from_name(spec[0], **{**spec[1], **extra})


def _dtype(device: str) -> str:
    return "bf16" if device == "cuda" else "fp32"


def part_matmul(s: Sizes, device: str, root: str) -> dict:
    """The matrix ceilings that MFU divides by: one large square ``torch.mm`` per dtype (fp32 without TF32)."""
    dtypes = [torch.bfloat16, torch.float32] if device == "cuda" else [torch.float32]
    return {"rows": [{"dtype": str(d).removeprefix("torch."), "n": s.matmul,
                      "TFLOP/s": matmul_peak(device, d, s.matmul) / 1e12} for d in dtypes]}


def _compare(s: Sizes, device: str, compiled: bool, modern: bool = False) -> dict:
    """``compare`` at the suite's text shape with its ViT, or (``modern``) at its ModernBERT shape without the
    vision and Lightning rows (measured at the BERT shape; kept out to fit the time box)."""
    text = config_of(s.modern_text if modern else s.text, max_position_embeddings=max(512, s.seq))
    result = compare(text, s.batch, s.seq, s.steps, s.warmup, s.rounds, compiled,
                     None if modern else config_of(s.vision), s.vision_batch, device, matmul_size=s.matmul,
                     lightning=not modern)
    rows = [{"contender": r["contender"], "throughput": r["per_s"], "unit": f"{r['unit']}/s",
             "x reference": r["ratio"], "useful MFU %": 100 * r["mfu"], "ms/step": r["ms_per_step"],
             "peak GiB": r["peak_mem_gib"]} for r in result["rows"]]
    t = result["timing"]
    return {"rows": rows, "notes": result["notes"] + [
        f"MFU against a {t['matmul_dtype']} matmul of {t['matmul_peak_flops'] / 1e12:,.4g} TFLOP/s measured in "
        f"this part; {result['precision']}; median of {t['rounds']} interleaved windows of {t['steps_per_window']} "
        f"steps; {(s.modern_text if modern else s.text)[0]} batch {s.batch} x {s.seq}"
        + ("" if modern else f", {s.vision[0]} batch {s.vision_batch}")], "compare": result}


def part_compare(s: Sizes, device: str, root: str) -> dict:
    """(a) bigmodel plain and through Lightning vs HF BertForMaskedLM (sdpa), bigmodel's ViT vs timm's: eager."""
    return _compare(s, device, compiled=False)


def part_compare_compiled(s: Sizes, device: str, root: str) -> dict:
    """(a) the same, eager and ``torch.compile``d (compilation in the warm-up). On CPU compiling takes minutes: the
    smoke run checks the eager path only."""
    if device != "cuda":
        return {"rows": [{"contender": "every row + torch.compile", "status": SKIPPED}]}
    return _compare(s, device, compiled=True)


def part_compare_modernbert(s: Sizes, device: str, root: str) -> dict:
    """(a) at the ModernBERT shape: bigmodel plain, with document masks, vs HF ModernBertForMaskedLM (sdpa) with
    bigmodel's weights; eager and (on a GPU) ``torch.compile``d. In its own part, so that running out of time here
    leaves the BERT-shape rows whole."""
    out = _compare(s, device, compiled=device == "cuda", modern=True)
    if device != "cuda":
        out["rows"].append({"contender": "every row + torch.compile", "status": SKIPPED})
    return out


def _tokenizer(vocab_size: int, root: str):
    """A WordPiece tokenizer of ``vocab_size`` made-up tokens (the collator reads its special ids and size)."""
    from transformers import BertTokenizerFast

    path = Path(root) / "vocab.txt"
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path.write_text("\n".join(special + [f"w{i}" for i in range(vocab_size - len(special))]) + "\n")
    return BertTokenizerFast(str(path))


def part_cuda_graphs(s: Sizes, device: str, root: str) -> dict:
    """(b) The plain MLM step on batches from ``MLMCollator(masked_positions_multiple_of=...)`` (binomial masked
    counts rounded up, so few shapes), each batch copied into fixed input buffers: eager, compiled, and compiled
    with CUDA graphs (``mode="reduce-overhead"``)."""
    from bigmodel.data.collators import MLMCollator

    cfg = config_of(s.text, max_position_embeddings=max(512, s.seq))
    collate = MLMCollator(_tokenizer(cfg.vocab_size, root), seed=0, masked_positions_multiple_of=s.masked_multiple)
    torch.manual_seed(0)
    keys = ("input_ids", "masked_positions", "masked_labels")
    batches = [{k: v.to(device) for k, v in collate([{"input_ids": torch.randint(5, cfg.vocab_size, (s.seq,))}
                                                      for _ in range(s.small_batch)]).items() if k in keys}
               for _ in range(8)]
    counts = sorted({len(b["masked_positions"]) for b in batches})
    shape = max(counts)  # one static shape: the batches with fewer rows are padded again (label -100)
    for b in batches:
        extra = shape - len(b["masked_positions"])
        b["masked_positions"] = torch.cat([b["masked_positions"], b["masked_positions"].new_zeros(extra)])
        b["masked_labels"] = torch.cat([b["masked_labels"], b["masked_labels"].new_full((extra,), -100)])
    modes = [("eager", False), ("torch.compile", True), ("torch.compile, CUDA graphs (reduce-overhead)",
                                                         "reduce-overhead")]
    rows, contenders = [], []
    for name, mode in modes:
        if mode and device != "cuda":
            rows.append({"step": name, "status": SKIPPED})
            continue
        static = {k: v.clone() for k, v in batches[0].items()}
        step, model, opt = mlm_step(cfg, s.small_batch, s.seq, _dtype(device), device, compile=mode,
                                          data=static)

        def next_batch(step=step, static=static, seen=[0]) -> torch.Tensor:  # noqa: B006 (a counter per row)
            seen[0] += 1
            for k, v in batches[seen[0] % len(batches)].items():
                static[k].copy_(v)
            return step()

        contenders.append(plain_contender(name, "text", next_batch, model, opt, device, s.small_batch * s.seq, 0, 0))
    timings = interleave(contenders, s.steps, s.warmup, s.rounds, device)
    eager = statistics.median(timings["eager"]["windows"])
    for c in contenders:
        sec = statistics.median(timings[c.name]["windows"])
        rows.insert(modes.index(next(m for m in modes if m[0] == c.name)),
                    {"step": c.name, "ms/step": 1000 * sec, "tokens/s": c.items_per_step / sec, "x eager": eager / sec})
    return {"rows": rows, "notes": [f"{s.text[0]}, batch {s.small_batch} x {s.seq}, {_dtype(device)}; masked counts "
                                    f"of 8 batches with masked_positions_multiple_of {s.masked_multiple}: {counts}"]}


def cifar_recipe() -> dict:
    """The CIFAR-10 ViT recipe's preset, batch, training images, compile flag and augmentation, from its YAML."""
    from bigmodel.data.augment import AugmentConfig

    spec = yaml.safe_load(CIFAR_RECIPE.read_text())
    data, model = spec["data"]["init_args"], spec["model"]["init_args"]
    fields = AugmentConfig.__dataclass_fields__
    return {"preset": model["backbone"]["init_args"]["config"], "batch": data["batch_size"],
            "train_images": round(50_000 * (1 - data.get("validation_fraction", 0))),
            "compile": model.get("compile", False),
            "augment": AugmentConfig(**{k: v for k, v in data.items() if k in fields})}


def part_cifar_epoch(s: Sizes, device: str, root: str) -> dict:
    """(e) The CIFAR-10 ViT recipe's training step (preset, batch, compile, augmentation read from its YAML) on
    synthetic CIFAR-shaped uint8 images on the device, and the seconds per epoch that makes (full batches only)."""
    recipe = cifar_recipe()
    if device == "cuda":
        cfg, batch, compiled = EncoderConfig.from_name(recipe["preset"]), recipe["batch"], recipe["compile"]
    else:
        cfg, batch, compiled = config_of(s.vision), s.vision_batch, False
    rows = []
    for label, augment in (("model only", False), ("+ the recipe's on-device augmentation", True)):
        r = run_vision(cfg, batch, _dtype(device), 2 * s.steps, s.warmup, device, augment, compiled,
                             recipe=recipe["augment"])
        rows.append({"step": label, "ms/step": r["ms_per_step"], "images/s": r["images_per_s"],
                     "s per epoch": recipe["train_images"] // batch * r["ms_per_step"] / 1000,
                     "peak GiB": None if device != "cuda" else r["peak_mem_gb"]})
    return {"rows": rows, "notes": [f"{cfg.num_layers} x {cfg.hidden_size} ViT, batch {batch}, {_dtype(device)}, "
                                    f"compile {compiled}; epoch = {recipe['train_images']:,} // {batch} full batches"]}


def part_nonfinite(s: Sizes, device: str, root: str) -> dict:
    """(f) ``MLMTask`` through the Lightning loop (``LightningLoop``) with the sync-free non-finite check
    (``nonfinite: stop``) and without it (``off``), interleaved."""
    cfg = config_of(s.text, max_position_embeddings=max(512, s.seq))
    data = mlm_batch(cfg.vocab_size, s.small_batch, s.seq, device)
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    contenders: list[Contender] = []
    try:
        for setting in ("stop", "off"):
            contenders.append(lightning_contender(f"nonfinite: {setting}", cfg, data, s.warmup + s.rounds * s.steps,
                                                  device, precision, f"{root}/{setting}", 0.0, nonfinite=setting)[0])
        timings = interleave(contenders, s.steps, s.warmup, s.rounds, device)
    finally:
        for c in contenders:
            c.close()
    off = statistics.median(timings["nonfinite: off"]["windows"])
    rows = [{"Lightning loop": c.name, "ms/step": 1000 * statistics.median(timings[c.name]["windows"]),
             "x off": statistics.median(timings[c.name]["windows"]) / off} for c in contenders]
    return {"rows": rows, "notes": [f"{s.text[0]}, batch {s.small_batch} x {s.seq}, {precision}, fused AdamW"]}
