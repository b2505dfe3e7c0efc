import math

import pytest
import torch

from bigmodel.nn import PRESETS, EncoderConfig, MaskedLanguageModel, TransformerEncoder
from bigmodel.nn.embeddings import sinusoidal_encoding
from bigmodel.nn.encoder import num_parameters


def tiny(**kw) -> EncoderConfig:
    base = dict(vocab_size=97, hidden_dropout=0.0, attention_dropout=0.0, max_position_embeddings=64)
    return EncoderConfig.from_name("bert-tiny", **{**base, **kw})


def batch(b=3, s=11, vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    return ids, mask


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_and_explicit_attention_agree(norm_first, causal, padded):
    torch.manual_seed(0)
    enc = TransformerEncoder(tiny(norm_first=norm_first, causal=causal)).eval()
    ids, mask = batch()
    mask = mask if padded else None
    fast = enc(ids, mask).last_hidden_state
    slow = enc(ids, mask, output_attentions=True)
    torch.testing.assert_close(fast, slow.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert len(slow.attentions) == 2 and slow.attentions[0].shape == (3, 2, 11, 11)
    torch.testing.assert_close(slow.attentions[0].sum(-1), torch.ones(3, 2, 11))


def test_padding_never_influences_real_tokens():
    torch.manual_seed(0)
    enc = TransformerEncoder(tiny()).eval()
    ids, mask = batch()
    other = ids.clone()
    other[mask == 0] = torch.randint(5, 97, (int((mask == 0).sum()),))
    for need in (False, True):
        a = enc(ids, mask, output_attentions=need).last_hidden_state
        b = enc(other, mask, output_attentions=need).last_hidden_state
        real = mask.bool()
        torch.testing.assert_close(a[real], b[real], atol=1e-6, rtol=0)
    weights = enc(ids, mask, output_attentions=True).attentions[0]
    assert weights[1, :, :, 7:].abs().max() == 0  # no attention mass on padded keys


def test_causal_mask_blocks_the_future():
    torch.manual_seed(0)
    enc = TransformerEncoder(tiny(causal=True)).eval()
    ids, _ = batch()
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 97
    a, b = enc(ids).last_hidden_state, enc(changed).last_hidden_state
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=0)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3
    weights = enc(ids, output_attentions=True).attentions[0]
    assert torch.triu(weights[0, 0], diagonal=1).abs().max() == 0


def test_fully_masked_row_gives_no_nan():
    enc = TransformerEncoder(tiny()).eval()
    ids, mask = batch()
    mask[0] = 0
    for need in (False, True):
        assert torch.isfinite(enc(ids, mask, output_attentions=need).last_hidden_state).all()


# Reference counts: Hugging Face BertModel without its pooler (bert-base-uncased: 109,482,240 with it).
@pytest.mark.parametrize(
    "name,expected", [("bert-base", 109_482_240 - 590_592), ("bert-large", 335_141_888 - 1_049_600)]
)
def test_large_presets_match_published_bert_parameter_counts(name, expected):
    with torch.device("meta"):
        enc = TransformerEncoder(EncoderConfig.from_name(name))
    assert num_parameters(enc) == expected


def test_presets_and_bad_configs():
    base = PRESETS["bert-base"]
    assert (base.num_layers, base.hidden_size, base.num_heads, base.intermediate_size) == (12, 768, 12, 3072)
    assert PRESETS["bert-tiny"].num_layers == 2 and PRESETS["bert-tiny"].hidden_size == 128
    with pytest.raises(ValueError, match="unknown encoder preset 'bert-huge'"):
        EncoderConfig.from_name("bert-huge")
    with pytest.raises(ValueError, match="unknown encoder field"):
        EncoderConfig.from_name("bert-tiny", hidden=3)
    with pytest.raises(ValueError, match="not divisible"):
        EncoderConfig.from_name("bert-tiny", num_heads=3)
    # an offset for sinusoidal positions was applied to packed documents only (3.08 apart from the same text alone)
    with pytest.raises(ValueError, match="sinusoidal positions start at 0: set position_offset: 0"):
        EncoderConfig.from_name("bert-tiny", position_embedding="sinusoidal", position_offset=2)


def test_sinusoidal_encoding_formula():
    pe = sinusoidal_encoding(50, 16)
    pos, i = 7, 3
    assert math.isclose(pe[pos, 2 * i].item(), math.sin(pos / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(pos / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    enc = TransformerEncoder(tiny(position_embedding="sinusoidal")).eval()
    assert "embeddings.position_embeddings.weight" not in enc.state_dict()
    assert enc(batch()[0]).last_hidden_state.shape == (3, 11, 128)


def test_too_long_input_names_the_fix():
    enc = TransformerEncoder(tiny())
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=64"):
        enc(torch.zeros(1, 65, dtype=torch.long))


def test_bert_init_and_tied_mlm_decoder():
    torch.manual_seed(0)
    model = MaskedLanguageModel(EncoderConfig.from_name("bert-mini", vocab_size=1000))
    w = model.encoder.layers[0].ffn.up.weight
    assert abs(w.std().item() - 0.02) < 0.002 and model.encoder.layers[0].ffn.up.bias.abs().max() == 0
    ids = torch.randint(5, 1000, (2, 16))
    positions = torch.tensor([1, 5, 17, 30])
    logits = model(ids, positions)
    assert logits.shape == (4, 1000)
    logits.sum().backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad is not None  # decoder is the embedding


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    """Dropout on: the recomputed forward must replay the same masks, or the gradients would differ."""
    cfg = EncoderConfig.from_name("bert-tiny", vocab_size=50, max_position_embeddings=16, hidden_dropout=0.2,
                                  attention_dropout=0.2)
    ids = torch.randint(0, 50, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:] = 0
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = TransformerEncoder(cfg.replace(activation_checkpointing=recompute)).train()
        calls = []
        model.layers[0].attn.register_forward_hook(lambda *_: calls.append(1))
        torch.manual_seed(1)
        loss = model(ids, mask).last_hidden_state.square().mean()
        loss.backward()
        assert len(calls) == (2 if recompute else 1)  # recomputed in the backward pass
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss0, grads0), (loss1, grads1) = results
    assert torch.equal(loss0, loss1) and grads0.keys() == grads1.keys() and len(grads0) > 10
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-7, msg=name)
    # it is a training setting: eval and no-grad forwards are unchanged, and a pretrained encoder may turn it on
    model.eval()
    with torch.no_grad():
        assert model(ids, mask).last_hidden_state.shape == (3, 12, cfg.hidden_size)
