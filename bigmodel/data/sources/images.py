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
from PIL import Image
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
    gathered in one indexing op (``get_batch``) and augmented on the device. ``gather=False`` with no transform:
    the stored images one by one, for a collator that augments each (``augment.seeded_items``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None,
                 gather: bool = True) -> None:
        self.images, self.labels, self.transform, self.gather = images, labels, transform, gather

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.images[i]
        return {"pixel_values": self.transform(image) if self.transform else image, "labels": self.labels[i]}

    def get_batch(self, indices: list[int]) -> dict[str, Any] | None:
        if self.transform is not None or not self.gather:
            return None
        index = torch.as_tensor(indices)
        return {"pixel_values": self.images[index], "labels": self.labels[index]}

    def __getitems__(self, indices: list[int]) -> Any:  # the DataLoader's batched fetch
        return self.get_batch(indices) or [self[i] for i in indices]


class SplitIndexed(Dataset):
    """A split's items with their position in it as ``image_index``: what a prediction row of a split without file
    paths (digits, CIFAR) is named by. Batched fetches (``TensorImages.get_batch``) stay batched."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], "image_index": i}

    def __getitems__(self, indices: list[int]) -> Any:
        fetch = getattr(self.dataset, "__getitems__", None)
        items = fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]
        if isinstance(items, dict):  # one gathered batch
            return {**items, "image_index": torch.as_tensor(indices)}
        return [{**item, "image_index": i} for item, i in zip(items, indices)]


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


# What predict and image folders read: torchvision's extensions and GIF (its first frame).
IMAGE_EXTENSIONS = (*IMG_EXTENSIONS, ".gif")
SAME_COLOUR = 8  # grey levels within which a transparent image's visible pixels count as one colour (ink in alpha)

# what reading a broken, truncated or oversized image file raises (UnidentifiedImageError is an OSError)
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

# ImageNet statistics: what pretrained backbones expect, and a fair default for photos.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ClassFolders(ImageFolder):
    """``ImageFolder`` whose classes are the visible subdirectories: a hidden one (``.ipynb_checkpoints`` beside the
    class folders, ``.git``) is not a class of the classifier."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: i for i, name in enumerate(classes)}


def image_folder(path: Path, transform: Callable | None) -> ImageFolder:
    """One class per subdirectory, read as predict reads files (``read_image``), with a one-line error when there
    is nothing to read."""
    extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist")
    try:
        return ClassFolders(str(path), transform=transform, loader=read_image, is_valid_file=is_image)
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


def is_image(path: str) -> bool:
    """Whether a file's name says it is an image that predict and image folders read: not a hidden file, such as
    the ``._photo.jpg`` metadata that macOS writes beside each file on a shared or FAT drive (not an image, it
    stopped training at the first batch that drew it)."""
    return path.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(path).startswith(".")


def list_images(path: Path) -> list[str]:
    """Every image file under ``path`` (recursively, sorted), for ``predict``. Each is opened here (the header
    only, a millisecond each), so that a file that is not an image is a one-line error before any batch runs
    instead of a traceback that loses the predictions of every good file. Training folders are not checked so:
    they can hold millions of files, and their loader reports a bad one all the same (``read_image``)."""
    if not path.exists():
        raise FileNotFoundError(f"predict_dir {str(path)!r} does not exist")
    files = [str(path)] if not path.is_dir() else sorted(str(p) for p in path.rglob("*")
                                                          if p.is_file() and is_image(str(p)))
    if not files:
        raise ValueError(f"predict_dir {str(path)!r} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    bad = []
    for file in files:
        try:
            Image.open(file).close()
        except UNREADABLE as err:
            bad.append((file, err))
    if bad:
        (file, err), more = bad[0], len(bad) - 1
        raise ValueError(unreadable(file, err, more))
    return files


def unreadable(file: str, err: BaseException, more: int = 0) -> str:
    """The one line for image files that cannot be read, and what to do about them."""
    others = f" and {more} more file{'s' if more > 1 else ''}" if more else ""
    return (f"cannot read image {file!r}{others} ({type(err).__name__}): remove or convert "
            f"{'them' if more else 'it'} (readable: {', '.join(sorted(IMAGE_EXTENSIONS))})")


def flatten_alpha(image: Any, mode: str) -> Any:
    """``image`` in ``mode`` ("L" or "RGB"), its transparency composited onto the background of the images the
    models learn from, instead of dropped (``convert`` keeps the colour under transparent pixels, so a glyph drawn
    only in alpha reads as blank). Grey sets (digits, MNIST, Fashion-MNIST; ``write_digit_images``) are ink-high
    on black: their background is black, and a glyph of one colour (its ink only in alpha, black ink included)
    becomes its alpha -- ink-high on black, like them. Colour images go onto white, as viewers show them."""
    if not image.has_transparency_data:
        return image.convert(mode)
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    if mode == "L" and _spread(alpha) > 0 and _spread(rgba.convert("L"), where=alpha) <= SAME_COLOUR:
        return alpha
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if mode == "L" else (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert(mode)


def _spread(image: Any, where: Any = None) -> int:
    """Highest minus lowest value of a one-band image (where the ``where`` image is non-zero; 0 where nowhere)."""
    levels = [v for v, n in enumerate(image.histogram(where)) if n]
    return levels[-1] - levels[0] if levels else 0


def read_image(path: str, mode: str = "RGB") -> Any:
    """One image file as a PIL image in ``mode`` (the first frame of an animation; transparency by
    ``flatten_alpha``), or a one-line ValueError naming the file."""
    try:
        with Image.open(path) as image:
            return flatten_alpha(image, mode)
    except UNREADABLE as err:
        raise ValueError(unreadable(path, err)) from err


class ImageFiles(Dataset):
    """Unlabelled image files (``predict``)."""

    def __init__(self, files: list[str], transform: Callable, mode: str = "RGB") -> None:
        self.files, self.transform, self.mode = files, transform, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.transform(read_image(self.files[i], self.mode)), "path": self.files[i]}


def cache_root(data_dir: str | None, cache_dir: Path) -> Path:
    return Path(os.path.expanduser(data_dir)) if data_dir else cache_dir / "torchvision"
