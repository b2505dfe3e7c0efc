"""bigmodel's dropout (nn/dropout.py): the distribution ``F.dropout`` has -- each element kept with probability
1 - p and scaled by 1 / (1 - p), the gradient through the same mask -- from a cheaper CPU mask; attention with
dropout on CPU takes the explicit path with it, unbiased like SDPA's."""

import pytest
import torch
import torch.nn.functional as F

from bigmodel.nn import EncoderConfig
from bigmodel.nn.attention import Attention
from bigmodel.nn.dropout import Dropout, dropout


def test_kept_elements_are_scaled_and_the_gradient_goes_through_the_same_mask():
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(0)
    keep = torch.rand_like(x) >= 0.25  # the draw dropout makes from the global generator
    torch.manual_seed(0)
    out = dropout(x, 0.25)
    torch.testing.assert_close(out, torch.where(keep, x * (1 / 0.75), 0.0), rtol=0, atol=0)
    grad = torch.randn_like(x)
    out.backward(grad)
    torch.testing.assert_close(x.grad, torch.where(keep, grad * (1 / 0.75), 0.0), rtol=0, atol=0)


def test_keep_rate_is_one_minus_p_and_the_mean_is_unchanged():
    x = torch.ones(1_000_000)
    out = Dropout(0.1).train()(x)
    kept = (out != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.0015  # 5 standard deviations of a binomial mean at n = 1e6
    assert abs(out.mean().item() - 1.0) < 0.002  # inverted dropout: the expectation is the input


def test_eval_and_zero_p_are_the_identity_and_bad_p_is_refused():
    x = torch.randn(4, 5)
    assert Dropout(0.5).eval()(x) is x and dropout(x, 0.0) is x and dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match="0 <= p < 1"):
        Dropout(1.0)


def test_attention_with_dropout_on_cpu_skips_sdpa_and_is_unbiased(monkeypatch):
    cfg = EncoderConfig.from_name("bert-tiny", hidden_size=32, num_heads=2, attention_dropout=0.3)
    torch.manual_seed(0)
    layer = Attention(cfg)
    x = torch.randn(2, 7, 32)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False  # padding: the explicit path masks as SDPA does
    expected = layer.eval()(x, mask)[0]  # SDPA, no dropout
    layer.train()
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: pytest.fail("SDPA's dropout fallback"))
    draws = torch.stack([layer(x, mask)[0] for _ in range(3000)])
    assert not torch.equal(draws[0], draws[1])  # dropout is on
    torch.testing.assert_close(draws.mean(0), expected, atol=0.02, rtol=0)


def test_torch_masks_switch_restores_sdpa_and_f_dropout(monkeypatch):
    """The bench's before/after: with the switch off, attention calls SDPA with its dropout probability again."""
    from bigmodel.nn import dropout as module

    cfg = EncoderConfig.from_name("bert-tiny", hidden_size=32, num_heads=2, attention_dropout=0.3)
    layer = Attention(cfg).train()
    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: seen.append(k["dropout_p"]) or real(*a, **k))
    monkeypatch.setattr(module, "CHEAP_CPU_MASK", False)
    layer(torch.randn(2, 7, 32))
    assert seen == [0.3]
