"""Image-text batches: datasets of captioned images and of caption texts, their collators (a caption drawn per
image, epoch and seed for training), and the evaluation loader's sampler, whose batches are either images or
captions, tagged by ``EVAL_KIND`` (one loader, so Lightning prints one column of the epoch's metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, DistributedSampler
from transformers import PreTrainedTokenizerBase

from bigmodel.data.augment import seeded_items
from bigmodel.data.collators import ClassificationCollator
from bigmodel.data.sources.image_text import CaptionedSplit
from bigmodel.utils.seeding import mix_seed

# val_dataloader / test_dataloader: one loader; each batch's EVAL_KIND says what it holds
EVAL_KIND = "kind"
EVAL_IMAGES = "images"  # the split's images: pixel_values, image_index, image_caption_ids (+ labels)
EVAL_CAPTIONS = "captions"  # the split's distinct captions: input_ids, attention_mask, caption_ids


class CaptionedImages(Dataset):
    """Items: ``pixel_values``, ``image_index``, ``image_caption_ids`` (+ ``labels``). ``transform=None`` leaves
    the images as stored, for a collator to augment (``CaptionDrawCollator``)."""

    def __init__(self, split: CaptionedSplit, transform: Callable | None) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.split
        image = s.images[i] if self.transform is None else self.transform(s.images[i])
        item = {"pixel_values": image, "image_index": i, "image_caption_ids": s.image_captions[i]}
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
    pairs the image with a new draw and a resumed run draws what an unbroken one would; ``transform`` (the training
    augmentation, applied here to the stored images) draws from (seed, epoch, index) too. ``image_caption_ids`` are
    padded to ``width``, the most captions any training image has: every batch has one shape, so ranks can gather
    them for the contrastive loss."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, caption_input_ids: list[list[int]], seed: int,
                 width: int | None = None, transform: Callable | None = None) -> None:
        self.text = ClassificationCollator(tokenizer)
        self.caption_input_ids, self.seed, self.width, self.transform = caption_input_ids, seed, width, transform

    def draw(self, item: dict[str, Any]) -> int:
        ids = item["image_caption_ids"]
        return ids[mix_seed(self.seed, int(item["epoch"]), int(item["index"])) % len(ids)]

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        drawn = [self.draw(it) for it in items]
        if self.transform is not None:
            items = seeded_items(items, self.transform, self.seed)
        batch = collate_images(items, self.width)
        del batch["image_index"]
        batch.update(self.text([{"input_ids": self.caption_input_ids[c], "caption_ids": c} for c in drawn]))
        return batch
