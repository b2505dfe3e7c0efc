"""What adversarial training adds to a fine-tuning step (``--adversarial``): ms per step of a 2-class classifier,
clean vs FGM vs PGD-3 (the task's own ``Adversary`` on the word embeddings), fp32, in interleaved rounds.

    python -m bigmodel.commands.bench --adversarial --preset bert-mini --batch-size 32 --seq-len 64 --steps 2
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from bigmodel.commands.bench.measure import (CPU_DEFAULTS, bench_config, default_device, interleave, plain_contender,
                                             train_step)
from bigmodel.nn import EncoderConfig, SequenceClassifier
from bigmodel.tasks.optim import adamw, parameter_groups

DEFAULTS = {**CPU_DEFAULTS, "steps": 2, "warmup": 1, "rounds": 5}


def adversarial_rows(cfg: EncoderConfig, batch: int, seq: int, steps: int, warmup: int, rounds: int, device: str,
                     pgd_steps: int = 3) -> dict[str, float]:
    """ms per fine-tuning step of a 2-class classifier: clean, + FGM, + PGD-``pgd_steps`` (the task's own
    ``Adversary`` on the word embeddings), interleaved; what adversarial training adds to each step."""
    from bigmodel.nn.adversarial import AdversarialConfig, Adversary, embedding_layer

    ids = torch.randint(5, cfg.vocab_size, (batch, seq), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    contenders = []
    for name, config in (("clean", None), ("FGM", AdversarialConfig("fgm")),
                         (f"PGD-{pgd_steps}", AdversarialConfig("pgd", steps=pgd_steps))):
        torch.manual_seed(0)
        model = SequenceClassifier(cfg, 2).to(device)
        opt = adamw(parameter_groups(model, 0.01), 1e-5)

        def loss_fn(model=model, adversary=Adversary(config) if config else None) -> torch.Tensor:
            def loss() -> torch.Tensor:
                return nn.functional.cross_entropy(model(ids)[0].float(), labels)

            if adversary is None:
                return loss()
            with adversary.attach(embedding_layer(model)):
                clean = loss()
                return clean + adversary.loss(clean, loss)

        step = train_step(loss_fn, opt, torch.autocast(device, enabled=False))
        contenders.append(plain_contender(name, "text", step, model, opt, device, batch * seq, 0.0, 0.0))
    timings = interleave(contenders, steps, warmup, rounds, device)
    return {name: 1000 * statistics.median(t["windows"]) for name, t in timings.items()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adversarial", action="store_true",
                   help="fine-tuning step time: clean vs FGM vs PGD-3 (a 2-class head, fp32, interleaved rounds; "
                        "default bert-mini, batch 32, 2 steps a window)")


def from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    cfg = bench_config(args)
    device = default_device()
    rows = adversarial_rows(cfg, args.batch_size, args.seq_len, args.steps, args.warmup, args.rounds, device)
    print(f"{args.preset} + 2-class head, batch {args.batch_size} x {args.seq_len}, fp32, AdamW, {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.rounds} interleaved windows of "
          f"{args.steps} steps after {args.warmup}")
    print("| fine-tuning step | ms/step | x clean |\n|---|---:|---:|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.0f} | {ms / rows['clean']:.2f} |")
