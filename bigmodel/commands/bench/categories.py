"""Which category each profiled op's time belongs to (``bench --profile``): the categories by op name and module
label, the labels added around modules whose ops say nothing (the MLM head, embeddings, dropout) and around the
explicit attention path, and the attribution of every event's *self* CPU time to exactly one category -- that of
its outermost categorised ancestor; a backward node by the label of the forward op that made it (the autograd
sequence number); the optimizer's only outside Lightning's forward/backward phases."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.autograd.profiler import record_function

from bigmodel.nn import attention
from bigmodel.nn.dropout import Dropout
from bigmodel.nn.heads import MLMHead

PREFIX = "bench.profile::"  # the record_function labels this module adds
# (category, substrings of lower-cased event names), checked in this order: the first that matches names it
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("MLM head and loss", (f"{PREFIX}mlm_head", "cross_entropy", "log_softmax", "logsoftmax", "nll_loss",
                           "nllloss")),
    ("embedding forward/backward", (f"{PREFIX}embedding", "embedding")),
    ("dropout", (f"{PREFIX}dropout", "dropout", "bernoulli")),
    ("attention (SDPA, softmax, masks)", (f"{PREFIX}attention", "scaled_dot_product", "softmax", "masked_fill",
                                          "maskedfill")),
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul",
                         "mmbackward", "addmmbackward", "bmmbackward", "matmulbackward")),
    ("normalisation and activations", ("layer_norm", "layernorm", "rms_norm", "rmsnorm", "gelu", "silu", "tanh")),
]
OPTIMIZER = "optimizer (AdamW, zero_grad)"
OTHER = "everything else"
NAMES = [name for name, _ in CATEGORIES] + [OPTIMIZER, OTHER]
_OPTIMIZER_EVENTS = ("optimizer.step", "optimizer.zero_grad", "_fused_adamw", "_foreach_")
PHASE = f"{PREFIX}phase"  # forward/backward inside Lightning's optimizer closure: not the optimizer's
STEP = f"{PREFIX}step"
_LABELS = {MLMHead: f"{PREFIX}mlm_head", nn.Embedding: f"{PREFIX}embedding", nn.Dropout: f"{PREFIX}dropout",
           Dropout: f"{PREFIX}dropout"}


def category_of(name: str) -> str | None:
    low = name.lower()
    return next((cat for cat, keys in CATEGORIES if any(k in low for k in keys)), None)


@contextmanager
def module_labels(model: nn.Module) -> Iterator[None]:
    """``record_function`` spans around the forward of the modules whose ops have uninformative names
    (``_LABELS``), removed on exit."""
    handles = []
    for module in model.modules():
        label = next((lab for cls, lab in _LABELS.items() if isinstance(module, cls)), None)
        if label is None:
            continue
        spans: list[Any] = []

        def enter(m: nn.Module, args: Any, spans: list = spans, label: str = label) -> None:
            spans.append(record_function(label).__enter__())

        def leave(m: nn.Module, args: Any, out: Any, spans: list = spans) -> None:
            spans.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    explicit = attention.explicit_attention  # attention's explicit path (CPU training with dropout) is matmuls too

    def labelled(*args: Any, **kwargs: Any) -> Any:
        with record_function(f"{PREFIX}attention"):
            return explicit(*args, **kwargs)

    attention.explicit_attention = labelled
    try:
        yield
    finally:
        attention.explicit_attention = explicit
        for h in handles:
            h.remove()


def _chain(event: Any) -> list[Any]:
    """The event and its ancestors, outermost first."""
    out = []
    while event is not None:
        out.append(event)
        event = event.cpu_parent
    return out[::-1]


def assign(events: list[Any]) -> list[tuple[Any, str]]:
    """Each event inside a ``STEP`` span with its category: that of its outermost categorised ancestor (itself
    included; a backward node also by the label of the forward op that made it), else the optimizer's when an
    optimizer event encloses it with no forward/backward phase between, else ``OTHER``."""
    labels: dict[int, str] = {}  # autograd sequence number -> the label of the forward op that made the node
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::"):
            label = next((a.name for a in reversed(_chain(e)) if a.name.startswith(PREFIX) and
                          a.name not in (STEP, PHASE)), None)
            if label is not None:
                labels.setdefault(e.sequence_nr, label)
    out = []
    for e in events:
        chain = _chain(e)
        if not any(a.name == STEP for a in chain):
            continue
        category, optimizer = None, False
        for a in chain:
            if a.name == PHASE:
                optimizer = False
            elif any(k in a.name.lower() for k in _OPTIMIZER_EVENTS):
                optimizer = True
            names = [a.name] + ([labels[a.sequence_nr]] if a.name.startswith("autograd::engine::evaluate_function")
                                and a.sequence_nr in labels else [])
            category = next((c for c in map(category_of, reversed(names)) if c is not None), None)
            if category is not None:
                break
        out.append((e, category or (OPTIMIZER if optimizer else OTHER)))
    return out


def categorise(events: list[Any]) -> tuple[dict[str, float], dict[str, float], float]:
    """Self CPU time (s) per category over the events inside ``STEP`` spans (``assign``), the uncategorised
    events' self time by name (what "everything else" holds; the spans' own self time, Python between ops, as
    "(no op: Python between ops)"), and the spans' total time (s)."""
    times = dict.fromkeys(NAMES, 0.0)
    other: dict[str, float] = defaultdict(float)
    total = 0.0
    for e, category in assign(events):
        if e.name == STEP:
            total += e.cpu_time_total / 1e6
        seconds = e.self_cpu_time_total / 1e6
        times[category] += seconds
        if category == OTHER:
            other["(no op: Python between ops)" if e.name in (STEP, PHASE) else e.name] += seconds
    return times, dict(other), total
