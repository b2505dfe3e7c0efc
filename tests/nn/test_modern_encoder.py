"""The modern encoder switches (RoPE, GeGLU/SwiGLU, RMSNorm, no biases, local/global attention), each against a
reference, and the encoder's invariants (SDPA = explicit path, padding never reaches real tokens) with all of them on."""

import pytest
import torch

from bigmodel.nn import EncoderConfig, MaskedLanguageModel, TransformerEncoder
from bigmodel.nn.attention import apply_rotary, build_attention_mask, rotary_cos_sin
from bigmodel.nn.encoder import FeedForward

modernbert = pytest.importorskip("transformers.models.modernbert.modeling_modernbert")

MODERN = dict(position_embedding="rope", rope_theta=1000.0, local_rope_theta=30.0, norm_first=True,
              first_attn_norm=False, bias=False, feed_forward="geglu", sliding_window=4, global_attention_every=2,
              type_vocab_size=0)
SWITCHES = {
    "modernbert": MODERN,
    "rmsnorm-swiglu-causal": {**MODERN, "norm": "rmsnorm", "feed_forward": "swiglu", "causal": True},
    "post-ln-rope-biases": dict(position_embedding="rope", feed_forward="geglu", sliding_window=6, norm="rmsnorm"),
}


def tiny(**kw) -> EncoderConfig:
    base = dict(vocab_size=97, hidden_dropout=0.0, attention_dropout=0.0, max_position_embeddings=64, num_layers=3)
    return EncoderConfig.from_name("bert-tiny", **{**base, **kw})


def batch(b=3, s=13):
    ids = torch.randint(5, 97, (b, s), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 9:] = 0
    mask[2, 3:] = 0
    return ids, mask


def test_rope_equals_transformers_rotary_embedding():
    config = modernbert.ModernBertConfig(hidden_size=64, num_attention_heads=4, global_rope_theta=1234.0)
    positions = torch.tensor([[0, 1, 2, 7, 30], [3, 4, 5, 6, 100]])
    q, k = torch.randn(2, 4, 5, 16), torch.randn(2, 4, 5, 16)
    cos, sin = modernbert.ModernBertRotaryEmbedding(config)(q, positions, "full_attention")
    ref_q, ref_k = modernbert.apply_rotary_pos_emb(q, k, cos, sin)
    ours = rotary_cos_sin(positions, 16, 1234.0)
    torch.testing.assert_close(apply_rotary(q, *ours), ref_q, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(apply_rotary(k, *ours), ref_k, atol=1e-6, rtol=1e-6)


def test_rope_scores_depend_only_on_relative_positions():
    torch.manual_seed(0)
    enc = TransformerEncoder(tiny(position_embedding="rope")).eval()
    ids, mask = batch()
    positions = torch.arange(13)[None].expand(3, 13)
    with torch.no_grad():
        a = enc(ids, mask, position_ids=positions).last_hidden_state
        b = enc(ids, mask, position_ids=positions + 17).last_hidden_state  # every position shifted alike
        c = enc(ids, mask, position_ids=positions.flip(1)).last_hidden_state  # a different order
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)
    assert (a[real] - c[real]).abs().max() > 1e-3
    assert not hasattr(enc.embeddings, "position_embeddings")  # no absolute positions at all


@pytest.mark.parametrize("kind,act", [("geglu", "gelu"), ("swiglu", "silu")])
def test_glu_feed_forward_equals_transformers_modernbert_mlp(kind, act):
    cfg = tiny(feed_forward=kind, bias=False, intermediate_size=48)
    ours = FeedForward(cfg)
    ref = modernbert.ModernBertMLP(modernbert.ModernBertConfig(hidden_size=128, intermediate_size=48,
                                                               hidden_activation=act, mlp_bias=False))
    assert ours.up.weight.shape == (96, 128) and ours.up.bias is None and ours.down.bias is None
    ref.load_state_dict({"Wi.weight": ours.up.weight, "Wo.weight": ours.down.weight})
    x = torch.randn(2, 5, 128)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-6)


def test_rmsnorm_and_no_bias_reach_every_norm_and_linear():
    enc = MaskedLanguageModel(tiny(norm="rmsnorm", bias=False, qkv_bias=True, norm_first=True))
    norms = [m for m in enc.modules() if "Norm" in type(m).__name__]
    assert len(norms) == 1 + 3 * 2 + 1 + 1 and all(isinstance(m, torch.nn.RMSNorm) for m in norms)
    assert all(m.bias is None for m in enc.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(4, 128)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-12) * norms[0].weight
    torch.testing.assert_close(norms[0](x), expected)  # Zhang & Sennrich's RMSNorm: no centring, no bias


def test_window_mask_is_transformers_modernbert_mask():
    from transformers.masking_utils import create_bidirectional_sliding_window_mask

    config = modernbert.ModernBertConfig(local_attention=6, attn_implementation="eager")
    _, mask = batch()
    ref = create_bidirectional_sliding_window_mask(config, torch.zeros(3, 13, 8), mask)  # 0 / -inf, (B, 1, S, S)
    ours = build_attention_mask(mask, False, 13, window=6)
    assert torch.equal(ours.expand(3, 1, 13, 13), ref == 0)
    assert ours[0, 0, 6].nonzero().flatten().tolist() == [3, 4, 5, 6, 7, 8, 9]  # 3 keys on each side


def test_local_layers_see_only_their_window_and_global_layers_everything():
    torch.manual_seed(0)
    enc = TransformerEncoder(tiny(**MODERN, num_layers=2)).eval()  # layer 0 global, layer 1 local
    ids, _ = batch()
    weights = enc(ids, output_attentions=True).attentions
    i = torch.arange(13)
    outside = (i[:, None] - i[None, :]).abs() > 2
    assert weights[1][..., outside].abs().max() == 0
    assert weights[0][..., outside].abs().min() > 0
    # a local layer alone: changing a token outside a query's window leaves that query's output unchanged
    layer, x = enc.layers[1], torch.randn(1, 13, 128)
    local = build_attention_mask(None, False, 13, window=4)
    rotary = rotary_cos_sin(i[None], 64, 30.0)
    changed = x.clone()
    changed[:, 9:] += 1.0
    a, b = layer(x, local, rotary=rotary)[0], layer(changed, local, rotary=rotary)[0]
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=1e-6, rtol=0)  # 9 is beyond the window of 0..6
    assert (a[:, 7:] - b[:, 7:]).abs().max() > 1e-3


@pytest.mark.parametrize("switches", list(SWITCHES))
def test_sdpa_and_explicit_attention_agree_with_every_switch(switches):
    torch.manual_seed(0)
    enc = TransformerEncoder(tiny(**SWITCHES[switches])).eval()
    ids, mask = batch()
    for m in (mask, None):
        fast = enc(ids, m).last_hidden_state
        slow = enc(ids, m, output_attentions=True)
        torch.testing.assert_close(fast, slow.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slow.attentions[1].sum(-1), torch.ones(3, 2, 13))


@pytest.mark.parametrize("switches", list(SWITCHES))
def test_padding_never_influences_real_tokens_with_every_switch(switches):
    torch.manual_seed(0)
    enc = TransformerEncoder(tiny(**SWITCHES[switches])).eval()
    ids, mask = batch()
    other = ids.clone()
    other[mask == 0] = torch.randint(5, 97, (int((mask == 0).sum()),))
    real = mask.bool()
    for need in (False, True):
        a = enc(ids, mask, output_attentions=need).last_hidden_state
        b = enc(other, mask, output_attentions=need).last_hidden_state
        torch.testing.assert_close(a[real], b[real], atol=1e-6, rtol=0)
    alone = enc(ids[2:, :3]).last_hidden_state  # the short example unpadded: the same states
    torch.testing.assert_close(alone[0], a[2, :3], atol=1e-5, rtol=1e-5)


def test_cross_attention_keeps_its_own_rule_with_rope():
    torch.manual_seed(0)
    enc = TransformerEncoder(tiny(**MODERN, add_cross_attention=True), embeddings=torch.nn.Identity()).eval()
    x, context = torch.randn(2, 7, 128), torch.randn(2, 5, 128)
    fast = enc(x, context=context).last_hidden_state
    slow = enc(x, context=context, output_attentions=True)
    torch.testing.assert_close(fast, slow.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert slow.cross_attentions[1].shape == (2, 2, 7, 5) and slow.cross_attentions[1].min() > 0  # no window


def test_modern_configs_name_their_fixes():
    with pytest.raises(ValueError, match="sliding_window 5 must be an even number >= 2"):
        tiny(sliding_window=5)
    with pytest.raises(ValueError, match="first_attn_norm: false is for pre-norm encoders; set norm_first: true"):
        tiny(first_attn_norm=False)
    with pytest.raises(ValueError, match="global_attention_every must be positive"):
        tiny(global_attention_every=0)
    assert [tiny(sliding_window=4, global_attention_every=3, num_layers=7).is_global(i) for i in range(7)] == \
        [True, False, False, True, False, False, True]


def test_document_positions_restart_at_each_document():
    from bigmodel.nn.attention import document_positions

    docs = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2], [4, 4, 4, 4, 4, 4, 4, 4]])
    assert document_positions(docs).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], list(range(8))]


@pytest.mark.parametrize("switches", list(SWITCHES) + ["bert", "roberta"])
def test_packed_documents_equal_documents_alone_and_never_attend_across(switches):
    torch.manual_seed(0)
    roberta = {"position_offset": 2, "max_position_embeddings": 18}  # learned rows start at 2
    enc = TransformerEncoder(tiny(**SWITCHES.get(switches, roberta if switches == "roberta" else {}))).eval()
    lengths = [(5, 6, 2), (9, 4)]  # two packed rows; the second padded by 0 at the end
    ids = torch.randint(5, 97, (2, 13), generator=torch.Generator().manual_seed(1))
    docs = torch.tensor([[0] * 5 + [1] * 6 + [2] * 2, [0] * 9 + [1] * 4])
    mask = torch.ones(2, 13, dtype=torch.long)
    ids[1, 11:], mask[1, 11:] = 0, 0
    for need in (False, True):
        out = enc(ids, mask, need, document_ids=docs)
        for row, sizes in enumerate(lengths):
            start = 0
            for n in sizes:
                piece = ids[row : row + 1, start : start + n]
                real = mask[row, start : start + n].bool()
                alone = enc(piece, mask[row : row + 1, start : start + n]).last_hidden_state[0]
                torch.testing.assert_close(out.last_hidden_state[row, start : start + n][real], alone[real],
                                           atol=1e-5, rtol=1e-5)
                start += n
    across = docs[:, :, None] != docs[:, None, :]
    for weights in out.attentions:
        assert weights.masked_select(across[:, None]).abs().max() == 0


def _mlm_checkpoint(path, config: EncoderConfig) -> str:
    """A checkpoint as MLMTask writes it: the network under ``net.``, the architecture in bigmodel's entry."""
    torch.manual_seed(0)
    net = MaskedLanguageModel(config)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "bigmodel": {"task": "mlm", "encoder_config": config.to_dict()}}, path)
    return str(path)


def test_context_extension_continues_a_rope_encoder_at_a_longer_context_and_a_new_theta(tmp_path):
    """init_from with encoder_config {max_position_embeddings, rope_theta}: the same weights, inputs longer than
    the source's positions run, the new theta is the one used (and recorded for load_from_checkpoint); at the old
    theta, inputs the source could take give its outputs exactly."""
    from bigmodel.tasks import MLMTask

    source_config = tiny(**MODERN, max_position_embeddings=16)
    path = _mlm_checkpoint(tmp_path / "short.ckpt", source_config)
    longer = MLMTask(init_from=path, vocab_size=97, encoder_config={"max_position_embeddings": 48})
    extended = MLMTask(init_from=path, vocab_size=97,
                       encoder_config={"max_position_embeddings": 48, "rope_theta": 16000.0})
    for task in (longer, extended):
        task._load_pretrained_once()
    assert extended.config == source_config.replace(max_position_embeddings=48, rope_theta=16000.0)
    assert extended.hparams["encoder_config"]["rope_theta"] == 16000.0
    source = torch.load(path)["state_dict"]
    assert all(torch.equal(v, source[f"net.{k}"]) for k, v in extended.net.state_dict().items())

    ids, mask = batch(s=40)
    for task in (longer, extended):
        assert task.net.encoder(ids, mask).last_hidden_state.shape == (3, 40, 128)  # beyond the source's 16
    short_ids, short_mask = batch(s=13)
    source_encoder = TransformerEncoder(source_config)
    source_encoder.load_state_dict({k[len("net.encoder."):]: v for k, v in source.items()
                                    if k.startswith("net.encoder.")})
    reference = source_encoder(short_ids, short_mask).last_hidden_state
    torch.testing.assert_close(longer.net.encoder(short_ids, short_mask).last_hidden_state, reference,
                               rtol=0, atol=0)
    assert (extended.net.encoder(short_ids, short_mask).last_hidden_state - reference).abs().max() > 1e-3


def test_context_extension_of_learned_positions_is_refused_in_one_line(tmp_path):
    from bigmodel.tasks import MLMTask

    path = _mlm_checkpoint(tmp_path / "bert.ckpt", tiny(max_position_embeddings=16))
    with pytest.raises(ValueError, match=r"^encoder_config \['max_position_embeddings'\] cannot change init_from's "
                                         r"encoder: it has 16 learned positions; only a RoPE encoder") as err:
        MLMTask(init_from=path, vocab_size=97, encoder_config={"max_position_embeddings": 48})
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"\['num_layers'\] cannot change .* only hidden_dropout, attention_dropout, "
                                         r"dropout_before_pooler, activation_checkpointing, unpad, "
                                         r"max_position_embeddings, rope_theta"):
        MLMTask(init_from=_mlm_checkpoint(tmp_path / "rope.ckpt", tiny(**MODERN)), vocab_size=97,
                encoder_config={"num_layers": 2})


@pytest.mark.parametrize("switches", list(SWITCHES) + ["bert", "bert-learned-checkpointed"])
def test_unpadded_equals_padded_per_token_logits_and_gradients(switches):
    """unpad: true runs embeddings, projections, FFN and norms on the real tokens only (T of B * S) and attention
    per sequence; the real tokens' states, a classifier's logits (cls and mean pooling) and every gradient equal
    the padded path's, and the padding's states are zero."""
    from bigmodel.nn import SequenceClassifier

    switch = {"bert": {}, "bert-learned-checkpointed": {"activation_checkpointing": True, "position_offset": 2}}
    config = tiny(**switch.get(switches, SWITCHES.get(switches, {})))
    ids, mask = batch()
    token_types = (torch.arange(13) > 6).long().expand(3, 13) if config.type_vocab_size else None
    for pooling in ("pooler", "mean"):
        if pooling == "mean":
            mask[0, 0] = 0  # left padding too (not under [CLS] pooling): positions stay the padded batch's
        real = mask.bool()
        torch.manual_seed(0)
        padded = SequenceClassifier(config, 3, classifier_dropout=0.0, pooling=pooling).train()
        unpadded = SequenceClassifier(config.replace(unpad=True), 3, classifier_dropout=0.0, pooling=pooling).train()
        unpadded.load_state_dict(padded.state_dict())
        seen = []
        unpadded.encoder.layers[1].ffn.up.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
        (logits, out), (logits_u, out_u) = (net(ids, mask, token_types) for net in (padded, unpadded))
        assert seen == [int(mask.sum())]  # the FFN saw the real tokens only, not the 39 places
        torch.testing.assert_close(out_u.last_hidden_state[real], out.last_hidden_state[real], atol=1e-5, rtol=0)
        assert out_u.last_hidden_state[~real].abs().max() == 0
        torch.testing.assert_close(logits_u, logits, atol=1e-5, rtol=0)
        logits.square().sum().backward()
        logits_u.square().sum().backward()
        for (name, p), q in zip(padded.named_parameters(), unpadded.parameters()):
            torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_unpadded_keeps_documents_apart_and_attention_weights_stay_padded():
    torch.manual_seed(0)
    config = tiny(**MODERN)
    enc = TransformerEncoder(config).eval()
    unpadded = TransformerEncoder(config.replace(unpad=True)).eval()
    unpadded.load_state_dict(enc.state_dict())
    ids, mask = batch()
    real = mask.bool()
    documents = (torch.arange(13) >= 5).long().expand(3, 13)  # two packed documents per row, then padding
    torch.testing.assert_close(unpadded(ids, mask, document_ids=documents).last_hidden_state[real],
                               enc(ids, mask, document_ids=documents).last_hidden_state[real], atol=1e-5, rtol=0)
    with_weights = unpadded(ids, mask, output_attentions=True)  # the explicit path: padded, as before
    assert with_weights.attentions[0].shape == (3, 2, 13, 13)
    torch.testing.assert_close(with_weights.last_hidden_state, enc(ids, mask).last_hidden_state)
