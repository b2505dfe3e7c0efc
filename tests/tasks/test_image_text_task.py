"""Image-text alignment through the CLI (fit, test, predict on captioned digits), the matching loss of a fusion
model, and towers started from checkpoints."""

import csv
import math
import functools
from pathlib import Path

import lightning as L
import pytest
import torch

from bigmodel.cli import BigModelCLI
from bigmodel.data import ImageTextDataModule
from bigmodel.nn import VisionTransformer
from bigmodel.tasks import ImageTextTask

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart" / "digits_image_text.yaml"
VIT = {"config": "vit-cifar-tiny", "overrides": {"image_size": 8, "patch_size": 4, "num_channels": 1, "num_layers": 1,
                                                  "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}}
TEXT = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}


def test_quickstart_fits_tests_and_predicts_zero_shot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.enable_progress_bar",
             "false", "--model.init_args.encoder_config", str(TEXT), "--data.init_args.batch_size", "32"]
    fit = BigModelCLI(args=["fit", "-c", str(QUICKSTART), *small])
    metrics = fit.trainer.callback_metrics
    for key in ("val/i2t_r1", "val/t2i_r10", "val/rsum", "val/zero_shot_acc", "val/loss"):
        assert key in metrics, key
    assert 0 <= float(metrics["val/i2t_r1"]) <= float(metrics["val/i2t_r5"]) <= float(metrics["val/i2t_r10"]) <= 1
    best = tmp_path / "runs" / "digits-image-text" / "checkpoints" / "best.ckpt"
    assert best.exists()
    test = BigModelCLI(args=["test", "-c", str(QUICKSTART), *small, "--ckpt_path", "best"])
    assert "test/zero_shot_acc" in test.trainer.callback_metrics and "test/t2i_r1" in test.trainer.callback_metrics
    out = tmp_path / "predictions.csv"
    BigModelCLI(args=["predict", "-c", str(QUICKSTART), *small, "--ckpt_path", "best", "--predictions.output", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 360 and set(rows[0]) >= {"label", "class_name", "prob_0", "prob_9"}
    assert sum(float(rows[0][f"prob_{d}"]) for d in range(10)) == pytest.approx(1, abs=1e-4)


def _task(dm: ImageTextDataModule, **kwargs) -> ImageTextTask:
    return ImageTextTask(image_encoder=functools.partial(VisionTransformer, **VIT), encoder="bert-tiny",
                         encoder_config=TEXT, vocab_size=dm.vocab_size, class_names=dm.class_names,
                         embed_dim=16, **kwargs)


def test_a_fusion_model_learns_matching_on_hard_negatives(tmp_path):
    torch.manual_seed(0)
    dm = ImageTextDataModule(batch_size=32)
    task = _task(dm, fusion_layers=1, lr=1e-3)
    before = {n: p.detach().clone() for n, p in task.net.named_parameters()}
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    logged = trainer.callback_metrics
    assert torch.isfinite(logged["train/itm_loss"]) and torch.isfinite(logged["train/itc_loss"])
    # the matching loss starts near log 2 (a fresh head cannot tell pairs apart)
    assert 0.3 < float(logged["train/itm_loss"]) < 1.2
    changed = {n for n, p in task.net.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert any(n.startswith("fusion.") and "cross_attn" in n for n in changed)
    assert "itm_head.weight" in changed


def test_towers_start_from_an_image_classifier_and_an_mlm_checkpoint(tmp_path, mlm_checkpoint):
    classifier = VisionTransformer(10, **VIT)
    path = tmp_path / "vit.pth"
    torch.save(classifier.state_dict(), path)  # a state-dict file with a 10-class head, which the tower drops
    dm = ImageTextDataModule(batch_size=8, tokenizer=mlm_checkpoint)
    mlm = torch.load(mlm_checkpoint, map_location="cpu", weights_only=True)
    config = mlm["hyper_parameters"]["encoder_config"]
    task = ImageTextTask(image_encoder=functools.partial(VisionTransformer, **VIT), vocab_size=dm.vocab_size,
                         init_from=mlm_checkpoint, image_init_from=str(path), embed_dim=16)
    assert task.config.hidden_size == config["hidden_size"]  # the text tower takes the checkpoint's architecture
    task.load_image_tower()
    task._load_pretrained_once()
    for name, value in classifier.encoder.state_dict().items():
        assert torch.equal(task.net.image_encoder.encoder.state_dict()[name], value), name
    text = task.net.text_encoder.state_dict()
    for name, value in mlm["state_dict"].items():
        if name.startswith("net.encoder."):
            assert torch.equal(text[name.removeprefix("net.encoder.")], value), name


class PushedScale(ImageTextTask):
    """Adds ``-100 logit_scale`` to the loss for the first ``push`` optimizer steps: the temperature driven towards
    its cap and past it, then left to Adam's momentum."""

    def __init__(self, push: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.push, self.after_step = push, []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss - 100 * self.net.logit_scale if self.global_step < self.push else loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0:  # a step was taken
            self.after_step.append(self.net.logit_scale.item())


def test_the_temperature_parameter_is_clamped_to_its_cap_after_every_accumulated_step(tmp_path):
    torch.manual_seed(0)
    dm = ImageTextDataModule(batch_size=16)
    # log(1 / 0.015) = 4.20, 0.1 per Adam step: past log 100 = 4.61 by the 5th of 8 pushed steps, then 4 more
    task = PushedScale(push=8, image_encoder=functools.partial(VisionTransformer, **VIT), encoder_config=TEXT,
                       vocab_size=dm.vocab_size, embed_dim=16, temperature=0.015, lr=0.1, schedule="constant")
    trainer = L.Trainer(max_steps=12, accumulate_grad_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    assert len(task.after_step) == 12
    assert max(task.after_step) <= math.log(100) + 1e-6  # a forward cap alone: 4.80 when pushed, 5.30 on momentum
    assert task.after_step[7] == pytest.approx(math.log(100))  # pushed up to the cap, not past it
    assert float(trainer.callback_metrics["train/temperature"]) >= 0.01 - 1e-6


def test_the_image_tower_cls_token_and_positions_are_not_decayed_as_in_the_vit_classifier():
    from bigmodel.tasks.optim import parameter_groups

    dm = ImageTextDataModule(batch_size=8)
    net = _task(dm, fusion_layers=1).net
    decay, no_decay = ({n for n, p in net.named_parameters() if any(p is q for q in g["params"])}
                       for g in parameter_groups(net, 0.05))
    embeddings = "image_encoder.encoder.embeddings."
    assert {embeddings + "cls_token", embeddings + "position_embeddings", "logit_scale"} <= no_decay
    assert {embeddings + "proj.weight", "image_projection.weight", "text_encoder.embeddings.word_embeddings.weight",
            "itm_head.weight"} <= decay
    params = dict(net.named_parameters())
    assert all(params[n].ndim >= 2 for n in decay)  # biases and LayerNorm weights as before
    assert decay | no_decay == {n for n, _ in net.named_parameters()} and not decay & no_decay
