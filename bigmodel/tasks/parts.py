"""The parts a task composes (``FineTuning``, ``Int8Inference``, ``NonFiniteGuard``) as seen from a task that
leaves some out: their settings in a checkpoint written when it had them are dropped; given directly, they are an
error naming the part to add."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from bigmodel.tasks.finetuning import FineTuning, Int8Inference
from bigmodel.tasks.guards import NonFiniteGuard

PARTS = (FineTuning, Int8Inference, NonFiniteGuard)


def _keyword_args(part: type) -> set[str]:
    return {name for name, p in inspect.signature(part.__init__).parameters.items() if p.kind == p.KEYWORD_ONLY}


PART_ARGS = frozenset(name for part in PARTS for name in _keyword_args(part))
_READING: ContextVar[bool] = ContextVar("bigmodel_reading_checkpoint", default=False)


@contextmanager
def reading_checkpoint() -> Iterator[None]:
    """While ``load_from_checkpoint`` builds a task from a checkpoint's hyper-parameters."""
    token = _READING.set(True)
    try:
        yield
    finally:
        _READING.reset(token)


def drop_left_out(task: Any, left_out: dict[str, Any]) -> None:
    """Settings of parts ``task`` does not have: from a checkpoint, dropped and said once; given directly, an error
    that says how to add the part. Anything else is a typo."""
    name = type(task).__name__
    unknown = sorted(set(left_out) - PART_ARGS)
    if unknown:
        raise TypeError(f"{name} got unexpected argument(s) {unknown}: check their spelling against the class's "
                        "init args")
    if not left_out:
        return
    if not _READING.get():
        parts = [part.__name__ for part in PARTS if set(left_out) & _keyword_args(part)]
        raise TypeError(f"{name} has no part that reads {sorted(left_out)}: list {' and '.join(parts)} "
                        "(bigmodel.tasks) before TaskBase in its bases, or drop the setting")
    for key in left_out:
        task.hparams.pop(key, None)
    rank_zero_warn(f"{name} has no part that reads {sorted(left_out)} (settings of a checkpoint written when it "
                   "had them): ignored")
