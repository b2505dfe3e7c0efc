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


def test_hf_vit_weights_give_identical_outputs_and_adapt_to_other_sizes(tmp_path):
    from bigmodel.nn import VisionTransformer
    from bigmodel.tasks.checkpoints import load_backbone_weights

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
    assert ours.load_pretrained(load_backbone_weights(str(tmp_path / "vit"))) == []
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
