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
