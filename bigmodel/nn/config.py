"""Encoder configuration and named presets (looked up by name, like litgpt's ``Config.from_name``).

Field names follow Hugging Face's ``BertConfig`` where an idea is shared, so that published BERT/ViT configs map
onto this dataclass one to one (``EncoderConfig.from_hf`` / ``to_hf``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal


# fields a pretrained encoder's config may change (they leave every weight as it is)
TRAINING_FIELDS = ("hidden_dropout", "attention_dropout", "dropout_before_pooler", "activation_checkpointing", "unpad")
# fields no weight of a rotary-position encoder depends on: continuing at a longer context with a new theta (context
# extension, ModernBERT's 1k -> 8k stage) changes only these; learned positions are a table of that many rows
CONTEXT_FIELDS = ("max_position_embeddings", "rope_theta", "local_rope_theta")


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
    # rope: no position embedding; q and k of self-attention rotated by position (Su et al., 2021), theta the base
    position_embedding: Literal["learned", "sinusoidal", "rope"] = "learned"
    rope_theta: float = 10000.0  # of the global (full-attention) layers
    local_rope_theta: float | None = None  # of the sliding-window layers (ModernBERT: 10,000 vs 160,000); None: same
    norm_first: bool = False  # False: post-LN (BERT); True: pre-LN (ViT, GPT-2) with a final norm
    # False (pre-norm only): layer 0 attends to the embedding norm's output as is, without a norm of its own (ModernBERT)
    first_attn_norm: bool = True
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    bias: bool = True  # False: no bias in any linear layer or norm of the encoder and heads (ModernBERT)
    # gelu: up -> activation -> down (BERT); geglu/swiglu: up gives two halves a, b -> act(a) * b -> down, the act
    # being ``activation`` (GeGLU) or SiLU (SwiGLU); up is then 2 x intermediate_size wide (Shazeer, 2020)
    feed_forward: Literal["gelu", "geglu", "swiglu"] = "gelu"
    # local attention: every layer i with i % global_attention_every != 0 sees only keys within sliding_window // 2
    # positions on either side (ModernBERT's local_attention: 128 = 64 each side); None: every layer global
    sliding_window: int | None = None
    global_attention_every: int = 1
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
    # sequence classification: which state is pooled ([CLS] or the mean over real tokens) and how it is transformed
    # before the classifier: tanh(dense) (BERT's pooler) or dense -> activation -> norm (ModernBERT's head)
    classifier_pooling: Literal["cls", "mean"] = "cls"
    pooler: Literal["tanh", "transform"] = "tanh"
    # training only: the classifier's dropout also on the pooled state before the pooler's dense, as RoBERTa's head
    # (dropout -> dense -> tanh -> dropout -> out_proj; set by from_hf for RoBERTa); False: BERT's (dense -> tanh ->
    # dropout -> classifier)
    dropout_before_pooler: bool = False
    # training only (not architecture): recompute each block's activations in the backward pass instead of keeping
    # them -- memory ~ one block's activations instead of every block's, for about one more forward per step
    activation_checkpointing: bool = False
    # execution only (not architecture): with padding, embeddings, projections, FFN and norms run on the real tokens
    # alone and attention on each sequence's keys (ModernBERT's unpad/pad around the model); the same outputs. Finding
    # the real tokens (nonzero) reads the mask back on the host each forward, and compiled graphs see a new token count
    # per batch: for eager runs with much padding
    unpad: bool = False
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
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "global_attention_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.position_embedding == "rope" and self.head_dim % 2:
            raise ValueError(f"rope rotates pairs of dimensions: head_dim {self.head_dim} must be even; change "
                             "hidden_size or num_heads")
        if self.sliding_window is not None and (self.sliding_window < 2 or self.sliding_window % 2):
            raise ValueError(f"sliding_window {self.sliding_window} must be an even number >= 2 (the whole window: "
                             "sliding_window // 2 keys on each side); use None for global attention everywhere")
        if not self.first_attn_norm and not self.norm_first:
            raise ValueError("first_attn_norm: false is for pre-norm encoders; set norm_first: true")
        if self.position_offset and self.position_embedding == "sinusoidal":
            raise ValueError(f"position_offset {self.position_offset} is where RoBERTa's learned positions start; "
                             "sinusoidal positions start at 0: set position_offset: 0")

    def is_global(self, layer: int) -> bool:
        """Whether ``layer`` attends to the whole sequence (ModernBERT: layer i is global when i % every == 0)."""
        return self.sliding_window is None or layer % self.global_attention_every == 0

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
        """A Hugging Face ``config.json`` (BERT, RoBERTa or ModernBERT layout) -> this config (``nn.hf_config``)."""
        from bigmodel.nn.hf_config import config_from_hf
        return config_from_hf(hf)

    @property
    def hf_family(self) -> str:
        """The Hugging Face text family that holds this encoder as it is: ``modernbert`` for rotary positions,
        ``roberta`` for a position offset, else ``bert`` (what ``export`` writes by default)."""
        return "modernbert" if self.position_embedding == "rope" else "roberta" if self.position_offset else "bert"

    def to_hf(self, model_type: str) -> dict[str, Any]:
        """The ``config.json`` fields of this encoder as a Hugging Face ``model_type`` (``nn.hf_config``)."""
        from bigmodel.nn.hf_config import config_to_hf
        return config_to_hf(self, model_type)


def _bert(layers: int, hidden: int, heads: int) -> EncoderConfig:
    return EncoderConfig(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden)


def _vit(layers: int, hidden: int, heads: int, image_size: int = 224, patch_size: int = 16) -> EncoderConfig:
    return EncoderConfig(
        num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden, norm_first=True,
        layer_norm_eps=1e-6, hidden_dropout=0.0, attention_dropout=0.0, type_vocab_size=0,
        image_size=image_size, patch_size=patch_size,
    )


def _modernbert(layers: int, hidden: int, heads: int, intermediate: int, max_positions: int = 8192,
                global_theta: float = 160_000.0) -> EncoderConfig:
    """ModernBERT's recipe (Warner et al., 2024): RoPE, GeGLU, no biases, pre-norm with the embedding norm as layer 0's
    and a final norm, a 128-token window with every third layer global, no dropout, no token types."""
    return EncoderConfig(
        vocab_size=50368, num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=intermediate,
        max_position_embeddings=max_positions, type_vocab_size=0, position_embedding="rope", rope_theta=global_theta,
        local_rope_theta=10_000.0, norm_first=True, first_attn_norm=False, bias=False, feed_forward="geglu",
        sliding_window=128, global_attention_every=3, hidden_dropout=0.0, attention_dropout=0.0, layer_norm_eps=1e-5,
        pooler="transform",
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
    # ModernBERT's released shapes (answerdotai/ModernBERT-base, -large: 8k context, global theta 160k) and a
    # CPU-sized one with the same recipe (4 x 256: layers 0 and 3 global; 512 positions, theta 10k everywhere)
    "modernbert-base": _modernbert(22, 768, 12, 1152),
    "modernbert-large": _modernbert(28, 1024, 16, 2624),
    "modernbert-mini": _modernbert(4, 256, 4, 384, max_positions=512, global_theta=10_000.0),
}
