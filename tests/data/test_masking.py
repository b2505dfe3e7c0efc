import pytest
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


def _blocks(tok, pydoc_text, rows=64, width=128):
    """Real text packed as the corpus packs it: [CLS] + paragraphs each closed by [SEP], cut into rows."""
    stream = [i for line in pydoc_text.read_text().splitlines()[:400]
              for i in tok(line, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]]
    return torch.tensor([[tok.cls_token_id] + stream[r * (width - 1):(r + 1) * (width - 1)] for r in range(rows)])


def test_whole_word_masking_selects_every_piece_of_a_word_and_the_same_share_of_tokens(pydoc_text):
    tok = _tokenizer(pydoc_text)  # 600 word pieces: many words are several pieces
    ids = _blocks(tok, pydoc_text)
    collate = MLMCollator(tok, seed=0, whole_word_mask=True)
    torch.manual_seed(0)
    batch = collate([{"input_ids": row, "epoch": 0, "index": i} for i, row in enumerate(ids)])
    labels = torch.full((ids.numel(),), -100)
    labels[batch["masked_positions"]] = batch["masked_labels"]
    selected = (labels != -100).view(ids.shape)
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    assert not (selected & special).any()
    continues = torch.tensor([[tok.convert_ids_to_tokens(int(i)).startswith("##") for i in row] for row in ids])
    inside = continues & ~special & ~torch.nn.functional.pad(special[:, :-1], (1, 0), value=True)
    assert inside.sum() > 1000  # the text really has words of several pieces
    assert torch.equal(selected[:, 1:][inside[:, 1:]], selected[:, :-1][inside[:, 1:]])  # a piece goes with its word
    whole = selected[:, :-1] & inside[:, 1:]
    assert whole.sum() > 100  # and words of several pieces were selected
    rate = selected.sum() / (~special).sum()
    assert 0.13 < rate < 0.17, rate  # each word with probability 0.15: the same share of tokens in expectation
    new, old = batch["input_ids"][selected], ids[selected]
    masked, kept = (new == tok.mask_token_id).float().mean(), (new == old).float().mean()
    assert 0.76 < masked < 0.84 and 0.06 < kept < 0.14, (masked, kept)  # Google's 80/10/10, per token
    assert torch.equal(batch["input_ids"][~selected], ids[~selected])
    plain = MLMCollator(tok, seed=0)([{"input_ids": row, "epoch": 0, "index": i} for i, row in enumerate(ids)])
    plain_selected = torch.zeros(ids.numel(), dtype=torch.bool)
    plain_selected[plain["masked_positions"]] = True
    split = (plain_selected.view(ids.shape)[:, :-1] != plain_selected.view(ids.shape)[:, 1:]) & inside[:, 1:]
    assert split.sum() > 50  # token masking does cut words: the two differ
    alone = MLMCollator(tok, seed=0, whole_word_mask=True)  # validation: each block's masks, however batched
    assert torch.equal(_row_masks(alone([{"input_ids": ids[3]}]), 0)[1],
                       _row_masks(alone([{"input_ids": r} for r in ids[:5]]), 3)[1])


def test_whole_word_masking_reads_words_from_bpe_and_refuses_a_vocabulary_without_word_pieces(pydoc_text):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from bigmodel.data.collators import word_continuations

    def trained(pre_tokenizer):
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizer
        backend.train_from_iterator(pydoc_text.read_text().splitlines()[:300], trainers.BpeTrainer(
            vocab_size=500, special_tokens=["<pad>", "<mask>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", mask_token="<mask>")

    bpe = trained(pre_tokenizers.ByteLevel(add_prefix_space=False))
    continues = word_continuations(bpe)
    pieces = bpe.convert_ids_to_tokens(bpe(" the string methods")["input_ids"])
    assert pieces[0] == "Ġthe" and [bool(continues[bpe.convert_tokens_to_ids(p)]) for p in pieces] == \
        [not p.startswith("Ġ") for p in pieces]
    bpe.add_tokens(["<url>"])  # an added token (no Ġ) is a word of its own, not the end of the word before it
    assert not word_continuations(bpe)[bpe.convert_tokens_to_ids("<url>")]
    with pytest.raises(ValueError, match="set whole_word_mask: false"):
        MLMCollator(trained(pre_tokenizers.Whitespace()), whole_word_mask=True)
