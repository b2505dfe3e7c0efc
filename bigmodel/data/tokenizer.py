"""Tokenizers: a pretrained HF fast tokenizer by name/path, or a WordPiece trained on the training texts.

A tokenizer travels with the model: it is saved in the run directory, next to the checkpoints and inside every
checkpoint (``checkpoint["tokenizer"]``: file name -> text), so fine-tuning reads exactly the vocabulary that
pretraining used. ``load_tokenizer`` accepts any of those places.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from datasets import Dataset
from datasets.utils.logging import is_progress_bar_enabled
from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_info
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from bigmodel.utils.hub import (HubUnavailableError, hub_load_error, hub_offline_mode, hub_reachable, is_local,
                                looks_like_path, offline_message, packaged_model)

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
CHECKPOINT_KEY = "tokenizer"


def train_wordpiece(
    texts: Iterable[str], vocab_size: int, lowercase: bool = True, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train a BERT-style WordPiece tokenizer with the ``tokenizers`` library."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = list(SPECIAL_TOKENS.values())
    tok = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    # its progress bar follows datasets' (the CLI turns both off when the output goes to a file)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                        show_progress=is_progress_bar_enabled())
    tok.train_from_iterator(texts, trainer=trainer)
    # The trainer numbers tokens in a hash order that changes with every process, so the same texts and seed gave
    # other ids, embeddings and results. Ids sorted by token depend only on the vocabulary (which can still differ
    # by a few tokens where merge counts tie; the cache and the run's saved tokenizer make reruns exact).
    learned = sorted(set(tok.get_vocab()) - set(specials))
    tok.model = models.WordPiece({t: i for i, t in enumerate(specials + learned)}, unk_token=SPECIAL_TOKENS["unk_token"])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        **SPECIAL_TOKENS,
    )


WORDPIECE_VOCAB_SIZE = 8192  # the text data modules' default wordpiece_vocab_size


def check_wordpiece_settings(tokenizer: str | None, vocab_size: int, lowercase: bool = True,
                             default: int = WORDPIECE_VOCAB_SIZE) -> None:
    """A ``wordpiece_vocab_size`` (other than its ``default``) or ``lowercase: false`` beside a ``tokenizer`` could
    only be ignored -- the tokenizer brings its own vocabulary and normaliser -- so either is an error rather than a
    setting the user believes they made. (The defaults stay values, not None, so that run configs recorded before
    this check read the same.)"""
    if tokenizer and vocab_size != default:
        raise ValueError(f"wordpiece_vocab_size {vocab_size} sizes the WordPiece trained when no tokenizer is given, "
                         f"but tokenizer is {tokenizer!r} (its own vocabulary is used): remove "
                         f"data.init_args.wordpiece_vocab_size (or set it to its default, {default}), or unset the "
                         "tokenizer")
    if tokenizer and not lowercase:
        raise ValueError(f"lowercase: false is for the WordPiece trained when no tokenizer is given, but tokenizer is "
                         f"{tokenizer!r} (its own normaliser decides the case): remove data.init_args.lowercase (or "
                         "set it to true), or unset the tokenizer")


def cached_wordpiece(
    ds: Dataset, columns: Sequence[str], cache_dir: str | Path, vocab_size: int, lowercase: bool = True,
    model_max_length: int = 512,
) -> PreTrainedTokenizerBase:
    """A WordPiece trained on the non-blank texts of ``columns``, once per (texts, settings).

    The cache entry is named by a hash of the texts themselves, not by how they were loaded, so every process that
    reads the same text (DDP ranks, reruns, two jobs started together) gets the same vocabulary; the lock makes one
    of them train it while the others wait.
    """

    def texts() -> Iterator[str]:
        for batch in ds.iter(batch_size=1000):
            for column in columns:
                yield from (t for t in batch[column] if isinstance(t, str) and t.strip())

    digest = hashlib.sha256(json.dumps([vocab_size, lowercase, model_max_length]).encode())
    for text in texts():
        digest.update(text.encode() + b"\0")
    target = Path(cache_dir) / "tokenizers" / f"wordpiece-{digest.hexdigest()[:16]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # ranks launched together (torchrun, SLURM) train it once
        if not (target / "tokenizer.json").exists():
            rank_zero_info(f"Training a WordPiece tokenizer (vocab {vocab_size}) on the training texts")
            start = time.perf_counter()
            tok = train_wordpiece(batched(texts()), vocab_size, lowercase, model_max_length=model_max_length)
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            tok.save_pretrained(str(tmp))
            tmp.rename(target)
            rank_zero_info(f"Trained the tokenizer in {time.perf_counter() - start:.1f} s; cached in {target}")
    return AutoTokenizer.from_pretrained(str(target))


def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer as {file name: text}, to embed in a checkpoint (plain strings: safe to load)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def _from_files(files: dict[str, str], cache_dir: Path) -> PreTrainedTokenizerBase:
    """A checkpoint's tokenizer files as a directory named by their hash, written whole before it appears: two
    processes loading the same checkpoint at once (a sweep's seeds, test beside predict) never see half of it."""
    digest = hashlib.sha256("".join(f"{k}\0{v}" for k, v in sorted(files.items())).encode()).hexdigest()[:16]
    target = cache_dir / "tokenizers" / digest
    if not all((target / name).is_file() for name in files):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=target.parent))
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        try:
            tmp.rename(target)
        except OSError:  # there already (another process, or a copy cut short): fill in each missing file whole
            for name in files:
                if not (target / name).is_file():
                    (tmp / name).replace(target / name)
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(str(target))


def load_tokenizer(source: str, cache_dir: str | Path) -> PreTrainedTokenizerBase:
    """Load from a directory, a bigmodel checkpoint (.ckpt), a packaged model's name, or a Hugging Face Hub name."""
    path = Path(os.path.expanduser(source))
    if path.is_file():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
            raise ValueError(f"cannot read checkpoint {source!r} ({type(err).__name__}: {err})") from err
        if CHECKPOINT_KEY in ckpt:
            return _from_files(ckpt[CHECKPOINT_KEY], Path(cache_dir))
        beside = path.parent / "tokenizer"
        if beside.is_dir():
            return AutoTokenizer.from_pretrained(str(beside))
        raise ValueError(
            f"checkpoint {source!r} holds no tokenizer and has no tokenizer/ folder beside it; "
            "pass the tokenizer directory or hub name as data.init_args.tokenizer"
        )
    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path))
    packaged = None if is_local(source) else packaged_model(source, "tokenizer")
    if packaged is not None:
        return AutoTokenizer.from_pretrained(packaged)
    if is_local(source):
        raise ValueError(f"tokenizer {source!r} is neither a directory nor a checkpoint file")
    if looks_like_path(source):
        parts = Path(source).parts  # runs/<name>/checkpoints/<file>.ckpt: a fit makes it (quickstart step 1)
        made = f"; a fit of run {parts[-3]!r} writes it: run that fit first" if len(parts) >= 3 and \
            parts[-2] == "checkpoints" and source.endswith(".ckpt") else ""
        raise FileNotFoundError(f"tokenizer {source!r} does not exist (set data.init_args.tokenizer to a tokenizer "
                                f"directory, a bigmodel checkpoint or a hub name){made}")
    fix = (f"save it where there is internet (AutoTokenizer.from_pretrained({source!r}).save_pretrained(DIR)) and pass "
           "that directory as data.init_args.tokenizer")
    if not hub_offline_mode() and not hub_reachable():
        raise HubUnavailableError(offline_message("tokenizer", source, fix[0].upper() + fix[1:]))
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise hub_load_error("tokenizer", source, err, fix) from err


def batched(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
