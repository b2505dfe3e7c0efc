"""Images with captions for contrastive image-text training (CLIP-style) and zero-shot classification: scikit-learn's
digits with generated captions (offline), a folder of images with a CSV of ``path,caption``, or a Hugging Face
dataset with image and caption columns (Flickr30k, COCO captions).

Every distinct caption text of a split has an id (``caption_id``) and every image the set of its caption ids, so a
task can tell which captions describe which images: for digits that is class-level (every 3 is described by every
caption of "3"), for photo sets it is the image's own captions. Splits are made by image, never by caption, so no
image is in two splits.

Evaluation batches come from one loader whose batches are either images or captions, tagged by ``EVAL_KIND`` (one
loader, so Lightning prints one column of the epoch's metrics); the zero-shot prompts are one batch that every rank
encodes whole (``zero_shot_prompts``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from datasets import Dataset as HFDataset
from datasets import DatasetDict, load_dataset, load_from_disk
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from transformers import PreTrainedTokenizerBase

from bigmodel.data.augment import AugmentConfig, sample_transform
from bigmodel.data.base import DataModule
from bigmodel.data.collators import ClassificationCollator
from bigmodel.data.sources import not_utf8
from bigmodel.data.image_sources import IMAGENET_MEAN, IMAGENET_STD, ImageFiles, list_images, load_digits_splits
from bigmodel.data.tokenizer import cached_wordpiece, load_tokenizer
from bigmodel.utils.hub import HubUnavailableError, hub_offline_mode, hub_reachable, offline_message
from bigmodel.utils.seeding import mix_seed

# val_dataloader / test_dataloader: one loader; each batch's EVAL_KIND says what it holds
EVAL_KIND = "kind"
EVAL_IMAGES = "images"  # the split's images: pixel_values, image_index, image_caption_ids (+ labels)
EVAL_CAPTIONS = "captions"  # the split's distinct captions: input_ids, attention_mask, caption_ids

SPLITS = ("train", "validation", "test")
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}

DIGIT_WORDS = {"en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
               "zh": ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"]}
# {n}: the numeral, {w}: the word in the caption's language
DIGIT_CAPTIONS = {
    "en": ["a handwritten {n}", "the digit {w}", "an image of the number {n}", "a handwritten digit {w}",
           "a picture of the number {w}", "the number {n} written by hand", "a small grey image of a {n}",
           "a scanned {w}"],
    "zh": ["手写的数字{n}", "数字{w}", "一张数字{n}的图片", "手写的{w}"],
}
# zero-shot prompts for digits: one phrasing seen in training, the others new (the Chinese one included); the
# class name is the numeral
DIGIT_TEMPLATES = {"en": ["a photo of the digit {}", "a picture of the digit {}", "an image of a handwritten {}",
                          "a handwritten {}"],
                   "zh": ["一张手写数字{}的图片"]}
PHOTO_TEMPLATES = ["a photo of a {}", "a picture of a {}"]


def digit_captions(label: int, languages: list[str]) -> list[str]:
    """Every caption of digit ``label``, English then Chinese phrasings."""
    return [t.format(n=label, w=DIGIT_WORDS[lang][label]) for lang in languages for t in DIGIT_CAPTIONS[lang]]


def index_captions(per_image: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Distinct caption texts (in order of first appearance) and, per image, the ids of its captions."""
    ids: dict[str, int] = {}
    image_ids = [sorted({ids.setdefault(c, len(ids)) for c in captions}) for captions in per_image]
    return list(ids), image_ids


@dataclass
class CaptionedSplit:
    """One split: ``images[i]`` is a PIL image or a uint8 tensor (C, H, W); ``captions`` the distinct texts (a
    caption's id is its position); ``image_captions[i]`` the ids of image i's captions; ``labels`` for digits."""

    images: Any
    captions: list[str]
    image_captions: list[list[int]]
    labels: list[int] | None = None


class TensorSource:
    """In-memory uint8 images (N, C, H, W)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class FileSource:
    """Image files, read as RGB."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return image.convert("RGB")


class HubSource:
    """The image column of a Hugging Face dataset (PIL images, or file paths), read as RGB."""

    def __init__(self, ds: HFDataset, column: str) -> None:
        self.ds, self.column = ds.select_columns([column]), column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        image = self.ds[int(i)][self.column]
        if isinstance(image, str):
            with Image.open(image) as opened:
                return opened.convert("RGB")
        if not isinstance(image, Image.Image):
            raise ValueError(f"image column {self.column!r} holds {type(image).__name__}, not images or file paths; "
                             "set data.init_args.image_column")
        return image.convert("RGB")


class CaptionedImages(Dataset):
    """Items: ``pixel_values``, ``image_index``, ``image_caption_ids`` (+ ``labels``)."""

    def __init__(self, split: CaptionedSplit, transform: Callable) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.split
        item = {"pixel_values": self.transform(s.images[i]), "image_index": i, "image_caption_ids": s.image_captions[i]}
        if s.labels is not None:
            item["labels"] = s.labels[i]
        return item


class Texts(Dataset):
    """Tokenised texts with integer fields beside them (``caption_ids`` or ``prompt_class``)."""

    def __init__(self, input_ids: list[list[int]], **fields: list[int]) -> None:
        self.input_ids, self.fields = input_ids, fields

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[i], **{k: v[i] for k, v in self.fields.items()}}


def pad_ids(rows: list[list[int]], width: int | None = None) -> torch.Tensor:
    """Id sets (B, K) padded with -1 to ``width`` (default: the longest in the batch)."""
    out = torch.full((len(rows), width or max(len(r) for r in rows)), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def collate_images(items: list[dict[str, Any]], width: int | None = None) -> dict[str, Any]:
    batch: dict[str, Any] = {"pixel_values": torch.stack([it["pixel_values"] for it in items])}
    for key in ("image_index", "labels"):
        if key in items[0]:
            batch[key] = torch.tensor([int(it[key]) for it in items], dtype=torch.long)
    if "image_caption_ids" in items[0]:
        batch["image_caption_ids"] = pad_ids([it["image_caption_ids"] for it in items], width)
    if "path" in items[0]:
        batch["path"] = [it["path"] for it in items]
    return batch


class EvalBatchSampler(DistributedSampler):
    """One evaluation loader over several datasets (``sizes``: each one's length, by kind), yielding this rank's
    batches as ``(kind, indices)``. Each dataset is dealt to the ranks as Lightning's DistributedSampler deals a
    loader of its own (padded to a multiple of ``world_size`` by repeating its start, ``order[rank::world_size]``)
    and cut into batches of ``batch_size``: no batch mixes kinds, and every rank has as many of each kind. The kinds
    take turns batch by batch (the longest one's rest last), so a ``limit_val_batches`` or the sanity check sees
    some of each.

    It is a ``DistributedSampler`` so that Lightning uses it as is instead of re-dealing it (as ``ResumableSampler``).
    """

    def __init__(self, sizes: dict[str, int], batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        # DistributedSampler.__init__ wants a dataset and a process group; this needs neither
        self.rank, self.num_replicas, self.shuffle, self.drop_last, self.epoch = rank, world_size, False, False, 0
        self.batches: list[list[tuple[str, list[int]]]] = []
        for kind, size in sizes.items():
            share = torch.arange(-(-size // world_size) * world_size) % max(size, 1)  # padded with its start
            mine = share[rank::world_size].tolist() if size else []
            self.batches.append([(kind, mine[i: i + batch_size]) for i in range(0, len(mine), batch_size)])

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        turns = max((len(b) for b in self.batches), default=0)
        return iter([b[i] for i in range(turns) for b in self.batches if i < len(b)])

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches)


class EvalBatches(Dataset):
    """Item ``(kind, indices)`` of an ``EvalBatchSampler``: those items of the dataset of that kind, which
    ``collate`` turns into a batch tagged ``EVAL_KIND: kind`` (in the loader's workers, as any collate)."""

    def __init__(self, parts: dict[str, tuple[Dataset, Callable[[list[Any]], dict[str, Any]]]]) -> None:
        self.parts = parts

    def __getitem__(self, key: tuple[str, list[int]]) -> tuple[str, list[Any]]:
        kind, indices = key
        return kind, [self.parts[kind][0][i] for i in indices]

    def collate(self, fetched: tuple[str, list[Any]]) -> dict[str, Any]:
        kind, items = fetched
        return {**self.parts[kind][1](items), EVAL_KIND: kind}


class CaptionDrawCollator:
    """Training batches: each image with one of its captions, drawn from (seed, epoch, index) so that every epoch
    pairs the image with a new draw and a resumed run draws what an unbroken one would. ``image_caption_ids`` are
    padded to ``width``, the most captions any training image has: every batch has one shape, so ranks can gather
    them for the contrastive loss."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, caption_input_ids: list[list[int]], seed: int,
                 width: int | None = None) -> None:
        self.text = ClassificationCollator(tokenizer)
        self.caption_input_ids, self.seed, self.width = caption_input_ids, seed, width

    def draw(self, item: dict[str, Any]) -> int:
        ids = item["image_caption_ids"]
        return ids[mix_seed(self.seed, int(item["epoch"]), int(item["index"])) % len(ids)]

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        drawn = [self.draw(it) for it in items]
        batch = collate_images(items, self.width)
        del batch["image_index"]
        batch.update(self.text([{"input_ids": self.caption_input_ids[c], "caption_ids": c} for c in drawn]))
        return batch


class ImageTextDataModule(DataModule):
    """Images with captions for contrastive image-text training (``ImageTextTask``) and zero-shot classification.

    Args:
        dataset: ``digits`` (scikit-learn's 1,797 digits in their fixed 1,257/180/360 split, captions generated
            from the label in several phrasings; offline); a CSV file of ``path,caption`` rows (image paths relative
            to the CSV's folder; several rows per image are several captions; an optional ``split`` column of
            train/validation/test, else validation is held out of train by image and there is no test split
            unless ``test`` rows exist); a Hugging Face hub name (e.g. a Flickr30k or COCO captions set; one row
            per image, its caption a text or a list of texts); or a local directory of ``save_to_disk`` or hub
            format. Splits are train/validation/test as present (a single split with a ``split`` column is
            divided by it); without validation, ``validation_fraction`` of the training images is held out.
        dataset_config: the hub dataset's configuration name.
        image_column: the column of images (hub datasets) or image paths (CSV; ``path`` when the CSV has no
            ``image`` column).
        caption_column: the column of captions: a text, or a list of texts per image (Flickr30k).
        tokenizer: a bigmodel checkpoint (its embedded tokenizer), a tokenizer directory, or a hub name; None
            trains a WordPiece on the training captions (``wordpiece_vocab_size``, ``lowercase``; cached). Its
            normaliser puts every Chinese character in a token of its own.
        max_length: longer captions and prompts are truncated (the number truncated is reported).
        languages: caption languages for digits: ``en`` and/or ``zh`` (Chinese).
        image_size: resize to this side length; default the native 8 for digits, 224 for photos.
        wordpiece_vocab_size: vocabulary size of the WordPiece trained when ``tokenizer`` is None.
        lowercase: that WordPiece lowercases the captions.
        mean: per-channel normalisation mean; default digits' own statistics, ImageNet's for photos.
        std: per-channel normalisation standard deviation, defaulting as ``mean``.
        crop_padding: training augmentation, a random crop after padding each side by this many pixels (0: off).
        label_names: classes for zero-shot classification (as the text classifier's ``label_names``), each put into every ``zero_shot_templates``; digits
            default ``0``..``9`` (and its images carry ``labels``); other sets have none unless given.
        zero_shot_templates: prompts with ``{}`` where the class name goes. Digits default: English phrasings
            mostly unseen in training and one Chinese (when ``zh`` is among ``languages``); photos default
            ``a photo of a {}``, ``a picture of a {}``.
        predict_dir: image file or directory to classify zero-shot with ``bigmodel predict`` (default: the test
            split's images).
        **kwargs: batch size, workers, validation split, seed, cache: see ``DataModule``.

    Batches: training, one per image per epoch with one of its captions: ``pixel_values`` (B, C, H, W),
    ``input_ids``, ``attention_mask`` (only when padded), ``caption_ids`` (B,), ``image_caption_ids`` (B, K; -1
    pads; K is the most captions a training image has) and, for digits, ``labels``. Validation and test: one
    loader of image batches and caption batches, each tagged ``EVAL_KIND``: ``EVAL_IMAGES`` or ``EVAL_CAPTIONS``
    (see there; ``EvalBatchSampler`` says in which order and how ranks share them); predict: the images (files carry
    ``path``). Zero-shot prompts: ``zero_shot_prompts()``, one batch.
    """

    def __init__(
        self,
        dataset: str = "digits",
        dataset_config: str | None = None,
        image_column: str = "image",
        caption_column: str = "caption",
        tokenizer: str | None = None,
        wordpiece_vocab_size: int = 1000,
        lowercase: bool = True,
        max_length: int = 32,
        languages: list[str] | None = None,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        crop_padding: int = 0,
        label_names: list[str] | None = None,
        zero_shot_templates: list[str] | None = None,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.languages = list(languages) if languages is not None else ["en", "zh"]
        unknown = sorted(set(self.languages) - set(DIGIT_CAPTIONS))
        if unknown or not self.languages:
            raise ValueError(f"languages {self.languages}: digits captions come in {sorted(DIGIT_CAPTIONS)}; "
                             "list one or both")
        if max_length < 3:
            raise ValueError(f"max_length must leave room for a token between [CLS] and [SEP], got {max_length}")
        self.augment = AugmentConfig(crop_padding=crop_padding)
        self.digits = dataset == "digits"
        self.splits = self._load_digits() if self.digits else self._load_files_or_hub()
        if self.digits:
            (default_mean, default_std), self.image_size = self._digits_stats, image_size
        else:
            (default_mean, default_std), self.image_size = (IMAGENET_MEAN, IMAGENET_STD), image_size or 224
        self.mean, self.std = tuple(mean or default_mean), tuple(std or default_std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {list(self.mean)} and std {list(self.std)} need one value per channel each")

        if tokenizer is not None:
            self.tokenizer = load_tokenizer(tokenizer, self.cache_dir)
        else:
            texts = HFDataset.from_dict({"caption": self.splits["train"].captions})
            self.tokenizer = cached_wordpiece(texts, ["caption"], self.cache_dir, wordpiece_vocab_size, lowercase,
                                              model_max_length=max_length)
        self.vocab_size = len(self.tokenizer)

        if label_names is not None:
            if len(label_names) < 2:
                raise ValueError(f"label_names lists {list(label_names)}; zero-shot classification needs two or more")
            if self.digits and len(label_names) != 10:
                raise ValueError(f"digits has 10 classes (0..9) but label_names lists {len(label_names)}")
        self.class_names = list(label_names) if label_names is not None else (
            [str(i) for i in range(10)] if self.digits else None)
        self.num_classes = len(self.class_names) if self.class_names is not None else None
        if zero_shot_templates is None:
            zero_shot_templates = ([t for lang in self.languages for t in DIGIT_TEMPLATES[lang]] if self.digits
                                   else PHOTO_TEMPLATES)
        bad = [t for t in zero_shot_templates if t.count("{}") != 1]
        if bad or not zero_shot_templates:
            raise ValueError(f"zero_shot_templates {bad or '[]'}: each needs exactly one {{}} where the class name "
                             "goes, e.g. 'a photo of a {}'")
        self.zero_shot_templates = list(zero_shot_templates)
        self.datasets: dict[str, Dataset] = {}

    # --- sources -------------------------------------------------------------------------------------------------

    def _load_digits(self) -> dict[str, CaptionedSplit]:
        s = load_digits_splits()
        self._digits_stats = s.mean, s.std
        per_class = [digit_captions(d, self.languages) for d in range(10)]
        texts = [c for captions in per_class for c in captions]  # the same ids in every split
        n = len(per_class[0])
        ids = [list(range(d * n, (d + 1) * n)) for d in range(10)]
        out = {}
        for name, (images, labels) in zip(SPLITS, (s.train, s.val, s.test)):
            labels = labels.tolist()
            out[name] = CaptionedSplit(TensorSource(images), texts, [ids[d] for d in labels], labels)
        return out

    def _load_files_or_hub(self) -> dict[str, CaptionedSplit]:
        hp = self.hparams
        path = Path(os.path.expanduser(hp.dataset))
        if path.suffix.lower() == ".csv" or path.is_file():
            if not path.is_file():
                raise FileNotFoundError(f"CSV file {hp.dataset!r} does not exist")
            if path.suffix.lower() != ".csv":
                raise ValueError(f"dataset file {hp.dataset!r} is not a .csv; give a CSV of path,caption rows, a "
                                 "dataset directory, a hub name or digits")
            return self._load_csv(path)
        if path.is_dir():
            if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
                raw = load_from_disk(str(path))
            else:
                raw = load_dataset(str(path), hp.dataset_config)
            return self._from_hf(raw, f"dataset {hp.dataset!r}")
        if hp.dataset.startswith((".", "/", "~")) or hp.dataset.count("/") > 1:
            raise FileNotFoundError(f"dataset {hp.dataset!r} is neither digits, a hub name, nor an existing CSV file "
                                    "or directory")
        return self._from_hf(self._load_hub(hp.dataset, hp.dataset_config), f"dataset {hp.dataset!r}")

    @staticmethod
    def _load_hub(name: str, config: str | None) -> DatasetDict:
        hint = ("Save it where there is internet (load_dataset(name).save_to_disk(dir)) and pass that directory as "
                "data.init_args.dataset, give a CSV of path,caption rows, or use dataset: digits")
        if not hub_offline_mode() and not hub_reachable():
            raise HubUnavailableError(offline_message("dataset", name, hint))
        try:
            return load_dataset(name, config)
        except (ConnectionError, FileNotFoundError) as err:
            raise HubUnavailableError(f"dataset {name!r} is neither digits, a local CSV or directory, nor a "
                                      f"dataset the Hugging Face Hub has (or its cache, offline): "
                                      f"{' '.join(str(err).split())}") from err

    def _load_csv(self, path: Path) -> dict[str, CaptionedSplit]:
        hp = self.hparams
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                columns = [c.strip() for c in reader.fieldnames or []]
                reader.fieldnames = columns
                rows = list(reader)
        except UnicodeDecodeError:
            raise ValueError(not_utf8("captions", [str(path)])) from None
        where = f"CSV file {str(path)!r}"
        default = hp.image_column == "image" and "image" not in columns and "path" in columns
        image_column = "path" if default else hp.image_column
        for role, column in (("image", image_column), ("caption", hp.caption_column)):
            if column not in columns:
                raise ValueError(f"{role} column {column!r} not found in {where}; its columns are {columns} "
                                 f"(set data.init_args.{role}_column)")
        if not rows:
            raise ValueError(f"{where} has no rows below its header; add path,caption rows")
        images: dict[str, tuple[str, list[str]]] = {}  # path -> (split, captions), in order of first appearance
        for line, row in enumerate(rows, start=2):
            file = (row[image_column] or "").strip()
            caption = (row[hp.caption_column] or "").strip()
            if not caption:
                raise ValueError(f"line {line} of {where} has an empty caption; write one or remove the row")
            key = os.path.normpath(path.parent / os.path.expanduser(file))
            if key not in images and (not file or not os.path.isfile(key)):
                raise FileNotFoundError(f"image {file!r} (line {line} of {where}) does not exist; image paths are "
                                        f"relative to the CSV's folder {str(path.parent)!r}")
            split = self._split_name(row.get("split"), f"line {line} of {where}")
            if key in images and images[key][0] != split:
                raise ValueError(f"image {file!r} is in two splits ({images[key][0]} and {split}, line {line} of "
                                 f"{where}); an image's rows must share one split")
            images.setdefault(key, (split, []))[1].append(caption)
        by_split: dict[str, tuple[list[str], list[list[str]]]] = {}
        for key, (split, captions) in images.items():
            files, caps = by_split.setdefault(split, ([], []))
            files.append(key)
            caps.append(captions)
        return self._complete({s: (FileSource(files), caps) for s, (files, caps) in by_split.items()}, where)

    @staticmethod
    def _split_name(value: str | None, where: str) -> str:
        if value is None or not value.strip():
            return "train"
        name = SPLIT_NAMES.get(value.strip().lower())
        if name is None:
            raise ValueError(f"{where}: split {value!r} is not one of train, validation (or val), test")
        return name

    def _from_hf(self, raw: HFDataset | DatasetDict, where: str) -> dict[str, CaptionedSplit]:
        hp = self.hparams
        raw = DatasetDict({"train": raw}) if isinstance(raw, HFDataset) else raw
        if len(raw) == 1 and "split" in next(iter(raw.values())).column_names:  # one table with a split column
            ds = next(iter(raw.values()))
            values = [self._split_name(v, f"row {i} of {where}") for i, v in enumerate(ds["split"])]
            raw = DatasetDict({s: ds.select([i for i, v in enumerate(values) if v == s])
                               for s in SPLITS if s in values})
        splits: dict[str, tuple[Any, list[list[str]]]] = {}
        for name, ds in raw.items():
            split = SPLIT_NAMES.get(name)
            if split is None:
                continue
            for role, column in (("image", hp.image_column), ("caption", hp.caption_column)):
                if column not in ds.column_names:
                    raise ValueError(f"{role} column {column!r} not found in the {name} split of {where}; its "
                                     f"columns are {ds.column_names} (set data.init_args.{role}_column)")
            splits[split] = (HubSource(ds, hp.image_column), self._caption_lists(ds, f"the {name} split of {where}"))
        return self._complete(splits, where, available=list(raw))

    def _caption_lists(self, ds: HFDataset, where: str) -> list[list[str]]:
        column = self.hparams.caption_column
        out, blank = [], 0
        for i, value in enumerate(ds.select_columns([column])[column]):
            texts = [value] if isinstance(value, str) else value
            if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) or t is None for t in texts):
                raise ValueError(f"caption column {column!r} of {where} holds {type(value).__name__} (row {i}); "
                                 "expected a text or a list of texts per image")
            kept = [t.strip() for t in texts if t is not None and t.strip()]
            blank += len(texts) - len(kept)
            if not kept:
                raise ValueError(f"image {i} of {where} has no caption (empty {column!r}); fix or remove the row")
            out.append(kept)
        if blank:
            rank_zero_warn(f"skipped {blank} empty captions of {where}")
        return out

    def _complete(self, splits: dict[str, tuple[Any, list[list[str]]]], where: str,
                  available: list[str] | None = None) -> dict[str, CaptionedSplit]:
        """Holds validation out of train by image when absent; numbers the captions of each split."""
        if "train" not in splits:
            raise ValueError(f"{where} has no training images (splits: {sorted(available or splits)}); it needs a "
                             "train split (or CSV rows without a split, or with split train)")
        if "validation" not in splits:
            images, captions = splits["train"]
            fit, val = self.hold_out(len(images))
            splits["train"] = (_take(images, fit), [captions[i] for i in fit])
            splits["validation"] = (_take(images, val), [captions[i] for i in val])
        out = {}
        for name in SPLITS:
            if name in splits:
                images, per_image = splits[name]
                texts, ids = index_captions(per_image)
                out[name] = CaptionedSplit(images, texts, ids)
        return out

    # --- datasets and loaders ----------------------------------------------------------------------------------

    def _encode(self, texts: list[str], what: str) -> list[list[int]]:
        enc = self.tokenizer(texts, truncation=True, max_length=self.hparams.max_length)
        cut = sum(bool(e.overflowing) for e in enc.encodings) if enc.encodings else 0
        if cut:
            rank_zero_warn(f"{cut} of {len(texts)} {what} were longer than max_length={self.hparams.max_length} "
                           "tokens and were truncated")
        return enc["input_ids"]

    def setup(self, stage: str) -> None:
        if self.datasets:
            return
        native = 8 if self.digits else None
        train_tf = sample_transform(self.augment, self.image_size, self.mean, self.std, native)
        eval_tf = sample_transform(None, self.image_size, self.mean, self.std)
        self.caption_input_ids = {}
        for name, split in self.splits.items():
            self.datasets[name] = CaptionedImages(split, train_tf if name == "train" else eval_tf)
            self.caption_input_ids[name] = self._encode(split.captions, f"{name} captions")
            self.datasets[f"{name}_captions"] = Texts(self.caption_input_ids[name],
                                                      caption_ids=list(range(len(split.captions))))
        if self.class_names is not None:
            pairs = [(t, c) for t in self.zero_shot_templates for c in range(len(self.class_names))]
            prompts = [t.replace("{}", self.class_names[c]) for t, c in pairs]
            self._prompts = ClassificationCollator(self.tokenizer)(
                [{"input_ids": ids, "prompt_class": c}
                 for ids, (_, c) in zip(self._encode(prompts, "zero-shot prompts"), pairs)])
        if self.hparams.predict_dir:  # files are brought to the training images' size and channels
            files = list_images(Path(self.hparams.predict_dir).expanduser())
            size, mode = (self.image_size or 8, "L") if self.digits else (self.image_size, "RGB")
            self.datasets["predict"] = ImageFiles(files, sample_transform(None, size, self.mean, self.std), mode)
        rank_zero_info("Image-text: " + ", ".join(f"{n} {len(s.images)} images / {len(s.captions)} captions"
                                                  for n, s in self.splits.items())
                       + (f"; {self.num_classes} zero-shot classes x {len(self.zero_shot_templates)} templates"
                          if self.class_names is not None else ""))

    def train_dataloader(self) -> DataLoader:
        train = self.datasets["train"]  # full batches only: a short last batch would recompile a compiled model
        width = max(len(ids) for ids in self.splits["train"].image_captions)
        collate = CaptionDrawCollator(self.tokenizer, self.caption_input_ids["train"], self.hparams.seed, width)
        return self.train_loader(train, collate, drop_last=len(train) > self.hparams.batch_size)

    def _eval_loader(self, split: str) -> DataLoader:
        """The split's images and captions in one loader (see ``EvalBatchSampler``)."""
        if split not in self.datasets:
            raise ValueError(f"{self.hparams.dataset!r} has no {split} split: give CSV rows with split {split} or a "
                             f"dataset with a {split} split")
        captions = (self.datasets[f"{split}_captions"], ClassificationCollator(self.tokenizer))
        data = EvalBatches({EVAL_IMAGES: (self.datasets[split], collate_images), EVAL_CAPTIONS: captions})
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = EvalBatchSampler({kind: len(dataset) for kind, (dataset, _) in data.parts.items()},
                                   self.hparams.batch_size, rank, world)
        return self.loader(data, data.collate, sampler=sampler, batched=False)

    def zero_shot_prompts(self) -> dict[str, torch.Tensor] | None:
        """Every (template, class) prompt as one batch (template-major): ``input_ids``, ``attention_mask`` (when
        padded), ``prompt_class``. A few dozen texts: each rank encodes them all, no gathering. None without
        ``label_names``."""
        if self.class_names is None:
            return None
        if not hasattr(self, "_prompts"):
            self.setup("predict")
        return dict(self._prompts)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        if self.class_names is None:
            raise ValueError("zero-shot prediction needs classes: set data.init_args.label_names (their prompts are "
                             "what the images are matched against)")
        images = self.datasets.get("predict", self.datasets.get("test"))
        if images is None:
            raise ValueError("nothing to predict: set data.init_args.predict_dir to an image file or directory")
        return self.loader(images, collate_images)


def _take(images: Any, indices: list[int]) -> Any:
    if isinstance(images, FileSource):
        return FileSource([images.paths[i] for i in indices])
    if isinstance(images, HubSource):
        return HubSource(images.ds.select(indices), images.column)
    return TensorSource(images.images[torch.as_tensor(indices, dtype=torch.long)])
