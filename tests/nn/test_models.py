"""Every preset and every backbone through the same checks (timm's tests/test_models.py): it builds, runs forward
and backward on the CPU with a finite, non-zero gradient in every trainable parameter, gives identical outputs
after a state-dict round trip, and -- text -- gives each real token the same output in a padded batch as alone.

The presets are shrunk for the CPU by one rule (``small``), which keeps every switch -- positions (learned,
RoPE with its two thetas), the RoBERTa offset, pre/post-LN and layer 0 without a norm, LayerNorm/RMSNorm, GELU,
GeGLU or SwiGLU, biases or none, the pooler, the sliding window with global layers between local ones -- and
changes only sizes: width 32 with 2 heads (head_dim 16, even for RoPE), the feed-forward in the preset's ratio to
the width, 2 layers (``global_attention_every + 1`` with a window, so layers of both kinds run), a 4-token window
(inside the 10-token batch, so it masks), 99 tokens, 64 positions, 16 px images of 4 px patches. Each full-size
preset is built on the meta device for its shapes. ``unpad`` is an execution switch off in every preset: the
``-unpad`` cases turn it on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from bigmodel.nn import (
    PRESETS,
    CausalLanguageModel,
    EncoderConfig,
    MaskedLanguageModel,
    ResNet18,
    SequenceClassifier,
    SmallCNN,
    VisionTransformer,
)
from bigmodel.nn.image_text import ImageTextModel

VOCAB, LENGTHS, CLASSES = 99, (10, 7, 3), 3  # a full row, a padded one, a short one
IMAGE_PRESETS = [name for name in PRESETS if name.startswith("vit")]
TEXT_PRESETS = [name for name in PRESETS if name not in IMAGE_PRESETS]


def small(config: EncoderConfig, **overrides) -> EncoderConfig:
    """A preset at CPU size with every switch it has (the rule in the module docstring)."""
    layers = config.global_attention_every + 1 if config.sliding_window is not None else 2
    return config.replace(
        vocab_size=VOCAB, hidden_size=32, num_heads=2, num_layers=min(config.num_layers, max(2, layers)),
        intermediate_size=max(8, round(32 * config.intermediate_size / config.hidden_size)),
        max_position_embeddings=64, sliding_window=None if config.sliding_window is None else 4,
        image_size=16, patch_size=4, **overrides,
    )


TEXT_CONFIGS: dict[str, EncoderConfig] = {name: small(PRESETS[name]) for name in TEXT_PRESETS}
# RoBERTa: BERT's shape with learned positions from row 2 (its padding index + 1) and one token type
TEXT_CONFIGS["roberta"] = small(PRESETS["bert-tiny"], position_offset=2, type_vocab_size=1)
for _name in ("bert-tiny", "roberta", "modernbert-mini"):
    TEXT_CONFIGS[f"{_name}-unpad"] = TEXT_CONFIGS[_name].replace(unpad=True)


def text_rows(kind: str, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
    """The model's outputs for each row's real tokens: per token (language models) or per sequence."""
    lengths = [len(ids[0])] * len(ids) if mask is None else mask.sum(1).tolist()
    if kind == "mlm":  # every real token asked for (the loss asks for the masked ones)
        positions = torch.arange(ids.numel()) if mask is None else mask.flatten().nonzero().squeeze(1)
        return list(model(ids, positions, mask).split(lengths))
    if kind == "causal":
        return [row[:n] for row, n in zip(model(ids, mask), lengths)]
    if kind.startswith("classifier"):
        return list(model(ids, mask)[0])
    if kind == "image-text":  # the text tower's embedding
        return list(model.encode_text(ids, mask)[0])
    raise AssertionError(kind)


TEXT_BUILDERS: dict[str, Callable[[EncoderConfig], nn.Module]] = {
    "mlm": MaskedLanguageModel,
    "causal": lambda config: CausalLanguageModel(config.replace(causal=True)),
    "classifier": lambda config: SequenceClassifier(config, CLASSES),  # the preset's pooler
    "classifier-mean": lambda config: SequenceClassifier(config, CLASSES, pooling="mean"),
}


def image_text(fusion_layers: int) -> nn.Module:
    vit = VisionTransformer(0, small(PRESETS["vit-cifar-tiny"]))
    return ImageTextModel(vit, TEXT_CONFIGS["bert-tiny"], embed_dim=16, fusion_layers=fusion_layers)


IMAGE_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    **{f"vit/{name}": (lambda name=name: VisionTransformer(CLASSES, small(PRESETS[name]))) for name in IMAGE_PRESETS},
    "vit/conv-stem": lambda: VisionTransformer(CLASSES, small(PRESETS["vit-cifar-tiny"]), stem_channels=(8, 16)),
    "resnet18": lambda: ResNet18(CLASSES),
    "small-cnn": lambda: SmallCNN(CLASSES, in_channels=3, image_size=16, width=4, hidden=16),
}


@dataclass(frozen=True)
class Case:
    kind: str  # mlm, causal, classifier, classifier-mean, image, image-text
    build: Callable[[], nn.Module]

    @property
    def text(self) -> bool:
        return self.kind in TEXT_BUILDERS or self.kind == "image-text"

    def batch(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        out = {}
        if self.text:  # padding holds other tokens, not a pad id: anything leaking from it would show
            out["ids"] = torch.randint(5, VOCAB, (len(LENGTHS), LENGTHS[0]), generator=g)
            out["mask"] = (torch.arange(LENGTHS[0]) < torch.tensor(LENGTHS)[:, None]).long()
        if not self.text or self.kind == "image-text":
            out["pixels"] = torch.randn(len(LENGTHS), 3, 16, 16, generator=g)
        return out

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every output the model gives for ``batch``, flat (real tokens only)."""
        if self.kind == "image":
            return model(batch["pixels"]).flatten()
        if self.kind == "image-text":
            out = model(batch["pixels"], batch["ids"], batch["mask"])
            parts = [model.scale() * out.image_embeds @ out.text_embeds.T]  # the contrastive logits
            if model.fusion is not None:
                parts.append(model.match_logits(out.text_states, batch["mask"], out.image_states))
            return torch.cat([p.flatten() for p in parts])
        return torch.cat([r.flatten() for r in text_rows(self.kind, model, batch["ids"], batch["mask"])])

    def size(self, model: nn.Module) -> int:
        """How many numbers ``forward`` gives: per real token a vocabulary's logits, per example the classes'."""
        if self.kind in ("mlm", "causal"):
            return sum(LENGTHS) * VOCAB
        if self.kind == "image-text":  # image x text logits, and match / no match per pair with a fusion encoder
            return len(LENGTHS) ** 2 + (2 * len(LENGTHS) if model.fusion is not None else 0)
        return len(LENGTHS) * CLASSES


CASES: dict[str, Case] = {
    **{f"{kind}/{name}": Case(kind, lambda build=build, config=config: build(config))
       for kind, build in TEXT_BUILDERS.items() for name, config in TEXT_CONFIGS.items()},
    **{name: Case("image", build) for name, build in IMAGE_BUILDERS.items()},
    "image-text": Case("image-text", lambda: image_text(0)),
    "image-text/fusion": Case("image-text", lambda: image_text(1)),
}
TEXT_CASES = [name for name, case in CASES.items() if case.text]


def built(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return CASES[name].build()


@pytest.mark.parametrize("name", CASES)
def test_forward_and_backward_give_every_parameter_a_finite_gradient(name):
    case, model = CASES[name], built(name).train()
    out = case.forward(model, case.batch())
    assert out.shape == (case.size(model),) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().mean().backward()
    for param_name, p in model.named_parameters():
        assert p.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", CASES)
def test_a_state_dict_round_trip_gives_identical_outputs(name):
    case, model = CASES[name], built(name).eval()
    other = built(name, seed=1).eval()
    batch = case.batch()
    with torch.no_grad():
        assert not torch.equal(case.forward(other, batch), case.forward(model, batch))  # the seed matters
        other.load_state_dict(model.state_dict(), strict=True)
        assert torch.equal(case.forward(other, batch), case.forward(model, batch))


@pytest.mark.parametrize("name", TEXT_CASES)
def test_real_tokens_give_the_same_outputs_with_padding_as_alone(name):
    case, model = CASES[name], built(name).eval()
    kind = case.kind
    batch = case.batch()
    ids, mask = batch["ids"], batch["mask"]
    with torch.no_grad():
        padded = text_rows(kind, model, ids, mask)
        for i, n in enumerate(LENGTHS):
            alone = text_rows(kind, model, ids[i : i + 1, :n], None)[0]  # no padding: no mask, as the collators do
            torch.testing.assert_close(padded[i], alone, atol=1e-5, rtol=1e-4, msg=lambda m: f"row {i}: {m}")


def test_the_cases_cover_every_preset_and_shrink_keeps_each_switch():
    covered = {name.split("/")[-1] for name in CASES}
    assert set(PRESETS) <= covered
    for name in PRESETS:
        full, cut = PRESETS[name], small(PRESETS[name])
        sizes = {"vocab_size", "hidden_size", "num_heads", "num_layers", "intermediate_size",
                 "max_position_embeddings", "sliding_window", "image_size", "patch_size"}
        assert {k: v for k, v in full.to_dict().items() if k not in sizes} == \
               {k: v for k, v in cut.to_dict().items() if k not in sizes}, name
        assert (cut.sliding_window is None) == (full.sliding_window is None)
        kinds = {cut.is_global(i) for i in range(cut.num_layers)}
        assert kinds == ({True, False} if full.sliding_window else {True}), name


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_full_size_preset_builds_with_its_shapes(name):
    """At full size on the meta device: no memory, no arithmetic, the shapes checked."""
    config = PRESETS[name]
    with torch.device("meta"):
        if name in IMAGE_PRESETS:
            model = VisionTransformer(10, config)
            out = model(torch.empty(2, config.num_channels, config.image_size, config.image_size))
            assert out.shape == (2, 10)
        else:
            model = MaskedLanguageModel(config.replace(vocab_size=50))
            out = model(torch.zeros(2, 9, dtype=torch.long), torch.tensor([0, 5, 11]), torch.ones(2, 9))
            assert out.shape == (3, 50)
    layers = model.encoder.layers
    assert len(layers) == config.num_layers
    assert layers[0].attn.qkv.weight.shape == (3 * config.hidden_size, config.hidden_size)
    width = 2 * config.intermediate_size if config.feed_forward != "gelu" else config.intermediate_size
    assert layers[0].ffn.up.weight.shape == (width, config.hidden_size)
