"""One way in for ``init_from``: any source -> weights + architecture + where its tokenizer is.

Sources: a checkpoint of this project (any task), a Hugging Face model directory (``save_pretrained``: config.json
+ model.safetensors or pytorch_model.bin, with or without a task head; a sentence-transformers directory's pooling
and sequence length are read too), a model a package ships (``all-MiniLM-L6-v2``, see ``bigmodel.utils.hub``), a
Hugging Face Hub name (downloaded and cached by ``huggingface_hub``), or a state-dict file
(``.safetensors``/``.pth``/``.bin``: torchvision, timm, DeiT).
Everything is read as data only (``weights_only``). This module finds and reads the files; what their names mean
(Hugging Face's, per family) and loading what fits into a network (``load_matching``) live in ``bigmodel.nn.convert``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bigmodel.utils.hub import (
    PACKAGED_MODELS,
    HubUnavailableError,
    hub_load_error,
    hub_offline_mode,
    hub_reachable,
    is_local,
    looks_like_path,
    offline_message,
    packaged_model,
)
from bigmodel.nn import EncoderConfig
from bigmodel.nn.config import CONTEXT_FIELDS, TRAINING_FIELDS
from bigmodel.nn.hf_config import HF_TEXT_FAMILIES
from bigmodel.nn.convert import from_hf
from bigmodel.nn.peft import LoRAConfig, merge_lora_state

META_KEY = "bigmodel"  # checkpoint["bigmodel"] = {"task": ..., "encoder_config": {...}, "class_names": [...]}
# checkpoint["bigmodel"]["task"] -> the task class that declares that name (``TaskBase.__init_subclass__`` fills it,
# so this module never imports the tasks, which import it)
TASKS: dict[str, type] = {}
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer_config.json")


@dataclass
class Pretrained:
    """What ``init_from`` names, read once.

    ``state`` uses bigmodel's names for text encoders (``encoder.*``, ``mlm_head.*``, ``head.*``) and the source's
    own names for anything else (image backbones adapt them: see ``VisionTransformer.load_pretrained``).
    """

    source: str
    state: dict[str, torch.Tensor]
    kind: str  # "mlm", "classification" (this project's tasks), "huggingface" or "state_dict"
    config: EncoderConfig | None = None  # a text encoder's architecture, when the source has one
    class_names: list[str] | None = None  # of a classification head in the source
    tokenizer: str | None = None  # a path or hub name that load_tokenizer reads, when the source has one
    backbone: str | None = None  # an image classifier's backbone class, for this project's checkpoints
    meta: dict[str, Any] = field(default_factory=dict)
    pooling: str | None = None  # the sentence embedding the source declares: "mean", "cls" (or one bigmodel lacks)
    max_seq_length: int | None = None  # the longest input the source was trained for, when it says

    def part(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.state.items() if k.startswith(prefix)}


def strip_compile_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch.compile saves keys with ``_orig_mod.``; drop it so compiled and eager checkpoints load alike."""
    return {re.sub(r"(^|\.)_orig_mod\.", r"\1", k): v for k, v in state.items()}


def merge_lora_state_of(ckpt: dict, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LoRA run's weights with its updates folded in (its rank, scaling and targets are in the
    hyper-parameters)."""
    if not any(".lora_" in key for key in state):
        return state
    return merge_lora_state(state, LoRAConfig(**(ckpt.get("hyper_parameters") or {}).get("lora") or {}))


def network_state(ckpt: dict, path: str, base: str | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's network weights (``net.`` dropped) with LoRA folded in. A checkpoint of trainable weights only
    (``checkpoint_weights: trainable``) is first completed by its own task, which rebuilds the frozen base from
    the checkpoint's ``init_from`` (or ``base``, when given) exactly as a resumed run does, checksum check
    included."""
    state = ckpt["state_dict"]
    meta = ckpt.get(META_KEY) or {}
    if meta.get("weights") == "trainable":
        task = TASKS.get(meta.get("task"))
        if task is None:
            raise ValueError(f"{path!r} is a {meta.get('task')!r} checkpoint, which no task of bigmodel reads")
        model = task.load_from_checkpoint(path, map_location="cpu", **({"init_from": base} if base else {}))
        state = {f"net.{k}": v for k, v in model.net.state_dict().items()}
    state = strip_compile_prefix(state)
    return merge_lora_state_of(ckpt, {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})


def resolve(source: str) -> Pretrained:
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        return _from_directory(source, path)
    if os.path.isfile(path):
        return _from_file(source, path)
    packaged = None if is_local(path) else packaged_model(source)
    if packaged is not None:
        return _from_directory(source, packaged)
    if looks_like_path(path):
        raise FileNotFoundError(
            f"init_from {source!r} does not exist; point it to a checkpoint (.ckpt), a state-dict file, a Hugging "
            "Face model directory, or a hub name such as bert-base-uncased"
        )
    return _from_directory(source, _download(source))


def _from_file(source: str, path: str) -> Pretrained:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return Pretrained(source, load_file(path), "state_dict")
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - corrupt, truncated or pickled-code files all get this message
        raise ValueError(
            f"init_from {source!r} is not a readable checkpoint ({type(err).__name__}); was it fully written?"
        ) from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"init_from {source!r} holds a {type(ckpt).__name__}, not a checkpoint or state dict")
    meta = ckpt.get(META_KEY)
    if meta is not None and "state_dict" in ckpt:
        state = network_state(ckpt, path)
        config = EncoderConfig.from_dict(meta["encoder_config"]) if "encoder_config" in meta else None
        return Pretrained(source, state, meta.get("task", "?"), config, meta.get("class_names"),
                          tokenizer=source if "tokenizer" in ckpt else None, backbone=meta.get("backbone"), meta=meta,
                          pooling=meta.get("pooling"))
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    state = strip_compile_prefix({k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)})
    if not state:
        raise ValueError(f"init_from {source!r} holds no tensors")
    return Pretrained(source, state, "state_dict")


def _from_directory(source: str, path: str) -> Pretrained:
    found = [os.path.join(path, f) for f in _HF_WEIGHT_FILES if os.path.isfile(os.path.join(path, f))]
    if not found:
        raise FileNotFoundError(f"init_from {source!r} has none of {', '.join(_HF_WEIGHT_FILES)}; give a directory "
                                "written by save_pretrained (or `hf download <name> --local-dir <dir>`)")
    raw = _from_file(source, found[0]).state
    config_file = os.path.join(path, "config.json")
    hf = json.loads(Path(config_file).read_text(encoding="utf-8")) if os.path.isfile(config_file) else {}
    tokenizer = source if any(os.path.isfile(os.path.join(path, f)) for f in _TOKENIZER_FILES) else None
    family = hf.get("model_type")
    if family not in HF_TEXT_FAMILIES:  # an image model (ViT) or an unknown one: its own names, adapted later
        return Pretrained(source, raw, "huggingface", tokenizer=tokenizer, meta={"config": hf})
    try:
        config = EncoderConfig.from_hf(hf)
        state = from_hf(raw, family)
    except (KeyError, ValueError) as err:
        raise ValueError(f"init_from {source!r}: {err.args[0]}") from err
    labels = hf.get("id2label") or {}
    names = [labels[k] for k in sorted(labels, key=int)] if labels else None
    if names and all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        names = None  # transformers' placeholders: the classes have no names
    has_head = "head.classifier.weight" in state
    return Pretrained(source, state, "huggingface", config, names if has_head else None, tokenizer,
                      meta={"config": hf, "family": family}, **sentence_transformers_settings(path))


# sentence-transformers' Pooling module flags -> its mode; bigmodel's classifier pools by "mean" or "cls"
_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
                  "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len", "pooling_mode_weightedmean_tokens":
                  "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def sentence_transformers_settings(path: str) -> dict[str, Any]:
    """A sentence-transformers directory's sentence embedding: the pooling of its ``Pooling`` module (modules.json
    -> <module path>/config.json) and ``max_seq_length`` (sentence_bert_config.json); {} for other directories."""
    def read(*parts: str) -> dict:
        file = os.path.join(path, *parts)
        return json.loads(Path(file).read_text(encoding="utf-8")) if os.path.isfile(file) else {}

    modules = read("modules.json") or []
    pooling_dir = next((m.get("path", "") for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    out: dict[str, Any] = {}
    if pooling_dir is not None:
        flags = read(pooling_dir, "config.json")
        modes = [mode for flag, mode in _POOLING_FLAGS.items() if flags.get(flag)] or [flags.get("pooling_mode")]
        out["pooling"] = "+".join(str(m) for m in modes)
    max_seq_length = read("sentence_bert_config.json").get("max_seq_length")
    if max_seq_length:
        out["max_seq_length"] = int(max_seq_length)
    return out


def _download(name: str) -> str:
    """A hub name -> a local snapshot of its config, weights (safetensors when there are any) and tokenizer."""
    packaged = next((p for p in PACKAGED_MODELS if name.endswith("/" + p)), None)
    hint = f" (offline: init_from {packaged!r} is the same model, from a package)" if packaged else ""
    if not hub_offline_mode() and not hub_reachable():
        raise HubUnavailableError(offline_message(
            "init_from", name, "Save the model where there is internet (`hf download NAME --local-dir DIR`, or "
            "from_pretrained(NAME).save_pretrained(DIR)) and pass that directory as init_from and as "
            "data.init_args.tokenizer") + hint)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    small = ["config.json", "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "*.model",
             "modules.json", "*_Pooling/config.json", "sentence_bert_config.json"]  # sentence-transformers
    try:
        path = snapshot_download(name, allow_patterns=small + ["model.safetensors"])
        if not os.path.isfile(os.path.join(path, "model.safetensors")):
            path = snapshot_download(name, allow_patterns=small + ["pytorch_model.bin"])
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise hub_load_error("init_from", name, err, f"save the model where there is internet (`hf download {name} "
                             "--local-dir DIR`) and pass that directory as init_from and as data.init_args.tokenizer"
                             + hint) from err
    return path


def check_vocabulary(pretrained: Pretrained, vocab_size: int | None) -> None:
    if pretrained.config is not None and vocab_size is not None and pretrained.config.vocab_size != vocab_size:
        raise ValueError(
            f"init_from {pretrained.source!r} has a vocabulary of {pretrained.config.vocab_size} tokens but the "
            f"tokenizer has {vocab_size}; use the model's own tokenizer (data.init_args.tokenizer: {pretrained.source})"
        )


def text_config(pretrained: Pretrained, overrides: dict[str, Any] | None) -> EncoderConfig:
    """The source's architecture; ``encoder_config`` may change dropout and activation checkpointing, and for a
    RoPE encoder the context (``max_position_embeddings``, ``rope_theta``, ``local_rope_theta``: no weight depends
    on them)."""
    if pretrained.config is None:
        model_type = pretrained.meta.get("config", {}).get("model_type")
        what = f"a {model_type!r} model" if model_type else f"a {pretrained.kind} source without a text encoder"
        raise ValueError(
            f"init_from {pretrained.source!r} is {what}; give a checkpoint of this project's text tasks, or a "
            "Hugging Face BERT/RoBERTa directory or hub name"
        )
    saved = pretrained.config.to_dict()
    overrides = dict(overrides or {})
    rope = pretrained.config.position_embedding == "rope"
    allowed = TRAINING_FIELDS + (CONTEXT_FIELDS if rope else ())
    changed = sorted(k for k, v in overrides.items() if k not in allowed and saved.get(k) != v)
    context = [k for k in changed if k in CONTEXT_FIELDS]
    if context:
        raise ValueError(f"encoder_config {context} cannot change init_from's encoder: it has "
                         f"{pretrained.config.max_position_embeddings} {pretrained.config.position_embedding} "
                         "positions; only a RoPE encoder (position_embedding: rope) continues at a longer context")
    if changed:
        raise ValueError(f"encoder_config {changed} cannot change a pretrained encoder loaded by init_from; "
                         f"only {', '.join(allowed)} may be overridden")
    return pretrained.config.replace(**{"activation_checkpointing": False, **overrides})  # a setting of that run


# where a fresh run under a run name moves the earlier run's checkpoints: <checkpoints>/previous/<time>/
ARCHIVE = "previous"


def archived_copies(path: str) -> list[str]:
    """Earlier versions of the checkpoint file ``path`` that a fresh run under its run name moved to
    ``previous/<time>/`` (``ARCHIVE``) beside it (``bigmodel.run.callbacks.KeepPreviousCheckpoints``), newest first."""
    file = Path(os.path.expanduser(path))
    if file.suffix != ".ckpt":
        return []
    return [str(p) for p in sorted(file.parent.glob(f"{ARCHIVE}/*/{file.name}"), reverse=True)]
