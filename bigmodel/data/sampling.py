"""Data order that can be rebuilt: every epoch's shuffle comes from (seed, epoch), and a resumed run can start
the epoch part-way, so a run killed mid-epoch and resumed sees exactly the batches an uninterrupted run sees."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

from bigmodel.seeding import mix_seed


class ResumableSampler(DistributedSampler):
    """Yields ``(epoch, index)`` for this rank: one (seed, epoch) shuffle of the whole set, padded to a multiple
    of ``world_size`` by repeating its start, dealt out ``order[rank::world_size]`` as DistributedSampler does.

    It is a ``DistributedSampler`` so that Lightning uses it as is instead of wrapping it in another that would
    re-split the order; Lightning calls ``set_epoch`` every epoch. ``skip`` drops the first indices of this rank's
    next iteration only: the examples a resumed run already trained on. ``len`` stays the full share so the
    trainer's count of batches per epoch does not change on resume. The skip belongs to one epoch
    (``skip_epoch``): a run saved at the end of epoch e resumes with epoch e + 1, which must not skip anything.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        # DistributedSampler.__init__ wants a dataset and a process group; this needs neither
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.rank, self.num_replicas, self.drop_last = rank, world_size, False
        self.num_samples = math.ceil(length / world_size)
        self.total_size = self.num_samples * world_size
        self.epoch = 0
        self.skip = 0
        self.skip_epoch = 0

    def resume(self, epoch: int, consumed: int) -> None:
        """Skip the first ``consumed`` examples of ``epoch`` (this rank's), if that is the epoch iterated next."""
        self.set_epoch(epoch)
        self.skip, self.skip_epoch = consumed, epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(mix_seed(self.seed, self.epoch)))
        else:
            order = torch.arange(self.length)
        order = order.repeat(math.ceil(self.total_size / max(self.length, 1)))[: self.total_size]
        mine = order[self.rank :: self.num_replicas]
        skip = self.skip if self.epoch == self.skip_epoch else 0
        self.skip = 0
        return iter([(self.epoch, i) for i in mine[skip:].tolist()])

    def __len__(self) -> int:
        return self.num_samples


class EpochIndexed(Dataset):
    """``dataset[(epoch, i)]`` -> the example plus its epoch and index, so collators can seed per batch."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        return {**self.dataset[index], "epoch": epoch, "index": index}

    def __getitems__(self, keys: list[tuple[int, int]]) -> Any:
        """A whole batch in one op from datasets that offer ``get_batch`` (in-memory images), else per example."""
        get_batch = getattr(self.dataset, "get_batch", None)
        batch = get_batch([i for _, i in keys]) if get_batch is not None else None
        return batch if batch is not None else [self[k] for k in keys]


def examples_per_class(labels: list[Any], k: int, seed: int) -> list[int]:
    """Indices of ``k`` examples of each label, drawn without replacement by ``seed``, in their original order:
    the few-shot training set that a prompt and a classification head can share (same data module seed, same
    examples). A label with fewer than ``k`` examples is an error."""
    import numpy as np

    by_label: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    short = {label: len(rows) for label, rows in by_label.items() if len(rows) < k}
    if short:
        raise ValueError(f"train_examples_per_class={k} but the training data has fewer examples of "
                         f"{dict(sorted(short.items(), key=str))}; lower it or add data")
    rng = np.random.default_rng(seed)
    chosen = [rows[j] for _, rows in sorted(by_label.items(), key=lambda kv: str(kv[0]))
              for j in rng.choice(len(rows), size=k, replace=False)]
    return sorted(chosen)
