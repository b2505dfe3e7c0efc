"""Encoder configuration and named presets (looked up by name, like litgpt's ``Config.from_name``).

Field names follow Hugging Face's ``BertConfig`` where an idea is shared, so that published BERT/ViT configs map
onto this dataclass one to one (``EncoderConfig.from_hf`` / ``to_hf``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal


# fields a pretrained encoder's config may change (they leave every weight as it is)
TRAINING_FIELDS = ("hidden_dropout", "attention_dropout", "activation_checkpointing")


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    position_offset: int = 0  # learned positions start at this row (RoBERTa: its padding index + 1 = 2)
    type_vocab_size: int = 2
    position_embedding: Literal["learned", "sinusoidal"] = "learned"
    norm_first: bool = False  # False: post-LN (BERT); True: pre-LN (ViT, GPT-2) with a final LayerNorm
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    activation: Literal["gelu", "gelu_tanh"] = "gelu"
    causal: bool = False
    # every block gets a cross-attention sublayer (between self-attention and FFN) over another sequence's hidden
    # states, passed as ``context=``: a fusion encoder (Hugging Face's name for the same field)
    add_cross_attention: bool = False
    qkv_bias: bool = True
    # training only (not architecture): recompute each block's activations in the backward pass instead of keeping
    # them -- memory ~ one block's activations instead of every block's, for about one more forward per step
    activation_checkpointing: bool = False
    # images (ignored by text models): a ViT cuts image_size x image_size inputs into patch_size patches
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "choose num_heads that divides hidden_size"
            )
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "EncoderConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown encoder preset {name!r}; choose one of: {', '.join(PRESETS)}")
        return PRESETS[name].replace(**overrides)

    def replace(self, **overrides: Any) -> "EncoderConfig":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown encoder field(s) {unknown}; valid fields: {', '.join(sorted(known))}")
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
        return cls().replace(**d)

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "EncoderConfig":
        """A Hugging Face ``config.json`` (BERT or RoBERTa layout) -> this config; anything else is an error."""
        model_type = hf.get("model_type")
        if model_type not in HF_TEXT_FAMILIES:
            raise ValueError(f"model_type {model_type!r} is not supported; bigmodel reads "
                             f"{', '.join(HF_TEXT_FAMILIES)} checkpoints (and ViT for images)")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported "
                             "(only 'absolute')")
        act = hf.get("hidden_act", "gelu")
        if act not in HF_ACTIVATIONS:
            raise ValueError(f"hidden_act {act!r} is not supported; bigmodel has {', '.join(HF_ACTIVATIONS)}")
        return cls(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
            position_offset=hf.get("pad_token_id", 1) + 1 if model_type == "roberta" else 0,
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1), attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12), initializer_range=hf.get("initializer_range", 0.02),
            activation=HF_ACTIVATIONS[act],
        )

    def to_hf(self, model_type: str) -> dict[str, Any]:
        """The ``config.json`` fields of this encoder as a Hugging Face ``model_type`` (inverse of ``from_hf``)."""
        if model_type not in HF_TEXT_FAMILIES:
            raise ValueError(f"cannot write model_type {model_type!r}; choose one of {', '.join(HF_TEXT_FAMILIES)}")
        unlike = [name for name, ok in (("pre-LN (norm_first)", not self.norm_first), ("causal", not self.causal),
                                        ("sinusoidal positions", self.position_embedding == "learned"),
                                        ("qkv without bias", self.qkv_bias),
                                        ("a fusion encoder (add_cross_attention)", not self.add_cross_attention),
                                        ) if not ok]
        if unlike:
            raise ValueError(f"this encoder has no {model_type} equivalent: it is {', '.join(unlike)}")
        act = {v: k for k, v in HF_ACTIVATIONS.items()}[self.activation]
        out = {
            "model_type": model_type, "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size, "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size, "hidden_dropout_prob": self.hidden_dropout,
            "attention_probs_dropout_prob": self.attention_dropout, "layer_norm_eps": self.layer_norm_eps,
            "initializer_range": self.initializer_range, "hidden_act": act,
        }
        if model_type == "roberta":
            out["pad_token_id"] = self.position_offset - 1
        return out


HF_TEXT_FAMILIES = ("bert", "roberta")
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def _bert(layers: int, hidden: int, heads: int) -> EncoderConfig:
    return EncoderConfig(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden)


def _vit(layers: int, hidden: int, heads: int, image_size: int = 224, patch_size: int = 16) -> EncoderConfig:
    return EncoderConfig(
        num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden, norm_first=True,
        layer_norm_eps=1e-6, hidden_dropout=0.0, attention_dropout=0.0, type_vocab_size=0,
        image_size=image_size, patch_size=patch_size,
    )


# The BERT family of Turc et al. (2019, "Well-Read Students Learn Better") plus the original base/large.
PRESETS: dict[str, EncoderConfig] = {
    "bert-tiny": _bert(2, 128, 2),
    "bert-mini": _bert(4, 256, 4),
    "bert-small": _bert(4, 512, 8),
    "bert-medium": _bert(8, 512, 8),
    "bert-base": _bert(12, 768, 12),
    "bert-large": _bert(24, 1024, 16),
    # ViT (Dosovitskiy et al., 2021; DeiT sizes): 224px images, 16px patches
    "vit-tiny": _vit(12, 192, 3),
    "vit-small": _vit(12, 384, 6),
    "vit-base": _vit(12, 768, 12),
    # CIFAR-shaped: 32px images, 4px patches (64 patches); patch 16 on 32px reaches only ~51% from scratch
    "vit-cifar-tiny": _vit(6, 192, 3, image_size=32, patch_size=4),
    "vit-cifar-small": _vit(8, 384, 6, image_size=32, patch_size=4),
}
