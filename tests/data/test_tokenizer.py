from bigmodel.data.tokenizer import SPECIAL_TOKENS, train_wordpiece


def test_trained_wordpiece_ids_follow_the_vocabulary_not_the_trainers_hash_order(pydoc_text):
    """The trainer numbers tokens in a per-process hash order; the ids must depend only on the learned tokens."""
    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    vocab = tok.get_vocab()
    ordered = sorted(vocab, key=vocab.get)
    assert ordered[:len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS.values())
    assert ordered[len(SPECIAL_TOKENS):] == sorted(ordered[len(SPECIAL_TOKENS):])
    assert len(vocab) == len(tok) == 600 and set(vocab.values()) == set(range(600))
    ids = tok("Lists are mutable sequences.")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "lists are mutable sequences."


def test_a_checkpoints_tokenizer_appears_in_the_cache_whole_and_a_copy_cut_short_is_completed(pydoc_text, tmp_path):
    """Two processes loading one checkpoint at once must never read a half-written tokenizer directory."""
    import torch

    from bigmodel.data.tokenizer import CHECKPOINT_KEY, load_tokenizer, tokenizer_files

    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    files = tokenizer_files(tok)
    ckpt = tmp_path / "model.ckpt"
    torch.save({CHECKPOINT_KEY: files}, ckpt)
    cache = tmp_path / "cache"
    assert load_tokenizer(str(ckpt), cache).get_vocab() == tok.get_vocab()
    (entry,) = (cache / "tokenizers").iterdir()  # one directory, no temporary left beside it
    assert sorted(p.name for p in entry.iterdir()) == sorted(files)

    for name in files:  # as an older version could leave it when stopped mid-write: one file only
        if name != "tokenizer_config.json":
            (entry / name).unlink()
    assert load_tokenizer(str(ckpt), cache).get_vocab() == tok.get_vocab()
    assert [p.name for p in (cache / "tokenizers").iterdir()] == [entry.name]
    assert sorted(p.name for p in entry.iterdir()) == sorted(files)
