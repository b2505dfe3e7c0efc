"""Weights trained elsewhere, at the model level: Hugging Face <-> bigmodel parameter names (one table per family,
read in both directions), and ``load_matching``, which loads whatever fits a classifier and gives it a new output
layer when the class count differs. Finding and reading the files (a checkpoint, a Hugging Face directory, a hub
name, a state-dict file) is ``bigmodel.tasks.checkpoints``'s job, the one resolver ``init_from`` goes through.

A table row pairs a Hugging Face name with ours (``{i}`` stands for a layer number). Hugging Face keeps query, key
and value apart; bigmodel fuses them into one ``qkv`` (concatenated on import, split on export). Adding a family
means adding a table here; nothing else knows Hugging Face's names.
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

Table = list[tuple[str, str]]

# The transformer layers of BERT, RoBERTa and ViT share names; BERT/RoBERTa's post-LN norms sit in
# attention.output/output, ViT's pre-LN norms are layernorm_before/after.
_LAYERS: Table = [
    ("encoder.layer.{i}.attention.output.dense.", "encoder.layers.{i}.attn.proj."),
    ("encoder.layer.{i}.intermediate.dense.", "encoder.layers.{i}.ffn.up."),
    ("encoder.layer.{i}.output.dense.", "encoder.layers.{i}.ffn.down."),
]
_POST_LN: Table = [
    ("encoder.layer.{i}.attention.output.LayerNorm.", "encoder.layers.{i}.attn_norm."),
    ("encoder.layer.{i}.output.LayerNorm.", "encoder.layers.{i}.ffn_norm."),
]
_TEXT_EMBEDDINGS: Table = [
    ("embeddings.word_embeddings.", "encoder.embeddings.word_embeddings."),
    ("embeddings.position_embeddings.", "encoder.embeddings.position_embeddings."),
    ("embeddings.token_type_embeddings.", "encoder.embeddings.token_type_embeddings."),
    ("embeddings.LayerNorm.", "encoder.embeddings.norm."),
]
TABLES: dict[str, Table] = {
    "bert": _TEXT_EMBEDDINGS + _LAYERS + _POST_LN + [
        ("pooler.dense.", "head.pooler.dense."),
        ("classifier.", "head.classifier."),
        ("cls.predictions.transform.dense.", "mlm_head.dense."),
        ("cls.predictions.transform.LayerNorm.", "mlm_head.norm."),
        ("cls.predictions.bias", "mlm_head.bias"),
    ],
    # RobertaForSequenceClassification's head (dense -> tanh -> out_proj on <s>) is BERT's pooler + classifier
    "roberta": _TEXT_EMBEDDINGS + _LAYERS + _POST_LN + [
        ("classifier.dense.", "head.pooler.dense."),  # first: what an exported classifier is written as
        ("pooler.dense.", "head.pooler.dense."),
        ("classifier.out_proj.", "head.classifier."),
        ("lm_head.dense.", "mlm_head.dense."),
        ("lm_head.layer_norm.", "mlm_head.norm."),
        ("lm_head.bias", "mlm_head.bias"),
    ],
    # ModernBERT's Wqkv has bigmodel's fused layout (q, k, v stacked); its Wi gives both GLU halves as our ffn.up.
    # ForMaskedLM's "head." is the MLM transform; ForSequenceClassification's is the pooler (see _MODERNBERT_CLS).
    "modernbert": [
        ("embeddings.tok_embeddings.", "encoder.embeddings.word_embeddings."),
        ("embeddings.norm.", "encoder.embeddings.norm."),
        ("layers.{i}.attn_norm.", "encoder.layers.{i}.attn_norm."),
        ("layers.{i}.attn.Wqkv.", "encoder.layers.{i}.attn.qkv."),
        ("layers.{i}.attn.Wo.", "encoder.layers.{i}.attn.proj."),
        ("layers.{i}.mlp_norm.", "encoder.layers.{i}.ffn_norm."),
        ("layers.{i}.mlp.Wi.", "encoder.layers.{i}.ffn.up."),
        ("layers.{i}.mlp.Wo.", "encoder.layers.{i}.ffn.down."),
        ("final_norm.", "encoder.final_norm."),
        ("decoder.bias", "mlm_head.bias"),  # before "head.": in reverse, mlm_head.bias would match it
        ("head.", "mlm_head."),
    ],
    "vit": _LAYERS + [
        ("embeddings.patch_embeddings.projection.", "encoder.embeddings.proj."),
        ("embeddings.cls_token", "encoder.embeddings.cls_token"),
        ("embeddings.position_embeddings", "encoder.embeddings.position_embeddings"),
        ("encoder.layer.{i}.layernorm_before.", "encoder.layers.{i}.attn_norm."),
        ("encoder.layer.{i}.layernorm_after.", "encoder.layers.{i}.ffn_norm."),
        ("layernorm.", "encoder.final_norm."),
        ("classifier.", "head."),
    ],
}
_MODERNBERT_CLS: Table = [("classifier.", "head.classifier."), ("head.", "head.pooler.")]
# Prefix of the body in Hugging Face's task models (BertForMaskedLM: bert.embeddings..., cls.predictions...).
BODY_PREFIX = {"bert": "bert.", "roberta": "roberta.", "modernbert": "model.", "vit": "vit."}
_BODY = ("embeddings.", "encoder.", "pooler.", "layernorm.", "layers.", "final_norm.")
# Not parameters of bigmodel: position id buffers, decoders tied to the word embeddings, ViT's unused pooler.
# BERT's next-sentence head (cls.seq_relationship, in bert-base-uncased's files) has no use here either.
_DROP = re.compile(r"(position_ids|token_type_ids)$|^(cls\.predictions\.decoder\.|lm_head\.decoder\.|pooler\.|"
                   r"cls\.seq_relationship\.|decoder\.weight$)")
_DECODER = re.compile(r"^(cls\.predictions\.decoder\.|lm_head\.decoder\.|decoder\.)weight$")
_QKV_HF = re.compile(r"^encoder\.layer\.(\d+)\.attention\.(?:self|attention)\.(query|key|value)\.(weight|bias)$")
_QKV_OURS = re.compile(r"^encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$")


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)"))


def _rename(key: str, table: Table, reverse: bool) -> str | None:
    for hf, ours in table:
        source, target = (ours, hf) if reverse else (hf, ours)
        m = _pattern(source).match(key)
        if m:
            head = target.replace("{i}", m["i"]) if "{i}" in target else target
            return head + key[m.end():]
    return None


def _table(family: str, classifier: bool) -> Table:
    """The family's table; a ModernBERT classifier's ``head.`` is its pooler, not the MLM transform."""
    return _MODERNBERT_CLS + TABLES[family] if family == "modernbert" and classifier else TABLES[family]


def from_hf(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """Hugging Face state dict (a base model or any of its task models) -> bigmodel names."""
    prefix = BODY_PREFIX[family]
    table = _table(family, "classifier.weight" in state)
    if family == "vit":
        state = {_vit_v5_to_file(k.removeprefix(prefix)): v for k, v in state.items()}
    if family == "roberta" and any(k.startswith("classifier.dense.") for k in state):
        # some RobertaForSequenceClassification files also carry the base model's unused pooler
        state = {k: v for k, v in state.items() if not k.removeprefix(prefix).startswith("pooler.")}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    decoder = None
    for key, value in state.items():
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias",
                                                                     key.removeprefix(prefix)))  # TF-era names
        m = _QKV_HF.match(key)
        if m:
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
            continue
        if _DECODER.match(key):
            decoder = value
        if _DROP.search(key) and not (family != "vit" and key.startswith("pooler.")):
            continue
        name = _rename(key, table, reverse=False)
        if name is None:
            raise KeyError(f"no bigmodel name for the {family} parameter {key!r}")
        if name in out:
            raise KeyError(f"two {family} parameters map to bigmodel's {name!r} (the second: {key!r})")
        out[name] = value
    for (layer, kind), parts in qkv.items():
        out[f"encoder.layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return _without_untied_mlm_head(out, decoder, family)


def _without_untied_mlm_head(out: dict[str, torch.Tensor], decoder: torch.Tensor | None,
                             family: str) -> dict[str, torch.Tensor]:
    """bigmodel's MLM head decodes with the word embeddings; a source whose decoder is a matrix of its own
    (``tie_word_embeddings: false``) would predict other logits through them, so its MLM head is left out (a new one
    is trained) and said, rather than loaded wrong."""
    embeddings = out.get("encoder.embeddings.word_embeddings.weight")
    if decoder is None or embeddings is None or torch.equal(decoder, embeddings):
        return out
    warnings.warn(f"this {family} checkpoint's MLM decoder is not tied to its word embeddings (tie_word_embeddings: "
                  "false), and bigmodel's MLM head decodes with them: its MLM head is not read (a masked-LM task "
                  "trains a new one; other tasks never use it)", stacklevel=3)
    return {k: v for k, v in out.items() if not k.startswith("mlm_head.")}


def to_hf(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """bigmodel names -> the Hugging Face task model's names (body under ``bert.``/``roberta.``/``model.``/``vit.``,
    heads at the top). Tied decoder weights are left to ``transformers``, which ties them on load."""
    prefix, table = BODY_PREFIX[family], _table(family, "head.classifier.weight" in state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _QKV_OURS.match(key)
        if m and family != "modernbert":  # ModernBERT keeps q, k, v fused as bigmodel does
            attention = "attention" if family == "vit" else "self"
            for part, chunk in zip(("query", "key", "value"), value.chunk(3)):
                out[f"{prefix}encoder.layer.{m[1]}.attention.{attention}.{part}.{m[2]}"] = chunk.clone()
            continue
        name = _rename(key, table, reverse=True)
        if name is None:
            raise KeyError(f"no {family} name for the bigmodel parameter {key!r}")
        out[prefix + name if name.startswith(_BODY) else name] = value
    return out


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


def _vit_v5_to_file(key: str) -> str:
    for pattern, repl in _VIT_V5_TO_FILE:
        key = re.sub(pattern, repl, key)
    return key


def is_hf_vit(state: dict[str, torch.Tensor]) -> bool:
    return any(k.removeprefix("vit.").startswith("embeddings.patch_embeddings.") for k in state)


def convert_hf_bert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``BertModel``/``BertForMaskedLM``/``BertForSequenceClassification`` keys -> bigmodel keys."""
    return from_hf(state, "bert")


def convert_hf_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``ViTModel``/``ViTForImageClassification`` keys, as saved on the Hub or as named in a live transformers 5
    model, -> ``VisionTransformer`` keys (the pooler is dropped: not part of the original ViT, unused here)."""
    return from_hf(state, "vit")


def load_matching(net: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Loads ``state`` into ``net``; the output layer (the last registered weight and bias) may differ in shape or
    be absent and then stays new. Returns notes on what was adapted."""
    own = net.state_dict()
    output = list(own)[-2:]
    reshaped = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    wrong = [k for k in reshaped if k not in output]
    name = type(net).__name__
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"weights do not fit {name}: {k} is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here; build the "
            "backbone as the checkpoint's was (preset, width, patch size, channels)"
        )
    missing, unexpected = net.load_state_dict({k: v for k, v in state.items() if k not in reshaped}, strict=False)
    new_output = [k for k in missing if k in output] + [k for k in reshaped if k in output]
    missing = [k for k in missing if k not in output and ".lora_" not in k]  # LoRA updates are never in a source
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit {name}: unexpected {unexpected[:3]}, missing {missing[:3]}; build the backbone as "
            "the checkpoint's was"
        )
    if not new_output:
        return []
    before = f" (checkpoint: {tuple(state[output[0]].shape)})" if output[0] in state else ""
    return [f"new output layer {output[0].rsplit('.', 1)[0]} for {own[output[0]].shape[0]} classes{before}"]
