"""bigmodel vs the references (``--compare``): side by side in one process, the same device, batch and precision
(bf16-mixed on a GPU, fp32 on CPU) and AdamW (fused where torch has it, as the tasks build it:
``tasks.optim.adamw``): bigmodel's MLM step in plain PyTorch, the same on blocks of ``--documents`` documents per
128 tokens kept apart (document masks), the same through Lightning's loop (``MLMTask`` + ``Trainer``), Hugging
Face's ``BertForMaskedLM`` of the same shape (the reference; ``ModernBertForMaskedLM`` for a preset with rotary
positions, e.g. ``modernbert-mini``, with bigmodel's weights), and bigmodel's ViT vs timm's when timm is
installed; eager and, with ``--compile``, compiled. Rounds of short windows take turns
(``interleave``) so machine noise hits all rows alike; the median window counts. Useful MFU is against a matmul
ceiling measured in the same run. One Markdown table; ``--json`` writes it with the device, versions, command and
date.

    python -m bigmodel.commands.bench --compare --json bench.json                              # CPU: bert-mini, 32 x 128
    python -m bigmodel.commands.bench --compare --preset bert-base --batch-size 256 --seq-len 128 --compile \\
        --vision-preset vit-base --vision-batch-size 256 --json bench.json          # GPU
    python -m bigmodel.commands.bench --compare --preset modernbert-mini --vision-preset none  # CPU: vs ModernBERT
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import statistics

import torch
from lightning.fabric.utilities.throughput import get_available_flops
from torch import nn

from bigmodel.commands.bench.loop import lightning_contender, quiet_lightning
from bigmodel.commands.bench.measure import (CPU_DEFAULTS, CPU_DTYPE, Contender, bench_config, cpu_name, default_device,
                                             document_ids, interleave, library_versions, matmul_peak, mlm_batch,
                                             mlm_step, plain_contender, train_flops_per_token, train_step, vision_step)
from bigmodel.nn import EncoderConfig, VisionTransformer
from bigmodel.nn.convert import to_hf
from bigmodel.tasks.optim import adamw, parameter_groups

DEFAULTS = {**CPU_DEFAULTS, "steps": 2, "warmup": 2, "rounds": 5}
DOCUMENTS_ROW = "bigmodel MLM, document masks"


HF_ATTENTION = "sdpa"  # transformers 5 runs BERT and ModernBERT on SDPA without flash-attn (sliding windows as masks)
_HF_CLASS = {"bert": "Bert", "roberta": "Roberta", "modernbert": "ModernBert"}


def hf_reference_name(cfg: EncoderConfig) -> str:
    return f"HF {_HF_CLASS[cfg.hf_family]}ForMaskedLM ({HF_ATTENTION})"


def hf_mlm_step(cfg: EncoderConfig, data: dict, dtype: str, device: str, compile: bool, ours: nn.Module):
    """``transformers.BertForMaskedLM`` (``ModernBertForMaskedLM`` for rotary positions) of the same shape, its
    config from ``EncoderConfig.to_hf`` and its weights ``ours``'s through ``nn.convert.to_hf`` (the export path),
    so both compute the same function; trained on the same batch as Hugging Face computes MLM: vocabulary logits at
    every position, labels -100 outside the masked ones."""
    import transformers

    family = cfg.hf_family
    name = _HF_CLASS[family]
    config = getattr(transformers, f"{name}Config")(**cfg.to_hf(family), attn_implementation=HF_ATTENTION)
    model = getattr(transformers, f"{name}ForMaskedLM")(config)
    missing, unexpected = model.load_state_dict(to_hf(ours.state_dict(), family), strict=False)
    if unexpected or any("decoder" not in k for k in missing):  # the decoder is tied to the word embeddings
        raise ValueError(f"{name}ForMaskedLM does not take bigmodel's weights: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    model.tie_weights()
    model.to(device).train()
    opt = adamw(parameter_groups(model, 0.01), 1e-4)
    ids = data["input_ids"]
    labels = torch.full_like(ids, -100)
    labels.view(-1)[data["masked_positions"]] = data["masked_labels"]
    step_model = torch.compile(model) if compile else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")
    return train_step(lambda: step_model(input_ids=ids, labels=labels).loss, opt, autocast), model, opt


def timm_vit(config: EncoderConfig, num_classes: int) -> nn.Module:
    """timm's ``VisionTransformer`` of a ViT preset's shape ([CLS] pooling, pre-LN, LayerNorm eps 1e-6, no
    dropout: as the ``vit-*`` presets)."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    return TimmViT(img_size=config.image_size, patch_size=config.patch_size, in_chans=config.num_channels,
                   num_classes=num_classes, embed_dim=config.hidden_size, depth=config.num_layers,
                   num_heads=config.num_heads, mlp_ratio=config.intermediate_size / config.hidden_size,
                   qkv_bias=config.qkv_bias, global_pool="token")


def compare(cfg: EncoderConfig, batch: int = 32, seq: int = 128, steps: int = 2, warmup: int = 2, rounds: int = 5,
            compile: bool = False, vision: EncoderConfig | None = None, vision_batch: int = 64,
            device: str | None = None, json_path: str | None = None, command: str | None = None,
            matmul_size: int | None = None, documents: int = 4, lightning: bool = True) -> dict:
    """MLM training steps of bigmodel (plain PyTorch; with ``documents`` the same on blocks of that many documents
    per 128 tokens kept apart; ``MLMTask`` through Lightning's loop unless ``lightning`` is False) and Hugging
    Face's masked LM of the same shape (``hf_mlm_step``: BERT, or ModernBERT for rotary positions), and ViT
    classification steps of bigmodel and timm (when installed), on the same device, batch and precision (bf16-mixed
    on a GPU, fp32 on CPU) with AdamW, eager and with ``compile`` compiled too, timed in interleaved rounds
    (``interleave``). Returns (and with ``json_path`` writes) the rows with the device, versions, command and date.
    Useful MFU is against ``matmul_peak`` measured here first (bf16 on a GPU, fp32 on CPU; ``matmul_size`` default
    8192 and 2048)."""
    if warmup < 1 or steps < 1 or rounds < 1:
        raise ValueError("compare needs warmup, steps and rounds >= 1 (the first window sets up and compiles)")
    device = device or default_device()
    dtype = "bf16" if device == "cuda" else CPU_DTYPE
    peak_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    peak_flops = matmul_peak(device, peak_dtype, matmul_size or (8192 if device == "cuda" else 2048))
    data = mlm_batch(cfg.vocab_size, batch, seq, device)
    fraction = len(data["masked_positions"]) / (batch * seq)
    timm_found = importlib.util.find_spec("timm") is not None
    notes = []
    if documents:
        notes.append(f"{DOCUMENTS_ROW}: {documents} documents per 128-token block ({128 / documents:g} tokens each), "
                     "document_ids as MLMCollator(document_mask=True) makes them (attention within a document, "
                     "positions restarting per document); FLOPs counted as the row without (the same useful work)")
    if any(not cfg.is_global(i) for i in range(cfg.num_layers)) and cfg.sliding_window // 2 < seq - 1:
        notes.append(f"the local layers' attention ({cfg.sliding_window}-token window) is counted in the FLOPs as "
                     f"full attention over {seq} tokens: every row computes it so (a masked SDPA)")
    if vision is not None and not timm_found:
        notes.append("timm is not installed: the ViT rows have no timm reference (bigmodel's ViT only)")
    total_steps = warmup + rounds * steps
    contenders: list[Contender] = []
    with quiet_lightning() as root:
        try:
            for compiled in [False, True] if compile else [False]:
                tag = " + torch.compile" if compiled else ""
                step, model, opt = mlm_step(cfg, batch, seq, dtype, device, compile=compiled, data=data)
                useful = train_flops_per_token(model, seq, fraction)
                contenders.append(plain_contender(f"bigmodel MLM, plain PyTorch{tag}", "text", step, model, opt,
                                                  device, batch * seq, useful, useful))
                if documents:
                    packed = {**data, "document_ids": document_ids(batch, seq, documents, device)}
                    doc_step, doc_model, doc_opt = mlm_step(cfg, batch, seq, dtype, device, compile=compiled,
                                                            data=packed)
                    contenders.append(plain_contender(f"{DOCUMENTS_ROW}{tag}", "text", doc_step, doc_model, doc_opt,
                                                      device, batch * seq, useful, useful))
                if lightning:
                    contenders.append(lightning_contender(
                        f"bigmodel MLMTask, Lightning Trainer{tag}", cfg, data, total_steps, device,
                        "bf16-mixed" if dtype == "bf16" else "32-true", f"{root}/{len(contenders)}", useful,
                        compile=compiled)[0])
                step, hf_model, hf_opt = hf_mlm_step(cfg, data, dtype, device, compiled, model)
                computed = train_flops_per_token(model, seq, 1.0)  # the same matmuls, the head at every token
                contenders.append(plain_contender(f"{hf_reference_name(cfg)}{tag}", "text", step, hf_model, hf_opt,
                                                  device, batch * seq, useful, computed, reference=not compiled))
                if vision is not None:
                    torch.manual_seed(0)
                    vit = VisionTransformer(10, vision).to(device)
                    if compiled:
                        vit.compile()
                    tokens = 1 + (vision.image_size // vision.patch_size) ** 2
                    per_image = tokens * train_flops_per_token(vit, tokens, 1 / tokens)
                    step, opt = vision_step(vit, vision.image_size, vision_batch, dtype, device, augment=False)
                    contenders.append(plain_contender(f"bigmodel ViT{tag}", "vision", step, vit, opt, device,
                                                      vision_batch, per_image, per_image))
                    if timm_found:
                        torch.manual_seed(0)
                        theirs = timm_vit(vision, 10).to(device)
                        if compiled:
                            theirs.compile()
                        step, opt = vision_step(theirs, vision.image_size, vision_batch, dtype, device, augment=False)
                        contenders.append(plain_contender(f"timm VisionTransformer{tag}", "vision", step, theirs, opt,
                                                          device, vision_batch, per_image, per_image,
                                                          reference=not compiled))
            timings = interleave(contenders, steps, warmup, rounds, device)
        finally:
            for c in contenders:
                c.close()
    per_s = {c.name: c.items_per_step / statistics.median(timings[c.name]["windows"]) for c in contenders}
    references = {c.family: per_s[c.name] for c in contenders if c.reference}
    rows = []
    for c in contenders:
        ref = references.get(c.family)
        rows.append({
            "contender": c.name, "family": c.family, "unit": "tokens" if c.family == "text" else "images",
            "per_s": per_s[c.name], "ms_per_step": 1000 * statistics.median(timings[c.name]["windows"]),
            "ratio": per_s[c.name] / ref if ref else None,
            "useful_flops": c.useful_flops, "computed_flops": c.computed_flops,
            "mfu": per_s[c.name] * c.useful_flops / peak_flops,
            "peak_mem_gib": (c.state_bytes() + timings[c.name]["rise"]) / 2**30 if device == "cuda" else None,
            "windows_s_per_step": timings[c.name]["windows"],
        })
    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command, "device": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "precision": "bf16-mixed" if dtype == "bf16" else "fp32", "versions": library_versions(),
        "text": {**{k: getattr(cfg, k) for k in ("num_layers", "hidden_size", "num_heads", "intermediate_size",
                                                 "vocab_size", "feed_forward", "sliding_window",
                                                 "global_attention_every", "position_embedding")},
                 "batch": batch, "seq_len": seq, "mask_fraction": fraction, "documents_per_128": documents,
                 "reference": hf_reference_name(cfg)},
        "vision": None if vision is None else {
            **{k: getattr(vision, k) for k in ("num_layers", "hidden_size", "num_heads", "intermediate_size",
                                               "image_size", "patch_size")}, "batch": vision_batch},
        "timing": {"warmup_steps": warmup, "steps_per_window": steps, "rounds": rounds,
                   "matmul_peak_flops": peak_flops, "matmul_dtype": str(peak_dtype).removeprefix("torch."),
                   "datasheet_bf16_flops": get_available_flops(torch.device(device), torch.bfloat16)
                   if device == "cuda" else None},
        "notes": notes, "rows": rows,
    }
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return result


def comparison_table(result: dict) -> str:
    """The rows of ``compare`` as one Markdown table."""

    def number(x: float | None, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    peak = result["timing"]["matmul_peak_flops"]
    lines = [f"| contender | throughput | × reference | useful FLOPs per token/image | computed FLOPs per token/image "
             f"| useful MFU (of {peak / 1e12:,.3g} TFLOP/s {result['timing']['matmul_dtype']} matmul) | peak GiB | "
             "ms/step |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        unit = "tok/s" if r["unit"] == "tokens" else "img/s"
        lines.append(
            f"| {r['contender']} | {r['per_s']:,.0f} {unit} | {number(r['ratio'], '.2f')} | "
            f"{r['useful_flops'] / 1e6:,.1f} M | {r['computed_flops'] / 1e6:,.1f} M | "
            f"{'–' if r['mfu'] is None else format(100 * r['mfu'], '.1f') + ' %'} | "
            f"{number(r['peak_mem_gib'], '.2f')} | {r['ms_per_step']:,.0f} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compare", action="store_true",
                   help="bigmodel (plain PyTorch, with document masks, through Lightning's loop) vs HF "
                        "BertForMaskedLM (ModernBertForMaskedLM for a rope preset such as modernbert-mini) and timm's "
                        "ViT, interleaved in one process; defaults: bert-mini, batch 32 x 128, 2 warm-up steps, 5 "
                        "rounds of 2-step windows")
    p.add_argument("--documents", type=int, default=4, metavar="K",
                   help="with --compare: the row 'bigmodel MLM, document masks' keeps K documents per 128 tokens "
                        "apart (default 4; 0: no such row)")
    p.add_argument("--vision-preset", default="vit-cifar-tiny",
                   help="with --compare: the ViT of the vision rows ('none': no vision rows)")
    p.add_argument("--vision-batch-size", type=int, default=64, help="with --compare: images per step")
    p.add_argument("--json", metavar="PATH", help="with --compare: write the rows, device, versions, command, date")


def from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.dtype or args.finetune or args.int8:
        p.error("--compare sets the precision itself (bf16-mixed on a GPU, fp32 on CPU) and takes no --dtype, "
                "--finetune or --int8")
    device = default_device()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    preset, batch, steps, warmup = args.preset, args.batch_size, args.steps, args.warmup
    cfg = bench_config(args)
    vision = None if args.vision_preset == "none" else EncoderConfig.from_name(args.vision_preset)
    result = compare(cfg, batch, args.seq_len, steps, warmup, args.rounds, args.compile, vision,
                     args.vision_batch_size, device, args.json, " ".join([args.prog, *args.argv]),
                     documents=args.documents)
    v = result["versions"]
    print(f"{preset} MLM: batch {batch} x {args.seq_len} tokens, {100 * result['text']['mask_fraction']:.0f} % "
          f"masked" + (f", {args.documents} documents per 128 tokens in the document-mask row" if args.documents
                       else "") + (f"; {args.vision_preset}: batch {args.vision_batch_size} images" if vision else "") +
          f"; {result['precision']}, AdamW; {result['device']}, {result['threads']} threads; torch {v['torch']}, "
          f"transformers {v['transformers']}, lightning {v['lightning']}, timm {v['timm'] or '(not installed)'}; "
          f"median of {args.rounds} interleaved windows of {steps} steps after {warmup} warm-up steps; matmul ceiling "
          f"{result['timing']['matmul_peak_flops'] / 1e12:,.3g} TFLOP/s ({result['timing']['matmul_dtype']}, "
          "measured in this run)")
    for note in result["notes"]:
        print(f"note: {note}")
    print(comparison_table(result))
