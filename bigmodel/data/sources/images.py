"""Where images come from: scikit-learn's bundled digits (offline), torchvision's CIFAR/MNIST sets (downloaded
once), or an ``ImageFolder`` directory. Small sets are held as uint8 tensors (N, C, H, W); folders stay on disk."""

from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST, ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS


@dataclass
class TensorSplits:
    """In-memory splits; ``val`` is None when it is to be held out of ``train``."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor] | None
    test: tuple[torch.Tensor, torch.Tensor] | None
    class_names: list[str]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())


class TensorImages(Dataset):
    """uint8 images (N, C, H, W) and labels; ``transform`` runs per image in workers, or (None) batches are
    gathered in one indexing op (``get_batch``) and augmented on the device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.images[i]
        return {"pixel_values": self.transform(image) if self.transform else image, "labels": self.labels[i]}

    def get_batch(self, indices: list[int]) -> dict[str, Any] | None:
        if self.transform is not None:
            return None
        index = torch.as_tensor(indices)
        return {"pixel_values": self.images[index], "labels": self.labels[index]}

    def __getitems__(self, indices: list[int]) -> Any:  # the DataLoader's batched fetch
        return self.get_batch(indices) or [self[i] for i in indices]


class FolderImages(Dataset):
    """``ImageFolder`` items as dicts with the file path (for prediction files)."""

    def __init__(self, folder: ImageFolder) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, label = self.folder[i]
        return {"pixel_values": image, "labels": label, "path": self.folder.samples[i][0]}


def load_digits_splits() -> TensorSplits:
    """scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels) in a fixed 1,257/180/360 split (seed 0),
    the same on every machine, so results compare across runs and papers-in-miniature."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).mul(255 / 16).round().clamp(0, 255).to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test, val, train = order[:360], order[360:540], order[540:]
    pixels = images[train].float() / 255
    return TensorSplits(
        train=(images[train], labels[train]), val=(images[val], labels[val]), test=(images[test], labels[test]),
        class_names=[str(i) for i in range(10)], mean=(pixels.mean().item(),), std=(pixels.std().item(),),
    )



def write_digit_images(directory: str | Path, count: int = 10) -> list[Path]:
    """The first ``count`` digits of the fixed test split as 8x8 grey PNGs named by their label
    (``test<i>_label<d>.png``): images to try ``bigmodel predict --data.init_args.predict_dir`` on, none of which
    the quickstart models trained on."""
    from torchvision.transforms.functional import to_pil_image

    images, labels = load_digits_splits().test
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"test{i}_label{int(labels[i])}.png" for i in range(min(count, len(labels)))]
    for i, path in enumerate(paths):
        to_pil_image(images[i]).save(path)
    return paths

# The usual per-channel statistics of each training set (pixel values in [0, 1]).
_TORCHVISION = {
    "cifar10": (CIFAR10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (CIFAR100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": (MNIST, (0.1307,), (0.3081,)),
    "fashion-mnist": (FashionMNIST, (0.2860,), (0.3530,)),
}
NAMED = ("digits", *_TORCHVISION)


def load_torchvision_splits(name: str, root: Path) -> TensorSplits:
    """Downloads on first use (one process at a time: ranks share the files), then holds the set as uint8."""
    cls, mean, std = _TORCHVISION[name]
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}.lock")):
        try:
            train, test = cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise ValueError(
                f"{name} is not in {root} and could not be downloaded or verified ({type(err).__name__}); copy "
                f"torchvision's {cls.__name__} files there (data.init_args.data_dir) or, offline, use dataset: digits"
            ) from err

    def tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.as_tensor(ds.data)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # (N, C, H, W)
        return images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)

    return TensorSplits(train=tensors(train), val=None, test=tensors(test), class_names=list(train.classes),
                        mean=mean, std=std)


# ImageNet statistics: what pretrained backbones expect, and a fair default for photos.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def image_folder(path: Path, transform: Callable | None) -> ImageFolder:
    """One class per subdirectory, with a one-line error when there is nothing to read."""
    extensions = ", ".join(sorted(IMG_EXTENSIONS))
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist")
    try:
        return ImageFolder(str(path), transform=transform)
    except FileNotFoundError as err:
        raise ValueError(
            f"image folder {str(path)!r} has no images: expected {path}/<class name>/<image> files with one of "
            f"{extensions} ({err})"
        ) from err


def folder_splits(root: Path) -> dict[str, Path | None]:
    """``root/train`` (+ ``val`` or ``validation``, + ``test``) when present, else ``root`` itself is the training
    set (validation then held out of it, no test split)."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset {str(root)!r} is neither a known name ({', '.join(NAMED)}) nor an existing image folder"
        )
    if not (root / "train").is_dir():
        return {"train": root, "validation": None, "test": None}
    val = next((root / d for d in ("val", "validation") if (root / d).is_dir()), None)
    return {"train": root / "train", "validation": val, "test": root / "test" if (root / "test").is_dir() else None}


def list_images(path: Path) -> list[str]:
    """Every image file under ``path`` (recursively, sorted), for ``predict``."""
    if not path.exists():
        raise FileNotFoundError(f"predict_dir {str(path)!r} does not exist")
    files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS) if path.is_dir() else [str(path)]
    if not files:
        raise ValueError(f"predict_dir {str(path)!r} has no images ({', '.join(sorted(IMG_EXTENSIONS))})")
    return files


class ImageFiles(Dataset):
    """Unlabelled image files (``predict``)."""

    def __init__(self, files: list[str], transform: Callable, mode: str = "RGB") -> None:
        self.files, self.transform, self.mode = files, transform, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        with Image.open(self.files[i]) as image:
            return {"pixel_values": self.transform(image.convert(self.mode)), "path": self.files[i]}


def cache_root(data_dir: str | None, cache_dir: Path) -> Path:
    return Path(os.path.expanduser(data_dir)) if data_dir else cache_dir / "torchvision"
