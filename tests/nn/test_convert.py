"""Output parity with Hugging Face's BERT: proof that the encoder's parameters hold a published BERT exactly."""

import pytest
import torch
import transformers

from bigmodel.nn import EncoderConfig, MaskedLanguageModel
from bigmodel.nn.convert import convert_hf_bert


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


def test_hf_vit_weights_give_identical_outputs_and_adapt_to_other_sizes(tmp_path):
    from bigmodel.nn import VisionTransformer
    from bigmodel.tasks.checkpoints import resolve

    hf_cfg = transformers.ViTConfig(
        image_size=32, patch_size=4, num_channels=3, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-6,
        num_labels=5,
    )
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(hf_cfg).eval()
    overrides = {"image_size": 32, "patch_size": 4, "hidden_size": 64, "num_layers": 2, "num_heads": 4,
                 "intermediate_size": 128}
    ours = VisionTransformer(5, "vit-tiny", overrides).eval()
    hf.save_pretrained(tmp_path / "vit")  # the Hub's file layout (older module names than a live transformers 5 model)
    assert ours.load_pretrained(resolve(str(tmp_path / "vit")).state) == []
    assert VisionTransformer(5, "vit-tiny", overrides).load_pretrained(hf.state_dict()) == []
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), hf(pixel_values=images).logits, atol=1e-5, rtol=1e-5)
    # fine-tuning elsewhere: 48 px images (12x12 grid from the 8x8 table) and 10 classes (a new head)
    other = VisionTransformer(10, "vit-tiny", {**overrides, "image_size": 48})
    notes = other.load_pretrained(hf.state_dict())
    assert notes == ["position embeddings resampled from 8x8 to 12x12",
                     "new output layer head for 10 classes (checkpoint: (5, 64))"]
    torch.testing.assert_close(other.encoder.layers[1].attn.qkv.weight, ours.encoder.layers[1].attn.qkv.weight)
    with pytest.raises(ValueError, match=r"weights do not fit VisionTransformer: encoder.embeddings.proj.weight is \(64, 3, 4, 4\) there"):
        VisionTransformer(5, "vit-tiny", {**overrides, "patch_size": 8}).load_pretrained(hf.state_dict())


def _small(cls_name: str, **extra):
    cfg_cls = transformers.RobertaConfig if cls_name.startswith("Roberta") else transformers.BertConfig
    cfg = cfg_cls(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **extra)
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(cfg).eval()


def _padded_batch(pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 120, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, 3:] = 0
    return ids.masked_fill(mask == 0, pad_id), mask


@pytest.mark.parametrize("family", ["Bert", "Roberta"])
def test_masked_lm_of_both_families_gives_identical_outputs(family):
    from bigmodel.nn.convert import from_hf

    hf = _small(f"{family}ForMaskedLM")
    config = EncoderConfig.from_hf(hf.config.to_dict())
    assert config.position_offset == (2 if family == "Roberta" else 0)
    ours = MaskedLanguageModel(config).eval()
    ours.load_state_dict(from_hf(hf.state_dict(), family.lower()), strict=True)
    ids, mask = _padded_batch(hf.config.pad_token_id)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = ours.encoder(ids, mask).last_hidden_state
        logits = ours(ids, torch.arange(ids.numel()), mask).view(3, 12, -1)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], ref.hidden_states[-1][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[real], ref.logits[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["Bert", "Roberta"])
def test_sequence_classifiers_of_both_families_give_identical_logits_and_export_back_exactly(family):
    from bigmodel.nn import SequenceClassifier
    from bigmodel.nn.convert import from_hf, to_hf

    hf = _small(f"{family}ForSequenceClassification", num_labels=3)
    ours = SequenceClassifier(EncoderConfig.from_hf(hf.config.to_dict()), num_classes=3).eval()
    ours.load_state_dict(from_hf(hf.state_dict(), family.lower()), strict=True)
    ids, mask = _padded_batch(hf.config.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask)[0], hf(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=1e-5)
    back = to_hf(ours.state_dict(), family.lower())
    original = {k: v for k, v in hf.state_dict().items() if not k.endswith(("position_ids", "token_type_ids"))}
    assert back.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(back[key], value), key


def test_a_config_of_another_model_type_is_refused():
    with pytest.raises(ValueError, match=r"model_type 'gpt2' is not supported; bigmodel reads bert, roberta"):
        EncoderConfig.from_hf({"model_type": "gpt2"})


def test_pretraining_heads_old_names_and_a_stray_roberta_pooler_import_cleanly():
    from bigmodel.nn import SequenceClassifier
    from bigmodel.nn.convert import from_hf

    pre = _small("BertForPreTraining").state_dict()  # bert-base-uncased's layout: MLM + next-sentence heads
    tf_names = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                for k, v in pre.items()}  # checkpoints converted from TensorFlow name LayerNorm gamma/beta
    assert from_hf(tf_names, "bert").keys() == from_hf(pre, "bert").keys()
    assert not any("seq_relationship" in k for k in from_hf(pre, "bert"))
    hf = _small("RobertaForSequenceClassification", num_labels=3)
    stray = {**hf.state_dict(), "roberta.pooler.dense.weight": torch.zeros(64, 64),
             "roberta.pooler.dense.bias": torch.zeros(64)}  # unused by transformers; must not replace the head
    ours = SequenceClassifier(EncoderConfig.from_hf(hf.config.to_dict()), num_classes=3).eval()
    ours.load_state_dict(from_hf(stray, "roberta"), strict=True)
    ids, mask = _padded_batch(hf.config.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask)[0], hf(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["Bert", "Roberta"])
def test_each_familys_head_trains_with_its_own_dropouts(family, monkeypatch):
    """RoBERTa's head is dropout -> dense -> tanh -> dropout -> out_proj on <s>; BERT's is pooler (dense -> tanh)
    -> dropout -> classifier. Ours read RoBERTa's as BERT's, without the first dropout: equal in eval, a different
    method in training. With torch's dropout (transformers' random stream) and one seed, a training forward of our
    head equals transformers' head, for both families."""
    from bigmodel.nn import SequenceClassifier, dropout
    from bigmodel.nn.convert import from_hf

    monkeypatch.setattr(dropout, "CHEAP_CPU_MASK", False)  # F.dropout, as nn.Dropout draws
    hf = _small(f"{family}ForSequenceClassification", num_labels=3, classifier_dropout=0.3)
    config = EncoderConfig.from_hf(hf.config.to_dict())
    assert config.dropout_before_pooler == (family == "Roberta")
    ours = SequenceClassifier(config, num_classes=3, classifier_dropout=0.3)  # HF: classifier_dropout over hidden's
    ours.load_state_dict(from_hf(hf.state_dict(), family.lower()), strict=True)
    ours.head.train()
    hf.train()
    hidden = torch.randn(4, 6, 64)

    def reference(features):
        if family == "Roberta":
            return hf.classifier(features)
        return hf.classifier(hf.dropout(hf.bert.pooler(features)))

    for seed in range(3):
        torch.manual_seed(seed)
        logits = ours.head(hidden)
        torch.manual_seed(seed)
        torch.testing.assert_close(logits, reference(hidden), atol=1e-6, rtol=1e-6)
    ours.head.eval()
    hf.eval()
    torch.testing.assert_close(ours.head(hidden), reference(hidden), atol=1e-6, rtol=1e-6)
