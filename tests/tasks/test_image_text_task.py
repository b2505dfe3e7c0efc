"""Image-text alignment through the CLI (fit, test, predict on captioned digits), the matching loss of a fusion
model, and towers started from checkpoints."""

import csv
import math
import functools
from pathlib import Path

import lightning as L
import pytest
import torch

from bigmodel.commands.cli import BigModelCLI
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
    metrics = {k: float(v) for k, v in fit.trainer.callback_metrics.items()}
    recalls = [f"val/{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]
    assert metrics["val/rsum"] == pytest.approx(sum(metrics[k] for k in recalls))  # the sum of the six recalls
    assert 0 < metrics["val/loss"] < 10 and 0 <= metrics["val/zero_shot_acc"] <= 1
    best = tmp_path / "runs" / "digits-image-text" / "checkpoints" / "best.ckpt"
    assert best.exists()
    test = BigModelCLI(args=["test", "-c", str(QUICKSTART), *small, "--ckpt_path", "best"])
    tested = {k: float(v) for k, v in test.trainer.callback_metrics.items()}
    out = tmp_path / "predictions.csv"
    BigModelCLI(args=["predict", "-c", str(QUICKSTART), *small, "--ckpt_path", "best", "--predictions.output", str(out)])
    rows = list(csv.DictReader(out.open()))
    labels = test.datamodule.splits["test"].labels  # predict reads the test images, in order
    assert len(rows) == len(labels) == 360
    assert list(rows[0])[0] == "index" and [int(r["index"]) for r in rows] == list(range(360))  # which image
    probs = torch.tensor([[float(r[f"prob_{d}"]) for d in range(10)] for r in rows])
    torch.testing.assert_close(probs.sum(1), torch.ones(360), atol=1e-4, rtol=0)
    pred = torch.tensor([int(r["label"]) for r in rows])
    assert torch.equal(probs[torch.arange(360), pred], probs.max(1).values)  # (rounded to 6 places: ties allowed)
    assert all(r["class_name"] == r["label"] for r in rows)
    # the predictions are the test's zero-shot classifications: the same accuracy from the CSV as from test
    assert (pred == torch.tensor(labels)).float().mean().item() == pytest.approx(tested["test/zero_shot_acc"])


def _task(dm: ImageTextDataModule, **kwargs) -> ImageTextTask:
    return ImageTextTask(image_encoder=functools.partial(VisionTransformer, **VIT), encoder="bert-tiny",
                         encoder_config=TEXT, vocab_size=dm.vocab_size, class_names=dm.class_names,
                         embed_dim=16, **kwargs)


def test_a_fusion_model_learns_to_align_digits_and_captions_and_trains_matching_on_hard_negatives(tmp_path):
    L.seed_everything(0)
    dm = ImageTextDataModule(batch_size=32)
    # 3 epochs of 40 steps (the 32-wide towers stalled at chance for most seeds); no dropout, so what is tested is
    # the alignment, not one draw of the dropout masks (a draw at 0.1 has left text->image recall@1 at 0.28)
    wide = {"hidden_size": 64, "hidden_dropout": 0.0, "attention_dropout": 0.0}
    task = ImageTextTask(image_encoder=functools.partial(VisionTransformer, config=VIT["config"],
                                                            overrides={**VIT["overrides"], **wide}),
                         encoder_config={**TEXT, **wide}, vocab_size=dm.vocab_size, class_names=dm.class_names,
                         embed_dim=16, fusion_layers=1, lr=3e-3)
    trainer = L.Trainer(max_steps=120, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    before = trainer.validate(task, datamodule=dm, verbose=False)[0]
    fusion = {n: p.detach().clone() for n, p in task.net.named_parameters() if n.startswith(("fusion.", "itm_head."))}
    trainer.fit(task, datamodule=dm)
    after = trainer.validate(task, datamodule=dm, verbose=False)[0]
    # chance: each image's 12 captions among 120, each caption's digit among 10, the zero-shot digit among 10
    for key in ("val/i2t_r1", "val/t2i_r1", "val/zero_shot_acc"):
        assert before[key] < 0.2 and after[key] > 0.3, (key, before[key], after[key])  # measured 0.59, 0.78, 0.63
    assert after["val/loss"] < before["val/loss"] - 0.5  # measured 5.32 -> 3.80
    changed = {n for n, p in task.net.named_parameters() if n in fusion and not torch.equal(p.detach(), fusion[n])}
    assert any("cross_attn" in n for n in changed) and "itm_head.weight" in changed  # the matching loss trains them


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


def test_a_checkpoint_saved_above_the_cap_loads_with_the_scale_clamped(tmp_path):
    dm = ImageTextDataModule(batch_size=8)
    task = _task(dm)
    with torch.no_grad():
        task.net.logit_scale.fill_(4.8)  # what the old forward cap let Adam reach (scale 121)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "old.ckpt")
    loaded = ImageTextTask.load_from_checkpoint(tmp_path / "old.ckpt")
    assert float(loaded.net.logit_scale) == pytest.approx(math.log(100))


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


def test_test_reports_one_set_of_whole_split_metrics_equal_to_a_direct_computation(tmp_path):
    from bigmodel.data.collators import ClassificationCollator
    from bigmodel.nn.image_text import contrastive_loss, zero_shot_classifier

    L.seed_everything(0)
    dm = ImageTextDataModule(batch_size=48)  # 360 test images and 120 captions in several batches each
    task = _task(dm)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    results = trainer.test(task, datamodule=dm, verbose=False)
    assert len(results) == 1  # one loader: one column of metrics (two loaders printed the same values twice)
    (tested,) = results
    recalls = [f"test/{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]
    assert set(tested) == {"test/loss", "test/rsum", "test/zero_shot_acc", *recalls}
    # every test image and every distinct caption encoded at once; digits: caption c describes class c // 12
    split = dm.splits["test"]
    net = task.net.eval()
    with torch.no_grad():
        images = net.encode_image(torch.stack([dm.datasets["test"][i]["pixel_values"] for i in range(360)]))[0]
        captions = ClassificationCollator(dm.tokenizer)([{"input_ids": ids} for ids in dm.caption_input_ids["test"]])
        texts = net.encode_text(captions["input_ids"], captions.get("attention_mask"))[0]
        prompts = dm.zero_shot_prompts()
        classes = zero_shot_classifier(net.encode_text(prompts["input_ids"], prompts.get("attention_mask"))[0],
                                       prompts["prompt_class"], 10)
    labels = torch.tensor(split.labels)
    relevant = labels[:, None] == torch.arange(120)[None, :] // 12
    similarity = images @ texts.T
    expected = {"test/loss": contrastive_loss(images, texts, net.scale(), relevant).item(),
                "test/zero_shot_acc": ((images @ classes.T).argmax(-1) == labels).float().mean().item()}
    for k in (1, 5, 10):
        top_texts = similarity.topk(k, dim=1).indices
        expected[f"test/i2t_r{k}"] = relevant.gather(1, top_texts).any(1).float().mean().item()
        top_images = similarity.T.topk(k, dim=1).indices
        expected[f"test/t2i_r{k}"] = relevant.T.gather(1, top_images).any(1).float().mean().item()
    expected["test/rsum"] = sum(expected[k] for k in recalls)
    assert tested == pytest.approx(expected, abs=1e-5)


class SaveAndStop(L.Callback):
    """Saves a checkpoint and stops where bigmodel's signal handler would: after optimizer step ``step``, or at the
    end of the first epoch (after its validation)."""

    def __init__(self, path: Path, step: int | None = None) -> None:
        self.path, self.step = path, step

    def _stop(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        trainer.should_stop = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.step is None:
            self._stop(trainer)


@pytest.mark.parametrize("stop, crop_padding", [("epoch end", 0), ("mid-epoch", 1)])
def test_a_resumed_fit_equals_an_uninterrupted_one(tmp_path, stop, crop_padding):
    """Stopped at an epoch's end after its validation (the state of every epoch-end last.ckpt; Lightning then set
    the samplers one epoch ahead for good) or mid-epoch with random crops, and resumed under the same max_steps:
    the parameters and the stem's BatchNorm statistics of a run that never stopped (5 batches an epoch)."""
    vit = {**VIT, "overrides": {**VIT["overrides"], "hidden_dropout": 0.1}, "stem_channels": [4]}

    def fit(ckpt_path=None, callbacks=()):
        L.seed_everything(0)
        dm = ImageTextDataModule(batch_size=240, crop_padding=crop_padding, cache_dir=str(tmp_path / "cache"))
        task = ImageTextTask(image_encoder=functools.partial(VisionTransformer, **vit), encoder="bert-tiny",
                             encoder_config=TEXT, vocab_size=dm.vocab_size, class_names=dm.class_names, embed_dim=16)
        trainer = L.Trainer(max_steps=13, limit_val_batches=2, num_sanity_val_steps=0, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=list(callbacks), default_root_dir=tmp_path)
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
        return trainer, task

    saved = tmp_path / "stopped.ckpt"
    stopped, _ = fit(callbacks=[SaveAndStop(saved, None if stop == "epoch end" else 7)])
    assert stopped.global_step == (5 if stop == "epoch end" else 7)
    resumed, task = fit(ckpt_path=saved)
    straight, reference = fit()
    assert resumed.global_step == straight.global_step == 13 and resumed.current_epoch == straight.current_epoch
    for (name, a), b in zip(reference.state_dict().items(), task.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)


def test_a_validation_cut_short_by_limit_val_batches_has_a_finite_loss(tmp_path):
    """Two batches reach 32 images (of every digit) but only the captions of digits 0-2: the images of the other
    digits had no target caption and made val/loss NaN."""
    L.seed_everything(0)
    dm = ImageTextDataModule(batch_size=32)
    task = _task(dm)
    trainer = L.Trainer(limit_val_batches=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    short = trainer.validate(task, datamodule=dm, verbose=False)[0]
    assert math.isfinite(short["val/loss"]) and 0 < short["val/loss"] < 10
    full = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    assert math.isfinite(full.validate(task, datamodule=dm, verbose=False)[0]["val/loss"])
    images_only = L.Trainer(limit_val_batches=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path)  # no caption: nothing to retrieve, no checkpoint to choose
    with pytest.raises(ValueError, match=r"^the val batches evaluated held images but no captions .*: raise "
                                         r"trainer.limit_val_batches, or leave it unset$"):
        images_only.validate(task, datamodule=dm, verbose=False)
