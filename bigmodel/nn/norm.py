"""The encoder's normalisation layer, chosen by ``config.norm`` and ``config.bias`` (one place for every norm)."""

from __future__ import annotations

from torch import nn

from bigmodel.nn.config import EncoderConfig


def make_norm(config: EncoderConfig) -> nn.Module:
    """LayerNorm (with a bias unless ``bias: false``) or RMSNorm (Zhang & Sennrich, 2019: scale only, no centring)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.hidden_size, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.bias)
