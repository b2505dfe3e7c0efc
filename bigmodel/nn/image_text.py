"""Image-text alignment on the shared encoder: two towers in one embedding space (CLIP) and an optional fusion
encoder whose text tokens cross-attend to image patches, with an image-text matching head (ALBEF).

Both towers are ``TransformerEncoder``s (the ViT's is built with patch embeddings); the fusion encoder is the same
class with ``add_cross_attention`` and no embedding of its own. Plain PyTorch: the losses take every rank's
embeddings through ``gather_with_grad`` when ``torch.distributed`` is initialised, nothing here imports Lightning.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from bigmodel.nn.config import EncoderConfig
from bigmodel.nn.encoder import TransformerEncoder, init_weights
from bigmodel.nn.heads import pool


class ImageTextOutput(NamedTuple):
    image_embeds: torch.Tensor  # (B, D), unit length
    text_embeds: torch.Tensor  # (B, D), unit length
    image_states: torch.Tensor  # (B, 1 + patches, Hv): what the fusion encoder attends to
    text_states: torch.Tensor  # (B, S, Ht)


class ImageTextModel(nn.Module):
    """A ViT and a text encoder, the image's [CLS] state and the caption's pooled state (``text_pooling``) each
    projected (no bias) to ``embed_dim`` and normalised; a learnable
    temperature (CLIP: initialised at 0.07; the training task keeps the logit scale at most 100 with
    ``clamp_logit_scale_`` after every optimizer step).

    Args:
        image_encoder: a ``VisionTransformer`` (its classification head is not used and is dropped).
        text_config: the text tower's ``EncoderConfig`` (bidirectional).
        embed_dim: size of the shared space.
        fusion_layers: > 0 adds a fusion encoder of this many blocks (the text tower's width, with cross-attention
            to the image states) and a match / no-match head on its [CLS] (ALBEF's image-text matching).
        temperature: initial softmax temperature of the contrastive logits.
        text_pooling: the text embedding from the mean of the caption's token states (``mean``, default) or its
            [CLS] state (``cls``, as ALBEF). Measured on captioned digits from scratch: with [CLS] both towers
            collapsed to constant embeddings (the loss stuck at log(batch) for 15 epochs), the mean learned within
            2 epochs; the mean carries every token from the first step, a [CLS] must first learn to gather them.
    """

    def __init__(self, image_encoder: nn.Module, text_config: EncoderConfig, embed_dim: int = 256,
                 fusion_layers: int = 0, temperature: float = 0.07,
                 text_pooling: Literal["mean", "cls"] = "mean") -> None:
        super().__init__()
        if not hasattr(image_encoder, "forward_features") or not hasattr(image_encoder, "config"):
            raise ValueError(f"the image tower must be a ViT on the shared encoder (bigmodel.nn.VisionTransformer), "
                             f"got {type(image_encoder).__name__}")
        if text_config.causal:
            raise ValueError("the text tower reads whole captions: it must not be causal")
        if text_pooling not in ("mean", "cls"):
            raise ValueError(f"text_pooling {text_pooling!r}: choose mean or cls")
        if embed_dim <= 0 or fusion_layers < 0 or temperature <= 0:
            raise ValueError(f"embed_dim must be > 0, fusion_layers >= 0 and temperature > 0; got {embed_dim}, "
                             f"{fusion_layers} and {temperature}")
        image_encoder.head = nn.Identity()  # the tower's output is the [CLS] state, projected below
        self.image_encoder = image_encoder
        self.text_encoder = TransformerEncoder(text_config)
        self.text_config, self.text_pooling = text_config, text_pooling
        image_width, text_width = image_encoder.config.hidden_size, text_config.hidden_size
        self.image_projection = nn.Linear(image_width, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.fusion: TransformerEncoder | None = None
        if fusion_layers:
            fusion_config = text_config.replace(num_layers=fusion_layers, add_cross_attention=True)
            self.fusion = TransformerEncoder(fusion_config, embeddings=nn.Identity())
            # image states brought to the text width, so cross-attention keys and values have one size
            self.image_to_fusion = nn.Linear(image_width, text_width) if image_width != text_width else nn.Identity()
            self.itm_head = nn.Linear(text_width, 2)
        for module in (self.image_projection, self.text_projection, *((self.image_to_fusion, self.itm_head)
                                                                       if self.fusion is not None else ())):
            module.apply(lambda m: init_weights(m, text_config.initializer_range))

    MAX_LOGIT_SCALE = 100.0

    def scale(self) -> torch.Tensor:
        """exp(logit_scale): the contrastive logits' multiplier, 1 / temperature. Not capped here: a cap in the
        forward pass zeroes the gradient above it, and Adam's momentum then keeps pushing the parameter up."""
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """The parameter itself into [0, log 100] (OpenCLIP, after every optimizer step): the scale stays at most
        100 and keeps its gradient."""
        self.logit_scale.clamp_(0, math.log(self.MAX_LOGIT_SCALE))

    def encode_image(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (unit embedding (B, D), encoder states (B, 1 + patches, Hv))."""
        states = self.image_encoder.forward_features(pixel_values).last_hidden_state
        return F.normalize(self.image_projection(states[:, 0]), dim=-1), states

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) -> (unit embedding (B, D), encoder states (B, S, Ht))."""
        states = self.text_encoder(input_ids, attention_mask).last_hidden_state
        pooled = pool(states, attention_mask, self.text_pooling)  # the classifier heads' pooling, one definition
        return F.normalize(self.text_projection(pooled), dim=-1), states

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> ImageTextOutput:
        image, image_states = self.encode_image(pixel_values)
        text, text_states = self.encode_text(input_ids, attention_mask)
        return ImageTextOutput(image, text, image_states, text_states)

    def match_logits(self, text_states: torch.Tensor, attention_mask: torch.Tensor | None,
                     image_states: torch.Tensor) -> torch.Tensor:
        """Text tokens cross-attend to the image states through the fusion encoder -> (B, 2) logits of
        (no match, match) from its [CLS]."""
        if self.fusion is None:
            raise ValueError("this model has no fusion encoder: set fusion_layers > 0 for image-text matching")
        fused = self.fusion(text_states, attention_mask, context=self.image_to_fusion(image_states)).last_hidden_state
        return self.itm_head(fused[:, 0])


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's ``x`` concatenated along dim 0, gradients flowing back to each rank's own part (the backward is
    a reduce-scatter of the gradients), and where this rank's rows start. Without an initialised process group: ``x``
    and 0. Every rank must pass the same shape."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0), dist.get_rank() * x.shape[0]


def caption_relevance(image_caption_ids: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
    """(I, K) caption ids of each image (-1: none) and (C,) ids of captions -> (I, C) bool: caption c describes
    image i. For data whose captions are written per image this is the pairing itself; where one text describes
    many images (captions made from a class name) every image it describes counts, not only the one it came with."""
    hits = image_caption_ids[:, None, :] == caption_ids[None, :, None]
    return (hits & (image_caption_ids[:, None, :] >= 0)).any(-1)


def contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, scale: torch.Tensor,
                     positives: torch.Tensor | None = None, rows: slice = slice(None)) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) of the ``rows`` of N image-text pairs against all N: image i's logits over every
    text, text i's over every image, cross-entropy against the positives (uniform over them when there are
    several; the diagonal when ``positives`` (N, N) is None), averaged over the two directions.

    Under data parallelism each rank passes the gathered embeddings and its own ``rows``; the ranks' losses
    averaged (as DDP averages gradients) equal this loss over all N pairs in one process."""
    logits_i2t = scale * image_embeds[rows].float() @ text_embeds.float().T  # (n, N)
    logits_t2i = scale * text_embeds[rows].float() @ image_embeds.float().T
    if positives is None:
        target = torch.arange(len(image_embeds), device=image_embeds.device)[rows]
        return (F.cross_entropy(logits_i2t, target) + F.cross_entropy(logits_t2i, target)) / 2
    i2t, t2i = positives[rows].float(), positives.T[rows].float()
    return (F.cross_entropy(logits_i2t, i2t / i2t.sum(-1, keepdim=True))
            + F.cross_entropy(logits_t2i, t2i / t2i.sum(-1, keepdim=True))) / 2


def hard_negatives(similarity: torch.Tensor, positives: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``similarity`` (B, B), a column drawn with probability softmax(similarity) among the row's
    negatives (ALBEF: similar but not matching, hence hard). Returns (indices (B,), valid (B,) bool); a row whose
    every column is positive has no negative and is not valid (its draw is arbitrary)."""
    weights = similarity.float().softmax(-1).masked_fill(positives, 0.0)
    valid = weights.sum(-1) > 0
    weights = torch.where(valid[:, None], weights, torch.ones_like(weights))
    return torch.multinomial(weights, 1, generator=generator).squeeze(1), valid


def zero_shot_classifier(prompt_embeds: torch.Tensor, prompt_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One unit vector per class: the mean of its prompts' embeddings (one per template), normalised (CLIP's
    prompt ensembling). (P, D), (P,) -> (num_classes, D)."""
    sums = torch.zeros(num_classes, prompt_embeds.shape[-1], device=prompt_embeds.device, dtype=torch.float32)
    sums.index_add_(0, prompt_class, prompt_embeds.float())
    return F.normalize(sums, dim=-1)


def retrieval_recall(similarity: torch.Tensor, relevant: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10),
                     chunk: int = 1024) -> dict[int, torch.Tensor]:
    """Recall@k as the retrieval papers report it (Flickr30k, COCO): the share of queries (rows) with at least one
    relevant item among their k most similar -- torchmetrics' ``RetrievalHitRate`` -- computed from the dense
    (Q, N) similarity in chunks of queries instead of torchmetrics' flattened (Q * N) index form. Queries with
    nothing relevant are left out."""
    hits = {k: similarity.new_zeros((), dtype=torch.float32) for k in ks}
    top_k = min(max(ks), similarity.shape[1])
    for start in range(0, similarity.shape[0], chunk):
        top = similarity[start:start + chunk].topk(top_k, dim=1).indices
        found = relevant[start:start + chunk].gather(1, top)  # (q, top_k) bool, most similar first
        for k in ks:
            hits[k] = hits[k] + found[:, :k].any(1).sum()
    queries = relevant.any(1).sum().clamp(min=1)
    return {k: v / queries for k, v in hits.items()}
