"""``bigmodel export``: a checkpoint of this project, or an ``init_from`` source as it loads (no training) -> a
Hugging Face directory the Auto classes load.

    bigmodel export --ckpt_path runs/x/checkpoints/best.ckpt --out exported/x [--family roberta]
    bigmodel export --init_from DIR_OR_NAME --out exported/y [--class_names [a, b, c]] [--pooling pooler]
    bigmodel export --ckpt_path runs/lora/checkpoints/last.ckpt --init_from BASE --out exported/z

The third form is for an adapter-only checkpoint (``checkpoint_weights: trainable``) whose frozen base is no longer
where the run read it (moved, or archived under ``checkpoints/previous/<time>/`` by a rerun of its pretraining):
``--init_from`` gives that base, which must have the frozen weights the checkpoint was trained on (its checksum).

An MLM checkpoint becomes ``BertForMaskedLM`` (or ``RobertaForMaskedLM``, or ``ModernBertForMaskedLM`` for an
encoder with ModernBERT's switches), a text classifier
``BertForSequenceClassification`` (``id2label`` from the class names, ``classifier_dropout`` from the task's), a
ViT image classifier ``ViTForImageClassification``; weights as safetensors, ``config.json`` and the tokenizer
files. Names are mapped by ``bigmodel.nn.convert`` (the same table as for import), so a model imported from Hugging
Face exports back to its original tensors.

A ViT trained with an ``ImageDataModule`` also gets ``preprocessor_config.json`` (``ViTImageProcessor``, which
``AutoImageProcessor`` loads): the evaluation preprocessing its checkpoint records (resize to the data's image size,
/255, the data's mean and std; ``ImageDataModule.eval_preprocessing``). A ViT trained on images of another size than
it was built for exports at the data's size, its position grid resampled once as bigmodel resampled it at every
step, so transformers needs no ``interpolate_pos_encoding``. A grey (1-channel) model needs grey images: transformers
does not convert colour to grey, and its ``pipeline`` makes PIL images and files RGB. A checkpoint without the record
(written before it existed, or without the data module) exports without the file, and the export line says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bigmodel.commands.export_vit import at_image_size, save_image_processor, vit_config
from bigmodel.nn import EncoderConfig
from bigmodel.nn.convert import to_hf
from bigmodel.run.directory import read_checkpoint_meta
from bigmodel.tasks.checkpoints import META_KEY, network_state
from bigmodel.tasks.finetuning import BASE_OPTION

_ARCHITECTURES = {"mlm": "ForMaskedLM", "prompt": "ForMaskedLM", "classification": "ForSequenceClassification"}
_FAMILY_NAMES = {"bert": "Bert", "roberta": "Roberta", "modernbert": "ModernBert", "vit": "ViT"}
# transformers ties these to the word embeddings
_TIED = ("cls.predictions.decoder.", "lm_head.decoder.", "decoder.weight")


def export(ckpt_path: str | None = None, out: str | None = None, family: str | None = None,
           init_from: str | None = None, class_names: list[str] | None = None, pooling: str | None = None,
           seed: int = 0) -> Path:
    """Writes a checkpoint, a source as it loads, or an adapter-only checkpoint + its base as a Hugging Face model.

    Returns the directory written. ``--ckpt_path`` alone: a trained checkpoint; ``--init_from`` alone: a source as
    it loads; both: an adapter-only checkpoint (``checkpoint_weights: trainable``) and its frozen base.

    Args:
        ckpt_path: a ``.ckpt`` of this project (MLM, text or ViT image classification). An adapter-only one
            (``checkpoint_weights: trainable``) is completed from the frozen base it records, or from ``init_from``.
        out: the directory to write (created; files in it are replaced).
        family: ``bert``, ``roberta`` or ``modernbert`` for text (default: ``modernbert`` for rotary positions,
            ``roberta`` when the encoder has RoBERTa's position offset, else ``bert``).
        init_from: alone, a text source exactly as ``init_from`` loads it, without training (a Hugging Face
            directory or hub name, a packaged model, a checkpoint): with ``class_names`` a text classifier (the
            source's classifier when it has these classes, else a new one drawn with ``seed``), otherwise the
            source's own head (MLM or classifier). With an adapter-only ``ckpt_path``: its frozen base (checked
            against the checksum the checkpoint recorded), in place of the one it records.
        class_names, pooling: the classifier's classes and pooling (as ``ClassificationTask``'s); with init_from
            alone.
        seed: draws a new head's weights (with init_from alone).
    """
    with _transformers_bars_off():
        return _export(ckpt_path, out, family, init_from, class_names, pooling, seed)


@contextmanager
def _transformers_bars_off() -> Iterator[None]:
    """transformers' own bars ('Loading weights' as the export is read back to check it) are not export's output:
    off for this call, then as they were. The Hub's download bars (a hub name's first download) stay as they are."""
    import importlib

    from transformers.utils import logging

    hub = importlib.import_module("huggingface_hub.utils.tqdm")  # (transformers switches the Hub's bars with its own)
    hub_states, was_on = dict(hub.progress_bar_states), logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    hub.progress_bar_states.clear()
    hub.progress_bar_states.update(hub_states)
    try:
        yield
    finally:
        if was_on:
            logging.enable_progress_bar()
        hub.progress_bar_states.clear()
        hub.progress_bar_states.update(hub_states)


def _export(ckpt_path: str | None, out: str | None, family: str | None, init_from: str | None,
            class_names: list[str] | None, pooling: str | None, seed: int) -> Path:
    import transformers

    if out is None:
        raise ValueError("--out is unset: give the directory to write")
    if ckpt_path is None and init_from is None:
        raise ValueError("give --ckpt_path (a trained checkpoint) or --init_from (a source as it loads), or both "
                         "(an adapter-only checkpoint and its frozen base)")
    if ckpt_path is not None and (class_names or pooling):
        raise ValueError("--class_names and --pooling build a head from --init_from alone; a checkpoint has its own")
    base, from_source, resampled = None, ckpt_path is None, ""
    if ckpt_path is None:
        ckpt, ckpt_path = checkpoint_from_source(init_from, class_names, pooling, seed), init_from
    else:
        ckpt, base = _read(ckpt_path), init_from
    meta = ckpt[META_KEY]
    task = meta.get("task")
    if base is not None and meta.get("weights") != "trainable":
        raise ValueError(f"--init_from with --ckpt_path gives the frozen base of an adapter-only checkpoint "
                         f"(checkpoint_weights: trainable); {ckpt_path!r} holds all its weights: drop --init_from")
    state = _network_state(ckpt, ckpt_path, base)  # LoRA folded into the base weights; a frozen base read back in
    if "encoder_config" in meta:
        if task not in _ARCHITECTURES:
            raise ValueError(f"a {task!r} checkpoint has no Hugging Face BERT/RoBERTa equivalent; export an MLM or "
                             "a text classification checkpoint")
        config = EncoderConfig.from_dict(meta["encoder_config"])
        natural = config.hf_family
        family = family or natural
        if family != natural and "modernbert" in (family, natural):
            raise ValueError(f"only modernbert has rotary positions; this encoder is a {natural}: export with "
                             f"--family {natural}")
        if family != natural:
            raise ValueError(f"this encoder reads positions from row {config.position_offset}, as {natural} does: "
                             f"as {family} every position would shift; export with --family {natural}")
        hf_config = config.to_hf(family)
        tokenizer = _tokenizer(ckpt)
        if tokenizer is not None and tokenizer.pad_token_id is not None:
            hf_config["pad_token_id"] = tokenizer.pad_token_id
            if family == "modernbert":  # its config names the special tokens (defaults: ModernBERT's vocabulary)
                hf_config.update(cls_token_id=tokenizer.cls_token_id, bos_token_id=tokenizer.cls_token_id,
                                 sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id)
            if family == "roberta" and tokenizer.pad_token_id != config.position_offset - 1:
                raise ValueError(f"the tokenizer's padding id {tokenizer.pad_token_id} does not give RoBERTa's "
                                 f"position offset {config.position_offset}: transformers would read positions "
                                 "differently; export the model with the tokenizer it was trained with")
    elif str(meta.get("backbone", "")).endswith("VisionTransformer"):
        family, tokenizer = "vit", None
        hf_config = vit_config(ckpt, meta)
        if meta.get("image_preprocessing"):  # the model as it ran: at the size its data brought images to
            state, resampled = at_image_size(state, hf_config, meta["image_preprocessing"]["image_size"])
    else:
        raise ValueError(f"{ckpt_path!r} holds a {meta.get('backbone') or task} model; bigmodel exports MLM and text "
                         "classification checkpoints and ViT image classifiers")
    if task == "classification" and meta.get("pooling", "pooler") != "pooler" and family != "vit":
        raise ValueError(_pooling_refusal(meta["pooling"], _FAMILY_NAMES[family], from_source))
    prompt = _prompt_config(ckpt, meta) if task == "prompt" else None
    if prompt is not None:
        hf_config["bigmodel_prompt"] = prompt
    if task == "classification":
        names = list(meta.get("class_names") or [])
        hf_config.update(num_labels=len(names), id2label=dict(enumerate(names)),
                         label2id={n: i for i, n in enumerate(names)})
        # the head's dropout, for fine-tuning further in transformers (unset, BERT's would be hidden_dropout_prob and
        # ModernBERT's 0); a ViT's head has none
        dropout = (ckpt.get("hyper_parameters") or {}).get("classifier_dropout")
        if family != "vit" and dropout is not None:
            hf_config["classifier_dropout"] = float(dropout)
    name = _FAMILY_NAMES[family] + ("ForImageClassification" if family == "vit" else _ARCHITECTURES[task])
    model_type = hf_config.pop("model_type", family)
    hf_config = transformers.AutoConfig.for_model(model_type, architectures=[name], **hf_config)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(target)  # the file layout of the Hub, read back through transformers to check it
    save_file({k: v.contiguous() for k, v in to_hf(state, family).items()}, str(target / "model.safetensors"),
              metadata={"format": "pt"})
    _, info = getattr(transformers, name).from_pretrained(target, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.startswith(_TIED) and not k.endswith("position_ids")]
    wrong = list(info["unexpected_keys"]) + [str(m[0]) for m in info.get("mismatched_keys", [])]
    if missing or wrong:
        raise ValueError(f"{name} does not take this checkpoint: missing {missing[:3]}, unexpected {wrong[:3]}")
    if tokenizer is not None:
        tokenizer.save_pretrained(target)
    notes = save_image_processor(meta.get("image_preprocessing"), target) if family == "vit" else []
    print(f"Wrote {name} to {target}" + (" with its tokenizer" if tokenizer is not None else "")
          + (" with its image processor" if family == "vit" and meta.get("image_preprocessing") else "")
          + "".join(f"; {note}" for note in notes + [resampled] if note)
          + (f"; config.json's bigmodel_prompt holds the template and verbalizer, which transformers' {name} does "
             "not apply: fill the template, read the logits at its mask and score each class by its words' logits "
             "(log-sum-exp), or classify with bigmodel test/predict --ckpt_path" if prompt is not None else ""))
    return target


def _pooling_refusal(pooling: str, family: str, from_source: bool) -> str:
    """Why a classifier that does not read its pooler (BERT's tanh, ModernBERT's dense-GELU-norm) has no
    ``*ForSequenceClassification`` form, and the way
    out: for a source, another pooling; for a trained checkpoint (its head learned this pooling), keeping it in
    bigmodel or fine-tuning again."""
    modern = family == _FAMILY_NAMES["modernbert"]  # its head pools [CLS] or the mean, then dense -> GELU -> norm
    reads = "[CLS] or the mean (classifier_pooling) through its dense-GELU-norm head" if modern else \
        "[CLS] through the tanh pooler"
    why = f"this classifier reads {pooling} pooling; {family}ForSequenceClassification reads {reads} only"
    if from_source:
        return f"{why}: export it with --pooling pooler"
    return (f"{why}, so this trained checkpoint cannot become one: keep using it with bigmodel (test/predict "
            f"--ckpt_path), or fine-tune again with --model.init_args.pooling pooler and export that")


def _prompt_config(ckpt: dict, meta: dict) -> dict[str, Any]:
    """A prompt (PET) checkpoint's template, verbalizer and classes, for config.json: the MLM alone cannot
    reproduce the classifier without them. The template is the run's data setting, which Lightning saves with the
    data module's hyper-parameters (None for a checkpoint written without a data module)."""
    template = (ckpt.get("datamodule_hyper_parameters") or {}).get("template")
    return {"template": template, "verbalizer": meta.get("verbalizer"), "class_names": meta.get("class_names"),
            "score": "log-sum-exp of the MLM logits of each class's words at the template's mask"}


def checkpoint_from_source(init_from: str, class_names: list[str] | None = None, pooling: str | None = None,
                           seed: int = 0) -> dict[str, Any]:
    """What a checkpoint of ``init_from`` loaded into a task (no step taken) would hold: weights, bigmodel's meta,
    hyper-parameters and tokenizer files -- the same path through ``network_state`` as a trained checkpoint."""
    from lightning.pytorch.utilities import rank_zero_info

    from bigmodel.data.tokenizer import load_tokenizer, tokenizer_files
    from bigmodel.utils.hub import default_cache_dir
    from bigmodel.tasks import ClassificationTask, MLMTask
    from bigmodel.tasks.checkpoints import resolve

    pretrained = resolve(init_from)
    if pretrained.config is None:
        raise ValueError(f"--init_from {init_from!r} has no text encoder; export an image classifier from its "
                         "checkpoint (--ckpt_path)")
    vocab_size = pretrained.config.vocab_size
    names = class_names or (pretrained.class_names if "head.classifier.weight" in pretrained.state else None)
    if not names and "head.classifier.weight" in pretrained.state:
        names = [str(i) for i in range(pretrained.state["head.classifier.weight"].shape[0])]
    torch.manual_seed(seed)
    if names:
        task = ClassificationTask(num_classes=len(names), class_names=list(names), vocab_size=vocab_size,
                                  init_from=init_from, pooling=pooling)
    elif pooling:
        raise ValueError("--pooling is the classifier's: give --class_names too")
    elif "mlm_head.bias" in pretrained.state:
        task = MLMTask(vocab_size=vocab_size, init_from=init_from)
    else:
        raise ValueError(f"--init_from {init_from!r} has no head (neither MLM nor classifier): give --class_names to "
                         "export a classifier with a new head")
    task._load_pretrained_once()
    ckpt: dict[str, Any] = {"state_dict": {f"net.{k}": v for k, v in task.net.state_dict().items()},
                            META_KEY: task.checkpoint_meta(), "hyper_parameters": dict(task.hparams)}
    if pretrained.tokenizer is not None:
        ckpt["tokenizer"] = tokenizer_files(load_tokenizer(pretrained.tokenizer, default_cache_dir()))
    rank_zero_info(f"Exporting {init_from} as loaded by {type(task).__name__}, without training")
    return ckpt


def _network_state(ckpt: dict, path: str, base: str | None) -> dict[str, torch.Tensor]:
    """``network_state``, with an adapter-only checkpoint's errors about its base naming export's option."""
    try:
        return network_state(ckpt, path, base)
    except (ValueError, FileNotFoundError) as err:
        if (ckpt.get(META_KEY) or {}).get("weights") != "trainable":
            raise
        message = str(err).replace(BASE_OPTION, "--init_from")
        if isinstance(err, FileNotFoundError):
            message += " (for this adapter-only checkpoint, give its frozen base with --init_from PATH)"
        raise type(err)(message) from err


def _read(path: str) -> dict:
    """The checkpoint, after the checks (and messages) every ``--ckpt_path`` gets."""
    meta = read_checkpoint_meta(path)
    if not meta.get("task"):
        raise ValueError(f"--ckpt_path {path!r} is not a bigmodel checkpoint (no '{META_KEY}' entry)")
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _tokenizer(ckpt: dict):
    import tempfile

    from transformers import AutoTokenizer

    files = ckpt.get("tokenizer")
    if not files:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for file_name, text in files.items():
            Path(tmp, file_name).write_text(text, encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp)


def main(args: list[str]) -> None:
    from jsonargparse import CLI

    CLI(export, args=args, as_positional=False, exit_on_error=False, prog="bigmodel export")
