import pytest
import torch

from bigmodel.nn import TransformerEncoder, VisionTransformer, attention_rollout, num_parameters
from bigmodel.nn.attention import Attention
from bigmodel.nn.vision import cls_attention_maps, resample_position_embeddings


def test_vit_runs_on_the_shared_encoder_forward_and_backward():
    torch.manual_seed(0)
    vit = VisionTransformer(10, "vit-cifar-tiny")
    assert type(vit.encoder) is TransformerEncoder and type(vit.encoder.layers[0].attn) is Attention
    logits = vit(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in vit.parameters())


def test_vit_base_matches_the_published_parameter_count():
    with torch.device("meta"):
        vit = VisionTransformer(1000, "vit-base")
    assert num_parameters(vit) == 86_567_656  # ViT-B/16 at 224 px with a 1000-class head


def test_vit_tiny_at_224():
    vit = VisionTransformer(3, "vit-tiny").eval()
    with torch.no_grad():
        out = vit.forward_features(torch.randn(1, 3, 224, 224))
    assert out.last_hidden_state.shape == (1, 197, 192)


def test_position_embeddings_resample_and_are_identity_at_the_same_size():
    pos = torch.randn(1, 1 + 8 * 8, 16)
    assert resample_position_embeddings(pos, (8, 8)) is pos
    bigger = resample_position_embeddings(pos, (12, 12))
    assert bigger.shape == (1, 1 + 144, 16) and torch.isfinite(bigger).all()
    assert torch.equal(bigger[:, 0], pos[:, 0])  # the [CLS] position is kept
    vit = VisionTransformer(10, "vit-cifar-tiny").eval()
    with torch.no_grad(), pytest.warns(UserWarning) as told:
        assert torch.isfinite(vit(torch.randn(2, 3, 48, 48))).all()  # a 12x12 grid from an 8x8 table
        vit(torch.randn(2, 3, 48, 48))
        vit(torch.randn(2, 3, 32, 32))  # the size it was built for
    assert [str(w.message) for w in told] == [  # said once, not at every step
        "this ViT's position embeddings were learned for 32 px images (8x8 patches) and are given 48x48: they are "
        "resampled (bicubic) to 12x12 for them; give images of the size it was built for (data image_size) to use "
        "them as learned"]
    with pytest.raises(ValueError, match="not a multiple of patch_size 4"):
        vit(torch.randn(1, 3, 30, 30))


def test_attention_maps_from_the_explicit_path():
    torch.manual_seed(0)
    vit = VisionTransformer(10, "vit-cifar-tiny").eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = vit.forward_features(images).last_hidden_state
        slow = vit.forward_features(images, output_attentions=True)
    torch.testing.assert_close(fast, slow.last_hidden_state, atol=1e-5, rtol=1e-5)
    maps = cls_attention_maps(slow.attentions, (8, 8))
    assert maps.shape == (2, 3, 8, 8) and (maps >= 0).all()
    rollout = attention_rollout(slow.attentions, (8, 8))
    assert rollout.shape == (2, 8, 8) and (rollout > 0).all() and (rollout.sum((1, 2)) < 1).all()


def test_vit_needs_pre_ln():
    with pytest.raises(ValueError, match="pre-LN"):
        VisionTransformer(2, "vit-cifar-tiny", {"norm_first": False})


def test_vit_cls_token_and_positions_are_not_decayed():
    from bigmodel.tasks.optim import parameter_groups

    vit = VisionTransformer(10, "vit-cifar-tiny")
    decay, no_decay = parameter_groups(vit, 0.05)
    assert no_decay["weight_decay"] == 0.0
    kept = {id(p) for p in no_decay["params"]}
    assert id(vit.encoder.embeddings.cls_token) in kept and id(vit.encoder.embeddings.position_embeddings) in kept
    assert id(vit.encoder.embeddings.proj.weight) not in kept and id(vit.head.weight) not in kept


def test_conv_stem_keeps_the_token_grid_and_the_default_is_the_plain_patch_embedding():
    overrides = {"image_size": 8, "patch_size": 2, "num_channels": 1, "num_layers": 1, "hidden_size": 32,
                 "num_heads": 2, "intermediate_size": 64}
    torch.manual_seed(0)
    plain = VisionTransformer(10, "vit-tiny", overrides)
    torch.manual_seed(0)
    default = VisionTransformer(10, "vit-tiny", overrides, stem_channels=())
    assert plain.encoder.embeddings.stem is None and plain.state_dict().keys() == default.state_dict().keys()
    assert not any(".stem." in k for k in plain.state_dict())  # published checkpoints keep loading as before
    images = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(plain(images), default(images))
    stem = VisionTransformer(10, "vit-tiny", overrides, stem_channels=[8, 16])
    assert stem.encoder.embeddings.proj.in_channels == 16
    out = stem.forward_features(images).last_hidden_state
    assert out.shape == (3, 1 + 4 * 4, 32)  # same 16 patches + [CLS] as without the stem
    stem(images).sum().backward()
    assert all(p.grad is not None for p in stem.parameters())
    with pytest.raises(ValueError, match="stem_channels"):
        VisionTransformer(10, "vit-tiny", overrides, stem_channels=[0])
