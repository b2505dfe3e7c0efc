"""Cross-attention in the shared encoder (``add_cross_attention``): queries from ``x``, keys and values from a
``context`` with its own padding mask, through the same SDPA and explicit paths as self-attention."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bigmodel.nn import Attention, EncoderConfig, TransformerEncoder
from bigmodel.nn.convert import convert_hf_bert
from bigmodel.nn.peft import LoRAConfig, LoRALinear, add_lora

S, SK, H = 9, 7, 128  # query length, context length, bert-tiny's width


def tiny(**kw) -> EncoderConfig:
    base = dict(vocab_size=97, hidden_dropout=0.0, attention_dropout=0.0, max_position_embeddings=64)
    return EncoderConfig.from_name("bert-tiny", **{**base, **kw})


def fusion(**kw) -> TransformerEncoder:
    """A fusion encoder: hidden states in (no embedding), cross-attending to a context."""
    torch.manual_seed(0)
    return TransformerEncoder(tiny(add_cross_attention=True, **kw), embeddings=nn.Identity()).eval()


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states (3, S, H), a context (3, SK, H) and its mask: row 1 has 5 real context tokens, row 2 has 2."""
    g = torch.Generator().manual_seed(seed)
    x, context = torch.randn(3, S, H, generator=g), torch.randn(3, SK, H, generator=g)
    context_mask = torch.ones(3, SK, dtype=torch.long)
    context_mask[1, 5:] = 0
    context_mask[2, 2:] = 0
    return x, context, context_mask


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_and_explicit_cross_attention_agree(norm_first, padded):
    enc = fusion(norm_first=norm_first)
    x, context, context_mask = inputs()
    context_mask = context_mask if padded else None
    attention_mask = torch.ones(3, S, dtype=torch.long)
    attention_mask[2, 6:] = 0
    with torch.no_grad():
        fast = enc(x, attention_mask, context=context, context_mask=context_mask)
        slow = enc(x, attention_mask, output_attentions=True, context=context, context_mask=context_mask)
    torch.testing.assert_close(fast.last_hidden_state, slow.last_hidden_state, atol=1e-6, rtol=1e-6)
    assert fast.attentions is None and fast.cross_attentions is None
    assert len(slow.attentions) == len(slow.cross_attentions) == 2
    assert slow.attentions[0].shape == (3, 2, S, S) and slow.cross_attentions[0].shape == (3, 2, S, SK)


def test_explicit_cross_weights_sum_to_one_over_real_keys_and_zero_on_padding():
    enc = fusion()
    x, context, context_mask = inputs()
    with torch.no_grad():
        weights = enc(x, output_attentions=True, context=context, context_mask=context_mask).cross_attentions
    real = context_mask.bool()[:, None, None, :].expand(3, 2, S, SK)
    for w in weights:  # (B, heads, S, SK) per layer
        assert w.shape == (3, 2, S, SK)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, S))
        assert w[~real].abs().max() == 0 and (w[real] > 0).all()


@pytest.mark.parametrize("norm_first", [False, True])
def test_padded_context_tokens_never_change_the_output(norm_first):
    enc = fusion(norm_first=norm_first)
    x, context, context_mask = inputs()
    other = context.clone()
    other[context_mask == 0] = 100 * torch.randn(int((context_mask == 0).sum()), H)
    with torch.no_grad():
        for need in (False, True):
            a = enc(x, output_attentions=need, context=context, context_mask=context_mask).last_hidden_state
            b = enc(x, output_attentions=need, context=other, context_mask=context_mask).last_hidden_state
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        # each row equals the same row with its context cut to its real tokens (no mask at all)
        for i, n in enumerate(context_mask.sum(1).tolist()):
            alone = enc(x[i : i + 1], context=context[i : i + 1, :n]).last_hidden_state
            torch.testing.assert_close(a[i : i + 1], alone, atol=1e-6, rtol=1e-6)


def test_cross_attention_is_never_causal():
    enc = fusion(causal=True)
    x, context, _ = inputs()
    changed = context.clone()
    changed[:, -1] += 1.0  # the last context token: the first query sees it although the encoder is causal
    with torch.no_grad():
        a = enc(x, context=context).last_hidden_state
        b = enc(x, context=changed).last_hidden_state
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-3


def test_self_attention_path_is_unchanged():
    """The plain encoder: the same fused qkv, the same SDPA call, the same parameter names as before."""
    torch.manual_seed(0)
    attn = Attention(tiny()).eval()
    x = torch.randn(2, S, H)
    q, k, v = attn.qkv(x).view(2, S, 3, 2, 64).permute(2, 0, 3, 1, 4).unbind(0)
    reference = attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, S, H))
    out, weights = attn(x)
    assert torch.equal(out, reference) and weights is None
    assert [n for n, _ in attn.named_parameters()] == ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]
    layer = ["attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "attn_norm.weight",
             "attn_norm.bias", "ffn.up.weight", "ffn.up.bias", "ffn.down.weight", "ffn.down.bias", "ffn_norm.weight",
             "ffn_norm.bias"]
    keys = [k.removeprefix("layers.0.") for k in TransformerEncoder(tiny()).state_dict() if k.startswith("layers.0.")]
    assert keys == layer
    cross_keys = [k.removeprefix("layers.0.") for k in fusion().state_dict() if k.startswith("layers.0.")]
    assert cross_keys == layer[:6] + ["cross_attn.q.weight", "cross_attn.q.bias", "cross_attn.kv.weight",
                                      "cross_attn.kv.bias", "cross_attn.proj.weight", "cross_attn.proj.bias",
                                      "cross_norm.weight", "cross_norm.bias"] + layer[6:]


def test_gradients_reach_the_context_and_activation_checkpointing_matches():
    """Dropout on (as in test_encoder's checkpointing test): the recomputed forward replays the same masks."""
    cfg = EncoderConfig.from_name("bert-tiny", vocab_size=50, max_position_embeddings=16, hidden_dropout=0.2,
                                  attention_dropout=0.2, add_cross_attention=True)
    ids = torch.randint(0, 50, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:] = 0
    _, context0, context_mask = inputs()
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = TransformerEncoder(cfg.replace(activation_checkpointing=recompute)).train()
        calls = []
        model.layers[0].cross_attn.register_forward_hook(lambda *_: calls.append(1))
        context = context0.clone().requires_grad_(True)
        torch.manual_seed(1)
        loss = model(ids, mask, context=context, context_mask=context_mask).last_hidden_state.square().mean()
        loss.backward()
        assert len(calls) == (2 if recompute else 1)  # recomputed in the backward pass
        assert context.grad is not None and context.grad[context_mask.bool()].abs().min() > 0
        assert context.grad[~context_mask.bool()].abs().max() == 0  # padded context tokens get no gradient
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, context.grad.clone()))
    (loss0, grads0, ctx0), (loss1, grads1, ctx1) = results
    assert torch.equal(loss0, loss1) and grads0.keys() == grads1.keys()
    assert {"layers.1.cross_attn.kv.weight", "layers.1.cross_norm.weight"} <= grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(ctx1, ctx0, rtol=1e-5, atol=1e-7)


def test_errors_say_what_is_missing():
    x, context, context_mask = inputs()
    with pytest.raises(ValueError, match=r"fusion encoder \(add_cross_attention=True\) needs context="):
        fusion()(x)
    with pytest.raises(ValueError, match="this one has no cross-attention"):
        TransformerEncoder(tiny())(torch.randint(5, 97, (3, S)), context=context)
    with pytest.raises(ValueError, match="this one has no cross-attention"):
        TransformerEncoder(tiny())(torch.randint(5, 97, (3, S)), context_mask=context_mask)
    with pytest.raises(ValueError, match="context has width 64, the encoder's hidden_size is 128"):
        fusion()(x, context=context[..., :64])
    with pytest.raises(ValueError, match="cross-attention needs context="):
        Attention(tiny(), cross=True)(x)
    with pytest.raises(ValueError, match="self-attention takes no context="):
        Attention(tiny())(x, context=context)
    with pytest.raises(ValueError, match="this block has no cross-attention"):
        TransformerEncoder(tiny()).layers[0](x, context=context)


def test_config_round_trip_hf_refusal_and_lora_targets():
    cfg = tiny(add_cross_attention=True)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["add_cross_attention"]
    saved_before = {k: v for k, v in cfg.to_dict().items() if k != "add_cross_attention"}
    assert not EncoderConfig.from_dict(saved_before).add_cross_attention  # older configs load as plain encoders
    with pytest.raises(ValueError, match=r"no bert equivalent: it is a fusion encoder \(add_cross_attention\)"):
        cfg.to_hf("bert")
    enc = fusion()
    x, context, context_mask = inputs()
    with torch.no_grad():
        before = enc(x, context=context, context_mask=context_mask).last_hidden_state
        names = add_lora(enc, LoRAConfig(rank=4, targets=("q", "v")))  # both attentions' queries and values
        after = enc(x, context=context, context_mask=context_mask).last_hidden_state
    assert names == [f"layers.{i}.{t}" for i in range(2) for t in ("attn.qkv", "cross_attn.q", "cross_attn.kv")]
    assert enc.layers[0].attn.qkv.slices == (0, 2) and enc.layers[0].cross_attn.kv.slices == (1,)  # v of [k, v]
    assert type(enc.layers[0].attn.proj) is nn.Linear and isinstance(enc.layers[0].cross_attn.q, LoRALinear)
    assert torch.equal(before, after)  # B = 0: a LoRA model starts as its base


def test_matches_hugging_face_bert_cross_attention():
    """HF's BERT decoder layer (causal self-attention, then cross-attention, then FFN, post-LN) with its weights."""
    import transformers

    hf_cfg = transformers.BertConfig(
        vocab_size=97, hidden_size=H, num_hidden_layers=2, num_attention_heads=2, intermediate_size=4 * H,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, is_decoder=True,
        add_cross_attention=True,
    )
    torch.manual_seed(0)
    hf = transformers.BertModel(hf_cfg, add_pooling_layer=False).eval()
    ours = TransformerEncoder(tiny(causal=True, add_cross_attention=True)).eval()
    hf_state = hf.state_dict()
    cross = {k: hf_state.pop(k) for k in list(hf_state) if ".crossattention." in k}
    state = {k.removeprefix("encoder."): v for k, v in convert_hf_bert(hf_state).items()}  # the self-attention part
    for i in range(2):
        hf_layer = f"encoder.layer.{i}.crossattention."
        for kind in ("weight", "bias"):
            state[f"layers.{i}.cross_attn.q.{kind}"] = cross[f"{hf_layer}self.query.{kind}"]
            state[f"layers.{i}.cross_attn.kv.{kind}"] = torch.cat([cross[f"{hf_layer}self.key.{kind}"],
                                                                  cross[f"{hf_layer}self.value.{kind}"]])
            state[f"layers.{i}.cross_attn.proj.{kind}"] = cross[f"{hf_layer}output.dense.{kind}"]
            state[f"layers.{i}.cross_norm.{kind}"] = cross[f"{hf_layer}output.LayerNorm.{kind}"]
    ours.load_state_dict(state)
    ids = torch.randint(5, 97, (3, S))
    _, context, context_mask = inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, encoder_hidden_states=context, encoder_attention_mask=context_mask).last_hidden_state
        out = ours(ids, context=context, context_mask=context_mask).last_hidden_state
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
