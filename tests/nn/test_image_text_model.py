"""Image-text losses and metrics against hand computations; the data-parallel loss against one process."""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from bigmodel.nn import EncoderConfig, VisionTransformer
from bigmodel.nn.image_text import (
    ImageTextModel,
    caption_relevance,
    contrastive_loss,
    hard_negatives,
    retrieval_recall,
    zero_shot_classifier,
)


def _unit(n: int, d: int = 4, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_contrastive_loss_equals_a_hand_computation():
    images, texts, scale = _unit(3, seed=1), _unit(3, seed=2), torch.tensor(10.0)
    expected = 0.0
    for i in range(3):  # image i against every text, text i against every image, log-softmax at the pair
        row = [float(scale) * float(images[i] @ texts[j]) for j in range(3)]
        col = [float(scale) * float(texts[i] @ images[j]) for j in range(3)]
        expected += -(row[i] - math.log(sum(map(math.exp, row)))) - (col[i] - math.log(sum(map(math.exp, col))))
    expected /= 2 * 3
    assert contrastive_loss(images, texts, scale).item() == pytest.approx(expected, rel=1e-5)
    # the diagonal given as positives is the same loss
    assert contrastive_loss(images, texts, scale, torch.eye(3, dtype=torch.bool)).item() == pytest.approx(expected, rel=1e-5)


def test_several_positives_share_the_target():
    images, texts, scale = _unit(3, seed=3), _unit(3, seed=4), torch.tensor(5.0)
    positives = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    logits = scale * images @ texts.T
    i2t = -(logits.log_softmax(-1) * positives / positives.sum(-1, keepdim=True)).sum(-1).mean()
    t2i = -(logits.T.log_softmax(-1) * positives.T / positives.T.sum(-1, keepdim=True)).sum(-1).mean()
    assert contrastive_loss(images, texts, scale, positives).item() == pytest.approx(((i2t + t2i) / 2).item(), rel=1e-5)


def test_ranks_losses_averaged_equal_the_loss_over_the_whole_batch():
    """What each of 2 ranks computes from the gathered embeddings and its own rows: the mean equals one process."""
    images, texts = _unit(6, seed=5).requires_grad_(), _unit(6, seed=6).requires_grad_()
    scale = torch.tensor(7.0, requires_grad=True)
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 4] = positives[4, 0] = True
    whole = contrastive_loss(images, texts, scale, positives)
    whole_grads = torch.autograd.grad(whole, (images, texts, scale))
    ranks = sum(contrastive_loss(images, texts, scale, positives, slice(r * 3, r * 3 + 3)) for r in range(2)) / 2
    rank_grads = torch.autograd.grad(ranks, (images, texts, scale))
    assert ranks.item() == pytest.approx(whole.item(), rel=1e-6)
    for a, b in zip(rank_grads, whole_grads):
        torch.testing.assert_close(a, b)


WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from bigmodel.nn.image_text import contrastive_loss, gather_with_grad
    rank = int(sys.argv[1])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    mine = slice(4 * rank, 4 * rank + 4)
    w = torch.ones(4, 4, requires_grad=True)  # a shared parameter in front of the embeddings
    local_i, local_t = images[mine] @ w, texts[mine] @ w
    all_i, offset = gather_with_grad(local_i)
    all_t, _ = gather_with_grad(local_t)
    loss = contrastive_loss(all_i, all_t, torch.tensor(3.0), rows=slice(offset, offset + 4))
    loss.backward()
    dist.all_reduce(w.grad); w.grad /= 2  # what DDP does with the parameters' gradients
    dist.all_reduce(loss); loss /= 2
    torch.save({"loss": loss.detach(), "grad": w.grad}, sys.argv[2] + f"/rank{rank}.pt")
    dist.destroy_process_group()
""")


def test_gathered_loss_on_two_gloo_ranks_equals_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path)], env=env) for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    w = torch.ones(4, 4, requires_grad=True)
    loss = contrastive_loss(images @ w, texts @ w, torch.tensor(3.0))
    loss.backward()
    for r in range(2):
        out = torch.load(tmp_path / f"rank{r}.pt")
        assert out["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
        torch.testing.assert_close(out["grad"], w.grad)


def test_relevance_counts_every_image_a_caption_describes():
    sets = torch.tensor([[0, 1, -1], [0, 1, -1], [2, -1, -1]])
    assert caption_relevance(sets, torch.tensor([0, 2, 1])).tolist() == [
        [True, False, True], [True, False, True], [False, True, False]]


def test_recall_at_k_equals_a_hand_count_and_torchmetrics():
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.7, 0.6], [0.3, 0.2, 0.1]])
    relevant = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.bool)
    recall = retrieval_recall(similarity, relevant, ks=(1, 2, 3), chunk=2)
    # query 0: top-1 is relevant; query 1: relevant item ranked 3rd; query 2: ranked 2nd; query 3: nothing relevant
    assert [recall[k].item() for k in (1, 2, 3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    from torchmetrics.retrieval import RetrievalHitRate

    q = relevant.any(1)
    indexes = torch.arange(4)[:, None].expand(-1, 3)
    for k in (1, 2, 3):
        reference = RetrievalHitRate(top_k=k)(similarity[q].flatten(), relevant[q].flatten(), indexes[q].flatten())
        assert recall[k].item() == pytest.approx(reference.item())


def test_hard_negatives_are_never_positive_and_follow_the_similarity():
    similarity = torch.tensor([[5.0, 4.0, -5.0], [0.0, 5.0, 0.0], [1.0, 1.0, 1.0]])
    positives = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([hard_negatives(similarity, positives, g)[0] for _ in range(200)])
    _, valid = hard_negatives(similarity, positives, g)
    assert valid.tolist() == [True, True, False]
    assert not positives[torch.arange(3)[:2], draws[:, :2]].any()
    assert (draws[:, 0] == 1).float().mean() > 0.95  # 4.0 against -5.0: the similar caption is the hard one


def test_zero_shot_classifier_averages_templates_per_class():
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, -1.0]])
    classes = zero_shot_classifier(prompts, torch.tensor([0, 0, 1, 1]), 2)
    torch.testing.assert_close(classes[0], F.normalize(torch.tensor([1.0, 1.0]), dim=0))
    assert classes[1].abs().sum() == 0  # opposite templates cancel: F.normalize leaves zeros, no NaN


def _tiny(fusion_layers: int = 0, text_pooling: str = "mean") -> ImageTextModel:
    vit = VisionTransformer(0, "vit-cifar-tiny", {"image_size": 8, "patch_size": 4, "num_channels": 1, "num_layers": 1,
                                                  "hidden_size": 32, "num_heads": 2, "intermediate_size": 64})
    text = EncoderConfig.from_name("bert-tiny", vocab_size=50, num_layers=1, hidden_size=16, num_heads=2,
                                   intermediate_size=32)
    return ImageTextModel(vit, text, embed_dim=8, fusion_layers=fusion_layers, text_pooling=text_pooling)


def test_towers_give_unit_embeddings_and_the_fusion_matches_pairs():
    torch.manual_seed(0)
    model = _tiny(fusion_layers=1).eval()
    pixels, ids = torch.randn(3, 1, 8, 8), torch.randint(5, 50, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, 4:] = 0
    out = model(pixels, ids, mask)
    assert out.image_embeds.shape == out.text_embeds.shape == (3, 8)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    assert out.image_states.shape == (3, 5, 32) and out.text_states.shape == (3, 6, 16)
    logits = model.match_logits(out.text_states, mask, out.image_states)
    assert logits.shape == (3, 2)
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with pytest.raises(ValueError, match="fusion_layers"):
        _tiny().match_logits(out.text_states, mask, out.image_states)


def test_a_non_vit_image_tower_is_refused():
    from bigmodel.nn import SmallCNN

    with pytest.raises(ValueError, match="VisionTransformer"):
        ImageTextModel(SmallCNN(10), EncoderConfig.from_name("bert-tiny"))


def test_cls_pooling_embeds_the_first_state_and_mean_pooling_skips_padding():
    """text_pooling: cls is the projected [CLS] state (ALBEF); mean averages the unpadded tokens only."""
    torch.manual_seed(0)
    cls_model = _tiny(text_pooling="cls").eval()
    mean_model = _tiny().eval()
    mean_model.load_state_dict(cls_model.state_dict())  # the same weights, pooled the other way
    ids, mask = torch.randint(5, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    mask[1, 3:] = 0
    with torch.no_grad():
        states = cls_model.text_encoder(ids, mask).last_hidden_state
        embeds, _ = cls_model.encode_text(ids, mask)
        mean, _ = mean_model.encode_text(ids, mask)
    torch.testing.assert_close(embeds, F.normalize(cls_model.text_projection(states[:, 0]), dim=-1))
    torch.testing.assert_close(mean[1], F.normalize(cls_model.text_projection(states[1, :3].mean(0)), dim=-1))
    assert not torch.allclose(embeds, mean)
    with pytest.raises(ValueError, match="text_pooling 'max': choose mean or cls"):
        _tiny(text_pooling="max")
