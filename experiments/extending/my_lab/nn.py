"""Plain PyTorch networks (no Lightning here): usable, and testable, without the task that trains them."""

from __future__ import annotations

import torch
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
