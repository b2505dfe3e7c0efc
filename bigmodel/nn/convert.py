"""Map Hugging Face BERT state dicts onto bigmodel's module names (the one place that knows both)."""

from __future__ import annotations

import re

import torch

_BERT_RENAMES = [
    (r"^embeddings\.LayerNorm\.", "encoder.embeddings.norm."),
    (r"^embeddings\.", "encoder.embeddings."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"encoder.layers.\1.attn_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.layers.\1.ffn.up."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.layers.\1.ffn.down."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"encoder.layers.\1.ffn_norm."),
    (r"^pooler\.dense\.", "head.pooler.dense."),
    (r"^cls\.predictions\.transform\.dense\.", "mlm_head.dense."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "mlm_head.norm."),
    (r"^cls\.predictions\.bias$", "mlm_head.bias"),
]


def convert_hf_bert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``BertModel``/``BertForMaskedLM`` keys -> ``MaskedLanguageModel``/``SequenceClassifier`` keys.

    Separate query/key/value projections are concatenated into the fused ``qkv``; position_ids buffers and the
    tied decoder weight (it is the word embedding) are dropped.
    """
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.match(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$", key)
        if m:
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
            continue
        if key.endswith("position_ids") or key in {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}:
            continue
        for pattern, repl in _BERT_RENAMES:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise KeyError(f"no bigmodel name for Hugging Face key {key!r}")
    for (layer, kind), parts in qkv.items():
        out[f"encoder.layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out
