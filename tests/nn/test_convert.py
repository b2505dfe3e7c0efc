"""Output parity with Hugging Face's BERT: proof that the encoder's parameters hold a published BERT exactly."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from bigmodel.nn import EncoderConfig, MaskedLanguageModel  # noqa: E402
from bigmodel.nn.convert import convert_hf_bert  # noqa: E402


def test_hf_bert_weights_give_identical_outputs():
    hf_cfg = transformers.BertConfig(
        vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_cfg).eval()
    cfg = EncoderConfig(vocab_size=120, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                        max_position_embeddings=40, hidden_dropout=0.0, attention_dropout=0.0)
    ours = MaskedLanguageModel(cfg).eval()
    missing, unexpected = ours.load_state_dict(convert_hf_bert(hf.state_dict()), strict=False)
    assert not unexpected and not missing
    ids = torch.randint(5, 120, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask)
        hidden = ours.encoder(ids, mask).last_hidden_state
        positions = torch.arange(24)
        logits = ours(ids, positions, mask)
        ref_hidden = hf.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(hidden[real], ref_hidden[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits.view(2, 12, -1)[real], ref.logits[real], atol=1e-4, rtol=1e-4)
