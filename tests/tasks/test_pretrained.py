"""Published-format models in through the CLI: a Hugging Face BERT directory (saved with save_pretrained, with its
tokenizer) fine-tunes a classifier, continues MLM pretraining and is validated with its own masked-token loss."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

from bigmodel.commands.cli import BigModelCLI
from tests.test_cli import finetune_config, mlm_config, write_yaml


def test_a_hugging_face_directory_fine_tunes_a_classifier_through_the_cli(hf_bert, tmp_path):
    path, hf = hf_bert
    config = finetune_config(tmp_path, str(path), str(path))
    config["trainer"].update(max_steps=0, num_sanity_val_steps=0)  # setup loads the weights; no step changes them
    cli = BigModelCLI(args=["fit", "-c", write_yaml(tmp_path / "cls.yaml", config)])
    assert cli.model.config.hidden_size == 64 and cli.model.config.num_layers == 2  # from config.json
    ids = torch.randint(5, hf.config.vocab_size, (2, 10))
    with torch.no_grad():
        ours = cli.model.net.encoder.eval()(ids, None).last_hidden_state
        torch.testing.assert_close(ours, hf.bert(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)
    path_yaml = write_yaml(tmp_path / "cls.yaml", {**config, "trainer": {
        **config["trainer"], "max_steps": 3, "limit_val_batches": 1}})
    assert BigModelCLI(args=["fit", "-c", path_yaml]).trainer.global_step == 3
    # resuming rebuilds the architecture from the checkpoint (the source's, not the config's preset)
    resumed = BigModelCLI(args=["fit", "-c", path_yaml, "--ckpt_path", "last", "--trainer.max_steps", "5"])
    assert resumed.trainer.global_step == 5 and resumed.model.config.hidden_size == 64


def test_mlm_validates_the_published_model_then_continues_pretraining(hf_bert, tmp_path, pydoc_text):
    path, hf = hf_bert
    config = mlm_config(tmp_path, pydoc_text, max_steps=2, limit_val_batches=2)
    config["model"]["init_args"].update(init_from=str(path), encoder_config={"hidden_dropout": 0.0})
    config["data"]["init_args"].update(tokenizer=str(path))
    del config["data"]["init_args"]["wordpiece_vocab_size"]
    path_yaml = write_yaml(tmp_path / "mlm.yaml", config)
    validate = BigModelCLI(args=["validate", "-c", path_yaml])
    # the published model's own masked-token loss, computed by transformers on the same batches and masks
    total, count = 0.0, 0
    for i, batch in enumerate(validate.datamodule.val_dataloader()):
        if i == 2:
            break
        mask = batch.get("attention_mask")
        with torch.no_grad():
            logits = hf(input_ids=batch["input_ids"], attention_mask=mask).logits.flatten(0, 1)
        total += F.cross_entropy(logits[batch["masked_positions"]], batch["masked_labels"], reduction="sum").item()
        count += batch["masked_labels"].numel()
    assert validate.trainer.callback_metrics["val/loss"].item() == pytest.approx(total / count, abs=1e-4)
    assert total / count == pytest.approx(math.log(hf.config.vocab_size), abs=0.5)  # random weights: chance
    fit = BigModelCLI(args=["fit", "-c", path_yaml])
    assert fit.trainer.global_step == 2
    saved = torch.load(tmp_path / "runs" / "mlm" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["bigmodel"]["encoder_config"]["hidden_size"] == 64 and "tokenizer" in saved


def test_init_from_a_directory_of_another_model_type_or_without_weights_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from bigmodel.tasks import ClassificationTask

    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    torch.save({"wte.weight": torch.zeros(3, 2)}, tmp_path / "gpt" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"gpt' is a 'gpt2' model; give a checkpoint of this project's text tasks"):
        ClassificationTask(num_classes=2, vocab_size=3, init_from=str(tmp_path / "gpt"))
    (tmp_path / "exported").mkdir()  # a mistyped directory under a folder that exists is not a hub name
    with pytest.raises(FileNotFoundError, match=r"exported/sst2' does not exist"):
        ClassificationTask(num_classes=2, vocab_size=3, init_from=str(Path("exported") / "sst2"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has none of model.safetensors, pytorch_model.bin"):
        ClassificationTask(num_classes=2, vocab_size=3, init_from=str(tmp_path / "empty"))


def test_a_classifier_continues_on_a_new_task_keeping_the_encoder(hf_bert, tmp_path):
    from bigmodel.tasks import ClassificationTask

    path, hf = hf_bert
    first = ClassificationTask(num_classes=2, class_names=["neg", "pos"], vocab_size=hf.config.vocab_size,
                               init_from=str(path))
    first.load_pretrained(first._pretrained)
    ckpt = {"state_dict": first.state_dict()}
    first.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "sentiment.ckpt")

    same = ClassificationTask(num_classes=2, class_names=["neg", "pos"], vocab_size=hf.config.vocab_size,
                              init_from=str(tmp_path / "sentiment.ckpt"))
    assert same.load_pretrained(same._pretrained) == ["pooling: pooler (the source's own, from its checkpoint)",
                                                      "classifier loaded (2 classes)"]
    assert torch.equal(same.net.head.classifier.weight, first.net.head.classifier.weight)
    other = ClassificationTask(num_classes=3, class_names=["a", "b", "c"], vocab_size=hf.config.vocab_size,
                               init_from=str(tmp_path / "sentiment.ckpt"))
    notes = other.load_pretrained(other._pretrained)
    assert notes == ["pooling: pooler (the source's own, from its checkpoint)",
                     "new classifier for 3 classes ['a', 'b', 'c'] (the source's: ['neg', 'pos'])"]
    for (name, a), b in zip(first.net.encoder.state_dict().items(), other.net.encoder.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(other.net.head.pooler.dense.weight, first.net.head.pooler.dense.weight)


def test_export_gives_a_directory_transformers_loads_with_equal_logits(hf_bert, tmp_path, capsys):
    """HF -> bigmodel -> HF gives back the original tensors; bigmodel -> HF gives equal logits (MLM, classifier)."""
    from bigmodel.commands.cli import main
    from bigmodel.tasks import ClassificationTask, MLMTask

    path, hf = hf_bert
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    mlm = MLMTask(vocab_size=hf.config.vocab_size, init_from=str(path))
    mlm.load_pretrained(mlm._pretrained)
    cls = ClassificationTask(num_classes=3, class_names=["a", "b", "c"], vocab_size=hf.config.vocab_size,
                             init_from=str(path))
    cls.load_pretrained(cls._pretrained)
    ids = torch.tensor([tokenizer("the for statement iterates")["input_ids"] + [0, 0]])
    mask = (ids != 0).long()
    for name, task in (("mlm", mlm), ("cls", cls)):
        ckpt = {"state_dict": task.state_dict(), "tokenizer": {}, "hyper_parameters": dict(task.hparams)}
        task.on_save_checkpoint(ckpt)
        from bigmodel.data.tokenizer import tokenizer_files

        ckpt["tokenizer"] = tokenizer_files(tokenizer)
        torch.save(ckpt, tmp_path / f"{name}.ckpt")
        main(["export", "--ckpt_path", str(tmp_path / f"{name}.ckpt"), "--out", str(tmp_path / name)])
    printed = capsys.readouterr()
    assert "Wrote BertForMaskedLM" in printed.out
    assert "Loading weights" not in printed.err and "it/s" not in printed.err  # transformers' bar, not export's
    assert transformers.utils.logging.is_progress_bar_enabled()  # off for the export only

    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm").eval()
    for key, value in hf.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key  # HF -> ours -> HF: the original tensors
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "mlm").get_vocab() == tokenizer.get_vocab()

    exported = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls").eval()
    assert exported.config.id2label == {0: "a", 1: "b", 2: "c"}
    # the head's dropout, not transformers' fallback to hidden_dropout_prob (0 here): fine-tuning on drops the same
    assert exported.config.classifier_dropout == exported.dropout.p == cls.net.head.dropout.p == 0.1
    with torch.no_grad():
        ours = cls.eval()({"input_ids": ids, "attention_mask": mask})
        torch.testing.assert_close(exported(input_ids=ids, attention_mask=mask).logits, ours, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("enabled", [True, False])
def test_export_leaves_transformers_and_hub_progress_bars_as_it_found_them(enabled):
    """transformers' bars are off during an export, whatever they were; after it, both switches are as before (the
    Hub's download bars are never touched)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging

    from bigmodel.commands.export import _transformers_bars_off

    before = logging.is_progress_bar_enabled()
    (logging.enable_progress_bar if enabled else logging.disable_progress_bar)()  # (the Hub's follow)
    try:
        for hub in (are_progress_bars_disabled(), True):
            if hub:
                disable_progress_bars()
            with _transformers_bars_off():
                assert not logging.is_progress_bar_enabled() and are_progress_bars_disabled() == hub
            assert logging.is_progress_bar_enabled() == enabled and are_progress_bars_disabled() == hub
    finally:
        (logging.enable_progress_bar if before else logging.disable_progress_bar)()


def test_a_vit_image_classifier_exports_with_equal_logits(tmp_path, capsys):
    import functools

    from bigmodel.commands.export import export
    from bigmodel.nn import VisionTransformer
    from bigmodel.tasks import ClassificationTask

    overrides = {"image_size": 16, "patch_size": 4, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                 "intermediate_size": 64, "num_channels": 1}
    torch.manual_seed(0)
    task = ClassificationTask(num_classes=3, class_names=["x", "y", "z"], backbone=functools.partial(
        VisionTransformer, config="vit-tiny", overrides=overrides)).eval()
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "vit.ckpt")
    export(str(tmp_path / "vit.ckpt"), str(tmp_path / "vit"))
    hf = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "vit").eval()
    images = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=images).logits, task({"pixel_values": images}), atol=1e-5,
                                   rtol=1e-5)
    assert hf.config.id2label[2] == "z"
    # built by hand, without a data module: no preprocessing recorded, and export says what it did not write
    assert "image_preprocessing" not in ckpt["bigmodel"]
    from types import SimpleNamespace  # a lab's data module whose eval_preprocessing means something else: not read
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(eval_preprocessing=lambda: {"size": 16}))
    assert "image_preprocessing" not in task.checkpoint_meta()
    task._trainer = None
    assert not (tmp_path / "vit" / "preprocessor_config.json").exists()
    assert "; no preprocessor_config.json: the checkpoint does not record the image size and normalisation" in \
        capsys.readouterr().out


def test_a_vit_fit_on_digits_exports_the_preprocessing_it_was_trained_with(tmp_path, capsys):
    """A real fit records the data's evaluation preprocessing; the export's AutoImageProcessor +
    AutoModelForImageClassification give bigmodel's predict probabilities on PNG files. The ViT is built for 8 px
    and trained on 12 px digits (bigmodel resamples its position grid at run time): the export is the 12 px model,
    and the processor gives grey 1-channel images."""
    from PIL import Image

    from bigmodel.commands.export import export
    from bigmodel.data import ImageDataModule
    from bigmodel.data.sources.images import write_digit_images

    overrides = "{image_size: 8, patch_size: 4, num_channels: 1, hidden_size: 32, num_layers: 2, num_heads: 2, " \
                "intermediate_size: 64}"
    cli = BigModelCLI(args=[
        "fit", "--model", "bigmodel.tasks.ClassificationTask", "--model.backbone", "bigmodel.nn.VisionTransformer",
        "--model.backbone.config", "vit-tiny", "--model.backbone.overrides", overrides, "--model.lr", "1e-2",
        "--data", "bigmodel.data.ImageDataModule", "--data.dataset", "digits", "--data.image_size", "12",
        "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
    ])
    ckpt_path = next((tmp_path / "runs").glob("**/checkpoints/last.ckpt"))
    meta = torch.load(ckpt_path, weights_only=True)["bigmodel"]
    mean, std = list(cli.datamodule.mean), list(cli.datamodule.std)
    assert meta["image_preprocessing"] == {"image_size": 12, "mean": mean, "std": std, "num_channels": 1}
    capsys.readouterr()
    out = export(str(ckpt_path), str(tmp_path / "hf"))
    line = capsys.readouterr().out
    assert "with its image processor; the model reads 1-channel images, and transformers does not convert" in line
    assert "from the 8 px it was built for to the 12 px images it was trained on" in line
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    hf = transformers.AutoModelForImageClassification.from_pretrained(out).eval()
    assert hf.config.image_size == 12 and processor.size == {"height": 12, "width": 12}
    assert list(processor.image_mean) == mean and list(processor.image_std) == std
    files = write_digit_images(tmp_path / "photos", count=4)
    data = ImageDataModule(dataset="digits", image_size=12, predict_dir=str(tmp_path / "photos"), batch_size=4)
    data.setup("predict")
    model = cli.model.eval()
    with torch.no_grad():
        ours = model.predict_step(next(iter(data.predict_dataloader())), 0)
        inputs = processor(images=[Image.open(ours_path) for ours_path in ours["path"]], return_tensors="pt")
        theirs = hf(**inputs).logits.softmax(-1)
    assert sorted(ours["path"]) == sorted(map(str, files))
    torch.testing.assert_close(theirs, ours["probs"], atol=1e-5, rtol=0)
    assert ours["probs"].std(0).max() > 1e-3  # a trained model tells these digits apart


def test_a_causal_lm_starts_from_a_bidirectional_encoder_and_a_classifier_refuses_a_causal_one(hf_bert, tmp_path):
    from bigmodel.tasks import CausalLMTask, ClassificationTask

    path, hf = hf_bert
    causal = CausalLMTask(vocab_size=hf.config.vocab_size, init_from=str(path))
    assert causal.config.causal and causal.hparams["encoder_config"]["causal"]
    assert causal.load_pretrained(causal._pretrained) == ["a bidirectional encoder, now trained with the causal mask"]
    assert torch.equal(causal.net.encoder.embeddings.word_embeddings.weight, hf.bert.embeddings.word_embeddings.weight)
    ckpt = {"state_dict": causal.state_dict()}
    causal.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "causal.ckpt")
    with pytest.raises(ValueError, match=r"is a causal encoder: its first token \(\[CLS\]\) sees nothing after it"):
        ClassificationTask(num_classes=2, vocab_size=hf.config.vocab_size, init_from=str(tmp_path / "causal.ckpt"))
    from bigmodel.tasks import MLMTask

    mlm = MLMTask(vocab_size=hf.config.vocab_size, init_from=str(tmp_path / "causal.ckpt"))
    assert not mlm.config.causal
    assert mlm.load_pretrained(mlm._pretrained) == ["a causal encoder, now trained bidirectionally",
                                                    "new MLM head (the source has none)"]


def test_a_roberta_directory_imports_and_exports_back_exactly(tmp_path):
    from bigmodel.commands.export import export
    from bigmodel.tasks import MLMTask

    config = transformers.RobertaConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=128, max_position_embeddings=34, type_vocab_size=1,
                                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = transformers.RobertaForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path / "roberta")
    task = MLMTask(vocab_size=120, init_from=str(tmp_path / "roberta")).eval()
    assert task.load_pretrained(task._pretrained) == [] and task.config.position_offset == 2
    ids = torch.randint(5, 120, (2, 32))  # the longest input RoBERTa's 34 positions allow
    with torch.no_grad():
        torch.testing.assert_close(task.net.encoder(ids, None).last_hidden_state,
                                   hf.roberta(input_ids=ids).last_hidden_state, atol=1e-5, rtol=1e-5)
    ckpt = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "mlm.ckpt")
    with pytest.raises(ValueError, match="reads positions from row 2, as roberta does: as bert every position would"):
        export(str(tmp_path / "mlm.ckpt"), str(tmp_path / "wrong"), family="bert")
    export(str(tmp_path / "mlm.ckpt"), str(tmp_path / "back"))
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "back")
    assert type(back).__name__ == "RobertaForMaskedLM"
    for key, value in hf.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_a_trained_mean_pooling_classifier_is_refused_with_what_to_do_instead(tmp_path):
    """Its head learned mean-pooled states; BertForSequenceClassification has no place for that: the line says to
    keep the checkpoint in bigmodel or fine-tune with the pooler, and nothing is written."""
    from bigmodel.commands.export import export
    from bigmodel.tasks import ClassificationTask

    task = ClassificationTask(num_classes=2, vocab_size=100, encoder="bert-tiny", pooling="mean")
    task.configure_model()
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "mean.ckpt")
    with pytest.raises(ValueError, match=r"^this classifier reads mean pooling; BertForSequenceClassification reads "
                                         r"\[CLS\] through the tanh pooler only, so this trained checkpoint cannot "
                                         r"become one: keep using it with bigmodel \(test/predict --ckpt_path\), or "
                                         r"fine-tune again with --model.init_args.pooling pooler and export that$"):
        export(str(tmp_path / "mean.ckpt"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_roberta_classifier_keeps_robertas_head_through_a_checkpoint_and_exports_back_exactly(tmp_path):
    """A RoBERTa classifier's head drops <s> out before its dense (RobertaClassificationHead); the setting is in the
    checkpoint's encoder config, so a reload rebuilds it, and the export is RobertaForSequenceClassification again
    with the original tensors and equal logits."""
    import lightning

    from bigmodel.commands.export import export
    from bigmodel.tasks import ClassificationTask

    config = transformers.RobertaConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=128, max_position_embeddings=34, type_vocab_size=1,
                                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
    torch.manual_seed(0)
    hf = transformers.RobertaForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path / "roberta")
    task = ClassificationTask(num_classes=3, vocab_size=120, init_from=str(tmp_path / "roberta"),
                              classifier_dropout=0.2)
    task.load_pretrained(task._pretrained)
    assert task.config.dropout_before_pooler and task.net.head.pooler.dropout.p == 0.2
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
            "pytorch-lightning_version": lightning.__version__}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "cls.ckpt")
    again = ClassificationTask.load_from_checkpoint(tmp_path / "cls.ckpt", init_from=None)
    assert again.net.head.pooler.dropout.p == 0.2 and again.config.dropout_before_pooler
    export(str(tmp_path / "cls.ckpt"), str(tmp_path / "back"))
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    assert type(back).__name__ == "RobertaForSequenceClassification" and back.classifier.dropout.p == 0.2
    for key, value in hf.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    ids = torch.randint(5, 120, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids).logits, again.eval()({"input_ids": ids}), atol=1e-5,
                                   rtol=1e-5)


def test_lora_from_a_published_model_through_the_cli_resumes_and_exports_merged(hf_bert, tmp_path, capsys):
    """The experiments' LoRA fragment on a Hugging Face BERT: only LoRA + head train, the checkpoint resumes, and
    export folds the updates in (transformers' logits equal ours)."""
    from bigmodel.commands.cli import main
    from bigmodel.tasks import ClassificationTask

    path, hf = hf_bert
    config = finetune_config(tmp_path, str(path), str(path))
    config["trainer"].update(max_steps=4, limit_val_batches=1)
    config["model"]["init_args"]["encoder_config"] = {"hidden_dropout": 0.0, "attention_dropout": 0.0}
    args = ["fit", "-c", write_yaml(tmp_path / "cls.yaml", config), "-c", "experiments/finetune/modes/lora.yaml"]
    fit = BigModelCLI(args=args)
    net = fit.model.net
    assert fit.model.hparams.finetune == "lora" and fit.model.hparams.lora["rank"] == 8
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in net.named_parameters() if ".lora_" in n or n.startswith("head.")}
    encoder_weight = hf.bert.encoder.layer[0].attention.self.query.weight
    torch.testing.assert_close(net.encoder.layers[0].attn.qkv.weight[:64], encoder_weight)  # frozen, unchanged
    assert net.encoder.layers[0].attn.qkv.lora_b.abs().sum() > 0  # the update trained
    last = tmp_path / "runs" / "cls" / "checkpoints" / "last.ckpt"
    resumed = BigModelCLI(args=[*args, "--ckpt_path", "last", "--trainer.max_steps", "6"])
    assert resumed.trainer.global_step == 6 and resumed.model.net.encoder.layers[1].attn.qkv.slices == (0, 2)  # q, v
    main(["export", "--ckpt_path", str(last), "--out", str(tmp_path / "merged")])
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    model = ClassificationTask.load_from_checkpoint(last, init_from=None).eval()
    ids = torch.randint(5, hf.config.vocab_size, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, model({"input_ids": ids}), atol=1e-5, rtol=1e-5)
