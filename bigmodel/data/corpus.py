"""Text corpus for masked-language-model pretraining: tokenise, concatenate, chunk into fixed-length blocks."""

from __future__ import annotations

import hashlib
import json
import os
from itertools import chain
from typing import Any

from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from bigmodel.data.collators import MLMCollator
from bigmodel.data.base import TextDataModule
from bigmodel.data.sources import Files, ensure_validation, load_source
from bigmodel.data.tokenizer import batched, load_tokenizer, train_wordpiece


class CorpusDataModule(TextDataModule):
    """Blocks of ``block_size`` tokens: [CLS] followed by the running token stream, documents separated by [SEP].

    Blocks cross document boundaries on purpose (no padding waste); positions restart at every block.

    Args:
        dataset: a Hugging Face dataset name (``wikitext``) or ``builtin:pydoc`` (offline); None for local files.
        dataset_config: the dataset's configuration (``wikitext-103-raw-v1``).
        train_files: local .txt/.jsonl/.csv/.tsv/.parquet files or globs (one document per line for .txt).
        validation_files: held-out files; without them ``validation_fraction`` of train is held out.
        tokenizer: a tokenizer directory, bigmodel checkpoint or hub name; None trains a WordPiece on the corpus.
        wordpiece_vocab_size: vocabulary size of the trained WordPiece.
        **kwargs: batch size, workers, validation split, seed, cache: see ``TextDataModule``.
    """

    def __init__(
        self,
        dataset: str | None = None,
        dataset_config: str | None = None,
        train_files: Files = None,
        validation_files: Files = None,
        text_column: str = "text",
        tokenizer: str | None = None,
        wordpiece_vocab_size: int = 8192,
        lowercase: bool = True,
        block_size: int = 128,
        mlm_probability: float = 0.15,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if block_size < 8:
            raise ValueError(f"block_size must be at least 8, got {block_size}")
        hp = self.hparams
        self.raw = ensure_validation(
            load_source(dataset, dataset_config, {"train": train_files, "validation": validation_files},
                        self.cache_dir),
            hp.validation_fraction,
            hp.seed,
        )
        if text_column not in self.raw["train"].column_names:
            raise ValueError(
                f"text column {text_column!r} not found; columns are {self.raw['train'].column_names} "
                "(set data.init_args.text_column)"
            )
        self.tokenizer = (
            load_tokenizer(tokenizer, self.cache_dir) if tokenizer else self._trained_tokenizer()
        )
        self.vocab_size = len(self.tokenizer)
        self.datasets: dict[str, Any] = {}

    def _trained_tokenizer(self):
        """Train once per corpus and settings; cached so DDP ranks and reruns share the same vocabulary."""
        hp = self.hparams
        key = json.dumps(
            [self.raw["train"]._fingerprint, hp.text_column, hp.wordpiece_vocab_size, hp.lowercase, hp.block_size]
        )
        target = self.cache_dir / "tokenizers" / hashlib.sha256(key.encode()).hexdigest()[:16]
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):  # ranks launched together (torchrun, SLURM) train it once
            if not (target / "tokenizer.json").exists():
                rank_zero_info(f"Training a WordPiece tokenizer (vocab {hp.wordpiece_vocab_size}) on the corpus")
                texts = (t for t in self.raw["train"][hp.text_column] if t and t.strip())
                tok = train_wordpiece(batched(texts), hp.wordpiece_vocab_size, hp.lowercase,
                                      model_max_length=hp.block_size)
                tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
                tok.save_pretrained(str(tmp))
                tmp.rename(target)
        return AutoTokenizer.from_pretrained(str(target))

    def _blocks(self, split: str):
        hp = self.hparams
        tok = self.tokenizer
        size = hp.block_size - 1  # room for [CLS]
        sep, cls = tok.sep_token_id, tok.cls_token_id

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            texts = [t for t in batch[hp.text_column] if t and t.strip()]
            ids = tok(texts, add_special_tokens=False, verbose=False)["input_ids"]
            return {"ids": [x + [sep] for x in ids if x]}

        def group(batch: dict[str, list]) -> dict[str, list]:
            stream = list(chain.from_iterable(batch["ids"]))
            n = len(stream) // size * size
            return {"input_ids": [[cls] + stream[i : i + size] for i in range(0, n, size)]}

        ds = self.raw[split]
        ds = ds.map(tokenize, batched=True, remove_columns=ds.column_names, num_proc=hp.num_proc,
                    desc=f"Tokenising {split}")
        ds = ds.map(group, batched=True, batch_size=1000, remove_columns=["ids"], num_proc=hp.num_proc,
                    desc=f"Chunking {split} into blocks of {hp.block_size}")
        if len(ds) == 0:
            raise ValueError(
                f"the {split} split has fewer than {hp.block_size} tokens; give more text or a smaller block_size"
            )
        return ds.with_format("torch")

    def prepare_data(self) -> None:
        for split in ("train", "validation"):
            self._blocks(split)  # fills the datasets cache on one process

    def setup(self, stage: str) -> None:
        if not self.datasets:
            self.datasets = {split: self._blocks(split) for split in ("train", "validation")}
            rank_zero_info(
                f"Corpus: {len(self.datasets['train'])} train / {len(self.datasets['validation'])} validation blocks "
                f"of {self.hparams.block_size} tokens, vocabulary {self.vocab_size}"
            )

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        blocks = self.datasets["train"]
        collate = MLMCollator(self.tokenizer, hp.mlm_probability, seed=hp.seed)
        return self.train_loader(blocks, collate, drop_last=len(blocks) > hp.batch_size)

    def val_dataloader(self) -> DataLoader:
        hp = self.hparams
        return self.loader(self.datasets["validation"], MLMCollator(self.tokenizer, hp.mlm_probability, seed=hp.seed))

