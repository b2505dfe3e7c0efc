"""Fine-tuning modes on the shared encoder (text and ViT alike): LoRA, BitFit, linear probe, layer-wise lr decay."""

import functools
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bigmodel.nn import EncoderConfig, SequenceClassifier, VisionTransformer
from bigmodel.nn.peft import LoRAConfig, LoRALinear, add_lora, merge_lora, merge_lora_state
from bigmodel.tasks import ClassificationTask
from bigmodel.tasks.optim import parameter_groups

CONFIG = EncoderConfig.from_name("bert-tiny", vocab_size=100, hidden_dropout=0.0, attention_dropout=0.0)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 8:] = False
    return ids, mask


def _task(finetune, **kw):
    task = ClassificationTask(num_classes=3, vocab_size=100, encoder="bert-tiny", finetune=finetune,
                              encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0},
                              classifier_dropout=0.0, **kw)
    task.configure_model()
    return task


def test_lora_starts_as_its_base_and_trains_only_updates_and_head():
    torch.manual_seed(0)
    base = SequenceClassifier(CONFIG, 3).eval()
    task = _task("lora", lora={"rank": 4, "alpha": 8, "targets": ["qkv", "proj", "up"]})
    task.net.load_state_dict(base.state_dict(), strict=False)  # same names: the base's checkpoint loads as is
    task.eval()
    ids, mask = _batch()
    assert torch.equal(task.net(ids, mask)[0], base(ids, mask)[0])  # B = 0: exactly the base at step 0
    assert isinstance(task.net.encoder.layers[0].attn.qkv, LoRALinear)
    assert type(task.net.encoder.layers[0].ffn.down) is nn.Linear  # not a target
    task.train()
    task.net(ids, mask)[0].sum().backward()
    with_grad = {n for n, p in task.net.named_parameters() if p.grad is not None}
    trainable = {n for n, p in task.net.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert trainable == {n for n, _ in task.net.named_parameters() if ".lora_" in n or n.startswith("head.")}
    assert len([n for n in trainable if n.endswith("lora_a")]) == 3 * CONFIG.num_layers
    qkv = task.net.encoder.layers[0].attn.qkv  # qkv: an alias of [q, k, v], a rank-4 update of each
    assert task.hparams.lora["targets"] == ("q", "k", "v", "proj", "up") and qkv.slices == (0, 1, 2)
    assert qkv.lora_a.shape == (3 * 4, CONFIG.hidden_size) and qkv.lora_b.shape == (3 * CONFIG.hidden_size, 4)
    groups = parameter_groups(task.net, 0.01)  # frozen parameters never reach the optimizer
    assert sum(len(g["params"]) for g in groups) == len(trainable)


def test_merged_lora_equals_unmerged_on_text_and_vit():
    torch.manual_seed(0)
    vit = VisionTransformer(4, "vit-tiny", {"image_size": 8, "patch_size": 2, "num_channels": 1, "num_layers": 2,
                                            "hidden_size": 64, "num_heads": 2, "intermediate_size": 128})
    models = [(SequenceClassifier(CONFIG, 3), _batch()), (vit, (torch.randn(2, 1, 8, 8),))]
    for model, inputs in models:
        model.eval()
        lora = LoRAConfig(rank=4, targets=("qkv", "proj", "up", "down"))
        add_lora(model.encoder, lora)
        for m in model.modules():
            if isinstance(m, LoRALinear):
                nn.init.normal_(m.lora_b, std=0.05)  # a trained update
        state = {k: v.clone() for k, v in model.state_dict().items()}
        out = model(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        assert merge_lora(model) == 4 * 2  # four targets in each of the two layers
        merged = model(*inputs)
        merged = merged[0] if isinstance(merged, tuple) else merged
        torch.testing.assert_close(merged, out, atol=1e-5, rtol=0)
        assert not any(".lora_" in k for k in model.state_dict())
        folded = merge_lora_state(state, lora)
        assert folded.keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(folded[key], value, atol=1e-6, rtol=0)


def test_probe_and_bitfit_freeze_what_they_claim():
    probe = _task("linear_probe")
    assert {n for n, p in probe.net.named_parameters() if p.requires_grad} == \
        {n for n, _ in probe.net.named_parameters() if n.startswith("head.")}
    bitfit = _task("bitfit")
    trainable = {n for n, p in bitfit.net.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in bitfit.net.named_parameters() if n.startswith("head.") or n.endswith(".bias")}
    assert "encoder.layers.1.attn.qkv.bias" in trainable and "encoder.layers.1.attn.qkv.weight" not in trainable
    full = _task("full")
    assert all(p.requires_grad for p in full.net.parameters())


@pytest.mark.parametrize("finetune", ["linear_probe", "pooler_probe"])
def test_a_probe_reads_its_frozen_encoder_in_eval_mode_during_fit(tmp_path, finetune):
    """A probe trains on the pretrained model's features: the frozen encoder runs without dropout, so the head sees
    the same features at every step (BitFit and LoRA train inside the encoder and keep its dropout)."""
    import lightning as L
    from torch.utils.data import DataLoader

    task = ClassificationTask(num_classes=3, vocab_size=100, encoder="bert-tiny", finetune=finetune,
                              encoder_config={"hidden_dropout": 0.5, "attention_dropout": 0.5})
    task.configure_model()
    features = []
    task.net.encoder.register_forward_hook(lambda module, args, out: features.append(out.last_hidden_state.detach().clone()))
    ids, mask = _batch()
    data = DataLoader([{"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2])}] * 2,
                      batch_size=None)
    trainer = L.Trainer(max_steps=3, limit_val_batches=1, val_check_interval=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(task, train_dataloaders=data, val_dataloaders=data)  # validation in between restores the modes
    assert len(features) == 6 and all(torch.equal(f, features[0]) for f in features)
    assert task.training and task.net.head.training and not task.net.encoder.training
    assert not any(m.training for m in task.net.encoder.modules())
    task.eval().train()  # and in Python: train() keeps it so
    assert task.net.head.training and not task.net.encoder.training
    assert _task("bitfit").train().net.encoder.training


def test_the_parameter_line_reads_a_few_trained_weights_not_zero(caplog):
    """A linear probe trains classes x (hidden + 1) weights of many more: the line says how many, not '0.00M'."""
    probe = _task("linear_probe")
    trained = sum(p.numel() for p in probe.net.parameters() if p.requires_grad)
    total = sum(p.numel() for p in probe.net.parameters())
    with caplog.at_level("INFO"):
        probe.on_fit_start()
    assert trained == 3 * (CONFIG.hidden_size + 1)
    assert (f"ClassificationTask: {total / 1e3:.1f}k parameters ({trained} trainable, "
            f"{100 * trained / total:.3g} %; finetune: linear_probe)") in caplog.text


def test_a_linear_probe_checkpoint_from_before_one_linear_layer_loads_as_a_pooler_probe(tmp_path):
    import lightning as L

    old = _task("pooler_probe").eval()  # what linear_probe trained before: the tanh pooler and the classifier
    trainer = L.Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.strategy.connect(old)
    trainer.save_checkpoint(tmp_path / "old.ckpt")
    checkpoint = torch.load(tmp_path / "old.ckpt", weights_only=False)
    checkpoint["hyper_parameters"]["finetune"] = "linear_probe"  # as saved then: no pooling setting
    del checkpoint["hyper_parameters"]["pooling"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = ClassificationTask.load_from_checkpoint(tmp_path / "old.ckpt").eval()
    assert loaded.hparams.finetune == "pooler_probe" and loaded.hparams.pooling == "pooler"
    batch = _batch()
    torch.testing.assert_close(loaded.net(*batch)[0], old.net(*batch)[0])


def test_a_head_drawn_for_init_from_counts_as_trained_once_a_fit_ran(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    task = _task("full")
    task.new_heads.append("classifier")  # as load_pretrained records a head the source lacks
    ids, mask = _batch()
    data = DataLoader([{"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2])}], batch_size=None)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, train_dataloaders=data)
    metrics = trainer.test(task, data, verbose=False)[0]
    assert "test/random_head" not in metrics and task.untrained_note() is None


def test_adversarial_training_refuses_unpadded_embeddings_in_one_line():
    with pytest.raises(ValueError, match="set encoder_config: {unpad: false}"):
        ClassificationTask(num_classes=3, vocab_size=100, encoder="bert-tiny", encoder_config={"unpad": True},
                           adversarial={"method": "fgm", "epsilon": 0.02})


def test_layer_decay_scales_each_depth():
    task = _task("full")
    groups = parameter_groups(task.net, 0.01, lr=1.0, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(task.net.named_parameters())
    L = CONFIG.num_layers
    assert lr_of[id(named["head.classifier.weight"])] == 1.0
    assert lr_of[id(named[f"encoder.layers.{L - 1}.attn.qkv.weight"])] == 0.5
    assert lr_of[id(named["encoder.layers.0.ffn.up.bias"])] == 0.5**L
    assert lr_of[id(named["encoder.embeddings.word_embeddings.weight"])] == 0.5 ** (L + 1)
    assert sum(len(g["params"]) for g in groups) == len(named)
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim == 1 for p in g["params"]))


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="choose from q, k, v, proj, up, down"):
        LoRAConfig(targets=("query",))
    with pytest.raises(ValueError, match=r"^lora.alpha must be > 0 \(the update is scaled by alpha / rank\), got 0"):
        LoRAConfig(alpha=0)  # would scale every update to zero: only the head would learn
    with pytest.raises(ValueError, match=r"^lora.dropout must be in \[0, 1\), got 1.5$"):
        _task("lora", lora={"dropout": 1.5})  # was torch's traceback from nn.Dropout, at configure_model
    with pytest.raises(ValueError, match="finetune 'prefix'"):
        ClassificationTask(num_classes=3, vocab_size=100, finetune="prefix")
    with pytest.raises(ValueError, match="layer_decay must be in"):
        ClassificationTask(num_classes=3, vocab_size=100, layer_decay=1.5)
    biasless = ClassificationTask(num_classes=3, vocab_size=100, encoder="modernbert-mini", finetune="bitfit")
    biasless.configure_model()  # a checkpoint trained so (before the refusal) is still tested and exported
    biasless.trainer = SimpleNamespace(datamodule=SimpleNamespace(hparams={}), ckpt_path=None,
                                       strategy=SimpleNamespace(root_device=torch.device("cpu")))
    biasless.setup("test")
    with pytest.raises(ValueError, match=r"^finetune: bitfit trains the encoder's bias terms, and this encoder has none "):
        biasless.setup("fit")  # it trained the head alone, as a probe would, under BitFit's name
    cnn = ClassificationTask(num_classes=3, backbone=functools.partial(nn.Linear, 4), finetune="lora")
    with pytest.raises(ValueError, match="needs a model on the shared encoder"):
        cnn.configure_model()


def test_layer_decay_counts_each_tower_of_a_multi_tower_model_from_its_own_top():
    from bigmodel.nn.image_text import ImageTextModel

    vit = VisionTransformer(0, "vit-cifar-tiny", {"num_layers": 6, "hidden_size": 32, "num_heads": 2,
                                                  "intermediate_size": 32})
    text = EncoderConfig.from_name("bert-tiny", vocab_size=50, num_layers=2, hidden_size=32, num_heads=2,
                                   intermediate_size=32)
    net = ImageTextModel(vit, text, embed_dim=16, fusion_layers=1)
    lr_of = {id(p): g["lr"] for g in parameter_groups(net, 0.01, lr=1.0, layer_decay=0.5) for p in g["params"]}
    named = dict(net.named_parameters())

    def lr(prefix):
        return {lr_of[id(p)] for name, p in named.items() if name.startswith(prefix)}

    # the 2-layer text tower is not counted against the 6-layer image tower (it was: its top layer at 0.5 ** 5)
    assert (lr("text_encoder.layers.1."), lr("text_encoder.layers.0."), lr("text_encoder.embeddings.")) == (
        {0.5}, {0.25}, {0.125})
    assert (lr("image_encoder.encoder.layers.5."), lr("image_encoder.encoder.layers.0."),
            lr("image_encoder.encoder.embeddings.")) == ({0.5}, {0.5**6}, {0.5**7})
    assert lr("fusion.layers.0.") == {0.5}  # was 0.5 ** 6: the top of the network trained slowest
    assert lr("itm_head.") == lr("text_projection.") == lr("image_encoder.encoder.final_norm.") == {1.0}


def test_lora_settings_with_another_mode_are_said_to_do_nothing():
    """``-c modes/lora.yaml --model.init_args.finetune full`` trained without LoRA and said nothing of its settings;
    the defaults (what every checkpoint records) say nothing."""
    import warnings

    trainer = SimpleNamespace(datamodule=SimpleNamespace(hparams={}), ckpt_path=None,
                              strategy=SimpleNamespace(root_device=torch.device("cpu")))
    full = ClassificationTask(num_classes=2, vocab_size=100, lora={"rank": 4, "targets": ["q", "v"]})
    full.trainer = trainer
    with pytest.warns(UserWarning, match="^lora settings are given but finetune is full, so they do nothing: set "
                                         "finetune: lora to train LoRA updates, or drop them$"):
        full.setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full.setup("test")  # a record of the settings, not a fit
        for task in (ClassificationTask(num_classes=2, vocab_size=100),
                     ClassificationTask(num_classes=2, vocab_size=100, finetune="lora", lora={"rank": 4})):
            task.trainer = trainer
            task.setup("fit")
