"""Map Hugging Face BERT and ViT state dicts onto bigmodel's module names (the one place that knows both)."""

from __future__ import annotations

import re

import torch

# Transformer layers are named alike in HF BERT and ViT; BERT's post-LN norms sit in attention.output/output,
# ViT's pre-LN norms are layernorm_before/after.
_LAYER_RENAMES = [
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"encoder.layers.\1.attn_norm."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"encoder.layers.\1.attn_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.layers.\1.ffn.up."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.layers.\1.ffn.down."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"encoder.layers.\1.ffn_norm."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"encoder.layers.\1.ffn_norm."),
]
_BERT_RENAMES = [
    (r"^embeddings\.LayerNorm\.", "encoder.embeddings.norm."),
    (r"^embeddings\.", "encoder.embeddings."),
    *_LAYER_RENAMES,
    (r"^pooler\.dense\.", "head.pooler.dense."),
    (r"^cls\.predictions\.transform\.dense\.", "mlm_head.dense."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "mlm_head.norm."),
    (r"^cls\.predictions\.bias$", "mlm_head.bias"),
]
_VIT_RENAMES = [
    (r"^embeddings\.patch_embeddings\.projection\.", "encoder.embeddings.proj."),
    (r"^embeddings\.(cls_token|position_embeddings)$", r"encoder.embeddings.\1"),
    *_LAYER_RENAMES,
    (r"^layernorm\.", "encoder.final_norm."),
    (r"^classifier\.", "head."),
]
_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.(?:self|attention)\.(query|key|value)\.(weight|bias)$")


def _convert(state: dict[str, torch.Tensor], renames: list[tuple[str, str]], drop: tuple[str, ...]) -> dict:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _QKV.match(key)
        if m:
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
            continue
        if key.endswith("position_ids") or key.startswith(drop):
            continue
        for pattern, repl in renames:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise KeyError(f"no bigmodel name for Hugging Face key {key!r}")
    for (layer, kind), parts in qkv.items():
        out[f"encoder.layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def convert_hf_bert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``BertModel``/``BertForMaskedLM`` keys -> ``MaskedLanguageModel``/``SequenceClassifier`` keys.

    Separate query/key/value projections are concatenated into the fused ``qkv``; position_ids buffers and the
    tied decoder weight (it is the word embedding) are dropped.
    """
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    return _convert(state, _BERT_RENAMES, drop=("cls.predictions.decoder.",))


# transformers >= 5 names a live ViT's modules differently from the files on the Hub; map them to the file names.
_VIT_V5_TO_FILE = [
    (r"^layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"^layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"^layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
]


def is_hf_vit(state: dict[str, torch.Tensor]) -> bool:
    return any(k.removeprefix("vit.").startswith("embeddings.patch_embeddings.") for k in state)


def convert_hf_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``ViTModel``/``ViTForImageClassification`` keys, as saved on the Hub or as named in a live transformers 5
    model, -> ``VisionTransformer`` keys (the pooler is dropped: not part of the original ViT, unused here)."""
    state = {k.removeprefix("vit."): v for k, v in state.items()}
    for pattern, repl in _VIT_V5_TO_FILE:
        state = {re.sub(pattern, repl, k): v for k, v in state.items()}
    return _convert(state, _VIT_RENAMES, drop=("pooler.",))
