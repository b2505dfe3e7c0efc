"""Image classification data: digits (offline), CIFAR-10/100, MNIST, Fashion-MNIST or any ImageFolder, with
``torchvision.transforms.v2`` augmentation in workers or, for in-memory sets, on the accelerator."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, TypedDict

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from bigmodel.data.augment import (
    AugmentConfig,
    AutoAugment,
    BatchAugment,
    batch_mixer,
    sample_transform,
    seeded_items,
)
from bigmodel.data.base import DataModule
from bigmodel.data.sources.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NAMED,
    FolderImages,
    SplitIndexed,
    ImageFiles,
    TensorImages,
    cache_root,
    folder_splits,
    image_folder,
    list_images,
    load_digits_splits,
    load_torchvision_splits,
)
from bigmodel.utils.seeding import mix_seed


def collate(items: Any) -> dict[str, Any]:
    if isinstance(items, dict):  # already a batch (gathered in one op from an in-memory set)
        return items
    return default_collate([{k: v for k, v in item.items() if k not in ("epoch", "index")} for item in items])


def augmented_collate(items: list[dict[str, Any]], transform: Callable, seed: int) -> dict[str, Any]:
    """Training batches augmented on the CPU (``on_device: false``): each image's random crop, flip, policy and
    erasing come from (seed, epoch, index), not from the loader process's generator, so a resumed run augments as
    an unbroken one whatever the workers and prefetching."""
    return collate(seeded_items(items, transform, seed))


class EvalPreprocessing(TypedDict):
    """How an evaluation image becomes the model's input (``sample_transform(None, ...)``): resized to
    ``image_size`` x ``image_size`` (bilinear, antialiased), scaled to [0, 1], normalised per channel by ``mean``
    and ``std``; ``num_channels`` 1 (grey) or 3 (RGB). Plain data: a checkpoint records it (``bigmodel export``)."""

    image_size: int
    mean: list[float]
    std: list[float]
    num_channels: int


class ImageDataModule(DataModule):
    """Labelled images for ``ClassificationTask`` with an image backbone: built-in sets or class folders.

    Args:
        dataset: ``digits`` (scikit-learn's, no network), ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``
            (downloaded to ``data_dir`` once), or a directory of class subfolders (``train/``, optional
            ``val/`` and ``test/``; without ``train/`` the directory is the training set).
        data_dir: where torchvision sets are stored; default ``<cache_dir>/torchvision``.
        image_size: resize to this side length (e.g. 224 for an ImageNet ViT); image folders default to 224,
            in-memory sets to their own size.
        mean: per-channel normalisation mean; default the dataset's own statistics (ImageNet's for folders).
            Hugging Face ViT checkpoints expect 0.5.
        std: per-channel normalisation standard deviation, defaulting as ``mean``.
        crop_padding: training augmentation: random crop of the original size after zero-padding each side by
            this many pixels (0: off).
        horizontal_flip: training augmentation: mirror half of the images (off for digits and text-like images).
        auto_augment: ``randaugment`` (Cubuk et al., 2020), ``trivialaugment`` (Müller & Hutter, 2021) or ``none``.
        randaugment_ops: RandAugment's N, the operations per image.
        randaugment_magnitude: RandAugment's M, their strength (0-30).
        random_erasing: probability of erasing one random rectangle per image (Zhong et al., 2020).
        mixup_alpha: MixUp's Beta(alpha, alpha) mixing of image pairs per batch (0: off); labels become class
            probabilities.
        cutmix_alpha: CutMix's Beta(alpha, alpha) (0: off); with MixUp also on, each batch uses one of the two.
        on_device: keep the uint8 images in memory and augment whole batches on the accelerator instead of
            per image in workers (CIFAR/MNIST/digits; a small GPU model is otherwise bound by the workers).
        predict_dir: image file or directory to label with ``bigmodel predict`` (default: the test split, each
            prediction row named by its file, or by its ``index`` in the split).
        **kwargs: batch size, workers, validation split, seed, cache: see ``DataModule``.
    """

    def __init__(
        self,
        dataset: str = "digits",
        data_dir: str | None = None,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        auto_augment: AutoAugment = "none",
        randaugment_ops: int = 2,
        randaugment_magnitude: int = 9,
        random_erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        on_device: bool = False,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.augment = AugmentConfig(
            crop_padding=crop_padding, horizontal_flip=horizontal_flip, auto_augment=auto_augment,
            randaugment_ops=randaugment_ops, randaugment_magnitude=randaugment_magnitude,
            random_erasing=random_erasing, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
        )
        self.image_size = image_size
        self.tensors = None
        if dataset == "digits":
            self.tensors = load_digits_splits()
        elif dataset in NAMED:
            self.tensors = load_torchvision_splits(dataset, cache_root(data_dir, self.cache_dir))
        if self.tensors is not None:
            self.class_names = self.tensors.class_names
            default_mean, default_std = self.tensors.mean, self.tensors.std
        else:
            self.folders = folder_splits(Path(dataset).expanduser())  # first: a wrong name or path says so
            if on_device:
                raise ValueError(
                    "on_device keeps a whole dataset in memory as uint8 tensors: it serves digits, MNIST, "
                    "Fashion-MNIST and CIFAR, not image folders (set on_device: false; num_workers loads in parallel)"
                )
            self.image_size = image_size or 224
            self.class_names = image_folder(self.folders["train"], None).classes
            default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
        self.num_classes = len(self.class_names)
        self.mean, self.std = tuple(mean or default_mean), tuple(std or default_std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {list(self.mean)} and std {list(self.std)} need one value per channel each")
        self.mixer = batch_mixer(self.augment, self.num_classes)
        self.datasets: dict[str, Dataset] = {}

    def setup(self, stage: str) -> None:
        if self.datasets:
            return
        native = self.tensors.train[0].shape[-1] if self.tensors is not None else None
        train_tf = None if self.hparams.on_device else sample_transform(self.augment, self.image_size, self.mean,
                                                                           self.std, native)
        eval_tf = None if self.hparams.on_device else sample_transform(None, self.image_size, self.mean, self.std)
        self._train_transform = train_tf  # per image in the training collate, from (seed, epoch, index)
        if self.tensors is not None:
            s = self.tensors
            (images, labels), val = s.train, s.val
            if val is None:
                fit_idx, val_idx = (torch.tensor(i) for i in self.hold_out(len(labels)))
                images, labels, val = images[fit_idx], labels[fit_idx], (images[val_idx], labels[val_idx])
            self.datasets["train"] = TensorImages(images, labels, gather=self.hparams.on_device)
            self.datasets["validation"] = TensorImages(*val, transform=eval_tf)
            self.datasets["test"] = TensorImages(*s.test, transform=eval_tf)
        else:
            train = FolderImages(image_folder(self.folders["train"], None))
            if self.folders["validation"] is not None:
                self.datasets["train"] = train
                self.datasets["validation"] = FolderImages(image_folder(self.folders["validation"], eval_tf))
            else:
                fit_idx, val_idx = self.hold_out(len(train))
                self.datasets["train"] = Subset(train, fit_idx)
                self.datasets["validation"] = Subset(FolderImages(image_folder(self.folders["train"], eval_tf)),
                                                     val_idx)
            if self.folders["test"] is not None:
                self.datasets["test"] = FolderImages(image_folder(self.folders["test"], eval_tf))
            self._check_folder_classes()
        if self.hparams.predict_dir:  # files are brought to the training images' size and channels
            files = list_images(Path(self.hparams.predict_dir).expanduser())
            prep = self.eval_preprocessing()
            mode = "L" if prep["num_channels"] == 1 else "RGB"
            self.datasets["predict"] = ImageFiles(files, sample_transform(None, prep["image_size"], self.mean,
                                                                          self.std), mode)
        self._device_train = BatchAugment(self.augment, self.image_size, self.mean, self.std)
        self._device_eval = BatchAugment(None, self.image_size, self.mean, self.std)
        rank_zero_info("Images: " + ", ".join(f"{k} {len(v)}" for k, v in self.datasets.items()) +
                       f"; {self.num_classes} classes" + ("; augmented on the device" if self.hparams.on_device
                                                          else ""))

    def eval_preprocessing(self) -> EvalPreprocessing:
        """The evaluation (and predict) preprocessing, for a checkpoint to carry: without it, a model that leaves
        bigmodel does not say the size and normalisation it was trained with. In-memory sets keep their own size
        and channels unless ``image_size`` is set; folders are read as RGB."""
        images = self.tensors.train[0] if self.tensors is not None else None
        return {"image_size": int(self.image_size or images.shape[-1]), "mean": [float(m) for m in self.mean],
                "std": [float(s) for s in self.std], "num_channels": int(images.shape[1]) if images is not None else 3}

    def _check_folder_classes(self) -> None:
        for split in ("validation", "test"):
            ds = self.datasets.get(split)
            folder = getattr(ds, "folder", None)
            if folder is not None and folder.classes != self.class_names:
                extra = sorted(set(folder.classes) - set(self.class_names))
                missing = sorted(set(self.class_names) - set(folder.classes))
                parts = (extra and f"{extra} not in train", missing and f"{missing} missing")
                differ = "; ".join(part for part in parts if part)
                raise ValueError(
                    f"the {split} folder's classes differ from train's: {differ}; every split needs the same class "
                    "subfolders"
                )

    def train_dataloader(self) -> DataLoader:
        train = self.datasets["train"]  # full batches only: a short last batch would recompile a compiled model
        collate_fn = collate if self._train_transform is None else \
            functools.partial(augmented_collate, transform=self._train_transform, seed=self.hparams.seed)
        return self.train_loader(train, collate_fn, drop_last=len(train) > self.hparams.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["validation"], collate)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            raise ValueError(f"{self.hparams.dataset!r} has no test split: add a test/ folder beside train/")
        return self.loader(self.datasets["test"], collate)

    def predict_dataloader(self) -> DataLoader:
        if "predict" not in self.datasets and "test" not in self.datasets:
            raise ValueError("nothing to predict: set data.init_args.predict_dir to an image file or directory")
        if "predict" in self.datasets:
            return self.loader(self.datasets["predict"], collate)
        test = self.datasets["test"]  # rows named by their file, or else by their position in the split
        return self.loader(test if isinstance(test, FolderImages) else SplitIndexed(test), collate)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """On the device: uint8 -> augmented, normalised floats (``on_device``), then MixUp/CutMix (training).
        The draws are seeded by (seed, rank, epoch, batch), so a resumed run augments as an unbroken one."""
        training = self.trainer is not None and self.trainer.training
        generator = None
        if training:
            epoch, step = self._consumed
            seed = mix_seed(self.hparams.seed, self.trainer.global_rank, epoch, step)
            torch.manual_seed(seed)  # RandAugment and MixUp/CutMix draw from the global generator
            generator = torch.Generator(batch["pixel_values"].device).manual_seed(seed)
        if batch["pixel_values"].dtype == torch.uint8:
            augment = self._device_train if training else self._device_eval
            batch["pixel_values"] = augment(batch["pixel_values"], generator)
        if training and self.mixer is not None:
            batch["pixel_values"], batch["labels"] = self.mixer(batch["pixel_values"], batch["labels"])
        if self.trainer is not None:  # Lightning cast the batch before it was float: bf16-true wants bf16 images
            batch["pixel_values"] = self.trainer.precision_plugin.convert_input(batch["pixel_values"])
        return batch
