"""Dynamic int8 linear layers: every nn.Linear (LoRA merged first) becomes int8, the weights shrink about 4x, and
the predictions stay those of the float model."""

import torch
from torch import nn

from bigmodel.nn import EncoderConfig, SequenceClassifier
from bigmodel.nn.peft import LoRAConfig, add_lora
from bigmodel.nn.quantize import quantize_int8, state_dict_bytes


def test_int8_classifier_agrees_with_float_and_is_smaller():
    torch.manual_seed(0)
    config = EncoderConfig.from_name("bert-tiny", vocab_size=100, hidden_dropout=0.0, attention_dropout=0.0)
    model = SequenceClassifier(config, 4, 0.0).eval()
    add_lora(model.encoder, LoRAConfig(rank=4))
    with torch.no_grad():
        nn.init.normal_(model.head.classifier.weight, std=1.0)  # clear margins, as a trained head has
        for layer in model.encoder.layers:
            nn.init.normal_(layer.attn.qkv.lora_b, std=0.05)
    ids = torch.randint(5, 100, (64, 16))
    with torch.no_grad():
        reference = model(ids)[0]
    size = state_dict_bytes(model)
    model, count = quantize_int8(model)
    assert count == 2 * 4 + 2  # qkv, proj, up, down per layer; pooler and classifier
    assert not any(type(m) is nn.Linear for m in model.modules())
    with torch.no_grad():
        logits = model(ids)[0]
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.95  # 63 of 64 here
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()  # 2 % here
    assert state_dict_bytes(model) < 0.45 * size  # 0.38: embeddings and LayerNorms stay float
