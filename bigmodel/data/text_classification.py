"""Labelled text for sequence classification: HF datasets by name or local tables, dynamic padding per batch.

Data is read when a stage needs it, so ``predict`` (or ``test``) with a checkpoint's tokenizer and class names
never touches the training files. Every labelled split read is checked before any training: missing labels, labels
that mix ids and names, a single training class. Rows with an empty text are skipped with a warning that counts them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Value
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from bigmodel.data.collators import ClassificationCollator
from bigmodel.data.base import TextDataModule
from bigmodel.data.prompts import check_template, encode_prompts
from bigmodel.data.sampling import examples_per_class, token_lengths
from bigmodel.data.labels import check_label_kinds, class_names, label_ids, normalise_labels, unlabelled
from bigmodel.data.sources.text import (SPLITS, Files, blank_rows, check_columns, check_texts, ensure_validation,
                                        expand_files, load_local, load_source, read_lines)
from bigmodel.data.tokenizer import WORDPIECE_VOCAB_SIZE, cached_wordpiece, check_wordpiece_settings, load_tokenizer


class TextClassificationDataModule(TextDataModule):
    """Labelled texts (or text pairs) for ``ClassificationTask`` and ``PromptClassificationTask``.

    Args:
        tokenizer: a bigmodel checkpoint (its embedded tokenizer), a tokenizer directory, or a hub name; None
            trains a WordPiece on the training texts (``wordpiece_vocab_size``, ``lowercase``; cached).
        dataset: hub name (``glue`` with ``dataset_config: sst2``, ``imdb``, ``ag_news``) or
            ``builtin:pydoc-topics`` (offline); None for local files.
        dataset_config: the hub dataset's configuration name (``sst2`` of ``glue``).
        train_files: local CSV/TSV/JSON(L)/Parquet files or globs to train on.
        validation_files: files or globs to validate on; without them ``validation_fraction`` of train is held out.
        test_files: files or globs for ``bigmodel test``.
        predict_files: texts to label with ``bigmodel predict``: a .txt (one text per line) or a table.
        text_column: the column of texts.
        text_pair_column: the column of second texts, for pair tasks such as MNLI; None for single texts.
        label_column: the column of labels: class names, or class ids 0..C-1.
        column_names: names for the columns of .csv/.tsv files without a header row, e.g. ``[text, label]``.
        label_names: class names in label-id order; taken from the data when omitted (a ``ClassLabel``
            feature, else the sorted string labels, else ``0..C-1`` named ``'0'``, ``'1'``, ...; quoted ids such as
            JSON's ``"1"`` are ids too). Given, no
            training data is needed to test or predict.
        max_length: longer texts are truncated (the number truncated is reported).
        wordpiece_vocab_size: vocabulary size of the WordPiece trained when ``tokenizer`` is None. Another
            size than the default (8192) beside a ``tokenizer`` is an error (the tokenizer has its own vocabulary).
        lowercase: that WordPiece lowercases the texts; ``false`` beside a ``tokenizer`` is an error.
        train_examples_per_class: few-shot training: ``k`` examples of each class drawn from the training data
            by ``seed`` (the same examples for any task given the same seed); validation and test stay whole.
        template: prompt-based classification (``bigmodel.tasks.PromptClassificationTask``): each text becomes
            this cloze, e.g. ``"{text} It was {mask}."`` (``{text_a}``/``{text_b}`` for pairs; ``[MASK]`` is read
            as ``{mask}``, the tokenizer's own mask token). Long texts are cut, never the template.
        group_by_length: training batches of similar lengths (HF Trainer's ``group_by_length``): the seeded shuffle
            is cut into mega-batches of 50 batches, each sorted by length, and the batches are shuffled, the one
            with the longest text first (an out-of-memory shows at step 0). Pads far less than a plain shuffle;
            still a function of (seed, epoch), resumable mid-epoch and split evenly across ranks. Validation
            and test order are unchanged.
        pad_to_multiple_of: every batch (all splits) is padded to the longest text rounded up to a multiple of
            this (8 suits tensor cores and bounds the number of shapes ``compile`` sees); None: to the longest.
        **kwargs: batch size, workers, validation split, seed, cache: see ``TextDataModule``.
    """

    def __init__(
        self,
        tokenizer: str | None = None,
        dataset: str | None = None,
        dataset_config: str | None = None,
        train_files: Files = None,
        validation_files: Files = None,
        test_files: Files = None,
        predict_files: Files = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        column_names: list[str] | None = None,
        label_names: list[str] | None = None,
        max_length: int = 128,
        wordpiece_vocab_size: int = WORDPIECE_VOCAB_SIZE,
        lowercase: bool = True,
        train_examples_per_class: int | None = None,
        template: str | None = None,
        group_by_length: bool = False,
        pad_to_multiple_of: int | None = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_wordpiece_settings(tokenizer, wordpiece_vocab_size, lowercase)
        if train_examples_per_class is not None and train_examples_per_class < 1:
            raise ValueError(f"train_examples_per_class must be >= 1, got {train_examples_per_class}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1 or null, got {pad_to_multiple_of}")
        if template is not None:
            check_template(template, text_pair_column is not None)
        self._raw: DatasetDict | None = None
        self.datasets: dict[str, Dataset] = {}
        if tokenizer is not None:
            self.tokenizer = load_tokenizer(tokenizer, self.cache_dir)
        else:
            self.tokenizer = cached_wordpiece(self.raw["train"], self._text_columns(), self.cache_dir,
                                              wordpiece_vocab_size, lowercase, model_max_length=max_length)
        self.vocab_size = len(self.tokenizer)
        if template is not None and self.tokenizer.mask_token is None:
            raise ValueError("template needs a tokenizer with a mask token (an MLM's): set data.init_args.tokenizer "
                             "to the checkpoint the task starts from")
        self._numbered = False  # class names made from integer labels ('0', '1', ...), not given or in the data
        self.class_names = self._class_names()
        self.num_classes = len(self.class_names)

    @property
    def raw(self) -> DatasetDict:
        """Every given split, checked, with validation carved out of train when not given; read on first use."""
        if self._raw is None:
            hp = self.hparams
            self._raw = ensure_validation(self._load(SPLITS), hp.validation_fraction, hp.seed)
        return self._raw

    def _text_columns(self) -> list[str]:
        return [column for column in (self.hparams.text_column, self.hparams.text_pair_column) if column]

    def _where(self, split: str) -> str:
        """The split's file(s) for messages, e.g. ``test file 'data/test.csv'``."""
        hp = self.hparams
        files = expand_files(getattr(hp, f"{split}_files", None), split) if hp.dataset is None else []
        if len(files) == 1:
            return f"{split} file {files[0]!r}"
        return f"{split} files {files}" if files else f"the {split} split"

    def _load(self, splits: tuple[str, ...]) -> DatasetDict:
        hp = self.hparams
        files = {split: getattr(hp, f"{split}_files") for split in splits}
        raw = load_source(hp.dataset, hp.dataset_config, files, self.cache_dir, hp.column_names)
        train_columns = raw["train"].column_names if "train" in raw else None
        out = DatasetDict({s: self._clean(s, ds, train_columns) for s, ds in raw.items() if s in splits})
        check_label_kinds(out, hp.label_column)
        return out

    def _clean(self, split: str, ds: Dataset, train_columns: list[str] | None = None) -> Dataset:
        """Checks the columns and labels of one split and drops rows with an empty text."""
        hp = self.hparams
        labelled = split != "predict"
        columns = {"text": hp.text_column, "text pair": hp.text_pair_column}
        check_columns(ds, columns | ({"label": hp.label_column} if labelled else {}), split, self._where(split),
                      train_columns)
        check_texts(ds, self._text_columns(), split)
        blank = np.unique(np.concatenate([blank_rows(ds, c) for c in self._text_columns()]))
        if labelled and not unlabelled(split, ds, hp.label_column):
            missing = np.setdiff1d(blank_rows(ds, hp.label_column), blank)
            if len(missing):
                rows = ", ".join(str(i + 1) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
                many = "s" if len(missing) > 1 else ""
                below = "" if hp.column_names else " below the header"
                raise ValueError(
                    f"{self._where(split)} has {len(missing)} row{many} with a text but no {hp.label_column!r} label "
                    f"(row{many} {rows}, counted from 1{below}); fill in the labels or remove those rows"
                )
        if len(ds) and len(blank) == len(ds):
            raise ValueError(f"every row of {self._where(split)} has an empty {hp.text_column!r} cell; "
                             "check text_column or the file")
        if len(blank):
            rank_zero_warn(f"skipped {len(blank)} of {len(ds)} rows of {self._where(split)} whose text is empty")
            ds = ds.select(np.setdiff1d(np.arange(len(ds)), blank))
        for column in self._text_columns():
            if getattr(ds.features[column], "dtype", None) not in ("string", "large_string"):
                ds = ds.cast_column(column, Value("string"))  # texts that pandas read as numbers
        return normalise_labels(ds, hp.label_column, hp.label_names is not None) if labelled else ds

    def _class_names(self) -> list[str]:
        hp = self.hparams
        if hp.label_names is not None:
            if len(hp.label_names) < 2:
                raise ValueError(f"label_names lists {list(hp.label_names)}; a classifier needs at least two classes")
            return list(hp.label_names)
        names, self._numbered = class_names(self.raw["train"], hp.label_column)
        return names

    def _label_ids(self, split: str, ds: Dataset) -> Dataset:
        hp = self.hparams
        return label_ids(ds, hp.label_column, self.class_names, self._where(split), hp.label_names is not None)

    def _tokenized(self, split: str, ds: Dataset, with_labels: bool = True, keep_text: bool = False) -> Dataset:
        hp = self.hparams
        if len(ds) == 0:
            raise ValueError(f"the {split} split is empty; check its files")
        if with_labels:
            ds = self._label_ids(split, ds)
        tok = self.tokenizer

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            pair = batch[hp.text_pair_column] if hp.text_pair_column else None
            if hp.get("template"):
                return encode_prompts(tok, hp.template, batch[hp.text_column], pair, hp.max_length)
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

    def _raw_for(self, stage: str) -> DatasetDict:
        """The splits a stage reads: fit reads them all; validate and test only their own files when given."""
        hp = self.hparams
        own = {"validate": "validation", "test": "test"}.get(stage)
        if self._raw is not None or hp.dataset is not None or own is None:
            return self.raw
        if getattr(hp, f"{own}_files") is None:
            return self.raw if own == "validation" else DatasetDict()  # validation is carved from train
        return self._load((own,))

    def setup(self, stage: str) -> None:
        if stage == "predict":
            if "predict" not in self.datasets:
                self.datasets["predict"] = self._tokenized("predict", self._predict_raw(), False, keep_text=True)
            return
        wanted = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}[stage]
        start = time.perf_counter()
        raw = self._raw_for(stage)
        for split in SPLITS:
            if split not in raw or split in self.datasets:
                continue
            ds = raw[split]
            if unlabelled(split, ds, self.hparams.label_column):
                if split in wanted:
                    rank_zero_warn(f"the {split} split is unlabelled (no labels, or labels < 0 as GLUE's); skipping it")
                continue
            if split == "train" and self.hparams.get("train_examples_per_class"):
                ds = self._few_shot(ds)
            if split in wanted:
                self.datasets[split] = self._tokenized(split, ds)
            else:
                self._label_ids(split, ds)  # bad labels anywhere stop the run now, not after training
        numbered = ("; the labels are ids, so the classes are named by number: set data.init_args.label_names to "
                    "name them" if self._numbered else "")
        rank_zero_info("Text classification: " + ", ".join(f"{k} {len(v)}" for k, v in self.datasets.items())
                       + f"; {self.num_classes} classes {self.class_names}{numbered} (prepared in "
                       f"{time.perf_counter() - start:.1f} s)")

    def _few_shot(self, ds: Dataset) -> Dataset:
        hp = self.hparams
        keep = examples_per_class(list(ds[hp.label_column]), hp.train_examples_per_class, hp.seed)
        rank_zero_info(f"Few-shot training: {hp.train_examples_per_class} examples per class, {len(keep)} of "
                       f"{len(ds)} (data seed {hp.seed})")
        return ds.select(keep)

    def _predict_raw(self) -> Dataset:
        hp = self.hparams
        if hp.predict_files is None:
            raise ValueError("bigmodel predict needs texts: set --data.init_args.predict_files (a .txt, one per line)")
        files = expand_files(hp.predict_files, "predict")
        if all(f.endswith(".txt") for f in files):
            lines = read_lines(files, "predict")
            texts = [line for line in lines if line.strip()]
            if len(texts) < len(lines):
                rank_zero_warn(f"skipped {len(lines) - len(texts)} blank line(s) of the predict files: the prediction "
                               "rows follow the non-blank lines (each row repeats its text)")
            return Dataset.from_dict({hp.text_column: texts})
        return self._clean("predict", load_local({"predict": files}, hp.column_names)["predict"])

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"no {split} data: set data.init_args.{split}_files (or a dataset with that split)")
        return self.loader(self.datasets[split], self.collator())

    def collator(self) -> ClassificationCollator:
        return ClassificationCollator(self.tokenizer, self.hparams.get("pad_to_multiple_of"))

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.datasets:
            raise ValueError("no train data: set data.init_args.train_files (or a dataset with a train split)")
        train = self.datasets["train"]
        lengths = token_lengths(train) if self.hparams.get("group_by_length") else None
        return self.train_loader(train, self.collator(), lengths=lengths)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

