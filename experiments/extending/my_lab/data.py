"""Which words of a text are code: a token-tagging data set made offline from Python's own documentation."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import DataCollatorForTokenClassification, PreTrainedTokenizerBase

from bigmodel import UsageError
from bigmodel.data import TextDataModule, cached_wordpiece, check_wordpiece_settings, load_tokenizer

TAGS = ["O", "CODE"]
VOCAB_SIZE = 4096  # of the WordPiece trained when no tokenizer is given
_QUOTED = re.compile(r'"([^"]*)"')  # the reference renders inline code as "code"
_WORD = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks


def words_and_tags(text: str) -> tuple[list[str], list[int]]:
    """``'The "if" statement'`` -> ``(["The", "if", "statement"], [0, 1, 0])``: the words without the quotes, and
    1 (CODE) for each word the documentation quoted as code. Text without quotes is all O."""
    words: list[str] = []
    tags: list[int] = []
    for i, piece in enumerate(_QUOTED.split(text)):  # odd pieces were inside quotes
        found = _WORD.findall(piece)
        words += found
        tags += [i % 2] * len(found)
    return words, tags


def reference_paragraphs() -> dict[str, list[str]]:
    """Prose paragraphs of the Python reference that ships with CPython (``pydoc_data``), split 80/10/10 by a
    hash of the text, so the split never changes with the Python version's other paragraphs. Code blocks and
    grammar (indented), headings and paragraphs with an unpaired quote are left out."""
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(block.split())
            if block.startswith(" ") or len(text.split()) < 6 or text.count('"') % 2 or re.search(r"[=*~-]{4}", text):
                continue
            paragraphs.append(text)
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for text in dict.fromkeys(paragraphs):
        bucket = hashlib.sha256(text.encode()).digest()[0] % 10
        splits["test" if bucket == 0 else "validation" if bucket == 1 else "train"].append(text)
    return splits


class TaggingCollator:
    """Pads ``input_ids`` with the tokenizer's pad id and ``labels`` with -100 (transformers'
    ``DataCollatorForTokenClassification``); each text's words and ``word_ids`` travel beside the tensors, for
    turning token predictions back into one tag per word."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.inner = DataCollatorForTokenClassification(tokenizer)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = ("input_ids", "attention_mask", "labels")
        batch = dict(self.inner([{k: ex[k] for k in keys if k in ex} for ex in examples]))
        batch["words"] = [ex["words"] for ex in examples]
        batch["word_ids"] = [ex["word_ids"] for ex in examples]
        return batch


class CodeSpansDataModule(TextDataModule):
    """Tag each word of a paragraph of Python's reference documentation as code (``CODE``) or prose (``O``).

    The reference quotes inline code (``The "if" statement is used for ...``); the quotes are removed from the
    input and become the labels, so the model has to tell from the words and their context what is code ("the if
    statement" is, "if the value" is not). A real labelled task, offline: 868 paragraphs, about 48k words, 8 % of
    them code. Each word's first sub-word token carries its tag; the other tokens are -100 (not scored).

    Args:
        tokenizer: a bigmodel checkpoint (the tokenizer inside it: give the one ``init_from`` names), a tokenizer
            directory or a hub name; None trains a WordPiece on the training paragraphs (cached).
        max_length: tokens per paragraph; the words after it are cut (and not tagged).
        wordpiece_vocab_size: of the WordPiece trained when ``tokenizer`` is None.
        predict_files: .txt files to tag with ``bigmodel predict``, one text per line.
        **kwargs: batch size, workers, seed, cache directory: see ``bigmodel.data.DataModule``.
    """

    def __init__(
        self,
        tokenizer: str | None = None,
        max_length: int = 128,
        wordpiece_vocab_size: int = VOCAB_SIZE,
        predict_files: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_wordpiece_settings(tokenizer, wordpiece_vocab_size, default=VOCAB_SIZE)
        if max_length < 8:
            raise UsageError(f"max_length must be at least 8 tokens, got {max_length}")
        self.paragraphs = reference_paragraphs()
        if tokenizer is not None:
            self.tokenizer = load_tokenizer(tokenizer, self.cache_dir)
        else:
            texts = Dataset.from_dict({"text": [" ".join(words_and_tags(t)[0]) for t in self.paragraphs["train"]]})
            self.tokenizer = cached_wordpiece(texts, ["text"], self.cache_dir, wordpiece_vocab_size,
                                              model_max_length=max_length)
        # what the CLI links to the task (model.init_args.vocab_size, num_classes, class_names)
        self.vocab_size = len(self.tokenizer)
        self.class_names = list(TAGS)
        self.num_classes = len(TAGS)
        self.datasets: dict[str, list[dict[str, Any]]] = {}
        self.collate = TaggingCollator(self.tokenizer)

    def encode(self, texts: list[str], labelled: bool = True) -> list[dict[str, Any]]:
        """Texts -> examples: token ids, the words, which word each token belongs to, and (``labelled``) labels."""
        pairs = [words_and_tags(t) for t in texts]
        enc = self.tokenizer([words for words, _ in pairs], is_split_into_words=True, truncation=True,
                             max_length=self.hparams.max_length)
        examples = []
        for i, (words, tags) in enumerate(pairs):
            word_ids = enc.word_ids(i)
            example = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                       "words": words, "word_ids": word_ids}
            if labelled:
                first = [w is not None and (j == 0 or word_ids[j - 1] != w) for j, w in enumerate(word_ids)]
                example["labels"] = [tags[w] if f else -100 for w, f in zip(word_ids, first)]
            examples.append(example)
        return examples

    def batch(self, texts: list[str]) -> dict[str, Any]:
        """Texts -> one batch as the loaders make it (for callbacks and notebooks)."""
        return self.collate(self.encode(texts, labelled=False))

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self.datasets["predict"] = self.encode(self._predict_texts(), labelled=False)
            return
        for split, texts in self.paragraphs.items():
            if split not in self.datasets:
                self.datasets[split] = self.encode(texts)
        rank_zero_info("Code spans: " + ", ".join(f"{s} {len(d)} paragraphs" for s, d in self.datasets.items()))

    def _predict_texts(self) -> list[str]:
        files = self.hparams.predict_files
        files = [files] if isinstance(files, str) else files
        if not files:
            raise UsageError("bigmodel predict needs texts: set --data.init_args.predict_files (.txt, one per line)")
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise UsageError(f"predict file(s) {missing} do not exist")
        texts = [line.strip() for f in files for line in Path(f).read_text(encoding="utf-8").splitlines()]
        return [t for t in texts if t]

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.datasets["train"], self.collate)  # resumable mid-epoch, shuffled per epoch

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["validation"], self.collate)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["test"], self.collate)

    def predict_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["predict"], self.collate)
