"""Image-text alignment through the CLI (fit, test, predict on captioned digits), the matching loss of a fusion
model, and towers started from checkpoints."""

import csv
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
