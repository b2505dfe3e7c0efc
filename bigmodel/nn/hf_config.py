"""Hugging Face ``config.json`` <-> ``EncoderConfig`` for the text families bigmodel reads and writes (BERT,
RoBERTa, ModernBERT): field names, the refusals for what one side cannot express, and ModernBERT's two layouts.
The weights' names are ``nn.convert``'s."""

from __future__ import annotations

import warnings
from typing import Any

from bigmodel.nn.config import EncoderConfig

HF_TEXT_FAMILIES = ("bert", "roberta", "modernbert")
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def config_from_hf(hf: dict[str, Any]) -> EncoderConfig:
    """A Hugging Face ``config.json`` (BERT, RoBERTa or ModernBERT layout) -> this config; anything else is an
    error."""
    model_type = hf.get("model_type")
    if model_type not in HF_TEXT_FAMILIES:
        raise ValueError(f"model_type {model_type!r} is not supported; bigmodel reads "
                         f"{', '.join(HF_TEXT_FAMILIES)} checkpoints (and ViT for images)")
    if model_type == "modernbert":
        return _from_modernbert(hf)
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported "
                         "(only 'absolute')")
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"hidden_act {act!r} is not supported; bigmodel has {', '.join(HF_ACTIVATIONS)}")
    return EncoderConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
        position_offset=hf.get("pad_token_id", 1) + 1 if model_type == "roberta" else 0,
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1), attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), initializer_range=hf.get("initializer_range", 0.02),
        activation=HF_ACTIVATIONS[act], dropout_before_pooler=model_type == "roberta",
    )

def config_to_hf(config: EncoderConfig, model_type: str) -> dict[str, Any]:
    """The ``config.json`` fields of this encoder as a Hugging Face ``model_type`` (inverse of ``from_hf``)."""
    if model_type not in HF_TEXT_FAMILIES:
        raise ValueError(f"cannot write model_type {model_type!r}; choose one of {', '.join(HF_TEXT_FAMILIES)}")
    if model_type == "modernbert":
        return _to_modernbert(config)
    unlike = [name for name, ok in (("pre-LN (norm_first)", not config.norm_first), ("causal", not config.causal),
                                    (f"{config.position_embedding} positions", config.position_embedding == "learned"),
                                    ("qkv without bias", config.qkv_bias and config.bias),
                                    ("a fusion encoder (add_cross_attention)", not config.add_cross_attention),
                                    (f"a {config.feed_forward} feed-forward", config.feed_forward == "gelu"),
                                    (f"{config.norm}", config.norm == "layernorm"),
                                    ("local attention (sliding_window)", config.sliding_window is None),
                                    (f"a {config.pooler} pooler over {config.classifier_pooling}",
                                     config.pooler == "tanh" and config.classifier_pooling == "cls"),
                                    ) if not ok]
    if unlike:
        raise ValueError(f"this encoder has no {model_type} equivalent: it is {', '.join(unlike)}")
    act = {v: k for k, v in HF_ACTIVATIONS.items()}[config.activation]
    out = {
        "model_type": model_type, "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size, "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size, "hidden_dropout_prob": config.hidden_dropout,
        "attention_probs_dropout_prob": config.attention_dropout, "layer_norm_eps": config.layer_norm_eps,
        "initializer_range": config.initializer_range, "hidden_act": act,
    }
    if model_type == "roberta":
        out["pad_token_id"] = config.position_offset - 1
    return out

def _from_modernbert(hf: dict[str, Any]) -> EncoderConfig:
    """ModernBERT's ``config.json``, in transformers 5's layout (``layer_types``, ``rope_parameters``) or the
    older one on the Hub (``global_attn_every_n_layers``, ``global_rope_theta``/``local_rope_theta``)."""
    layers = hf["num_hidden_layers"]
    every = hf.get("global_attn_every_n_layers", 3)
    kinds = hf.get("layer_types") or ["sliding_attention" if i % every else "full_attention" for i in range(layers)]
    global_layers = [i for i, kind in enumerate(kinds) if kind == "full_attention"]
    every = global_layers[1] if len(global_layers) > 1 else layers
    if kinds != ["sliding_attention" if i % every else "full_attention" for i in range(layers)]:
        raise ValueError(f"layer_types {kinds} is not 'every n-th layer global, from layer 0'; bigmodel's "
                         "global_attention_every cannot express it")
    local = len(global_layers) < layers
    window = _modernbert_window(hf.get("local_attention", 128)) if local else None
    rope = hf.get("rope_parameters") or {}
    theta = (rope.get("full_attention") or {}).get("rope_theta", hf.get("global_rope_theta", 160_000.0))
    local_theta = (rope.get("sliding_attention") or {}).get("rope_theta", hf.get("local_rope_theta", 10_000.0))
    if any(p.get("rope_type", "default") != "default" for p in rope.values() if p):
        raise ValueError("only default RoPE is supported (no rope scaling)")
    biases = {k: hf.get(k, False) for k in ("attention_bias", "mlp_bias", "norm_bias", "classifier_bias")}
    if len(set(biases.values())) > 1 or not hf.get("decoder_bias", True):
        raise ValueError(f"biases {biases} (decoder_bias {hf.get('decoder_bias')}) differ; bigmodel has one "
                         "switch for all of them (bias) and always a decoder bias")
    placed = {k: hf.get(k, 0.0) for k in ("embedding_dropout", "attention_dropout", "mlp_dropout")}
    if any(placed.values()):  # the published checkpoints have none
        warnings.warn(f"ModernBERT dropouts {placed} are placed differently here (training only; evaluation is "
                      f"exact): hidden_dropout {placed['embedding_dropout']} on the embeddings and both "
                      f"residual branches, attention_dropout on the probabilities only, no dropout inside the "
                      f"feed-forward; set encoder_config's hidden_dropout/attention_dropout to choose", stacklevel=4)
    act, head_act = hf.get("hidden_activation", "gelu"), hf.get("classifier_activation", "gelu")
    if head_act not in HF_ACTIVATIONS or (act != head_act and act not in ("silu", "swish")):
        raise ValueError(f"hidden_activation {act!r} with classifier_activation {head_act!r} is not supported: "
                         f"GeGLU and the heads share one of {', '.join(HF_ACTIVATIONS)} (or SwiGLU: silu)")
    return EncoderConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=layers,
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=0, position_embedding="rope",
        rope_theta=float(theta), local_rope_theta=float(local_theta), norm_first=True, first_attn_norm=False,
        bias=biases["attention_bias"], feed_forward="swiglu" if act in ("silu", "swish") else "geglu",
        activation=HF_ACTIVATIONS[head_act], sliding_window=window,
        global_attention_every=every, hidden_dropout=hf.get("embedding_dropout", 0.0),
        attention_dropout=hf.get("attention_dropout", 0.0), layer_norm_eps=hf.get("norm_eps", 1e-5),
        initializer_range=hf.get("initializer_range", 0.02), pooler="transform",
        classifier_pooling=hf.get("classifier_pooling", "cls"),
    )


def _modernbert_window(local_attention: int) -> int:
    """transformers' local layers see keys within ``local_attention // 2`` on each side, so an odd window is the even
    one below it (the same attention); bigmodel's ``sliding_window`` is always even."""
    if local_attention < 2:
        raise ValueError(f"local_attention {local_attention} lets a local layer see no key but its own token; "
                         "bigmodel's smallest window is 2 (one key each side)")
    return local_attention - local_attention % 2


def _to_modernbert(config: EncoderConfig) -> dict[str, Any]:
    unlike = [name for name, ok in (("post-LN", config.norm_first), ("causal", not config.causal),
                                    (f"{config.position_embedding} positions", config.position_embedding == "rope"),
                                    ("a norm in layer 0 (first_attn_norm)", not config.first_attn_norm),
                                    ("a plain (non-GLU) feed-forward", config.feed_forward != "gelu"),
                                    (f"{config.norm}", config.norm == "layernorm"),
                                    ("qkv without bias", config.qkv_bias or not config.bias),
                                    ("token types", config.type_vocab_size == 0),
                                    ("a fusion encoder (add_cross_attention)", not config.add_cross_attention),
                                    ("BERT's tanh pooler", config.pooler == "transform"),
                                    ) if not ok]
    if unlike:
        raise ValueError(f"this encoder has no modernbert equivalent: it is {', '.join(unlike)}")
    act = {v: k for k, v in HF_ACTIVATIONS.items()}[config.activation]
    kinds = ["full_attention" if config.is_global(i) else "sliding_attention" for i in range(config.num_layers)]
    local_theta = config.rope_theta if config.local_rope_theta is None else config.local_rope_theta
    return {
        "model_type": "modernbert", "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size, "max_position_embeddings": config.max_position_embeddings,
        "hidden_activation": "silu" if config.feed_forward == "swiglu" else act, "classifier_activation": act,
        "norm_eps": config.layer_norm_eps, "norm_bias": config.bias, "attention_bias": config.bias,
        "mlp_bias": config.bias, "classifier_bias": config.bias, "decoder_bias": True, "layer_types": kinds,
        "local_attention": config.sliding_window or 128,
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": config.rope_theta},
                            "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}},
        "embedding_dropout": config.hidden_dropout, "attention_dropout": config.attention_dropout,
        "initializer_range": config.initializer_range, "classifier_pooling": config.classifier_pooling,
        # the tokenizer's, set by export when it has one (ModernBERT's defaults lie outside a smaller vocabulary)
        "pad_token_id": None, "bos_token_id": None, "eos_token_id": None, "cls_token_id": None,
        "sep_token_id": None,
    }
