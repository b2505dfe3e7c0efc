"""Images with captions -> ``{split: CaptionedSplit}``: scikit-learn's digits with generated captions (offline), a
CSV of ``path,caption`` rows, or a Hugging Face dataset with image and caption columns (Flickr30k, COCO captions),
from the hub or saved to a local directory.

Every distinct caption text of a split has an id (its position in ``captions``) and every image the ids of its
captions, so a task can tell which captions describe which images: for digits that is class-level (every 3 is
described by every caption of "3"), for photo sets it is the image's own captions. Splits are made by image, never
by caption, so no image is in two splits.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from datasets import Dataset as HFDataset
from datasets import DatasetDict, load_dataset, load_from_disk
from lightning.pytorch.utilities import rank_zero_warn

from bigmodel.data.sources.images import flatten_alpha, load_digits_splits, read_image
from bigmodel.data.sources.text import SPLITS, load_hub, not_utf8

SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
HUB_HINT = ("Save it where there is internet (load_dataset(name).save_to_disk(dir)) and pass that directory as "
            "data.init_args.dataset, give a CSV of path,caption rows, or use dataset: digits")
# (n) -> (fit indices, validation indices), for sources without a validation split: DataModule.hold_out
HoldOut = Callable[[int], tuple[list[int], list[int]]]

DIGIT_WORDS = {"en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
               "zh": ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"]}
# {n}: the numeral, {w}: the word in the caption's language
DIGIT_CAPTIONS = {
    "en": ["a handwritten {n}", "the digit {w}", "an image of the number {n}", "a handwritten digit {w}",
           "a picture of the number {w}", "the number {n} written by hand", "a small grey image of a {n}",
           "a scanned {w}"],
    "zh": ["手写的数字{n}", "数字{w}", "一张数字{n}的图片", "手写的{w}"],
}


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
        return read_image(self.paths[i])  # transparency flattened; an unreadable file named in one line


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
            return read_image(image)
        if not isinstance(image, Image.Image):
            raise ValueError(f"image column {self.column!r} holds {type(image).__name__}, not images or file paths; "
                             "set data.init_args.image_column")
        return flatten_alpha(image, "RGB")


def digit_captions(label: int, languages: list[str]) -> list[str]:
    """Every caption of digit ``label``, English then Chinese phrasings."""
    return [t.format(n=label, w=DIGIT_WORDS[lang][label]) for lang in languages for t in DIGIT_CAPTIONS[lang]]


def index_captions(per_image: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Distinct caption texts (in order of first appearance) and, per image, the ids of its captions."""
    ids: dict[str, int] = {}
    image_ids = [sorted({ids.setdefault(c, len(ids)) for c in captions}) for captions in per_image]
    return list(ids), image_ids


def load_digits(languages: list[str]) -> tuple[dict[str, CaptionedSplit], tuple[tuple[float, ...], tuple[float, ...]]]:
    """The digits' fixed splits, each image with every caption of its class (the same ids in every split), and the
    training pixels' (mean, std)."""
    s = load_digits_splits()
    per_class = [digit_captions(d, languages) for d in range(10)]
    texts = [c for captions in per_class for c in captions]
    n = len(per_class[0])
    ids = [list(range(d * n, (d + 1) * n)) for d in range(10)]
    out = {}
    for name, (images, labels) in zip(SPLITS, (s.train, s.val, s.test)):
        labels = labels.tolist()
        out[name] = CaptionedSplit(TensorSource(images), texts, [ids[d] for d in labels], labels)
    return out, (s.mean, s.std)


def load_captioned(dataset: str, config: str | None, image_column: str, caption_column: str,
                   hold_out: HoldOut) -> dict[str, CaptionedSplit]:
    """A CSV file, a dataset directory (``save_to_disk`` or hub format) or a hub name; validation is held out of
    train by image (``hold_out``) when the source has none."""
    path = Path(os.path.expanduser(dataset))
    if path.suffix.lower() == ".csv" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"CSV file {dataset!r} does not exist")
        if path.suffix.lower() != ".csv":
            raise ValueError(f"dataset file {dataset!r} is not a .csv; give a CSV of path,caption rows, a "
                             "dataset directory, a hub name or digits")
        return load_csv(path, image_column, caption_column, hold_out)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            raw = load_from_disk(str(path))
        else:
            raw = load_dataset(str(path), config)
        return from_hf(raw, f"dataset {dataset!r}", image_column, caption_column, hold_out)
    if dataset.startswith((".", "/", "~")) or dataset.count("/") > 1:
        raise FileNotFoundError(f"dataset {dataset!r} is neither digits, a hub name, nor an existing CSV file "
                                "or directory")
    raw = load_hub(dataset, config, HUB_HINT)  # a name the hub (or its cache) lacks: one line, with HUB_HINT
    return from_hf(raw, f"dataset {dataset!r}", image_column, caption_column, hold_out)


def load_csv(path: Path, image_column: str, caption_column: str, hold_out: HoldOut) -> dict[str, CaptionedSplit]:
    """Rows of image path (relative to the CSV's folder) and caption; an optional ``split`` column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            rows, end = [], 1  # (the line a row starts on, the row): a quoted caption may hold line breaks
            for row in reader:
                rows.append((end + 1, row))
                end = reader.line_num
    except UnicodeDecodeError:
        raise ValueError(not_utf8("captions", [str(path)])) from None
    where = f"CSV file {str(path)!r}"
    if image_column == "image" and "image" not in columns and "path" in columns:
        image_column = "path"
    for role, column in (("image", image_column), ("caption", caption_column)):
        if column not in columns:
            raise ValueError(f"{role} column {column!r} not found in {where}; its columns are {columns} "
                             f"(set data.init_args.{role}_column)")
    if not rows:
        raise ValueError(f"{where} has no rows below its header; add path,caption rows")
    images: dict[str, tuple[str, list[str]]] = {}  # path -> (split, captions), in order of first appearance
    for line, row in rows:
        if None in row:  # more cells than columns: DictReader keeps them apart, and the caption was cut at a comma
            raise ValueError(f"line {line} of {where} has {len(columns) + len(row[None])} fields where {len(columns)} "
                             'are expected; a caption that contains a comma must be in double quotes ("a dog, '
                             'running"), and a quote inside it doubled ("")')
        file = (row[image_column] or "").strip()
        caption = (row[caption_column] or "").strip()
        if not caption:
            raise ValueError(f"line {line} of {where} has an empty caption; write one or remove the row")
        key = os.path.normpath(path.parent / os.path.expanduser(file))
        if key not in images and (not file or not os.path.isfile(key)):
            raise FileNotFoundError(f"image {file!r} (line {line} of {where}) does not exist; image paths are "
                                    f"relative to the CSV's folder {str(path.parent)!r}")
        split = split_name(row.get("split"), f"line {line} of {where}")
        if key in images and images[key][0] != split:
            raise ValueError(f"image {file!r} is in two splits ({images[key][0]} and {split}, line {line} of "
                             f"{where}); an image's rows must share one split")
        images.setdefault(key, (split, []))[1].append(caption)
    by_split: dict[str, tuple[list[str], list[list[str]]]] = {}
    for key, (split, captions) in images.items():
        files, caps = by_split.setdefault(split, ([], []))
        files.append(key)
        caps.append(captions)
    return complete({s: (FileSource(files), caps) for s, (files, caps) in by_split.items()}, where, hold_out)


def split_name(value: str | None, where: str) -> str:
    """A ``split`` cell as train/validation/test (empty: train)."""
    if value is None or not value.strip():
        return "train"
    name = SPLIT_NAMES.get(value.strip().lower())
    if name is None:
        raise ValueError(f"{where}: split {value!r} is not one of train, validation (or val), test")
    return name


def from_hf(raw: HFDataset | DatasetDict, where: str, image_column: str, caption_column: str,
            hold_out: HoldOut) -> dict[str, CaptionedSplit]:
    """One row per image, its caption a text or a list of texts; a single table with a ``split`` column is divided
    by it."""
    raw = DatasetDict({"train": raw}) if isinstance(raw, HFDataset) else raw
    if len(raw) == 1 and "split" in next(iter(raw.values())).column_names:  # one table with a split column
        ds = next(iter(raw.values()))
        values = [split_name(v, f"row {i} of {where}") for i, v in enumerate(ds["split"])]
        raw = DatasetDict({s: ds.select([i for i, v in enumerate(values) if v == s]) for s in SPLITS if s in values})
    splits: dict[str, tuple[Any, list[list[str]]]] = {}
    for name, ds in raw.items():
        split = SPLIT_NAMES.get(name)
        if split is None:
            continue
        for role, column in (("image", image_column), ("caption", caption_column)):
            if column not in ds.column_names:
                raise ValueError(f"{role} column {column!r} not found in the {name} split of {where}; its "
                                 f"columns are {ds.column_names} (set data.init_args.{role}_column)")
        splits[split] = (HubSource(ds, image_column), caption_lists(ds, caption_column, f"the {name} split of {where}"))
    return complete(splits, where, hold_out, available=list(raw))


def caption_lists(ds: HFDataset, column: str, where: str) -> list[list[str]]:
    """Each row's non-empty captions (empty ones are skipped with a warning that counts them)."""
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


def complete(splits: dict[str, tuple[Any, list[list[str]]]], where: str, hold_out: HoldOut,
             available: list[str] | None = None) -> dict[str, CaptionedSplit]:
    """Holds validation out of train by image when absent; numbers the captions of each split."""
    if "train" not in splits:
        raise ValueError(f"{where} has no training images (splits: {sorted(available or splits)}); it needs a "
                         "train split (or CSV rows without a split, or with split train)")
    if "validation" not in splits:
        images, captions = splits["train"]
        fit, val = hold_out(len(images))
        splits["train"] = (take(images, fit), [captions[i] for i in fit])
        splits["validation"] = (take(images, val), [captions[i] for i in val])
    out = {}
    for name in SPLITS:
        if name in splits:
            images, per_image = splits[name]
            texts, ids = index_captions(per_image)
            out[name] = CaptionedSplit(images, texts, ids)
    return out


def take(images: Any, indices: list[int]) -> Any:
    """The images at ``indices`` of a source, as a source of the same kind."""
    if isinstance(images, FileSource):
        return FileSource([images.paths[i] for i in indices])
    if isinstance(images, HubSource):
        return HubSource(images.ds.select(indices), images.column)
    return TensorSource(images.images[torch.as_tensor(indices, dtype=torch.long)])
