"""ModernBERT in and out: transformers' ModernBert* models (random small configs, no download) and bigmodel's encoder
with ModernBERT's switches give the same hidden states and logits on padded batches, both ways."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from bigmodel.nn import EncoderConfig, MaskedLanguageModel, SequenceClassifier  # noqa: E402
from bigmodel.nn.convert import from_hf, to_hf  # noqa: E402

# 5 layers, every 3rd global (0 and 3), a window of 8 (4 keys each side) on 20-token inputs; the thetas differ
BASE = dict(vocab_size=120, hidden_size=64, num_hidden_layers=5, num_attention_heads=4, intermediate_size=96,
            max_position_embeddings=64, local_attention=8, global_attn_every_n_layers=3, global_rope_theta=1000.0,
            local_rope_theta=50.0, pad_token_id=0, bos_token_id=1, cls_token_id=1, sep_token_id=2, eos_token_id=2)
VARIANTS = {
    "modernbert": {},  # GeGLU, no biases
    "biases-swiglu-mean": dict(hidden_activation="silu", attention_bias=True, mlp_bias=True, norm_bias=True,
                               classifier_bias=True, classifier_pooling="mean"),
}


def _hf(cls_name: str, variant: str, attn: str = "eager", **extra):
    config = transformers.ModernBertConfig(**BASE, **VARIANTS[variant], **extra, attn_implementation=attn)
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(config).eval()
    assert model.config._attn_implementation == attn
    with torch.no_grad():  # norms start at 1 and biases at 0: move them, so a wrong mapping cannot hide
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "norm" in name or name.endswith("bias") else 0.0))
    return model


def _padded_batch(seq: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 120, (3, seq), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, seq, dtype=torch.long)
    mask[1, 13:] = 0
    mask[2, 4:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_masked_lm_imports_with_equal_outputs_and_exports_back_exactly(variant, attn):
    hf = _hf("ModernBertForMaskedLM", variant, attn)
    config = EncoderConfig.from_hf(hf.config.to_dict())
    assert (config.sliding_window, config.global_attention_every, config.rope_theta, config.local_rope_theta) == \
        (8, 3, 1000.0, 50.0)
    assert config.bias == (variant != "modernbert")
    assert config.feed_forward == ("swiglu" if "swiglu" in variant else "geglu")
    ours = MaskedLanguageModel(config).eval()
    ours.load_state_dict(from_hf(hf.state_dict(), "modernbert"), strict=True)
    ids, mask = _padded_batch()
    real = mask.bool()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask)
        ref_hidden = hf.model(input_ids=ids, attention_mask=mask).last_hidden_state
        for explicit in (False, True):  # SDPA and the explicit softmax path
            hidden = ours.encoder(ids, mask, output_attentions=explicit).last_hidden_state
            torch.testing.assert_close(hidden[real], ref_hidden[real], atol=1e-5, rtol=1e-5)
        logits = ours(ids, torch.arange(ids.numel()), mask).view(3, 20, -1)
    torch.testing.assert_close(logits[real], ref.logits[real], atol=1e-5, rtol=1e-5)
    back = to_hf(ours.state_dict(), "modernbert")
    original = {k: v for k, v in hf.state_dict().items() if k != "decoder.weight"}  # tied to the embeddings
    assert back.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(back[key], value), key


@pytest.mark.parametrize("local_attention,every,window", [(7, 3, 6), (3, 2, 2), (2, 2, 2), (10, 1, None)])
def test_windows_and_layer_patterns_import_with_equal_states(local_attention, every, window):
    """transformers' local layers see local_attention // 2 keys each side: an odd window is the even one below it
    (the same attention), every layer global is no window; inputs longer than the window, SDPA and explicit."""
    config = transformers.ModernBertConfig(**{**BASE, "local_attention": local_attention,
                                              "global_attn_every_n_layers": every}, attn_implementation="sdpa")
    torch.manual_seed(0)
    hf = transformers.ModernBertModel(config).eval()
    ours_config = EncoderConfig.from_hf(hf.config.to_dict())
    assert (ours_config.sliding_window, ours_config.is_global(1)) == (window, window is None)
    ours = MaskedLanguageModel(ours_config).eval()
    ours.encoder.load_state_dict({k.removeprefix("encoder."): v
                                  for k, v in from_hf(hf.state_dict(), "modernbert").items()})
    ids, mask = _padded_batch()
    real = mask.bool()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        for explicit in (False, True):
            hidden = ours.encoder(ids, mask, output_attentions=explicit).last_hidden_state
            torch.testing.assert_close(hidden[real], ref[real], atol=1e-5, rtol=1e-5)
    if window is not None:
        with pytest.raises(ValueError, match="local_attention 1 lets a local layer see no key but its own token"):
            EncoderConfig.from_hf({**hf.config.to_dict(), "local_attention": 1})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sequence_classifier_imports_with_equal_logits_and_exports_back_exactly(variant):
    hf = _hf("ModernBertForSequenceClassification", variant, "sdpa", num_labels=3)
    config = EncoderConfig.from_hf(hf.config.to_dict())
    assert config.pooler == "transform" and config.classifier_pooling == hf.config.classifier_pooling
    ours = SequenceClassifier(config, num_classes=3).eval()
    ours.load_state_dict(from_hf(hf.state_dict(), "modernbert"), strict=True)
    ids, mask = _padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask)[0], hf(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=1e-5)
    back = to_hf(ours.state_dict(), "modernbert")
    assert back.keys() == hf.state_dict().keys()
    for key, value in hf.state_dict().items():
        assert torch.equal(back[key], value), key


def test_bigmodel_encoders_export_to_transformers_with_equal_outputs():
    """The other way: a model built here (random init, every ModernBERT switch) -> ModernBertForMaskedLM."""
    config = EncoderConfig.from_name("modernbert-mini", vocab_size=120, num_layers=4, hidden_size=64, num_heads=4,
                                     intermediate_size=96, sliding_window=6, local_rope_theta=77.0)
    torch.manual_seed(0)
    ours = MaskedLanguageModel(config).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    hf_config = transformers.ModernBertConfig(**config.to_hf("modernbert"), attn_implementation="eager")
    assert hf_config.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    hf = transformers.ModernBertForMaskedLM(hf_config).eval()
    missing, unexpected = hf.load_state_dict(to_hf(ours.state_dict(), "modernbert"), strict=False)
    assert missing == ["decoder.weight"] and not unexpected  # tied to the word embeddings
    hf.tie_weights()
    ids, mask = _padded_batch()
    real = mask.bool()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask)
        logits = ours(ids, torch.arange(ids.numel()), mask).view(3, 20, -1)
    torch.testing.assert_close(logits[real], ref.logits[real], atol=1e-5, rtol=1e-5)


def test_a_modernbert_directory_is_an_init_from_and_exports_back(tmp_path):
    from bigmodel.commands.export import export
    from bigmodel.tasks import MLMTask

    hf = _hf("ModernBertForMaskedLM", "modernbert")
    hf.save_pretrained(tmp_path / "modernbert")
    task = MLMTask(vocab_size=120, init_from=str(tmp_path / "modernbert")).eval()
    assert task.load_pretrained(task._pretrained) == []
    ids, mask = _padded_batch()
    real = mask.bool()
    with torch.no_grad():
        torch.testing.assert_close(task.net.encoder(ids, mask).last_hidden_state[real],
                                   hf.model(input_ids=ids, attention_mask=mask).last_hidden_state[real],
                                   atol=1e-5, rtol=1e-5)
    ckpt = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "mlm.ckpt")
    with pytest.raises(ValueError, match="only modernbert has rotary positions; this encoder is a modernbert"):
        export(str(tmp_path / "mlm.ckpt"), str(tmp_path / "wrong"), family="bert")
    export(str(tmp_path / "mlm.ckpt"), str(tmp_path / "back"))
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "back")
    assert type(back).__name__ == "ModernBertForMaskedLM"
    for key, value in hf.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_a_modernbert_classifier_checkpoint_exports_with_its_tokenizer_and_equal_logits(tmp_path):
    """A classifier built here (ModernBERT's switches, mean classifier_pooling, its own tokenizer) -> export ->
    transformers' ModernBertForSequenceClassification and tokenizer: equal logits on a padded batch; a head that
    learned mean pooling without ModernBERT's head is refused with what ModernBERT reads."""
    from bigmodel.commands.export import export
    from bigmodel.data.tokenizer import tokenizer_files, train_wordpiece
    from bigmodel.tasks import ClassificationTask

    texts = ["a gorgeous , witty , seductive movie .", "the plot is routine and utterly forgettable ."] * 20
    tokenizer = train_wordpiece(texts, vocab_size=120)
    shape = dict(num_layers=3, hidden_size=64, num_heads=2, intermediate_size=48, sliding_window=4,
                 max_position_embeddings=32, local_rope_theta=99.0, classifier_pooling="mean")
    for pooling in ("mean", "pooler"):  # the pooler's task stays: the one exported
        torch.manual_seed(0)
        task = ClassificationTask(num_classes=2, class_names=["neg", "pos"], vocab_size=len(tokenizer),
                                  encoder="modernbert-mini", encoder_config=shape, pooling=pooling).eval()
        task.configure_model()
        ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "tokenizer": tokenizer_files(tokenizer)}
        task.on_save_checkpoint(ckpt)
        torch.save(ckpt, tmp_path / f"{pooling}.ckpt")
    with pytest.raises(ValueError, match=r"^this classifier reads mean pooling; ModernBertForSequenceClassification "
                                         r"reads \[CLS\] or the mean \(classifier_pooling\) through its "
                                         r"dense-GELU-norm head only, so this trained checkpoint cannot become one"):
        export(str(tmp_path / "mean.ckpt"), str(tmp_path / "mean"))
    export(str(tmp_path / "pooler.ckpt"), str(tmp_path / "hf"))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "ModernBertForSequenceClassification" and hf.config.id2label == {0: "neg", 1: "pos"}
    assert (hf.config.classifier_pooling, hf.config.local_attention, hf.config.pad_token_id) == \
        ("mean", 4, tokenizer.pad_token_id)
    assert hf.config.rope_parameters["sliding_attention"]["rope_theta"] == 99.0
    assert hf.drop.p == task.net.head.dropout.p == 0.1  # the head's dropout (ModernBERT's default is 0)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    batch = reloaded([texts[0], texts[1] + " " + texts[1]], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1] > 4  # padded, beyond the window
    with torch.no_grad():
        ours = task.net(batch["input_ids"], batch["attention_mask"])[0]
        torch.testing.assert_close(hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                   ours, atol=1e-5, rtol=1e-5)


def test_an_untied_decoder_is_not_read_as_the_word_embeddings(tmp_path):
    """tie_word_embeddings: false gives a decoder of its own; bigmodel's MLM head decodes with the word embeddings,
    so the source's MLM head is left out (said, and a new one noted) instead of predicting other logits."""
    from bigmodel.tasks import MLMTask

    hf = _hf("ModernBertForMaskedLM", "modernbert", tie_word_embeddings=False)
    assert not torch.equal(hf.decoder.weight, hf.model.embeddings.tok_embeddings.weight)
    with pytest.warns(UserWarning, match=r"this modernbert checkpoint's MLM decoder is not tied to its word "
                                         r"embeddings \(tie_word_embeddings: false\), .*: its MLM head is not read"):
        state = from_hf(hf.state_dict(), "modernbert")
    assert not any(k.startswith("mlm_head.") for k in state) and "encoder.final_norm.weight" in state
    hf.save_pretrained(tmp_path / "untied")
    with pytest.warns(UserWarning, match="its MLM head is not read"):
        task = MLMTask(vocab_size=120, init_from=str(tmp_path / "untied")).eval()
    assert task.load_pretrained(task._pretrained) == ["new MLM head (the source has none)"]
    tied = _hf("ModernBertForMaskedLM", "modernbert")
    assert "mlm_head.dense.weight" in from_hf(tied.state_dict(), "modernbert")  # a tied decoder: the head is read


def test_configs_modernbert_cannot_express_are_refused():
    with pytest.raises(ValueError, match="has no modernbert equivalent: it is post-LN, learned positions"):
        EncoderConfig.from_name("bert-tiny").to_hf("modernbert")
    with pytest.raises(ValueError, match="has no bert equivalent: it is pre-LN .*rope positions"):
        EncoderConfig.from_name("modernbert-mini").to_hf("bert")
    hf = transformers.ModernBertConfig(**{**BASE, "attention_bias": True}).to_dict()
    with pytest.raises(ValueError, match="bigmodel has one switch for all of them"):
        EncoderConfig.from_hf(hf)
    odd = transformers.ModernBertConfig(**{**BASE, "layer_types": ["sliding_attention"] + ["full_attention"] * 4})
    with pytest.raises(ValueError, match="is not 'every n-th layer global, from layer 0'"):
        EncoderConfig.from_hf(odd.to_dict())


def test_modernbert_dropouts_that_land_elsewhere_here_are_said():
    hf = transformers.ModernBertConfig(**{**BASE, "mlp_dropout": 0.1, "embedding_dropout": 0.05}).to_dict()
    with pytest.warns(UserWarning, match=r"ModernBERT dropouts .*'mlp_dropout': 0.1.* no dropout inside the "
                                         r"feed-forward; set encoder_config's hidden_dropout"):
        config = EncoderConfig.from_hf(hf)
    assert (config.hidden_dropout, config.attention_dropout) == (0.05, 0.0)


@pytest.mark.parametrize("name,shape", [("modernbert-base", {}),
                                        ("modernbert-large", dict(hidden_size=1024, num_hidden_layers=28,
                                                                  num_attention_heads=16, intermediate_size=2624))])
def test_presets_have_transformers_modernbert_parameter_counts(name, shape):
    from bigmodel.nn import TransformerEncoder, num_parameters

    with torch.device("meta"):
        ours = TransformerEncoder(EncoderConfig.from_name(name))
        ref = transformers.ModernBertModel(transformers.ModernBertConfig(**shape))
    assert num_parameters(ours) == num_parameters(ref) == {"modernbert-base": 149_014_272,
                                                           "modernbert-large": 394_781_696}[name]
    assert EncoderConfig.from_hf(ref.config.to_dict()) == EncoderConfig.from_name(name)
