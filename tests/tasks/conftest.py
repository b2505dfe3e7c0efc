"""Fixtures of the task tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory, pydoc_text):
    """A small randomly initialised BertForMaskedLM and its WordPiece tokenizer, as save_pretrained writes them."""
    import transformers

    from bigmodel.data.tokenizer import train_wordpiece

    path = tmp_path_factory.mktemp("hf") / "bert-small-mlm"
    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    tok.save_pretrained(path)
    config = transformers.BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=128,
                                     pad_token_id=tok.pad_token_id, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config).eval()
    model.save_pretrained(path)
    return path, model
