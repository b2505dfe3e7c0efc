"""Plain PyTorch networks (no Lightning here): usable, and testable, without the task that trains them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bigmodel import UsageError
from bigmodel.nn import EncoderConfig, TransformerEncoder, init_weights


class TokenTagger(nn.Module):
    """bigmodel's text encoder and a linear layer on every position: (B, S) token ids -> (B, S, num_tags) logits.

    The encoder is ``self.encoder`` -- the name every bigmodel network uses -- so ``init_from`` fills it from an MLM
    or classification checkpoint, and bigmodel's tasks can start from this one's checkpoints in turn.
    """

    def __init__(self, config: EncoderConfig, num_tags: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(config)
        self.dropout = nn.Dropout(dropout)
        self.tagger = nn.Linear(config.hidden_size, num_tags)
        init_weights(self.tagger, config.initializer_range)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask).last_hidden_state  # (B, S, H)
        return self.tagger(self.dropout(hidden))


class ConvMixer(nn.Module):
    """ConvMixer (Trockman & Kolter, "Patches Are All You Need?", 2022): a patch embedding, then ``depth`` blocks
    of a depthwise convolution (mixes space; residual) and a pointwise one (mixes channels), each followed by GELU
    and BatchNorm; average pooling and a linear head.

    bigmodel's ``ClassificationTask`` builds a backbone as ``backbone(num_classes)`` and calls it on
    ``pixel_values`` (B, C, H, W), so ``num_classes`` comes first and the head is the last layer registered (what
    ``init_from`` replaces for another class count).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        dim: int = 64,
        depth: int = 4,
        kernel_size: int = 5,
        patch_size: int = 2,
    ) -> None:
        super().__init__()
        sizes = {"dim": dim, "depth": depth, "kernel_size": kernel_size, "patch_size": patch_size}
        bad = {name: value for name, value in sizes.items() if value < 1}
        if bad:
            raise UsageError(f"ConvMixer sizes must be at least 1, got {bad}")

        def conv_act_norm(conv: nn.Conv2d) -> nn.Sequential:
            return nn.Sequential(conv, nn.GELU(), nn.BatchNorm2d(dim))

        self.patches = conv_act_norm(nn.Conv2d(in_channels, dim, patch_size, stride=patch_size))
        self.blocks = nn.ModuleList(
            nn.ModuleDict({
                "spatial": conv_act_norm(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same")),
                "channels": conv_act_norm(nn.Conv2d(dim, dim, 1)),
            })
            for _ in range(depth)
        )
        self.head = nn.Linear(dim, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        x = self.patches(pixel_values)
        for block in self.blocks:
            x = block["channels"](x + block["spatial"](x))
        return self.head(x.mean(dim=(2, 3)))


class ConvTextEncoder(nn.Module):
    """A text encoder that is no Transformer: token embeddings, then ``depth`` residual blocks of a 1-D convolution
    over the sequence (``kernel_size`` tokens) with GELU and LayerNorm -- each token sees a window of its neighbours
    (``depth * (kernel_size - 1) + 1`` tokens), as in convolutional sentence classifiers (Kim, 2014).

    bigmodel's ``ClassificationTask`` builds a text encoder as ``encoder(vocab_size)`` (the vocabulary is linked from
    the data module's tokenizer), reads ``hidden_size``, and pools the ``(B, S, hidden_size)`` states it returns
    under its own head. Padded positions are zeroed before every convolution, so padding never changes a real
    token's state (the convolution pads with zeros either way).
    """

    def __init__(self, vocab_size: int, dim: int = 64, depth: int = 2, kernel_size: int = 5,
                 dropout: float = 0.1) -> None:
        super().__init__()
        sizes = {"dim": dim, "depth": depth, "kernel_size": kernel_size}
        bad = {name: value for name, value in sizes.items() if value < 1}
        if bad or kernel_size % 2 == 0:
            raise UsageError(f"ConvTextEncoder sizes must be at least 1 and kernel_size odd, got {sizes}")
        self.hidden_size = dim
        self.embeddings = nn.Embedding(vocab_size, dim)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2) for _ in range(depth))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).unsqueeze(-1).to(
            self.embeddings.weight.dtype)  # (B, S, 1)
        x = self.dropout(self.embeddings(input_ids)) * mask
        for conv, norm in zip(self.convs, self.norms):
            mixed = F.gelu(conv(x.transpose(1, 2))).transpose(1, 2)
            x = norm(x + self.dropout(mixed)) * mask
        return x  # (B, S, dim)
