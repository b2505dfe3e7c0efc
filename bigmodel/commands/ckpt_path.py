"""What ``--ckpt_path`` names, checked before Lightning reads it: a missing, truncated or other-task file, a
classifier of images given a config for text (or the reverse), or 'last' with only an earlier run's left, is one
line; outside ``fit`` the data module takes the checkpoint's tokenizer and class names; an adapter-only checkpoint's
frozen base is found (``frozen_base``); the model settings of the config that the checkpoint's replace are named
(``replaced_settings``)."""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

from bigmodel.data import ImageDataModule, TextDataModule
from bigmodel.nn.config import TRAINING_FIELDS
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
    last.ckpt is left (or, outside ``fit``, none), is a one-line error here instead of a traceback (or a silent
    fresh start, or a test of untrained weights) later.
    Outside ``fit``, the data module takes the checkpoint's tokenizer and class names, so that testing and
    predicting need only the checkpoint (not the training files)."""
    ckpt_path = config.get("ckpt_path")
    if ckpt_path is None:
        return None
    path = os.fspath(ckpt_path)
    if path == "last":
        path = runs.resolve_last(directory, subcommand)
        if path is None and subcommand == "fit":
            warnings.warn(f"--ckpt_path last: there is no last.ckpt in {directory} (a new run name?); "
                          "training starts from the beginning")
        elif path is None and directory is not None:  # not a model with no trained weights: the missing file's error
            path = os.path.join(directory, "last.ckpt")
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
    check_input_kind(path, meta, config)
    config.ckpt_path = path  # resolved, so that Lightning reads the checkpoint's hyper-parameters too
    if subcommand == "fit":
        return meta
    data = config.get("data")
    accepted = errors.init_parameters(errors.import_class(data.class_path)) if data is not None and "class_path" in data else set()
    if meta.get("_tokenizer") and "tokenizer" in accepted:
        data.init_args.tokenizer = path
        for key in ("wordpiece_vocab_size", "lowercase"):  # how the training config made the tokenizer in the file
            default = errors.init_default(errors.import_class(data.class_path), key) if key in accepted else None
            if default not in (None, inspect.Parameter.empty):
                data.init_args[key] = default
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


def checkpoint_input(meta: dict) -> tuple[str, str] | None:
    """What a classification checkpoint's network reads, from its ``bigmodel`` entry alone (no weights): images
    for a backbone by class path, text for the shared or an own text encoder; None for other tasks (each reads one
    kind, which the task check covers) and foreign checkpoints."""
    if meta.get("task") != "classification":
        return None
    if meta.get("backbone"):
        return "images", f"an image classifier (backbone {meta['backbone']})"
    if meta.get("encoder_config") or meta.get("encoder"):
        return "text", "a text classifier"
    return None


def config_input(config: Any) -> tuple[str, str] | None:
    """What the parsed config feeds its model: its data module's kind (a text or an image module of bigmodel's,
    subclasses included), else images when its model names a backbone; None when it does not say (a lab's own
    data module and no backbone)."""
    data = config.get("data")
    data_cls = errors.import_class(data.class_path) if data is not None and data.get("class_path") else None
    if isinstance(data_cls, type) and issubclass(data_cls, TextDataModule):
        return "text", f"the config's data module {data.class_path} reads text"
    if isinstance(data_cls, type) and issubclass(data_cls, ImageDataModule):
        return "images", f"the config's data module {data.class_path} reads images"
    backbone = ((config.get("model") or {}).get("init_args") or {}).get("backbone")
    if backbone:
        return "images", f"the config's model has a backbone ({_class_path(backbone)}) for images"
    return None


def check_input_kind(path: str, meta: dict, config: Any) -> None:
    """An image classifier's checkpoint with a config for text (or the reverse) is refused before anything is
    built: Lightning would rebuild the checkpoint's network from its hyper-parameters and feed it the config's data,
    which fails later with an error about the config (vocab_size, label names) instead of the checkpoint."""
    have, want = checkpoint_input(meta), config_input(config)
    if have is None or want is None or have[0] == want[0]:
        return
    other = "an image classifier" if want[0] == "images" else "a text classifier"
    raise ValueError(f"--ckpt_path {path!r} is {have[1]} but {want[1]}; use a config for {have[0]} (such as the one "
                     f"it was trained with) or {other}'s checkpoint")


def _class_path(value: Any) -> str | None:
    """The class path of a setting given by class path (a dict or Namespace with ``class_path``), else None."""
    return value.get("class_path") if hasattr(value, "get") else None


def _same_class(a: str, b: str) -> bool:
    """Two class paths naming one class (``bigmodel.nn.SmallCNN`` and ``bigmodel.nn.cnn.SmallCNN``)."""
    if a == b:
        return True
    try:
        return errors.import_class(a) is errors.import_class(b)
    except (ImportError, AttributeError, ValueError):
        return False


def replaced_settings(given: dict, used: dict) -> list[str]:
    """The model settings of the config (``given``: model as parsed) that the checkpoint's hyper-parameters
    (``used``: after Lightning merged them) replace, where they change the network: the model's class, a setting
    given by class path (a backbone, an encoder of one's own) and its init_args, the shared encoder's preset and
    the architecture overrides the config sets (not dropout or other training-only fields). Optimiser and
    training settings are left out: they do not change what a checkpoint's model computes."""
    def show(value: Any) -> str:
        return _class_path(value) or repr(value)

    notes = []
    if given.get("class_path") and used.get("class_path") and not _same_class(given["class_path"], used["class_path"]):
        notes.append(f"the checkpoint's model {used['class_path']} replaces the config's {given['class_path']}")
    before, after = given.get("init_args") or {}, used.get("init_args") or {}
    for key in sorted(set(before) & set(after)):
        old, new = before[key], after[key]
        if _class_path(old) or _class_path(new):
            if not (_class_path(old) and _class_path(new) and _same_class(_class_path(old), _class_path(new))):
                notes.append(f"the checkpoint's {key} {show(new)} replaces the config's {show(old)}")
                continue
            old_args, new_args = old.get("init_args") or {}, new.get("init_args") or {}
            notes += [f"the checkpoint's {key}.init_args.{k} {new_args.get(k)!r} replaces the config's {v!r}"
                      for k, v in old_args.items() if k in new_args and new_args[k] != v]
        elif key == "encoder" and old != new:
            notes.append(f"the checkpoint's encoder {new!r} replaces the config's {old!r}")
        elif key == "encoder_config" and old and new:
            notes += [f"the checkpoint's encoder_config.{k} {new.get(k)!r} replaces the config's {v!r}"
                      for k, v in old.items() if k not in TRAINING_FIELDS and k in new and new[k] != v]
    return notes


def settle_init_from(meta: dict | None, model: Any, given: str | None) -> None:
    """``init_from`` once Lightning has merged the ``--ckpt_path`` checkpoint's hyper-parameters into ``model``: an
    adapter-only checkpoint keeps its frozen base (``frozen_base``); any other holds the architecture and the weights
    the run restores, so init_from (which may not exist on this machine) is not read."""
    if not (meta and meta.get("task")) or model is None or model.get("init_args") is None \
            or model.init_args.get("init_from") is None:
        return
    if meta.get("weights") == "trainable":
        model.init_args.init_from = frozen_base(model.init_args.init_from, given)
    else:
        model.init_args.init_from = None
