"""Image augmentation with ``torchvision.transforms.v2``: per-sample pipelines for DataLoader workers, and the
same recipe on whole uint8 batches on the accelerator (``on_device``), so a small model is not bound by Python
workers. MixUp/CutMix are torchvision's batch transforms in both cases."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from bigmodel.utils.seeding import mix_seed

AutoAugment = Literal["none", "randaugment", "trivialaugment"]


@dataclass(frozen=True)
class AugmentConfig:
    """What a training batch goes through (evaluation only resizes and normalises).

    crop_padding: random crop of the original size after zero-padding each side by this many pixels (0: off).
    horizontal_flip: mirror half of the images (off for digits and text-like images).
    auto_augment: ``randaugment`` (Cubuk et al., 2020), ``trivialaugment`` (Müller & Hutter, 2021) or ``none``.
    randaugment_ops, randaugment_magnitude: RandAugment's N and M.
    random_erasing: probability of erasing one random rectangle per image (Zhong et al., 2020).
    mixup_alpha, cutmix_alpha: Beta(alpha, alpha) mixing of image pairs per batch (0: off); with both set, each
        batch uses one of the two at random. Labels become class probabilities.
    """

    crop_padding: int = 0
    horizontal_flip: bool = False
    auto_augment: AutoAugment = "none"
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0 pixels (0 turns it off), got {self.crop_padding}")
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"random_erasing is a probability in [0, 1], got {self.random_erasing}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0 (0 turns them off), got "
                             f"{self.mixup_alpha} and {self.cutmix_alpha}")


def auto_augment(config: AugmentConfig) -> v2.Transform | None:
    if config.auto_augment == "randaugment":
        return v2.RandAugment(num_ops=config.randaugment_ops, magnitude=config.randaugment_magnitude)
    if config.auto_augment == "trivialaugment":
        return v2.TrivialAugmentWide()
    return None


def sample_transform(
    config: AugmentConfig | None, size: int | None, mean: Sequence[float], std: Sequence[float],
    native_size: int | None = None,
) -> v2.Compose:
    """One image (PIL or uint8 tensor) -> normalised float tensor; ``config=None`` for evaluation. Images are
    resized to ``size`` if given; the random crop keeps ``size`` or, without it, the images' ``native_size``."""
    steps: list[v2.Transform] = [v2.ToImage()]
    if size is not None:
        steps.append(v2.Resize((size, size), antialias=True))
    if config is not None:
        if config.crop_padding:
            if not (size or native_size):
                raise ValueError("crop_padding needs the image size: set image_size")
            steps.append(v2.RandomCrop(size or native_size, padding=config.crop_padding))
        if config.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        if (policy := auto_augment(config)) is not None:
            steps.append(policy)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if config is not None and config.random_erasing:
        steps.append(v2.RandomErasing(p=config.random_erasing))
    return v2.Compose(steps)


def seeded(transform: v2.Transform, image: object, seed: int) -> torch.Tensor:
    """``transform(image)`` with its random draws (torchvision's come from the global CPU generator) from ``seed``
    alone: an augmentation keyed to (seed, epoch, example) is the same in a resumed run, whatever else drew from
    the global generator before (a prefetched batch is made before the step that reseeds it). The global state
    is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return transform(image)


def seeded_items(items: list[dict[str, Any]], transform: v2.Transform, seed: int) -> list[dict[str, Any]]:
    """Training items (with the ``epoch`` and ``index`` that ``DataModule.train_loader`` adds) with their
    ``pixel_values`` through ``transform``, each image's draws from (seed, epoch, index) alone: the same in the
    main process or any worker, with or without prefetching, in a resumed run or an unbroken one."""
    return [{**it, "pixel_values": seeded(transform, it["pixel_values"],
                                          mix_seed(seed, "augment", int(it["epoch"]), int(it["index"])))}
            for it in items]


def batch_mixer(config: AugmentConfig, num_classes: int) -> v2.Transform | None:
    """MixUp and/or CutMix on a whole batch: ``(images, labels) -> (images, label probabilities)``."""
    mixers = []
    if config.mixup_alpha:
        mixers.append(v2.MixUp(alpha=config.mixup_alpha, num_classes=num_classes))
    if config.cutmix_alpha:
        mixers.append(v2.CutMix(alpha=config.cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


class BatchAugment:
    """The per-sample recipe applied to a uint8 batch (B, C, H, W) where it lives (GPU), every image with its own
    random crop offset, flip and erased box. RandAugment/TrivialAugment pick one op per group of ``group`` images
    (torchvision's ops take one parameter per call), which keeps the kernel count per batch small."""

    def __init__(
        self, config: AugmentConfig | None, size: int | None, mean: Sequence[float], std: Sequence[float],
        group: int = 16,
    ) -> None:
        self.config, self.size, self.group = config, size, group
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.policy = auto_augment(config) if config is not None else None

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"BatchAugment takes uint8 images (as on_device data modules give), got {images.dtype}")
        if self.size is not None and tuple(images.shape[-2:]) != (self.size, self.size):
            images = v2.functional.resize(images, [self.size, self.size], antialias=True)
        cfg = self.config
        if cfg is not None:
            if cfg.crop_padding:
                images = random_translate(images, cfg.crop_padding, generator)
            if cfg.horizontal_flip:
                flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
            if self.policy is not None:
                images = torch.cat([self.policy(chunk) for chunk in images.split(self.group)])
        if self.mean.device != images.device:  # moved once, not per batch
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        x = images.float().div_(255).sub_(self.mean).div_(self.std)
        if cfg is not None and cfg.random_erasing:
            x = random_erase(x, cfg.random_erasing, generator)
        return x


def _uniform(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator)


def random_translate(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image RandomCrop(size, padding) with zero fill, as two gathers: crop offsets in [0, 2 * padding]."""
    B, C, H, W = images.shape
    padded = F.pad(images, (padding,) * 4)
    span = 2 * padding + 1
    dy = (_uniform(B, images.device, generator) * span).long().clamp_(max=span - 1)
    dx = (_uniform(B, images.device, generator) * span).long().clamp_(max=span - 1)
    rows = (torch.arange(H, device=images.device) + dy[:, None]).view(B, 1, H, 1).expand(B, C, H, W + 2 * padding)
    cols = (torch.arange(W, device=images.device) + dx[:, None]).view(B, 1, 1, W).expand(B, C, H, W)
    return padded.gather(2, rows).gather(3, cols)


def random_erase(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Per-image RandomErasing (torchvision's defaults: area 2-33 %, aspect 0.3-3.3, value 0) with probability p.
    A box that does not fit is clamped to the image where torchvision redraws it (up to 10 times): the same
    recipe in one pass, with slightly more boxes touching an edge."""
    B, _, H, W = x.shape
    dev = x.device
    area = H * W * (scale[0] + (scale[1] - scale[0]) * _uniform(B, dev, generator))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _uniform(B, dev, generator)
    aspect = log_r.exp()
    h = (area * aspect).sqrt().round().clamp(1, H)
    w = (area / aspect).sqrt().round().clamp(1, W)
    top = ((H - h + 1) * _uniform(B, dev, generator)).floor()
    left = ((W - w + 1) * _uniform(B, dev, generator)).floor()
    erase = _uniform(B, dev, generator) < p
    ys = torch.arange(H, device=dev).view(1, H, 1)
    xs = torch.arange(W, device=dev).view(1, 1, W)
    box = ((ys >= top.view(-1, 1, 1)) & (ys < (top + h).view(-1, 1, 1))
           & (xs >= left.view(-1, 1, 1)) & (xs < (left + w).view(-1, 1, 1)) & erase.view(-1, 1, 1))
    return x.masked_fill(box[:, None], 0.0)
