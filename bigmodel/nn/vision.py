"""Images on the shared encoder: a ViT is a patch embedding + ``TransformerEncoder`` + a linear head.

There is no second attention or block implementation here: ``VisionTransformer.encoder`` is the same class the
text models use, built with ``PatchEmbeddings`` in place of ``TextEmbeddings``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bigmodel.nn.config import EncoderConfig
from bigmodel.nn.convert import convert_hf_vit, is_hf_vit, load_matching
from bigmodel.nn.encoder import EncoderOutput, TransformerEncoder, init_weights
from bigmodel.nn.dropout import Dropout


def resample_position_embeddings(
    pos: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """(1, prefix + h*w, D) -> (1, prefix + H*W, D): bicubic resampling of the grid part, prefix tokens kept.

    Lets a checkpoint trained at one image/patch size run at another (e.g. 224px weights on 32px CIFAR).
    """
    prefix, grid = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    old = int(math.isqrt(grid.shape[1]))
    if old * old != grid.shape[1]:
        raise ValueError(f"position embeddings hold {grid.shape[1]} grid positions, not a square grid")
    if (old, old) == tuple(new_grid):
        return pos
    dim = grid.shape[-1]
    grid = grid.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(pos.dtype)
    return torch.cat([prefix, grid], dim=1)


def conv_stem(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """3x3 conv -> BatchNorm -> GELU per width, stride 1 (the image size is kept): a few early convolutions before
    the patch projection (Xiao et al., 2021, "Early Convolutions Help Transformers See Better"), which give a ViT
    on small data the locality a CNN has. (B, C, H, W) -> (B, widths[-1], H, W)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.GELU()]
        in_channels = width
    return nn.Sequential(*layers)


class PatchEmbeddings(nn.Module):
    """Strided-conv patches + a [CLS] token + learned positions (resampled for other image sizes) + dropout.
    ``stem_channels``: widths of an optional convolutional stem before the patches (none by default)."""

    def __init__(self, config: EncoderConfig, stem_channels: Sequence[int] = ()) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}"
            )
        if any(w <= 0 for w in stem_channels):
            raise ValueError(f"stem_channels must be positive widths, got {list(stem_channels)}")
        self.patch_size = config.patch_size
        self.grid = config.image_size // config.patch_size
        self.stem = conv_stem(config.num_channels, stem_channels) if stem_channels else None
        in_channels = stem_channels[-1] if stem_channels else config.num_channels
        self.proj = nn.Conv2d(in_channels, config.hidden_size, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, config.hidden_size))
        nn.init.trunc_normal_(self.position_embeddings, std=config.initializer_range)
        nn.init.trunc_normal_(self.cls_token, std=config.initializer_range)
        self.dropout = Dropout(config.hidden_dropout)
        self._told_resampled = False

    @torch.compiler.disable  # run eagerly, compiled or not: the flag is Python state (only at another size)
    def _tell_resampled(self, H: int, W: int, grid: tuple[int, int]) -> None:
        """Once per model: testing at another size is legitimate (FixRes), but not silent."""
        if self._told_resampled:
            return
        self._told_resampled = True
        warnings.warn(f"this ViT's position embeddings were learned for {self.grid * self.patch_size} px images "
                      f"({self.grid}x{self.grid} patches) and are given {H}x{W}: they are resampled (bicubic) to "
                      f"{grid[0]}x{grid[1]} for them; give images of the size it was built for (data image_size) to "
                      "use them as learned", stacklevel=3)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1 + N, D)
        B, _, H, W = pixel_values.shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image size {H}x{W} is not a multiple of patch_size {self.patch_size}; resize the images "
                             "(data.init_args.image_size) or change the backbone's patch_size")
        if self.stem is not None:
            pixel_values = self.stem(pixel_values)
        x = self.proj(pixel_values).flatten(2).transpose(1, 2)
        grid = (H // self.patch_size, W // self.patch_size)
        if grid != (self.grid, self.grid):
            self._tell_resampled(H, W, grid)
        pos = resample_position_embeddings(self.position_embeddings, grid)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1) + pos
        return self.dropout(x)


class VisionTransformer(nn.Module):
    """``forward_features`` (encoder output) and ``forward_head`` ([CLS] -> linear), as in timm.

    Args:
        num_classes: outputs of the head (first, so a task can build any backbone as ``backbone(num_classes)``);
            0: no head, ``forward`` returns the [CLS] state.
        config: an ``EncoderConfig`` or a preset name (``vit-tiny``, ``vit-cifar-small``, ...).
        overrides: config fields to change, e.g. ``{image_size: 28, num_channels: 1, hidden_dropout: 0.1}``.
        stem_channels: widths of 3x3 conv layers before the patch projection (``conv_stem``), e.g. ``[32, 64]``;
            empty (default): the plain ViT patch embedding, as in published checkpoints.
    """

    def __init__(
        self, num_classes: int = 1000, config: EncoderConfig | str = "vit-tiny", overrides: dict[str, Any] | None = None,
        stem_channels: Sequence[int] = (),
    ) -> None:
        super().__init__()
        config = EncoderConfig.from_name(config) if isinstance(config, str) else config
        config = config.replace(**(overrides or {}))
        if not config.norm_first:
            raise ValueError("a ViT uses pre-LN blocks: build it from a vit-* preset or set norm_first: true")
        self.config = config
        self.encoder = TransformerEncoder(config, embeddings=PatchEmbeddings(config, tuple(stem_channels)))
        # num_classes 0: no head, the [CLS] state is the output (timm's convention; an image-text tower)
        self.head = nn.Linear(config.hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self.head, config.initializer_range)

    def no_weight_decay(self) -> set[str]:
        """Parameters the optimiser should not decay (as in timm and DeiT)."""
        return {"encoder.embeddings.cls_token", "encoder.embeddings.position_embeddings"}

    def forward_features(self, pixel_values: torch.Tensor, output_attentions: bool = False) -> EncoderOutput:
        return self.encoder(pixel_values, output_attentions=output_attentions)

    def forward_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden[:, 0])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.forward_head(self.forward_features(pixel_values).last_hidden_state)

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Loads a ViT trained elsewhere: this project's keys or Hugging Face ViT's (converted). Position
        embeddings are resampled to this model's grid; a head of another class count is left new. Returns notes
        on what was adapted; any other mismatch is an error that names the parameter."""
        if is_hf_vit(state):
            state = convert_hf_vit(state)
        own = self.state_dict()
        notes, state = [], dict(state)
        pos_key = "encoder.embeddings.position_embeddings"
        if pos_key in state and state[pos_key].shape != own[pos_key].shape:
            grid = self.encoder.embeddings.grid
            old = state[pos_key].shape[1] - 1
            state[pos_key] = resample_position_embeddings(state[pos_key], (grid, grid))
            notes.append(f"position embeddings resampled from {math.isqrt(old)}x{math.isqrt(old)} to {grid}x{grid}")
        return notes + load_matching(self, state)


def cls_attention_maps(attentions: tuple[torch.Tensor, ...], grid: tuple[int, int]) -> torch.Tensor:
    """Last layer's attention from [CLS] to each patch, per head: (B, heads, grid_h, grid_w)."""
    last = attentions[-1][:, :, 0, 1:]
    return last.reshape(*last.shape[:2], *grid)


def attention_rollout(attentions: tuple[torch.Tensor, ...], grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): head-averaged attention plus the residual, multiplied through the
    layers. Returns how much [CLS] draws from every token, (B, S), summing to 1; with ``grid``, the patch part of
    it as an image-shaped map, (B, grid_h, grid_w). Works for text and images alike."""
    rollout = None
    for layer in attentions:
        a = layer.mean(dim=1)
        a = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    cls = rollout[:, 0]
    return cls if grid is None else cls[:, 1:].reshape(-1, *grid)
