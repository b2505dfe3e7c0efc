"""Adversarial training on the embedding output: FGM (Miyato et al., 2017) and PGD (Madry et al., 2018).

The perturbation ``delta`` is added to the output of the encoder's embedding layer (word embeddings for text,
the patch projection for a ViT) through a forward hook, so no weight is ever modified: after a step the
embeddings are exactly what the optimizer made of them. FGM takes one step of size ``epsilon`` along the
gradient of the clean loss (normalised per example); PGD takes ``steps`` steps of size ``alpha``, each projected
back onto the ``epsilon`` ball. The training loss is clean + adversarial.

Cost per training step: FGM adds one backward to the embeddings (reusing the clean graph) and one forward +
backward on the perturbed input; PGD adds ``steps`` forwards and backwards more.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch
from torch import nn


@dataclass
class AdversarialConfig:
    """method: ``fgm`` or ``pgd``; epsilon: L2 radius per example, over the example's whole (padded) embedding
    output -- the step goes mostly to the few tokens the loss depends on, so it must stay small against one token's
    embedding norm (about 0.5 in the CPU bert-mini; on SST-2 0.02 trains, 1 stops it learning);
    steps: PGD's number of ascent steps; alpha: PGD's step size (default ``epsilon / steps``)."""

    method: Literal["fgm", "pgd"] = "fgm"
    epsilon: float = 0.02
    steps: int = 3
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.method not in ("fgm", "pgd"):
            raise ValueError(f"adversarial.method {self.method!r}: choose fgm or pgd")
        if self.epsilon <= 0 or self.steps < 1 or (self.alpha is not None and self.alpha <= 0):
            raise ValueError(f"adversarial needs epsilon > 0, steps >= 1 and alpha > 0, got {self}")


def embedding_layer(net: nn.Module) -> nn.Module:
    """The layer whose output is perturbed: a text encoder's word embeddings or a ViT's patch projection."""
    embeddings = getattr(getattr(net, "encoder", None), "embeddings", None)
    for name in ("word_embeddings", "proj"):
        if isinstance(getattr(embeddings, name, None), nn.Module):
            return getattr(embeddings, name)
    raise ValueError(f"adversarial training perturbs the shared encoder's embeddings; {type(net).__name__} has none: "
                     "use a text model or the ViT")


def _per_example_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))


class Adversary:
    """Holds the hook; ``attach`` wraps the clean forward, ``loss`` then returns the adversarial loss."""

    def __init__(self, config: AdversarialConfig) -> None:
        self.config = config
        self.delta: torch.Tensor | None = None

    @contextmanager
    def attach(self, layer: nn.Module) -> Iterator[None]:
        """While inside, the layer's output gets ``+ delta`` (zero, tracking gradients, on the first forward)."""
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if self.delta is None:
                self.delta = torch.zeros_like(output, requires_grad=True)
            return output + self.delta.to(output.dtype)

        self.delta = None
        handle = layer.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()
            self.delta = None

    def loss(self, clean_loss: torch.Tensor, perturbed_loss: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The loss at the adversarial ``delta``; ``perturbed_loss`` reruns the forward inside ``attach``."""
        cfg = self.config
        if self.delta is None:
            raise RuntimeError("Adversary.loss needs a forward inside attach() first")
        grad, = torch.autograd.grad(clean_loss, self.delta, retain_graph=True)
        if cfg.method == "fgm":
            self.delta = (cfg.epsilon * grad / _per_example_norm(grad)).detach()
            return perturbed_loss()
        alpha = cfg.alpha or cfg.epsilon / cfg.steps
        delta = torch.zeros_like(grad)
        for step in range(cfg.steps):
            delta = delta + alpha * grad / _per_example_norm(grad)
            delta = delta * (cfg.epsilon / _per_example_norm(delta)).clamp(max=1.0)  # back onto the ball
            self.delta = delta.detach().requires_grad_(step < cfg.steps - 1)
            loss = perturbed_loss()
            if step < cfg.steps - 1:
                grad, = torch.autograd.grad(loss, self.delta)
        return loss
