"""CNN baselines for the image tasks: a small MNIST-style network and ResNet-18 with a stem for 32 px inputs.

Like ``VisionTransformer``, each takes ``num_classes`` first, so a task builds any of them as ``backbone(num_classes)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


class SmallCNN(nn.Module):
    """Two conv-ReLU-pool blocks and a dense head (the classic Keras/PyTorch MNIST example network).

    Args:
        num_classes: outputs.
        in_channels: 1 for digits/MNIST, 3 for colour images.
        image_size: input side length; the dense layer's width follows from it (two 2x poolings).
        width: channels of the first conv block (the second has twice as many).
        hidden: units of the dense layer.
        dropout: before the output layer.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        width: int = 32,
        hidden: int = 128,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(f"SmallCNN needs images of at least 4x4 pixels (two 2x poolings), got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))


class ResNet18(ResNet):
    """torchvision's ResNet-18 (same parameter names, so torchvision weights load by ``init_from``).

    ``small_input`` swaps the 7x7 stride-2 stem and max-pool for one 3x3 stride-1 conv, the usual CIFAR variant
    (He et al., 2016, sec. 4.2): 32 px images keep a 4x4 map before the pooling instead of 1x1.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, small_input: bool = True) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
