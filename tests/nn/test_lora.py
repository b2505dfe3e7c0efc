"""LoRA per projection on the fused qkv layer: the parameter counts and the forward of Hugging Face peft on the
transformers BERT of the same weights, exact merging with some slices left out, rsLoRA, and checkpoints written
before per-slice updates (one update shared by q, k and v) still loading to the same function."""

import re

import pytest
import torch
from torch import nn

from bigmodel.nn import EncoderConfig, TransformerEncoder
from bigmodel.nn.convert import from_hf
from bigmodel.nn.peft import FUSED, LoRAConfig, LoRALinear, add_lora, merge_lora, merge_lora_state

ALL = ("q", "k", "v", "proj", "up", "down")
# our projection -> the module of a transformers BERT layer that holds it
HF_MODULE = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "proj": "attention.output.dense", "up": "intermediate.dense", "down": "output.dense"}


def _peft_config(peft, targets, **kw):
    """peft's LoraConfig on exactly these projections (a regex: ``output.dense`` alone would also match proj)."""
    modules = "|".join(re.escape(HF_MODULE[t]) for t in targets)
    return peft.LoraConfig(target_modules=rf".*encoder\.layer\.\d+\.({modules})", **kw)


def _hf_bert(transformers, **kw):
    config = transformers.BertConfig(vocab_size=100, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, **kw)
    torch.manual_seed(0)
    return transformers.BertModel(config, add_pooling_layer=False).eval()


def _ours(hf) -> TransformerEncoder:
    """Our encoder with the transformers model's weights, through the import path init_from uses."""
    encoder = TransformerEncoder(EncoderConfig.from_hf(hf.config.to_dict())).eval()
    state = {k.removeprefix("encoder."): v for k, v in from_hf(hf.state_dict(), "bert").items()}
    encoder.load_state_dict(state, strict=True)
    return encoder


def _lora_count(module: nn.Module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if "lora_" in name)


@pytest.mark.parametrize("targets", [("q", "v"), ("q", "k", "v"), ALL])
def test_parameter_counts_equal_peft_on_a_bert_mini(targets):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    hf = _hf_bert(transformers, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    ours = _ours(hf)
    add_lora(ours, LoRAConfig(rank=8, targets=targets))
    reference = peft.get_peft_model(hf, _peft_config(peft, targets, r=8))
    assert _lora_count(ours) == _lora_count(reference)
    if targets == ("q", "k", "v"):
        assert _lora_count(ours) == 4 * 3 * (256 * 8 + 8 * 256)  # 12,288 a layer; one shared update had 8,192


@pytest.mark.parametrize("targets, rslora", [(("q", "v"), False), (ALL, True)])
def test_forward_equals_peft_with_the_same_updates(targets, rslora):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    hf = _hf_bert(transformers, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    ours = _ours(hf)
    add_lora(ours, LoRAConfig(rank=4, alpha=8.0, targets=targets, rslora=rslora))
    reference = peft.get_peft_model(hf, _peft_config(peft, targets, r=4, lora_alpha=8, use_rslora=rslora)).eval()
    modules = dict(reference.base_model.model.named_modules())
    copied = set()
    with torch.no_grad():
        for name, layer in ours.named_modules():
            if not isinstance(layer, LoRALinear):
                continue
            index, attr = name.split(".")[1], name.rsplit(".", 1)[-1]
            parts = FUSED.get(attr, (attr,))
            size = layer.out_features // layer.parts
            for j, part in enumerate(layer.slices):
                copied.add(f"encoder.layer.{index}.{HF_MODULE[parts[part]]}")
                theirs = modules[f"encoder.layer.{index}.{HF_MODULE[parts[part]]}"]
                nn.init.normal_(theirs.lora_B["default"].weight, std=0.1)  # a trained update (peft starts at B = 0)
                layer.lora_a[j * 4:(j + 1) * 4] = theirs.lora_A["default"].weight
                layer.lora_b[j * size:(j + 1) * size] = theirs.lora_B["default"].weight
    assert copied == {name for name, m in modules.items() if hasattr(m, "lora_A")}  # one of ours for each of theirs
    ids = torch.randint(5, 100, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 7:] = 0
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        with reference.disable_adapter():  # the base model
            base = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = ours(ids, mask).last_hidden_state
    real = mask.bool()
    assert (expected - base)[real].abs().max() > 0.05  # the updates change the output: the comparison means something
    torch.testing.assert_close(hidden[real], expected[real], atol=1e-5, rtol=1e-5)


def test_q_and_v_leave_k_alone_and_merge_exactly():
    torch.manual_seed(0)
    config = EncoderConfig.from_name("bert-tiny", vocab_size=100, hidden_dropout=0.0, attention_dropout=0.0)
    encoder = TransformerEncoder(config).eval()
    lora_config = LoRAConfig(rank=4, targets=("q", "v", "down"), rslora=True)
    add_lora(encoder, lora_config)
    qkv = encoder.layers[0].attn.qkv
    H = config.hidden_size
    assert qkv.slices == (0, 2) and qkv.lora_a.shape == (8, H) and qkv.lora_b.shape == (2 * H, 4)
    assert lora_config.scaling == 16.0 / 2.0  # rsLoRA: alpha / sqrt(rank)
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, LoRALinear):
                nn.init.normal_(m.lora_b, std=0.05)
    delta = qkv.delta()
    assert delta[H:2 * H].abs().max() == 0 and delta[:H].abs().max() > 0 and delta[2 * H:].abs().max() > 0
    x = torch.randn(2, 5, H)
    with torch.no_grad():
        k_base = nn.functional.linear(x, qkv.weight, qkv.bias)[..., H:2 * H]
        torch.testing.assert_close(qkv(x)[..., H:2 * H], k_base, atol=0, rtol=0)  # k has no update
    ids = torch.randint(5, 100, (2, 9))
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    with torch.no_grad():
        before = encoder(ids).last_hidden_state
        assert merge_lora(encoder) == 2 * 2
        torch.testing.assert_close(encoder(ids).last_hidden_state, before, atol=1e-5, rtol=0)
    folded = merge_lora_state(state, lora_config)
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(folded[key], value, atol=1e-6, rtol=0)


def test_a_checkpoint_with_one_shared_qkv_update_loads_to_the_same_function():
    """Before per-slice updates, ``qkv`` was one rank-r update of the fused layer: lora_a (r, in), lora_b (3d, r).
    It is the per-slice update with A repeated, so old checkpoints load (and merge) exactly."""
    torch.manual_seed(0)
    config = EncoderConfig.from_name("bert-tiny", vocab_size=100, hidden_dropout=0.0, attention_dropout=0.0)
    encoder = TransformerEncoder(config).eval()
    H, r = config.hidden_size, 4
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    old = {}
    for i in range(config.num_layers):
        old[f"layers.{i}.attn.qkv.lora_a"] = torch.randn(r, H) * 0.1
        old[f"layers.{i}.attn.qkv.lora_b"] = torch.randn(3 * H, r) * 0.1
    old_scaling = 8.0 / r  # alpha / rank, as then
    ids = torch.randint(5, 100, (2, 9))
    with torch.no_grad():
        old_weights = {k: v.clone() for k, v in state.items()}
        for i in range(config.num_layers):
            delta = old[f"layers.{i}.attn.qkv.lora_b"] @ old[f"layers.{i}.attn.qkv.lora_a"]
            old_weights[f"layers.{i}.attn.qkv.weight"] += old_scaling * delta
        encoder.load_state_dict(old_weights)
        expected = encoder(ids).last_hidden_state  # what the old model computed
        encoder.load_state_dict(state)
        lora_config = LoRAConfig(rank=r, alpha=8.0, targets=("qkv",))  # the old hyper-parameters
        assert lora_config.targets == ("q", "k", "v")
        add_lora(encoder, lora_config)
        encoder.load_state_dict({**state, **old}, strict=True)
        torch.testing.assert_close(encoder(ids).last_hidden_state, expected, atol=1e-5, rtol=0)
    folded = merge_lora_state({**state, **old}, lora_config)
    for key, value in old_weights.items():
        torch.testing.assert_close(folded[key], value, atol=1e-6, rtol=0)


def test_target_names_are_checked():
    assert LoRAConfig(targets=("qkv", "q", "proj")).targets == ("q", "k", "v", "proj")
    assert LoRAConfig(targets=("kv",)).targets == ("k", "v")
    with pytest.raises(ValueError, match=r"choose from q, k, v, proj, up, down \(qkv = \[q, k, v\]"):
        LoRAConfig(targets=("query",))
    with pytest.raises(ValueError, match="do not name its layer: pass the run's own LoRA settings"):
        merge_lora_state({"a.proj.weight": torch.zeros(2, 2), "a.proj.lora_a": torch.zeros(1, 2),
                          "a.proj.lora_b": torch.zeros(2, 1)}, LoRAConfig(targets=("q",)))
