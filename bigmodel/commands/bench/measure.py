"""What every bench tool measures with: a training step (MLM on synthetic token ids, classification on synthetic
uint8 images), the FLOPs a step needs, the machine's matmul ceiling, timing after warm-up, and contenders timed in
interleaved rounds so that machine noise hits them alike. Pure PyTorch: no Lightning in the loop."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bigmodel.data.augment import AugmentConfig, BatchAugment, batch_mixer
from bigmodel.nn import EncoderConfig, MaskedLanguageModel, num_parameters
from bigmodel.tasks.optim import adamw, parameter_groups


# The one CPU default shape and precision: what --compare, --profile and --adversarial start from everywhere, and
# the plain throughput bench and --finetune on CPU (``throughput.defaults``, ``finetune.defaults``). A bert-mini step at 32 x 128 takes about a second on
# two cores; bert-base's bf16 step at 64 x 128, the GPU table's, about 17 s. fp32: bf16 autocast on CPU is an
# option (experiments/trainer/cpu-bf16.yaml), not the default.
CPU_DEFAULTS = {"preset": "bert-mini", "batch_size": 32}
CPU_DTYPE = "fp32"


def default_device() -> str:
    """Where the bench runs: the GPU when torch sees one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def train_flops_per_token(model: nn.Module, seq_len: int, head_fraction: float) -> float:
    """6 x (weights used per token) + attention, forward and backward. The encoder's matmuls run at every token
    (embedding lookups are free); the head at ``head_fraction`` of them: an MLM head at the masked positions (its
    decoder is the tied word-embedding matrix), a ViT's classifier at the [CLS] token (1 / seq_len)."""
    cfg = model.config
    dense = num_parameters(model.encoder) - num_parameters(model.encoder.embeddings)
    head = num_parameters(model) - num_parameters(model.encoder)
    if isinstance(model, MaskedLanguageModel):
        head += cfg.vocab_size * cfg.hidden_size
    attention = 2 * 2 * cfg.num_layers * seq_len * cfg.hidden_size  # QK^T and AV, forward
    return 6 * (dense + head_fraction * head) + 3 * attention


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """FLOP/s of a large square ``torch.mm`` (2 n^3 FLOPs) on this device in this dtype, the best of ``repeats``
    timed products after one warm-up: the machine's practical matrix ceiling, measured in the run that it divides
    (MFU against a datasheet peak says as much about the datasheet as about the code)."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def time_steps(step, steps: int, warmup: int, device: str) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (compilation, allocator warm-up)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def train_step(loss_fn, opt: torch.optim.Optimizer, autocast: torch.autocast):
    """One optimizer step as every plain-PyTorch row runs it: forward (under ``autocast``), backward, AdamW step,
    gradients set to None."""

    def step() -> torch.Tensor:
        with autocast:
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def bench_config(args) -> EncoderConfig:
    """The preset the command line names, with its own vocabulary unless ``--vocab-size`` says otherwise (a
    ModernBERT preset keeps its 50,368 tokens, a BERT one 30,522), and positions for at least ``--seq-len``."""
    vocab = {} if args.vocab_size is None else {"vocab_size": args.vocab_size}
    return EncoderConfig.from_name(args.preset, **vocab, max_position_embeddings=max(512, args.seq_len))


def mlm_batch(vocab_size: int, batch: int, seq: int, device: str, mask_fraction: float = 0.15) -> dict:
    """A synthetic MLM batch as ``MLMCollator`` makes them, without padding: token ids, a fixed number of selected
    positions (flat indices into B*S, sorted) and their labels."""
    n_sel = int(mask_fraction * batch * seq)
    return {"input_ids": torch.randint(5, vocab_size, (batch, seq), device=device),
            "masked_positions": torch.randperm(batch * seq, device=device)[:n_sel].sort().values,
            "masked_labels": torch.randint(5, vocab_size, (n_sel,), device=device)}


def document_ids(batch: int, seq: int, per_128: int, device: str) -> torch.Tensor:
    """(B, S) documents of a packed MLM block as ``MLMCollator(document_mask=True)`` marks them (ids counting up from
    0 along each row): ``per_128`` documents of equal length in every 128 tokens (128 / ``per_128`` tokens each)."""
    if not 1 <= per_128 <= 128:
        raise ValueError(f"documents per 128 tokens must be 1 to 128, got {per_128}")
    return (torch.arange(seq, device=device) * per_128 // 128).repeat(batch, 1)


STRONG_AUGMENT = AugmentConfig(crop_padding=4, horizontal_flip=True, auto_augment="randaugment", random_erasing=0.25,
                               mixup_alpha=0.8, cutmix_alpha=1.0)


def vision_step(model: nn.Module, image_size: int, batch: int, dtype: str, device: str, augment: bool,
                num_classes: int = 10, recipe: AugmentConfig = STRONG_AUGMENT):
    """A classification training step on synthetic uint8 images for any ``(B, C, H, W) -> (B, classes)`` model
    (bigmodel's ViT, timm's), with or without the on-device augmentation ``recipe``."""
    opt = adamw(parameter_groups(model, 0.05), 1e-4)
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    augment_batch = BatchAugment(recipe if augment else None, None, (0.5,) * 3, (0.25,) * 3)
    mixer = batch_mixer(recipe, num_classes) if augment else None

    def loss() -> torch.Tensor:
        x, y = augment_batch(images), labels
        if mixer is not None:
            x, y = mixer(x, y)
        return torch.nn.functional.cross_entropy(model(x).float(), y)

    return train_step(loss, opt, torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")), opt


def mlm_step(cfg: EncoderConfig, batch: int, seq: int, dtype: str, device: str, explicit: bool = False,
             padded: bool = False, compile: bool | str = False, data: dict | None = None):
    """bigmodel's MLM training step in plain PyTorch: the vocabulary logits only at the masked positions. Returns
    the step, the model and its optimizer. ``data``: an ``mlm_batch`` to train on (default: a new one); with
    ``document_ids`` (``document_ids``) the model gets them as ``MLMTask`` passes a collator's: documents kept apart.
    ``compile``: a ``torch.compile`` mode (e.g. ``"reduce-overhead"``: CUDA graphs) or True (the default mode)."""
    torch.manual_seed(0)
    model = MaskedLanguageModel(cfg).to(device)
    opt = adamw(parameter_groups(model, 0.01), 1e-4)  # as in training (tasks/optim.py)
    data = mlm_batch(cfg.vocab_size, batch, seq, device) if data is None else data
    mask = None
    if padded:
        mask = torch.ones(batch, seq, dtype=torch.long, device=device)
        mask[: batch // 2, seq * 3 // 4 :] = 0
    if explicit:  # route every layer through the explicit softmax path
        for layer in model.encoder.layers:
            attn_forward = layer.attn.forward
            layer.attn.forward = lambda x, m=None, need_weights=False, f=attn_forward, **kw: f(x, m, True, **kw)
    step_model = torch.compile(model, mode=compile if isinstance(compile, str) else None) if compile else model

    def loss() -> torch.Tensor:
        logits = step_model(data["input_ids"], data["masked_positions"], mask, data.get("document_ids"))
        return torch.nn.functional.cross_entropy(logits.float(), data["masked_labels"])

    return train_step(loss, opt, torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")), model, opt


@dataclass
class Contender:
    """One row of the comparison. ``window(n)`` trains n steps and returns seconds per step."""

    name: str
    family: str  # "text" (throughput in tokens) or "vision" (in images)
    window: Callable[[int], float]
    items_per_step: int
    useful_flops: float  # per token or image: what the task needs (bigmodel's count, the same for every row)
    computed_flops: float  # per token or image: what this implementation computes
    state_bytes: Callable[[], int]  # held between steps: weights and optimizer state
    reference: bool = False  # the row the others' ratio is to (HF eager, timm eager)
    close: Callable[[], None] = lambda: None


def model_state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    tensors = list(model.parameters()) + [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


def plain_contender(name: str, family: str, step, model: nn.Module, opt: torch.optim.Optimizer, device: str, items: int,
           useful: float, computed: float, reference: bool = False) -> Contender:
    return Contender(name, family, lambda n: time_steps(step, n, 0, device), items, useful, computed,
                     lambda: model_state_bytes(model, opt), reference)


def interleave(contenders: list[Contender], steps: int, warmup: int, rounds: int, device: str) -> dict[str, dict]:
    """Round-robin: every contender warms up (compiles) once, then ``rounds`` rounds of one ``steps``-step window
    each, each round starting one contender later, so that a busy machine slows all alike. Per contender: the
    seconds per step of each window and, on a GPU, the largest rise of allocated memory over a window."""
    for c in contenders:
        c.window(warmup)
    out = {c.name: {"windows": [], "rise": 0} for c in contenders}
    for r in range(rounds):
        for c in contenders[r % len(contenders):] + contenders[: r % len(contenders)]:
            if device == "cuda":
                synchronize(device)
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            out[c.name]["windows"].append(c.window(steps))
            if device == "cuda":
                out[c.name]["rise"] = max(out[c.name]["rise"], torch.cuda.max_memory_allocated() - base)
    return out


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of ``/proc/cpuinfo`` (Linux), None elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(field)), None)
    except OSError:
        return None


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags(names: tuple[str, ...] = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f")) -> dict[str, bool]:
    """Which of these CPU flags this machine has (the bf16 matrix units: AMX, AVX-512-BF16); all False where
    ``/proc/cpuinfo`` is not there."""
    flags = (_cpuinfo("flags") or "").split()
    return {name: name in flags for name in names}


def library_versions() -> dict[str, str | None]:
    import importlib.metadata

    found = {}
    for package in ("torch", "transformers", "lightning", "timm"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"
