"""Labelled text for sequence classification: HF datasets by name or local tables, dynamic padding per batch."""

from __future__ import annotations

import os
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from bigmodel.data.collators import ClassificationCollator
from bigmodel.data.base import TextDataModule
from bigmodel.data.sources import Files, ensure_validation, load_local, load_source
from bigmodel.data.tokenizer import load_tokenizer


class TextClassificationDataModule(TextDataModule):
    """Args:
        tokenizer: a bigmodel MLM checkpoint (its embedded tokenizer), a tokenizer directory, or a hub name.
        dataset: hub name (``glue`` with ``dataset_config: sst2``, ``imdb``, ``ag_news``) or
            ``builtin:pydoc-topics`` (offline); None for local files.
        train_files / validation_files / test_files: local CSV/TSV/JSON(L)/Parquet files or globs.
        predict_files: texts to label with ``bigmodel predict``: a .txt (one text per line) or a table.
        text_column / text_pair_column / label_column: column names (pairs for tasks like MNLI).
        label_names: class names in label-id order; taken from the data when omitted (a ``ClassLabel``
            feature, else the sorted string labels, else ``0..C-1``).
        max_length: longer texts are truncated (the number truncated is reported).
        **kwargs: batch size, workers, validation split, seed, cache: see ``TextDataModule``.
    """

    def __init__(
        self,
        tokenizer: str,
        dataset: str | None = None,
        dataset_config: str | None = None,
        train_files: Files = None,
        validation_files: Files = None,
        test_files: Files = None,
        predict_files: Files = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        label_names: list[str] | None = None,
        max_length: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tokenizer = load_tokenizer(tokenizer, self.cache_dir)
        self.vocab_size = len(self.tokenizer)
        splits = {"train": train_files, "validation": validation_files, "test": test_files}
        self.raw = ensure_validation(load_source(dataset, dataset_config, splits, self.cache_dir),
                                     self.hparams.validation_fraction, self.hparams.seed)
        self._check_columns(self.raw["train"])
        self.class_names = self._class_names()
        self.num_classes = len(self.class_names)
        self.datasets: dict[str, Dataset] = {}

    def _check_columns(self, ds: Dataset) -> None:
        hp = self.hparams
        for role, col in (("text", hp.text_column), ("text pair", hp.text_pair_column), ("label", hp.label_column)):
            if col is not None and col not in ds.column_names:
                raise ValueError(
                    f"{role} column {col!r} not found; columns are {ds.column_names} "
                    f"(set data.init_args.{role.replace(' ', '_')}_column)"
                )

    def _class_names(self) -> list[str]:
        hp = self.hparams
        feature = self.raw["train"].features[hp.label_column]
        if hp.label_names:
            return list(hp.label_names)
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        values = set(self.raw["train"].unique(hp.label_column))
        if all(isinstance(v, str) for v in values):
            return sorted(values)
        if not all(isinstance(v, int) and v >= 0 for v in values):
            raise ValueError(f"labels in {hp.label_column!r} must be non-negative ints or names, got {sorted(values)[:5]}")
        return [str(i) for i in range(max(values) + 1)]

    def _label_ids(self, split: str, ds: Dataset) -> Dataset:
        hp = self.hparams
        values = ds.unique(hp.label_column)
        if any(isinstance(v, str) for v in values):
            index = {name: i for i, name in enumerate(self.class_names)}
            unknown = sorted(set(values) - set(index))
            if unknown:
                raise ValueError(f"{split} has labels {unknown[:5]} that are not among the classes {self.class_names}")
            return ds.map(lambda b: {"labels": [index[v] for v in b[hp.label_column]]}, batched=True)
        bad = sorted(v for v in values if not 0 <= v < self.num_classes)
        if bad:
            raise ValueError(
                f"{split} has label ids {bad[:5]} outside 0..{self.num_classes - 1} "
                f"({self.num_classes} classes: {self.class_names}); fix the labels or set data.init_args.label_names"
            )
        return ds.map(lambda b: {"labels": b[hp.label_column]}, batched=True)

    def _tokenized(self, split: str, ds: Dataset, with_labels: bool = True, keep_text: bool = False) -> Dataset:
        hp = self.hparams
        if len(ds) == 0:
            raise ValueError(f"the {split} split is empty; check its files")
        if with_labels:
            ds = self._label_ids(split, ds)
        tok = self.tokenizer

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            pair = batch[hp.text_pair_column] if hp.text_pair_column else None
            enc = tok(batch[hp.text_column], pair, truncation=True, max_length=hp.max_length)
            enc["truncated"] = [bool(e.overflowing) for e in enc.encodings]
            return dict(enc)

        keep = {"labels"} | ({hp.text_column} if keep_text else set())
        ds = ds.map(encode, batched=True, num_proc=hp.num_proc,
                    remove_columns=[c for c in ds.column_names if c not in keep], desc=f"Tokenising {split}")
        n_trunc = sum(ds["truncated"])
        if n_trunc:
            rank_zero_warn(f"{n_trunc} of {len(ds)} {split} texts were longer than max_length={hp.max_length} "
                           "tokens and were truncated")
        ds = ds.remove_columns("truncated")
        if keep_text and hp.text_column != "text":
            ds = ds.rename_column(hp.text_column, "text")
        return ds

    def setup(self, stage: str) -> None:
        if stage == "predict":
            if "predict" not in self.datasets:
                self.datasets["predict"] = self._tokenized("predict", self._predict_raw(), False, keep_text=True)
            return
        wanted = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}[stage]
        for split in ("train", "validation", "test"):
            if split not in self.raw or split in self.datasets:
                continue
            ds = self.raw[split]
            if split == "test" and all(isinstance(v, int) and v < 0 for v in ds.unique(self.hparams.label_column)):
                if split in wanted:
                    rank_zero_warn("the test split is unlabelled (labels < 0, as GLUE's); skipping it")
                continue
            if split in wanted:
                self.datasets[split] = self._tokenized(split, ds)
            else:
                self._label_ids(split, ds)  # bad labels anywhere stop the run now, not after training
        rank_zero_info("Text classification: " + ", ".join(f"{k} {len(v)}" for k, v in self.datasets.items())
                       + f"; {self.num_classes} classes {self.class_names}")

    def _predict_raw(self) -> Dataset:
        hp = self.hparams
        if hp.predict_files is None:
            raise ValueError("bigmodel predict needs texts: set --data.init_args.predict_files (a .txt, one per line)")
        files = [hp.predict_files] if isinstance(hp.predict_files, str) else list(hp.predict_files)
        if all(f.endswith(".txt") for f in files):
            texts = []
            for f in files:
                if not os.path.exists(f):
                    raise FileNotFoundError(f"predict file {f!r} does not exist")
                texts += [line.rstrip("\n") for line in open(f, encoding="utf-8") if line.strip()]
            return Dataset.from_dict({hp.text_column: texts})
        ds: DatasetDict = load_local({"predict": files})
        return ds["predict"]

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"no {split} data: set data.init_args.{split}_files (or a dataset with that split)")
        return self.loader(self.datasets[split], ClassificationCollator(self.tokenizer))

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.datasets:
            raise ValueError("no train data: set data.init_args.train_files (or a dataset with a train split)")
        return self.train_loader(self.datasets["train"], ClassificationCollator(self.tokenizer))

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
