import torch

from bigmodel.data.collators import ClassificationCollator, MLMCollator
from bigmodel.data.tokenizer import train_wordpiece


def _tokenizer(pydoc_text):
    return train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)


def test_masking_statistics(pydoc_text):
    tok = _tokenizer(pydoc_text)
    torch.manual_seed(0)
    ids = torch.randint(len(tok.all_special_ids) + 5, len(tok), (64, 128))
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    ids[:8, 100:] = tok.pad_token_id  # some padding
    examples = [{"input_ids": row} for row in ids]
    collate = MLMCollator(tok)
    batch = collate(examples)
    pos, labels = batch["masked_positions"], batch["masked_labels"]
    flat_orig, flat_new = ids.view(-1), batch["input_ids"].view(-1)
    assert torch.equal(flat_orig[pos], labels)  # labels are the original tokens
    eligible = ~torch.isin(flat_orig, torch.tensor(tok.all_special_ids))
    assert eligible[pos].all(), "special or padding tokens were selected"
    rate = len(pos) / int(eligible.sum())
    assert 0.14 < rate < 0.16
    new = flat_new[pos]
    masked = (new == tok.mask_token_id).float().mean().item()
    kept = (new == labels).float().mean().item()
    assert 0.77 < masked < 0.83 and 0.07 < kept < 0.13 and 0.07 < 1 - masked - kept < 0.13
    unselected = torch.ones_like(flat_orig, dtype=torch.bool)
    unselected[pos] = False
    assert torch.equal(flat_orig[unselected], flat_new[unselected])
    assert "attention_mask" in batch  # padded rows keep a mask ...
    again = collate(examples)
    assert not torch.equal(again["masked_positions"], pos)  # ... and masking is redrawn per batch
    full = collate([{"input_ids": row} for row in ids[8:]])
    assert "attention_mask" not in full  # no padding -> no mask -> SDPA flash path


def test_classification_collator_pads_dynamically(pydoc_text):
    tok = _tokenizer(pydoc_text)
    feats = [dict(tok(t), labels=i, text=t) for i, t in enumerate(["the for statement", "a list"])]
    batch = ClassificationCollator(tok)(feats)
    assert batch["input_ids"].shape == (2, 5) and batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0]
    assert batch["labels"].tolist() == [0, 1] and batch["text"] == ["the for statement", "a list"]


def _row_masks(batch, row):
    """(the row's inputs after masking, its labels at every position: -100 where not selected) from a batch."""
    width = batch["input_ids"].shape[1]
    labels = torch.full((batch["input_ids"].numel(),), -100)
    labels[batch["masked_positions"]] = batch["masked_labels"]
    return batch["input_ids"][row], labels.view(-1, width)[row]


def test_validation_masks_are_a_function_of_each_block_alone(pydoc_text):
    """A validation block (no ``index``) gets the same masks collated alone, in a batch of 2 or in a batch of 8 with
    others (another place in it, padded to a longer row): val numbers do not depend on batch size or devices."""
    tok = _tokenizer(pydoc_text)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, len(tok), (8, 64), generator=g)
    short = ids[0, :40].clone()
    fixed = MLMCollator(tok, seed=7)
    a, b = fixed([{"input_ids": row} for row in ids]), fixed([{"input_ids": row} for row in ids])
    assert torch.equal(a["masked_positions"], b["masked_positions"]) and torch.equal(a["input_ids"], b["input_ids"])
    for block in (ids[3], short):
        alone = _row_masks(fixed([{"input_ids": block}]), 0)
        assert (alone[1] != -100).sum() > 0
        pair = _row_masks(fixed([{"input_ids": ids[5]}, {"input_ids": block}]), 1)
        others = [{"input_ids": row} for row in ids[[1, 2, 4, 5, 6, 7, 0]]]
        eight = _row_masks(fixed(others[:2] + [{"input_ids": block}] + others[2:]), 2)
        n = len(block)
        for inputs, labels in (pair, eight):
            assert torch.equal(inputs[:n], alone[0]) and torch.equal(labels[:n], alone[1])
            assert (labels[n:] == -100).all() and (inputs[n:] == tok.pad_token_id).all()
    assert torch.equal(ids[0, :40], short)  # the examples' own tensors are not masked in place


def test_masked_positions_padded_to_a_multiple_are_the_same_masks_plus_ignored_padding(pydoc_text):
    tok = _tokenizer(pydoc_text)
    ids = torch.randint(10, len(tok), (8, 64))
    ids[:2, 50:] = tok.pad_token_id
    examples = [{"input_ids": row, "epoch": 0, "index": i} for i, row in enumerate(ids)]
    plain = MLMCollator(tok, seed=7)(examples)
    padded = MLMCollator(tok, seed=7, masked_positions_multiple_of=32)(examples)
    n = len(plain["masked_positions"])
    assert len(padded["masked_positions"]) % 32 == 0 and n < len(padded["masked_positions"]) < n + 32
    assert torch.equal(padded["input_ids"], plain["input_ids"])  # the same masks
    assert torch.equal(padded["masked_positions"][:n], plain["masked_positions"])
    assert torch.equal(padded["masked_labels"][:n], plain["masked_labels"])
    assert (padded["masked_positions"][n:] == 0).all() and (padded["masked_labels"][n:] == -100).all()
    nothing = MLMCollator(tok, mlm_probability=0.0, masked_positions_multiple_of=8)([{"input_ids": ids[0]}])
    assert nothing["masked_positions"].tolist() == [0] * 8 and (nothing["masked_labels"] == -100).all()


def test_document_mask_gives_each_packed_document_its_own_attention_and_positions(pydoc_text):
    """A packed block with ``document_mask``: every token's MLM logits equal those of its document alone."""
    from bigmodel.nn import EncoderConfig, MaskedLanguageModel

    tok = _tokenizer(pydoc_text)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(20, len(tok), (n,), generator=g).tolist() for n in (5, 7, 3)]
    block = torch.tensor([cls] + docs[0] + [sep] + docs[1] + [sep] + docs[2])  # the last document goes on
    batch = MLMCollator(tok, mlm_probability=0.0, document_mask=True)([{"input_ids": block}])
    assert batch["document_ids"].tolist() == [[0] * 7 + [1] * 8 + [2] * 3]
    assert "document_ids" not in MLMCollator(tok, mlm_probability=0.0)([{"input_ids": block}])
    alone = [[cls] + docs[0] + [sep], docs[1] + [sep], docs[2]]
    config = EncoderConfig.from_name("modernbert-mini", vocab_size=len(tok), hidden_size=64, num_heads=2,
                                     intermediate_size=96, sliding_window=4, global_attention_every=2)
    torch.manual_seed(0)
    for cfg in (config, EncoderConfig.from_name("bert-tiny", vocab_size=len(tok), hidden_dropout=0.0,
                                                attention_dropout=0.0)):
        model = MaskedLanguageModel(cfg).eval()
        with torch.no_grad():
            packed = model(batch["input_ids"], torch.arange(18), None, batch["document_ids"])
            separate = torch.cat([model(torch.tensor([d]), torch.arange(len(d))) for d in alone])
            crossing = model(batch["input_ids"], torch.arange(18))
        torch.testing.assert_close(packed, separate, atol=1e-5, rtol=1e-5)
        assert (crossing - separate).abs().max() > 1e-3  # without the document mask the block is one sequence
