"""Text corpus for language-model pretraining (masked or causal): tokenise, concatenate, chunk into fixed-length
blocks."""

from __future__ import annotations

import time
from itertools import chain
from typing import Any, Literal

from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from bigmodel.data.collators import CausalLMCollator, MLMCollator, collate_prompts
from bigmodel.data.base import TextDataModule
from bigmodel.data.sources.text import (Files, blank_rows, check_columns, check_texts, ensure_validation,
                                        expand_files, load_source, read_lines)
from bigmodel.data.tokenizer import WORDPIECE_VOCAB_SIZE, cached_wordpiece, check_wordpiece_settings, load_tokenizer


class CorpusDataModule(TextDataModule):
    """Blocks of ``block_size`` tokens: [CLS] followed by the running token stream, documents separated by [SEP]
    (a GPT-style tokenizer without them: its BOS, when it has one, and its EOS; see ``document_tokens``).

    Blocks cross document boundaries on purpose (no padding waste); positions restart at every block. With
    ``document_mask`` the blocks stay packed but documents stay apart: each token attends only within its document
    and positions restart at each document (``MLMCollator``'s ``document_ids``), as if each were alone.

    Args:
        dataset: a Hugging Face dataset name (``wikitext``) or ``builtin:pydoc`` (offline); None for local files.
        dataset_config: the dataset's configuration (``wikitext-103-raw-v1``).
        train_files: local .txt/.jsonl/.csv/.tsv/.parquet files or globs (one document per line for .txt).
        validation_files: held-out files; without them (and without a dataset's own validation split) the first
            ``validation_fraction`` of the train rows is held out.
        validation_fraction: (a ``DataModule`` setting) held out as ONE contiguous run, the first rows of train (of
            the files' concatenation, in the order given), as Hugging Face's run_mlm.py / run_clm.py take
            ``train[:p%]``; not rows drawn by ``seed``: a row is a line, a paragraph of an article, so random rows
            would validate on paragraphs of the very articles trained on and the validation loss and perplexity
            would be optimistic, not a held-out estimate (``sources.text.hold_out_first``).
        test_files: held-out files for ``bigmodel test`` (test/loss, test/ppl, test/acc); a hub dataset's own
            ``test`` split is used when it has one. Tokenised only when a test runs.
        text_column: the column of texts (``.txt`` files: ``text``).
        column_names: names for the columns of .csv/.tsv files that have no header row.
        tokenizer: a tokenizer directory, bigmodel checkpoint or hub name; None trains a WordPiece on the corpus.
        wordpiece_vocab_size: vocabulary size of the WordPiece trained when ``tokenizer`` is None. Another
            size than the default (8192) beside a ``tokenizer`` is an error (the tokenizer has its own vocabulary).
        lowercase: the trained WordPiece lowercases the texts; ``false`` beside a ``tokenizer`` is an error.
        block_size: tokens per block, [CLS] included: the sequence length the model trains on.
        mlm_probability: ``mlm``: share of each block's tokens chosen for prediction (BERT's 80/10/10 masking).
        objective: ``mlm`` masks 15% of each block (``MLMTask``); ``causal`` gives whole blocks as their own labels
            (``CausalLMTask``).
        masked_positions_multiple_of: ``mlm``: pad each batch's masked positions (ignored in loss and accuracy) to a
            multiple of this, so a compiled model sees a few shapes instead of a new count at almost every batch
            (``MLMCollator``). Off (null) by default: in eager mode the padded rows are only extra head compute.
        predict_files: prompts for ``bigmodel predict`` with a causal LM: .txt files, one prompt per line.
        document_mask: ``mlm``: batches carry ``document_ids`` (attention within a document, positions per document).
        whole_word_mask: ``mlm``: select whole words, all their word pieces at once (BERT's whole-word masking;
            ``MLMCollator``), instead of single tokens.
        **kwargs: batch size, workers, validation_fraction, seed (the training order and ``mlm``'s validation
            masks; not the hold-out), cache: see ``TextDataModule``.
    """

    def __init__(
        self,
        dataset: str | None = None,
        dataset_config: str | None = None,
        train_files: Files = None,
        validation_files: Files = None,
        test_files: Files = None,
        text_column: str = "text",
        column_names: list[str] | None = None,
        tokenizer: str | None = None,
        wordpiece_vocab_size: int = WORDPIECE_VOCAB_SIZE,
        lowercase: bool = True,
        block_size: int = 128,
        mlm_probability: float = 0.15,
        objective: Literal["mlm", "causal"] = "mlm",
        predict_files: Files = None,
        masked_positions_multiple_of: int | None = None,
        document_mask: bool = False,
        whole_word_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_wordpiece_settings(tokenizer, wordpiece_vocab_size, lowercase)
        if document_mask and objective != "mlm":
            raise ValueError("document_mask is for objective: mlm (a causal block is one running stream)")
        if whole_word_mask and objective != "mlm":
            raise ValueError("whole_word_mask is for objective: mlm (a causal LM predicts every token)")
        if block_size < 8:
            raise ValueError(f"block_size must be at least 8, got {block_size}")
        if masked_positions_multiple_of is not None and masked_positions_multiple_of < 1:
            raise ValueError(f"masked_positions_multiple_of must be >= 1 or null, got {masked_positions_multiple_of}")
        if objective == "mlm" and not 0 < mlm_probability <= 1:
            raise ValueError(f"mlm_probability {mlm_probability}: set data.init_args.mlm_probability in (0, 1] "
                             "(BERT's is 0.15)")
        hp = self.hparams
        source = load_source(dataset, dataset_config,
                             {"train": train_files, "validation": validation_files, "test": test_files},
                             self.cache_dir, column_names)
        self._held_out = "validation" not in source  # validation is train's first rows
        self.raw = ensure_validation(source, hp.validation_fraction, None)  # contiguous: see validation_fraction
        for split, ds in self.raw.items():
            check_columns(ds, {"text": text_column}, split, f"the {split} split", self.raw["train"].column_names)
            check_texts(ds, [text_column], split)
        self.tokenizer = (
            load_tokenizer(tokenizer, self.cache_dir) if tokenizer else
            cached_wordpiece(self.raw["train"], [text_column], self.cache_dir, wordpiece_vocab_size, lowercase,
                             model_max_length=block_size)
        )
        self.vocab_size = len(self.tokenizer)
        document_tokens(self.tokenizer)  # a tokenizer that cannot mark documents is refused before any tokenising
        if objective == "mlm":
            self._collator()  # the same for one without [MASK] or padding
        self.datasets: dict[str, Any] = {}

    def _blocks(self, split: str):
        hp = self.hparams
        tok = self.tokenizer
        cls, sep = document_tokens(tok)
        start = [] if cls is None else [cls]
        size = hp.block_size - len(start)  # room for [CLS]

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            texts = [t for t in batch[hp.text_column] if t and t.strip()]
            ids = tok(texts, add_special_tokens=False, verbose=False)["input_ids"]
            return {"ids": [x + [sep] for x in ids if x]}

        def group(batch: dict[str, list]) -> dict[str, list]:
            stream = list(chain.from_iterable(batch["ids"]))
            n = len(stream) // size * size
            return {"input_ids": [start + stream[i : i + size] for i in range(0, n, size)]}

        ds = self.raw[split]
        ds = ds.map(tokenize, batched=True, remove_columns=ds.column_names, num_proc=hp.num_proc,
                    desc=f"Tokenising {split}")
        ds = ds.map(group, batched=True, batch_size=1000, remove_columns=["ids"], num_proc=hp.num_proc,
                    desc=f"Chunking {split} into blocks of {hp.block_size}")
        if len(ds) == 0:
            held_out = split == "validation" and self._held_out
            held = ", a larger validation_fraction, validation_files" if held_out else ""
            raise ValueError(f"the {split} split has fewer than {hp.block_size} tokens; give more text{held} or a "
                             "smaller block_size")
        return ds.with_format("torch")

    def _splits(self, stage: str) -> tuple[str, ...]:
        """The splits a stage tokenises (a fit never pays for the test split); a test without a test split is a
        one-line error that names the setting."""
        if stage == "predict":
            return ()
        if stage == "test" and "test" not in self.raw:
            hp = self.hparams
            if hp.dataset is None:
                raise ValueError("this corpus has no test split: set --data.init_args.test_files (held-out text, "
                                 "like validation_files)")
            raise ValueError(f"dataset {hp.dataset!r} has no test split: pretrain on local train_files with "
                             "--data.init_args.test_files (read only without a dataset), or on a dataset with one")
        return {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}[stage]

    def _stage(self) -> str:
        """The stage the trainer runs (``fit`` outside one): Lightning's ``prepare_data`` is not told."""
        return self.trainer.state.fn.value if self.trainer is not None and self.trainer.state.fn else "fit"

    def prepare_data(self) -> None:
        self._started = time.perf_counter()  # the tokenising happens here; setup then reads the cache
        for split in self._splits(self._stage()):
            self._blocks(split)  # fills the datasets cache on one process

    def setup(self, stage: str) -> None:
        if stage == "predict":
            if "predict" not in self.datasets:
                self.datasets["predict"] = self._prompts()
            return
        splits = self._splits(stage)
        if all(split in self.datasets for split in splits):
            return
        start, self._started = getattr(self, "_started", None) or time.perf_counter(), None  # this stage's time
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = self._blocks(split)
                dropped = len(blank_rows(self.raw[split], self.hparams.text_column))
                if dropped:
                    rank_zero_info(f"Corpus: dropped {dropped} empty {split} rows (of {len(self.raw[split])})")
        rank_zero_info(
            "Corpus: " + " / ".join(f"{len(self.datasets[split])} {split}" for split in splits)
            + f" blocks of {self.hparams.block_size} tokens, vocabulary {self.vocab_size} "
            f"(prepared in {time.perf_counter() - start:.1f} s)"
        )

    def _prompts(self) -> Dataset:
        """One prompt per non-empty line, as a block begins: [CLS] then the tokens, no [SEP] (the text goes on)."""
        if self.hparams.predict_files is None:
            raise ValueError("bigmodel predict needs prompts: set --data.init_args.predict_files (a .txt, one per line)")
        texts = [line for line in read_lines(expand_files(self.hparams.predict_files, "predict"), "predict")
                 if line.strip()]
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        cls = document_tokens(self.tokenizer)[0]
        return Dataset.from_dict({"text": texts, "input_ids": [([] if cls is None else [cls]) + x for x in ids]})

    def _collator(self):
        hp = self.hparams
        if hp.objective == "causal":
            return CausalLMCollator(self.tokenizer)
        return MLMCollator(self.tokenizer, hp.mlm_probability, seed=hp.seed,
                           masked_positions_multiple_of=hp.get("masked_positions_multiple_of"),
                           document_mask=hp.get("document_mask", False),
                           whole_word_mask=hp.get("whole_word_mask", False))

    def train_dataloader(self) -> DataLoader:
        blocks = self.datasets["train"]
        return self.train_loader(blocks, self._collator(), drop_last=len(blocks) > self.hparams.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["validation"], self._collator())

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["test"], self._collator())

    def predict_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["predict"], collate_prompts)


def document_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int | None, int]:
    """(the token each block starts with, the token that ends each document): BERT's [CLS] and [SEP], else a
    GPT-style tokenizer's BOS (None when it has none: blocks are the stream alone) and EOS. Without an end token the
    documents would run together: refused."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if end is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has neither a [SEP] nor an EOS token to end each "
                         "document with: give data.init_args.tokenizer one that has, or leave it unset to train a "
                         "WordPiece on the corpus")
    return start, end
