"""The ViT half of ``bigmodel export``: a ViT image classifier's Hugging Face config, its weights at the image size
it was trained on, and its image processor (``preprocessor_config.json``) from the preprocessing its checkpoint
records."""

from __future__ import annotations

from pathlib import Path

import torch


def at_image_size(state: dict[str, torch.Tensor], hf_config: dict, size: int) -> tuple[dict[str, torch.Tensor], str]:
    """A ViT trained on images of another size than it was built for (data ``image_size``) had its position grid
    resampled at every step: exported with that grid (the same ``resample_position_embeddings``) and this
    ``image_size``, transformers runs it on the processor's images as bigmodel did, with no
    ``interpolate_pos_encoding``. Returns the state and a note (empty when the sizes agree); ``hf_config`` is
    updated."""
    from bigmodel.nn import resample_position_embeddings

    built, patch = hf_config["image_size"], hf_config["patch_size"]
    if size == built:
        return state, ""
    if size % patch:
        raise ValueError(f"the recorded image size {size} is not a multiple of the ViT's patch_size {patch}")
    key, grid = "encoder.embeddings.position_embeddings", size // patch
    hf_config["image_size"] = size
    return ({**state, key: resample_position_embeddings(state[key], (grid, grid))},
            f"position embeddings resampled (bicubic, as bigmodel does at run time) from the {built} px it was built "
            f"for to the {size} px images it was trained on: config.json's image_size is {size}")


def save_image_processor(preprocessing: dict | None, target: Path) -> list[str]:
    """``preprocessor_config.json`` (transformers' ``ViTImageProcessor``) with the evaluation preprocessing the
    checkpoint records (``ImageDataModule.eval_preprocessing``): resize (bilinear, antialiased), /255, mean/std.
    With its default torchvision backend it gives bigmodel's inputs to float precision. Returns notes for the
    export line: grey images, or why no file was written."""
    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    if not preprocessing:
        return ["no preprocessor_config.json: the checkpoint does not record the image size and normalisation it "
                "was trained with (written without an ImageDataModule, or before bigmodel recorded them), so "
                "AutoImageProcessor cannot load this directory; write one with transformers.ViTImageProcessor(size="
                "..., image_mean=..., image_std=...).save_pretrained(out)"]
    size, grey = preprocessing["image_size"], preprocessing["num_channels"] == 1
    ViTImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=PILImageResampling.BILINEAR,
                      do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                      image_mean=list(preprocessing["mean"]), image_std=list(preprocessing["std"]),
                      do_convert_rgb=not grey).save_pretrained(target)
    return ["the model reads 1-channel images, and transformers does not convert colour to grey: give the processor "
            "grey PIL images (mode 'L', as bigmodel predict reads files) and pipeline() (1, H, W) arrays (it makes "
            "PIL images and files RGB)"] if grey else []


def vit_config(ckpt: dict, meta: dict) -> dict:
    """transformers' ``ViTConfig`` fields of the checkpoint's ViT, rebuilt from its recorded backbone; a ViT that
    transformers' layout cannot hold is refused."""
    from bigmodel.tasks.backbones import build_backbone

    backbone = ckpt.get("hyper_parameters", {}).get("backbone")
    if not isinstance(backbone, dict):
        raise ValueError("the checkpoint does not say how its ViT was built (hyper_parameters.backbone)")
    net = build_backbone(backbone, len(meta.get("class_names") or [0, 1]))
    c = net.config
    if c.position_embedding != "learned" or not c.norm_first or net.encoder.embeddings.stem is not None:
        raise ValueError("this ViT has no Hugging Face ViT equivalent (learned positions and pre-LN are needed, and "
                         "no convolutional stem)")
    return {"model_type": "vit", "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads, "intermediate_size": c.intermediate_size,
            "hidden_act": {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}[c.activation],
            "hidden_dropout_prob": c.hidden_dropout, "attention_probs_dropout_prob": c.attention_dropout,
            "layer_norm_eps": c.layer_norm_eps, "initializer_range": c.initializer_range, "image_size": c.image_size,
            "patch_size": c.patch_size, "num_channels": c.num_channels, "qkv_bias": c.qkv_bias}
