"""What ``--ckpt_path`` names, checked before Lightning reads it: a missing, truncated or other-task file, or 'last'
with only an earlier run's left, is one line; outside ``fit`` the data module takes the checkpoint's tokenizer and
class names; an adapter-only checkpoint's frozen base is found (``frozen_base``)."""

from __future__ import annotations

import os
import warnings
from typing import Any

from bigmodel.run import directory as runs
from bigmodel.run import errors


def frozen_base(recorded: str, given: str | None) -> str:
    """Where an adapter-only checkpoint's frozen rest is read from: the config's ``init_from`` when it names
    another base that is here (an archived or moved copy, given with --model.init_args.init_from), else the
    checkpoint's own (a config's default that is not here is not a choice). The task compares its checksum
    with the checkpoint's either way, and refuses a base that is not the one trained on."""
    def here(path: str) -> bool:
        return os.path.exists(os.path.expanduser(path))

    if given and os.path.abspath(os.path.expanduser(given)) != os.path.abspath(os.path.expanduser(recorded)) \
            and (here(given) or not here(recorded)):
        return given
    return recorded

def check_ckpt_path(config: Any, subcommand: str, directory: str | None) -> dict | None:
    """A ``--ckpt_path`` that is missing, truncated, of another task, or 'last' when only an earlier run's
    last.ckpt is left, is a one-line error here instead of a traceback (or a silent fresh start) later.
    Outside ``fit``, the data module takes the checkpoint's tokenizer and class names, so that testing and
    predicting need only the checkpoint (not the training files)."""
    ckpt_path = config.get("ckpt_path")
    if ckpt_path is None:
        return None
    path = os.fspath(ckpt_path)
    if path == "last":
        path = runs.resolve_last(directory)
        if path is None and subcommand == "fit":
            warnings.warn(f"--ckpt_path last: there is no last.ckpt in {directory} (a new run name?); "
                          "training starts from the beginning")
    elif path == "best" and directory is not None:
        path = os.path.join(directory, "best.ckpt")  # bigmodel's name for it; Lightning knows it only in-process
    elif path in runs.SPECIAL_CKPT_PATHS:
        return None
    if path is None:
        return None
    meta = runs.read_checkpoint_meta(path, directory)
    model_cls = errors.import_class(config.model.class_path) if config.get("model") else None
    expected = getattr(model_cls, "checkpoint_task", None)
    if meta.get("task") and expected and meta["task"] != expected:
        raise ValueError(
            f"--ckpt_path {path!r} is a {meta['task']!r} checkpoint but the config's model is "
            f"{config.model.class_path} ({expected!r}); use a config of the checkpoint's task or another checkpoint"
        )
    config.ckpt_path = path  # resolved, so that Lightning reads the checkpoint's hyper-parameters too
    if subcommand == "fit":
        return meta
    data = config.get("data")
    accepted = errors.init_parameters(errors.import_class(data.class_path)) if data is not None and "class_path" in data else set()
    if meta.get("_tokenizer") and "tokenizer" in accepted:
        data.init_args.tokenizer = path
    names = meta.get("class_names")
    if names and "label_names" in accepted:
        given = data.init_args.get("label_names")
        if given and list(given) != list(names):
            raise ValueError(
                f"data.init_args.label_names {list(given)} differ from the classes of {path!r} {list(names)}; "
                "leave label_names unset to use the checkpoint's"
            )
        data.init_args.label_names = list(names)
    return meta
