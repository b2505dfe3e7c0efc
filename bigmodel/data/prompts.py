"""Templates for prompt-based classification (PET, Schick & Schütze 2021): each text becomes a cloze sentence with
one mask token, e.g. ``"{text} It was {mask}."``, whose MLM prediction the task reads through a verbaliser.

The template is never truncated: when an example is too long, its text fields are cut (the longest first) so
that the filled template, mask included, fits ``max_length``.
"""

from __future__ import annotations

import string
from typing import Any

from transformers import PreTrainedTokenizerBase

FIELDS = {"text", "text_a", "text_b", "mask"}


def check_template(template: str, has_pair: bool) -> None:
    """One-line errors for a template the data cannot fill."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(f"template {template!r}: {err} (write a literal brace as {{{{ or }}}})") from err
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise ValueError(f"template {template!r} has unknown fields {unknown}; use {{text}} (or {{text_a}}/{{text_b}} "
                         "for pairs) and {mask}")
    masks = fields.count("mask") + template.count("[MASK]")
    if masks != 1:
        raise ValueError(f"template {template!r} has {masks} mask slots; put exactly one {{mask}} (or [MASK]) where "
                         "the verbaliser's word goes, e.g. '{text} It was {mask}.'")
    if not {"text", "text_a"} & set(fields):
        raise ValueError(f"template {template!r} has no {{text}} field: the example's text would not be in the prompt")
    if "text_b" in fields and not has_pair:
        raise ValueError(f"template {template!r} uses {{text_b}}: set data.init_args.text_pair_column")
    if has_pair and "text_b" not in fields:
        raise ValueError(f"template {template!r} leaves out the pair's second text: add {{text_b}}")


def fill(template: str, mask_token: str, text: str, text_b: str | None = None) -> str:
    return template.replace("[MASK]", "{mask}").format(text=text, text_a=text, text_b=text_b or "", mask=mask_token)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, template: str, texts: list[str], pairs: list[str] | None, max_length: int,
) -> dict[str, Any]:
    """Tokenised filled templates, each with exactly one mask token (at ``mask_index``) and at most
    ``max_length`` tokens; the ``truncated`` flag says whose text was cut."""
    mask = tokenizer.mask_token
    if mask is None:
        raise ValueError("the tokenizer has no mask token; prompt-based classification needs an MLM's tokenizer")
    overhead = len(tokenizer(fill(template, mask, "", "" if pairs is not None else None))["input_ids"])
    budget = max_length - overhead
    if budget < 1:
        raise ValueError(f"the template alone takes {overhead} tokens, max_length is {max_length}; raise "
                         "data.init_args.max_length or shorten the template")
    columns = [texts] + ([pairs] if pairs is not None else [])
    pieces = [tokenizer(col, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
              for col in columns]
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "mask_index": [], "truncated": []}
    for i in range(len(texts)):
        originals = [col[i] for col in columns]
        lengths = [len(p[i]) for p in pieces]
        cut = False
        while True:
            lengths = _longest_first(lengths, budget)
            kept = [text if n >= len(p[i]) else text[: p[i][n - 1][1] if n else 0]
                    for text, n, p in zip(originals, lengths, pieces)]
            ids = tokenizer(fill(template, mask, *kept))["input_ids"]
            cut = cut or kept != originals
            if len(ids) <= max_length or budget <= 1:  # re-tokenising a cut text can add one token at the seam
                break
            budget -= len(ids) - max_length
        if ids.count(tokenizer.mask_token_id) != 1:
            raise ValueError(f"example {i}'s text contains the mask token {mask!r} itself; the prompt would have "
                             "two masks: remove it from the data")
        out["input_ids"].append(ids[:max_length])
        out["attention_mask"].append([1] * len(ids[:max_length]))
        out["mask_index"].append(ids.index(tokenizer.mask_token_id))  # found once here, not per training step
        out["truncated"].append(cut)
    return out


def _longest_first(lengths: list[int], budget: int) -> list[int]:
    """Token counts that fit ``budget``, taking one token at a time from the longest text (as tokenizers'
    ``longest_first`` truncation does)."""
    lengths = list(lengths)
    while sum(lengths) > budget:
        longest = max(range(len(lengths)), key=lambda j: lengths[j])
        lengths[longest] -= 1
    return lengths
