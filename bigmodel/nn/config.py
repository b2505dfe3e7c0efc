"""Encoder configuration and named presets (looked up by name, like litgpt's ``Config.from_name``).

Field names follow Hugging Face's ``BertConfig`` where an idea is shared, so that published BERT/ViT configs map
onto this dataclass one to one (see ``EncoderConfig.from_hf``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    position_embedding: Literal["learned", "sinusoidal"] = "learned"
    norm_first: bool = False  # False: post-LN (BERT); True: pre-LN (ViT, GPT-2) with a final LayerNorm
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    activation: Literal["gelu", "gelu_tanh"] = "gelu"
    causal: bool = False
    qkv_bias: bool = True
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
