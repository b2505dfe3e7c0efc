"""Data order that can be rebuilt: every epoch's shuffle comes from (seed, epoch), and a resumed run can start
the epoch part-way, so a run killed mid-epoch and resumed sees exactly the batches an uninterrupted run sees."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset, DistributedSampler, SequentialSampler

from bigmodel.utils.seeding import mix_seed

if TYPE_CHECKING:
    import datasets


class ResumableSampler(DistributedSampler):
    """Yields ``(epoch, index)`` for this rank: one (seed, epoch) shuffle of the whole set, padded to a multiple
    of ``world_size`` by repeating its start (grouped by length: its short last step), dealt out
    ``order[rank::world_size]`` as DistributedSampler does.

    It is a ``DistributedSampler`` so that Lightning uses it as is instead of wrapping it in another that would
    re-split the order; Lightning calls ``set_epoch`` every epoch. ``skip`` drops the first indices of this rank's
    next iteration only: the examples a resumed run already trained on. ``len`` stays the full share so the
    trainer's count of batches per epoch does not change on resume. The skip belongs to one epoch
    (``skip_epoch``): a run saved at the end of epoch e resumes with epoch e + 1, which must not skip anything.

    ``lengths`` (one per example) groups the shuffle by length (``group_by_length``): batches of similar lengths,
    so pad-to-longest pads little. ``batch_size`` must then be the DataLoader's (per rank): the order is cut into
    steps of ``batch_size * world_size`` examples, each dealt to the ranks as above, so every rank's batch at a
    step holds similar lengths too and a skip of whole batches on resume stays aligned.

    ``current_epoch`` (the data module passes the trainer's): the epoch each iteration shuffles for, instead of the
    number Lightning gives ``set_epoch``. Lightning 2.6 counts that one from epochs *processed*, which runs one
    ahead of ``trainer.current_epoch`` for good after a ``max_steps`` fit resumes from a checkpoint written at an
    epoch's end (the ``last.ckpt`` of every epoch-end save): every later epoch then got the next epoch's order,
    while dropout seeds, caption draws and the consumed-batch count go by ``current_epoch``.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 lengths: Sequence[int] | None = None, batch_size: int = 1, mega_batch: int = 50,
                 current_epoch: Callable[[], int] | None = None) -> None:
        # DistributedSampler.__init__ wants a dataset and a process group; this needs neither
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.rank, self.num_replicas, self.drop_last = rank, world_size, False
        self.num_samples = math.ceil(length / world_size)
        self.total_size = self.num_samples * world_size
        self.epoch = 0
        self.skip = 0
        self.skip_epoch = 0
        if lengths is not None:
            if len(lengths) != length:
                raise ValueError(f"lengths has {len(lengths)} entries for {length} examples")
            if not shuffle:
                raise ValueError("grouping by length reorders a shuffle; it needs shuffle=True")
        self.lengths = None if lengths is None else torch.as_tensor(lengths)
        self.batch_size, self.mega_batch = batch_size, mega_batch
        self.current_epoch = current_epoch

    def resume(self, epoch: int, consumed: int) -> None:
        """Skip the first ``consumed`` examples of ``epoch`` (this rank's), if that is the epoch iterated next."""
        self.set_epoch(epoch)
        self.skip, self.skip_epoch = consumed, epoch

    def order(self) -> torch.Tensor:
        """This epoch's order of the whole set (before padding and dealing to ranks)."""
        if not self.shuffle:
            return torch.arange(self.length)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.length, generator=generator)
        if self.lengths is not None:
            order = group_by_length(order, self.lengths, self.batch_size * self.num_replicas, self.mega_batch,
                                    generator)
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.current_epoch is not None:
            self.epoch = self.current_epoch()
        order = self.order()
        pad, source = self.total_size - len(order), order
        if self.lengths is not None and pad:
            # not the start of a grouped order (its longest step, trained twice and in a short batch): its short
            # last step, whose examples have the lengths of the batches they join (not empty: pad > 0 means the
            # set is no multiple of world_size, nor then of the step, a multiple of world_size)
            source = order[len(order) - len(order) % (self.batch_size * self.num_replicas):]
        order = torch.cat([order, source.repeat(math.ceil(pad / max(len(source), 1)))[:pad]])
        mine = order[self.rank :: self.num_replicas]
        skip = self.skip if self.epoch == self.skip_epoch else 0
        self.skip = 0
        return iter([(self.epoch, i) for i in mine[skip:].tolist()])

    def __len__(self) -> int:
        return self.num_samples


class InOrderSampler(ResumableSampler, SequentialSampler):
    """``ResumableSampler`` in the data's own order, for ``--trainer.overfit_batches``: Lightning swaps a training
    sampler that is not a ``SequentialSampler`` for one of plain indices, which ``EpochIndexed`` cannot read (the
    fit failed in its first batch). Being one, it is kept: the same first batches every epoch, resumable."""

    def __init__(self, length: int, seed: int, **kwargs: Any) -> None:
        super().__init__(length, seed, shuffle=False, **kwargs)
        self.data_source = range(length)  # (SequentialSampler's attribute)


def token_lengths(ds: datasets.Dataset) -> list[int]:
    """Tokens per example of a tokenised dataset (for ``group_by_length``), read from the Arrow column without
    decoding the ids (60k texts in about 1 ms)."""
    import pyarrow.compute as pc

    return pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_pylist()


def group_by_length(order: torch.Tensor, lengths: torch.Tensor, step: int, mega_batch: int,
                    generator: torch.Generator) -> torch.Tensor:
    """HF Trainer's ``LengthGroupedSampler`` idea on a shuffled ``order``: cut it into mega-batches of
    ``mega_batch`` steps, sort each by length (longest first), cut into steps of ``step`` examples, shuffle the
    steps, and put the one holding the longest example first, so that running out of memory shows at step 0.

    Only the last step may be short; it stays last (ranks deal steps out in whole batches). A last mega-batch
    shorter than one step joins the one before it, so the short step never holds the longest example.
    """
    megas = list(order.split(step * mega_batch))
    if len(megas) > 1 and len(megas[-1]) < step:
        megas[-2:] = [torch.cat(megas[-2:])]
    order = torch.cat([m[torch.argsort(lengths[m], descending=True, stable=True)] for m in megas])
    steps = list(order.split(step))
    full = len(steps) - (len(steps[-1]) < step)
    steps[:full] = [steps[i] for i in torch.randperm(full, generator=generator).tolist()]
    if full:
        longest = int(torch.stack([lengths[s[0]] for s in steps[:full]]).argmax())  # each step is sorted
        steps[0], steps[longest] = steps[longest], steps[0]
    return torch.cat(steps)


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
