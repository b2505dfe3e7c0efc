"""Batch makers. They drop the attention mask when a batch has no padding (checked on the CPU, before the
batch reaches the device), so the encoder can call SDPA without a mask and take the flash kernel."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, PreTrainedTokenizerBase

from bigmodel.utils.seeding import mix_seed


def _drop_full_mask(batch: dict[str, Any]) -> dict[str, Any]:
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):
        del batch["attention_mask"]
    return batch


class MLMCollator:
    """Dynamic BERT masking with HF's ``torch_mask_tokens`` (15% selected, 80/10/10; special and padding tokens
    never selected), or of whole words (``whole_word_mask``), redrawn each time a batch is made. Returns flat
    indices of the selected positions so the model computes vocabulary logits only there.

    ``seed``: make the masks a function of the data, not of the process's random state. Examples that carry
    ``epoch`` and ``index`` (training, see ``sampling.EpochIndexed``) are masked from (seed, epoch, indices): new
    masks every epoch, the same ones again after a resume. Examples without them (validation) are masked block by
    block, each from (seed, its own token ids): a block gets the same masks every epoch, whatever the batch size,
    the blocks beside it or the number of devices, so validation numbers compare across epochs and runs (blocks
    with identical tokens get identical masks). Seeded by content rather than by position in the validation set,
    the masks need no index from the loader (Lightning's ``DistributedSampler`` under DDP, ``limit_val_batches``).

    ``masked_positions_multiple_of``: the number of selected positions varies from batch to batch (binomial), so
    a compiled model sees a new shape at almost every batch. Rounding the count up to a multiple of ``m`` by
    padding (position 0, a valid index; label -100, which the loss and the accuracy ignore) leaves a few shapes.
    The masks themselves are unchanged; the padded rows cost head compute (up to ``m - 1`` rows per batch).

    ``document_mask``: packed blocks (documents each ending in [SEP]) also carry ``document_ids`` (B, S): a token's
    document is the number of [SEP] before it, so [SEP] closes its own document. The encoder then keeps documents
    apart (``TransformerEncoder(document_ids=...)``). Read from the tokens before masking, which may draw [SEP]'s id.

    ``whole_word_mask``: select words, not tokens (BERT's whole-word masking, Google 2019): each word is drawn
    with ``mlm_probability`` and all its tokens with it, as transformers' ``whole_word_mask`` draws them (the same
    share of tokens in expectation, a binomial count per block; Google's ``create_pretraining_data.py`` instead
    fills a fixed budget of round(p * n) tokens, capped at ``max_predictions_per_seq``, from shuffled words). Each
    selected token is then [MASK] / random / kept 80/10/10 as in Google's (transformers makes every one [MASK]).
    Words come from the vocabulary (``word_continuations``), since packed blocks no longer have the text's offsets.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15, seed: int | None = None,
        masked_positions_multiple_of: int | None = None, document_mask: bool = False, whole_word_mask: bool = False,
    ) -> None:
        if tokenizer.mask_token is None or tokenizer.pad_token is None:
            raise ValueError("MLM needs a tokenizer with mask and pad tokens (e.g. [MASK], [PAD]): give "
                             "data.init_args.tokenizer one that has them, leave it unset to train a WordPiece, or "
                             "train a causal LM (objective: causal)")
        if masked_positions_multiple_of is not None and masked_positions_multiple_of < 1:
            raise ValueError(f"masked_positions_multiple_of must be >= 1 or null, got {masked_positions_multiple_of}")
        self.inner = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.pad_id = tokenizer.pad_token_id
        self.seed = seed
        self.multiple_of = masked_positions_multiple_of
        if document_mask and tokenizer.sep_token_id is None:
            raise ValueError("document_mask finds documents by their [SEP]; this tokenizer has no sep token")
        self.sep_id = tokenizer.sep_token_id if document_mask else None
        self.continues = word_continuations(tokenizer) if whole_word_mask else None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        by_block = self.seed is not None and "index" not in examples[0]  # validation: each block's own masks
        if self.seed is not None and not by_block:
            key = mix_seed(self.seed, int(examples[0]["epoch"]), [int(ex["index"]) for ex in examples])
            self.inner.generator = torch.Generator().manual_seed(key)
        rows = [torch.as_tensor(ex["input_ids"]) for ex in examples]
        if len({len(r) for r in rows}) == 1:
            input_ids = torch.stack(rows)  # fixed-length blocks: no padding work
        else:
            input_ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=self.pad_id)
        attention_mask = input_ids != self.pad_id
        special = torch.isin(input_ids, self.special_ids)
        documents = None
        if self.sep_id is not None:
            sep = (input_ids == self.sep_id).long()
            documents = sep.cumsum(dim=1) - sep
        if by_block:
            input_ids, labels = self._mask_each_block(input_ids, special, [len(r) for r in rows])
        else:
            input_ids, labels = self._mask_tokens(input_ids, special)
        labels = labels.view(-1)
        positions = (labels != -100).nonzero().squeeze(1)
        masked_labels = labels[positions]
        if self.multiple_of:
            extra = max(1, -(-len(positions) // self.multiple_of)) * self.multiple_of - len(positions)
            positions = torch.cat([positions, positions.new_zeros(extra)])
            masked_labels = torch.cat([masked_labels, masked_labels.new_full((extra,), -100)])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "masked_positions": positions, "masked_labels": masked_labels}
        if documents is not None:
            batch["document_ids"] = documents
        return _drop_full_mask(batch)

    def _mask_each_block(self, input_ids: torch.Tensor, special: torch.Tensor, lengths: list[int]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``torch_mask_tokens`` on each row alone, unpadded, with a generator seeded from (seed, its token ids):
        its masks depend on nothing else in the batch (not even the padding to the longest row)."""
        labels = torch.full_like(input_ids, -100)
        for i, n in enumerate(lengths):
            row = input_ids[i : i + 1, :n]
            self.inner.generator = torch.Generator().manual_seed(mix_seed(self.seed, row[0].tolist()))
            masked, row_labels = self._mask_tokens(row.clone(), special[i : i + 1, :n])
            input_ids[i, :n], labels[i, :n] = masked[0], row_labels[0]
        return input_ids, labels

    def _mask_tokens(self, input_ids: torch.Tensor, special: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs after masking, labels: the original token where selected, else -100), drawn from the inner
        collator's generator (seeded by ``__call__``) or the global one."""
        if self.continues is None:
            return self.inner.torch_mask_tokens(input_ids, special_tokens_mask=special)
        generator, shape = self.inner.generator, input_ids.shape
        after_special = torch.nn.functional.pad(special[:, :-1], (1, 0), value=True)
        starts = (~self.continues[input_ids] | after_special) & ~special  # a word's first token
        word = starts.long().cumsum(1)  # each token's word (specials: the word before them, excluded below)
        chosen = torch.bernoulli(torch.full(shape, self.inner.mlm_probability), generator=generator).bool() & starts
        by_word = torch.zeros(shape[0], shape[1] + 1, dtype=torch.long).scatter_reduce(1, word, chosen.long(), "amax")
        selected = by_word.gather(1, word).bool() & ~special
        labels = input_ids.masked_fill(~selected, -100)
        replaced = torch.bernoulli(torch.full(shape, 0.8), generator=generator).bool() & selected
        randomised = torch.bernoulli(torch.full(shape, 0.5), generator=generator).bool() & selected & ~replaced
        random_ids = torch.randint(len(self.inner.tokenizer), shape, generator=generator)
        masked = input_ids.masked_fill(replaced, self.inner.tokenizer.mask_token_id)
        return torch.where(randomised, random_ids, masked), labels


def word_continuations(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """For each token id, whether it continues the word before it: WordPiece marks continuations (``##``), byte-level
    BPE (``Ġ``) and SentencePiece (``▁``) mark a word's first token instead (so "word," is one word there, as
    transformers' offset-based word masking also finds; a newline joins the words beside it there, as it does in
    transformers). A token after a special token, and an added token, always starts a word."""
    vocab = tokenizer.get_vocab()
    continues = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.bool)
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    prefix = getattr(model, "continuing_subword_prefix", None) if type(model).__name__ == "WordPiece" else None
    if prefix:
        continues[[i for token, i in vocab.items() if token.startswith(prefix)]] = True
        return continues
    marker = next((m for m in ("Ġ", "▁") if sum(t.startswith(m) for t in vocab) > len(vocab) // 10), None)
    if marker is None:
        raise ValueError("whole_word_mask finds words by the vocabulary's word pieces (WordPiece '##', byte-level BPE "
                         "'Ġ', SentencePiece '▁'); this tokenizer has none: set whole_word_mask: false")
    continues[[i for token, i in vocab.items() if not token.startswith(marker)]] = True
    continues[list(getattr(tokenizer, "added_tokens_decoder", {}))] = False  # e.g. "<url>": a word of its own
    return continues


class ClassificationCollator:
    """Dynamic padding to the longest sequence in the batch, rounded up to ``pad_to_multiple_of`` (by the
    tokenizer's ``pad``); passes the raw texts through for prediction files."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None) -> None:
        self.inner = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [ex.pop("text") for ex in examples] if "text" in examples[0] else None
        batch = dict(self.inner([{k: v for k, v in ex.items() if k not in ("epoch", "index")} for ex in examples]))
        if texts is not None:
            batch["text"] = texts
        return _drop_full_mask(batch)


class CausalLMCollator:
    """Blocks for next-token prediction: ``labels`` are the inputs themselves (the task shifts them by one),
    with -100 at padding so it is never a target. Corpus blocks have no padding; other sources may."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [torch.as_tensor(ex["input_ids"]) for ex in examples]
        input_ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=self.pad_id)
        lengths = torch.tensor([len(r) for r in rows])
        attention_mask = torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]
        labels = input_ids.masked_fill(~attention_mask, -100)
        return _drop_full_mask({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})


def collate_prompts(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Prompts to continue: unpadded rows of different lengths (each is generated on its own) and their texts."""
    return {"prompt_ids": [torch.as_tensor(ex["input_ids"]) for ex in examples],
            "text": [ex["text"] for ex in examples]}
