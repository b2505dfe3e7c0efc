"""Settings, DataLoader construction and resumable training order that all data modules share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler

from bigmodel.data.sampling import EpochIndexed, InOrderSampler, ResumableSampler
from bigmodel.utils.hub import default_cache_dir


class DataModule(L.LightningDataModule):
    """Settings every data module shares (under ``data.init_args`` in YAML).

    Args:
        batch_size: per device; the effective batch also multiplies by devices and gradient accumulation.
        num_workers: DataLoader worker processes.
        validation_fraction: share of train held out when the source has no validation split: examples drawn by
            ``seed`` (labelled texts, images); a corpus holds out its first rows instead, one contiguous run of
            text, since its rows are paragraphs of the same documents (``CorpusDataModule``).
        seed: for that draw, the training order (and MLM's fixed validation masks).
        cache_dir: trained tokenizers and downloaded/built-in data; default ``$BIGMODEL_CACHE`` or
            ``~/.cache/bigmodel``.
    """

    vocab_size: int | None = None  # set by text data modules; the CLI links it to the task

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        validation_fraction: float = 0.05,
        seed: int = 42,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # collects the subclass's init args too
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._consumed: tuple[int, int] = (0, 0)  # (epoch, training batches consumed in it), saved in checkpoints
        self._resume: tuple[int, int] | None = None

    def train_loader(self, dataset: Dataset, collate_fn: Callable[[list[Any]], Any], drop_last: bool = False,
                     lengths: Sequence[int] | None = None):
        """Shuffled from (seed, epoch) and resumable mid-epoch; examples carry their epoch and index so that
        collators can seed per batch. ``--ckpt_path last`` after a kill continues with the very next batch.
        ``lengths`` (one per example): batches of similar lengths, see ``sampling.group_by_length``."""
        hp = self.hparams
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        epoch = (lambda: trainer.current_epoch) if trainer is not None else None
        if trainer is not None and trainer.overfit_batches > 0:  # the same first batches every epoch
            sampler = InOrderSampler(len(dataset), hp.seed, rank=rank, world_size=world, batch_size=hp.batch_size,
                                     current_epoch=epoch)
        else:
            sampler = ResumableSampler(len(dataset), hp.seed, rank=rank, world_size=world, lengths=lengths,
                                       batch_size=hp.batch_size, current_epoch=epoch)
        share = -(-len(dataset) // world)
        if hp.batch_size > share:
            each = f" ({share} per device)" if world > 1 else ""
            rank_zero_warn(f"batch_size {hp.batch_size} is larger than the {len(dataset)} training examples{each}: "
                           f"every step trains on all of them (one batch per epoch); a smaller batch_size gives "
                           "more steps")
        if self._resume is not None:  # restored mid-epoch: skip what this rank already trained on
            epoch, consumed = self._resume
            # nothing is skipped if that epoch had finished. Every loader built for this fit skips (one whose
            # iteration is that epoch's): the one the schedule's length was counted with is built again when
            # reload_dataloaders_every_n_epochs reloads it as the resumed epoch starts (it trained from the epoch's
            # first batch)
            sampler.resume(epoch, consumed * hp.batch_size)
        return self.loader(EpochIndexed(dataset), collate_fn, sampler=sampler, drop_last=drop_last, resumable=True)

    def hold_out(self, n: int) -> tuple[list[int], list[int]]:
        """Indices (fit, validation) of ``n`` examples: ``validation_fraction`` of them drawn by ``seed``, for sources
        without a validation split (image sets hold out whole images)."""
        fraction = self.hparams.validation_fraction
        if not 0 < fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1) when there is no validation split, got {fraction}")
        if n < 2:
            raise ValueError(f"{n} training example(s) cannot be split into train and validation; add data or a "
                             "validation split")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed)).tolist()
        k = max(1, int(n * fraction))
        return sorted(order[k:]), sorted(order[:k])

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts the training batches of this epoch that reached the model (not those merely prefetched)."""
        if self.trainer is not None and self.trainer.training:
            epoch = self.trainer.current_epoch
            self._consumed = (epoch, self._consumed[1] + 1 if self._consumed[0] == epoch else 1)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._consumed[0], "consumed_batches": self._consumed[1]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = (state["epoch"], state["consumed_batches"])
        self._consumed = self._resume

    def teardown(self, stage: str) -> None:
        """A resumed fit's position is its own: a later fit of this data module starts at the beginning."""
        if stage == "fit":
            self._resume = None

    def loader(
        self,
        dataset: Dataset,
        collate_fn: Callable[[list[Any]], Any],
        shuffle: bool = False,
        drop_last: bool = False,
        sampler: Sampler | None = None,
        batched: bool = True,
        resumable: bool = False,
    ) -> DataLoader:
        """``batched=False``: the sampler yields one key per batch, which the dataset and ``collate_fn`` turn into
        a whole batch (``batch_size=None``). ``resumable``: ``train_loader``'s, which resumes mid-epoch."""
        hp = self.hparams
        return (ResumableLoader if resumable else DataLoader)(
            dataset,
            batch_size=hp.batch_size if batched else None,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last,
        )


class ResumableLoader(DataLoader):
    """``train_loader``'s DataLoader, which Lightning knows resumes mid-epoch by its ``state_dict`` and
    ``load_state_dict``: without them, a resume from a checkpoint written mid-epoch warned that the dataloader "is
    not resumable" and results may differ, which is not so here. The position is the data module's state
    (``DataModule.state_dict``: the epoch and the batches consumed in it, which ``ResumableSampler`` skips); the
    loader holds none of its own, and its empty entry is left out of checkpoints (``TaskBase.on_save_checkpoint``),
    so that one resumes with another loader too."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: ``DataModule.load_state_dict`` restores the position."""


class TextDataModule(DataModule):
    """A data module of tokenised text.

    Args:
        num_proc: processes for ``datasets.map`` (tokenising is cached, so only the first run pays).
        **kwargs: batch size, workers, validation split, seed, cache: see ``DataModule``.
    """

    def __init__(self, num_proc: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
