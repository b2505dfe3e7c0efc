"""Smaller fine-tuned models. checkpoint_weights: trainable -- a LoRA run's checkpoints hold the adapters and the
head only (a small file), and every reader (resume, test, load_from_checkpoint, export, init_from) rebuilds the
frozen base from init_from. quantize: int8 -- test and predict on CPU with dynamic int8 linear layers."""

import io
import json
import shutil

import lightning
import pytest
import torch
import transformers

from bigmodel.commands.cli import BigModelCLI, main
from bigmodel.data.sources import builtin
from bigmodel.tasks import ClassificationTask
from bigmodel.tasks.checkpoints import resolve
from tests.test_cli import finetune_config, write_yaml


@pytest.fixture(scope="module")
def lora_run(hf_bert, tmp_path_factory):
    """A 4-step LoRA fit of the small Hugging Face BERT (a copy in the run's folder) with adapter-only checkpoints."""
    tmp = tmp_path_factory.mktemp("lora")
    path = shutil.copytree(hf_bert[0], tmp / "base")
    config = finetune_config(tmp, str(path), str(path))
    config["trainer"].update(max_steps=4, limit_val_batches=1, val_check_interval=2)  # best.ckpt at step 2 or 4
    config["model"]["init_args"].update(checkpoint_weights="trainable",
                                        encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0})
    args = ["fit", "-c", write_yaml(tmp / "cls.yaml", config), "-c", "experiments/finetune/modes/lora.yaml"]
    fit = BigModelCLI(args=args)
    return tmp, args, fit


def _size(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()({"input_ids": ids})


def test_an_adapter_checkpoint_is_small_and_reloads_with_its_head(lora_run, hf_bert):
    tmp, _, fit = lora_run
    hf = hf_bert[1]
    last = tmp / "runs" / "cls" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    trainable = {f"net.{n}" for n, p in fit.model.net.named_parameters() if p.requires_grad}
    assert set(saved["state_dict"]) == trainable  # LoRA A/B and the head (pooler + classifier); no buffers here
    assert any(".lora_b" in k for k in trainable) and "net.head.classifier.weight" in trainable
    assert saved["bigmodel"]["weights"] == "trainable" and saved["bigmodel"]["base"] == str(tmp / "base")
    # about a tenth of the parameters train; the file also holds their AdamW moments and the tokenizer
    assert _size(saved["state_dict"]) < 0.1 * _size(fit.model.state_dict())
    full = dict(saved, state_dict=fit.model.state_dict())  # the same checkpoint with every weight in it
    assert last.stat().st_size < 0.3 * _size(full), (last.stat().st_size, _size(full))

    reloaded = ClassificationTask.load_from_checkpoint(last)  # the base from init_from, then the adapters + head
    ids = torch.randint(5, hf.config.vocab_size, (3, 12))
    assert torch.equal(_logits(reloaded, ids), _logits(fit.model, ids))
    with pytest.raises(ValueError, match="checkpoint_weights: trainable rebuilds the frozen encoder from init_from"):
        ClassificationTask.load_from_checkpoint(last, init_from=None)


def test_an_adapter_checkpoint_resumes_tests_and_exports_merged(lora_run, hf_bert, capsys):
    tmp, args, fit = lora_run
    _, hf = hf_bert
    ckpt_dir = tmp / "runs" / "cls" / "checkpoints"
    before = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    resumed = BigModelCLI(args=[*args, "--ckpt_path", "last", "--trainer.max_steps", "6"])
    assert resumed.trainer.global_step == 6
    after = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert after["state_dict"].keys() == before["state_dict"].keys()
    step = {s["step"].item() for s in after["optimizer_states"][0]["state"].values()}
    assert step == {6.0}  # AdamW's moments were restored and went on, for the trainable parameters only
    encoder = "net.encoder.layers.0.attn.qkv.weight"
    torch.testing.assert_close(resumed.model.state_dict()[encoder][:64],
                               hf.bert.encoder.layer[0].attention.self.query.weight)  # still the frozen base

    test = BigModelCLI(args=["test", "-c", args[2], "-c", args[4], "--ckpt_path", "best"])
    assert 0 <= test.trainer.callback_metrics["test/acc"] <= 1
    # the head came from the checkpoint: not marked as a drawn one
    assert "test/random_head" not in test.trainer.callback_metrics and test.model.untrained_note() is None

    last = ckpt_dir / "last.ckpt"
    main(["export", "--ckpt_path", str(last), "--out", str(tmp / "merged")])
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(tmp / "merged").eval()
    model = ClassificationTask.load_from_checkpoint(last)
    ids = torch.randint(5, hf.config.vocab_size, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, _logits(model, ids), atol=1e-5, rtol=1e-5)
    merged = resolve(str(last))  # init_from of an adapter checkpoint: the base with the updates folded in
    assert not any(".lora_" in k for k in merged.state) and merged.kind == "classification"
    assert torch.equal(merged.state["head.classifier.weight"], model.net.head.classifier.weight)


def test_a_moved_base_is_read_from_the_config_and_a_changed_one_refused(lora_run, hf_bert, tmp_path):
    tmp, args, _ = lora_run
    path, hf = hf_bert
    moved = tmp_path / "moved"
    shutil.move(tmp / "base", moved)  # the checkpoint's init_from is gone; the config names the new place
    try:
        test = BigModelCLI(args=["test", "-c", args[2], "-c", args[4], "--ckpt_path", "best",
                                 "--model.init_args.init_from", str(moved)])
        assert test.model.hparams.init_from == str(moved)
        with torch.no_grad():
            changed = transformers.BertForMaskedLM.from_pretrained(moved)
            changed.bert.encoder.layer[0].attention.self.query.weight.add_(0.01)  # e.g. a base pretrained further
            changed.save_pretrained(tmp_path / "changed")
        with pytest.raises(ValueError, match="is not the frozen base this checkpoint was trained on"):
            BigModelCLI(args=["test", "-c", args[2], "-c", args[4], "--ckpt_path", "best",
                              "--model.init_args.init_from", str(tmp_path / "changed")])
    finally:
        shutil.move(moved, tmp / "base")
    with pytest.raises(ValueError, match="set finetune to lora, bitfit or linear_probe"):
        ClassificationTask(num_classes=2, vocab_size=hf.config.vocab_size, init_from=str(path),
                           checkpoint_weights="trainable")
    with pytest.raises(ValueError, match="set model.init_args.init_from"):
        ClassificationTask(num_classes=2, vocab_size=100, finetune="bitfit", checkpoint_weights="trainable")


@pytest.mark.parametrize("finetune", ["bitfit", "linear_probe"])
def test_bitfit_and_probe_checkpoints_keep_what_trains(finetune, hf_bert, tmp_path):
    path, hf = hf_bert
    task = ClassificationTask(num_classes=2, vocab_size=hf.config.vocab_size, init_from=str(path), finetune=finetune,
                              checkpoint_weights="trainable", classifier_dropout=0.0)
    task.load_pretrained(task._pretrained)
    task.configure_model()
    with torch.no_grad():
        for p in task.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))  # as if trained
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
            "pytorch-lightning_version": lightning.__version__}
    task.on_save_checkpoint(ckpt)
    expected = {n for n, p in task.named_parameters() if p.requires_grad}
    assert set(ckpt["state_dict"]) == expected and len(expected) < len(task.state_dict())
    torch.save(ckpt, tmp_path / "small.ckpt")
    ids = torch.randint(5, hf.config.vocab_size, (3, 12))
    assert torch.equal(_logits(ClassificationTask.load_from_checkpoint(tmp_path / "small.ckpt"), ids),
                       _logits(task, ids))


def test_int8_predictions_from_an_adapter_checkpoint_agree_with_float(lora_run, tmp_path):
    tmp, args, _ = lora_run
    texts = builtin.materialise("pydoc-topics", tmp_path)["test"][0]  # a table with a text column
    rows = {}
    for quantize in ("null", "int8"):
        out = tmp_path / f"{quantize}.jsonl"
        cli = BigModelCLI(args=["predict", "-c", args[2], "-c", args[4], "--ckpt_path", "best",
                                "--data.init_args.predict_files", texts, "--predictions.output", str(out),
                                "--model.init_args.quantize", quantize])
        rows[quantize] = [json.loads(line) for line in out.read_text().splitlines()]
    quantized = torch.ao.nn.quantized
    linear = [type(m) for m in cli.model.net.modules() if isinstance(m, (torch.nn.Linear, quantized.Linear))]
    assert len(linear) == 10 and all(t is quantized.dynamic.Linear for t in linear)  # LoRA merged first
    assert len(rows["int8"]) == len(rows["null"]) > 50
    agree = sum(a["class_name"] == b["class_name"] for a, b in zip(rows["null"], rows["int8"])) / len(rows["int8"])
    assert agree >= 0.9, agree  # 1.0 here
    gap = max(abs(a[k] - b[k]) for a, b in zip(rows["null"], rows["int8"]) for k in a if k.startswith("prob_"))
    assert gap < 0.02, gap
    assert "quantize" not in torch.load(tmp / "runs" / "cls" / "checkpoints" / "best.ckpt",
                                        weights_only=True)["hyper_parameters"]  # an inference setting only
    with pytest.raises(ValueError, match="quantize: int8 is for test and predict on CPU"):
        BigModelCLI(args=[*args, "--model.init_args.quantize", "int8", "--trainer.fast_dev_run", "1"])


def test_an_int8_test_records_the_parameters_of_the_model_it_quantised(lora_run):
    """test_metrics.json (and so a results table's 'parameters' column) counted Parameters after quantising, when the
    int8 layers hold their weights packed: the LoRA model read as a fraction of its size with nothing trained."""
    tmp, args, _ = lora_run
    counts = {}
    for quantize in ("null", "int8"):
        cli = BigModelCLI(args=["test", "-c", args[2], "-c", args[4], "--ckpt_path", "best",
                                "--model.init_args.quantize", quantize])
        with open(f"{cli.trainer.log_dir}/test_metrics.json") as f:
            counts[quantize] = json.load(f)["parameters"]
    assert counts["int8"] == counts["null"]
    assert 0 < counts["null"]["trainable"] < counts["null"]["total"]  # the LoRA updates and the head of all


def test_a_vit_adapter_checkpoint_reloads_from_its_base(tmp_path):
    import functools

    from bigmodel.nn import VisionTransformer

    overrides = {"image_size": 8, "patch_size": 2, "num_channels": 1, "num_layers": 2, "hidden_size": 64,
                 "num_heads": 2, "intermediate_size": 128}
    torch.save(VisionTransformer(5, "vit-tiny", overrides).state_dict(), tmp_path / "base.pth")  # another head
    task = ClassificationTask(num_classes=3, backbone=functools.partial(VisionTransformer, config="vit-tiny",
                                                                        overrides=overrides),
                              init_from=str(tmp_path / "base.pth"), finetune="lora", checkpoint_weights="trainable")
    task.load_pretrained(task._pretrained)
    task.configure_model()
    with torch.no_grad():
        for p in task.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
            "pytorch-lightning_version": lightning.__version__}
    task.on_save_checkpoint(ckpt)
    assert len(ckpt["state_dict"]) == 2 * 2 + 2  # A and B of qkv (default targets q, v) in two layers, the head
    torch.save(ckpt, tmp_path / "small.ckpt")
    images = torch.randn(4, 1, 8, 8)
    reloaded = ClassificationTask.load_from_checkpoint(tmp_path / "small.ckpt").eval()
    with torch.no_grad():
        assert torch.equal(reloaded({"pixel_values": images}), task.eval()({"pixel_values": images}))


def _save(task, path) -> str:
    """A checkpoint of ``task`` as a Trainer writes it (its on_save_checkpoint included), without a Trainer."""
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
            "pytorch-lightning_version": lightning.__version__}
    task.on_save_checkpoint(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture
def repretrained(hf_bert, tmp_path):
    """An MLM run's last.ckpt, a LoRA classifier with adapter-only checkpoints on it, then the MLM run trained
    afresh under the same name: its first last.ckpt archived under previous/<time>/, a changed one in its place."""
    from bigmodel.tasks import MLMTask

    path, hf = hf_bert
    checkpoints = tmp_path / "runs" / "mlm" / "checkpoints"
    mlm = MLMTask(vocab_size=hf.config.vocab_size, init_from=str(path))
    mlm._load_pretrained_once()
    base = _save(mlm, checkpoints / "last.ckpt")
    torch.manual_seed(1)
    task = ClassificationTask(num_classes=3, class_names=["a", "b", "c"], vocab_size=hf.config.vocab_size,
                              init_from=base, finetune="lora", checkpoint_weights="trainable", pooling="pooler")
    task._load_pretrained_once()
    task.configure_model()
    with torch.no_grad():
        for p in task.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))  # as if trained
    adapter = _save(task, tmp_path / "runs" / "lora" / "checkpoints" / "last.ckpt")
    archived = checkpoints / "previous" / "20240101-000000" / "last.ckpt"
    archived.parent.mkdir(parents=True)
    shutil.move(base, archived)  # what KeepPreviousCheckpoints does when the rerun writes its first checkpoint
    with torch.no_grad():
        mlm.net.encoder.layers[0].attn.qkv.weight.add_(0.01)  # pretrained further
    _save(mlm, checkpoints / "last.ckpt")
    return task.eval(), adapter, base, str(archived)


def test_a_repretrained_base_is_refused_naming_the_option_and_the_archived_original(repretrained, hf_bert):
    task, adapter, base, archived = repretrained
    with pytest.raises(ValueError) as refused:
        ClassificationTask.load_from_checkpoint(adapter)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"init_from {base!r} is not the frozen base this checkpoint")
    assert "its frozen weights changed since" in message
    assert message.endswith(f"bigmodel archived that base as {archived}: set --model.init_args.init_from {archived}")
    # the file it names is the one: equal outputs
    ids = torch.randint(5, hf_bert[1].config.vocab_size, (3, 12))
    assert torch.equal(_logits(ClassificationTask.load_from_checkpoint(adapter, init_from=archived), ids),
                       _logits(task, ids))
    # nothing archived matches: the option alone
    shutil.move(archived, archived + ".moved")
    with pytest.raises(ValueError, match=r"changed since: checksum [\d.e+]+ now, [\d.e+]+ then\); set "
                                         r"--model.init_args.init_from PATH to the base it was trained on$"):
        ClassificationTask.load_from_checkpoint(adapter)


def test_a_given_base_that_is_not_the_one_trained_on_says_so_and_names_the_right_one(repretrained, tmp_path):
    _, adapter, base, archived = repretrained
    other = shutil.copy(base, tmp_path / "other.ckpt")  # the re-pretrained base, copied elsewhere
    with pytest.raises(ValueError) as refused:
        ClassificationTask.load_from_checkpoint(adapter, init_from=other)
    message = str(refused.value)
    assert message.startswith(f"init_from {other!r} is not the frozen base this checkpoint was trained on (it was "
                              f"trained on {base!r}: frozen-weight checksum ")
    assert message.endswith(f"bigmodel archived that base as {archived}: set --model.init_args.init_from {archived}")


def test_export_takes_the_base_of_an_adapter_only_checkpoint(repretrained, hf_bert, tmp_path, capsys):
    from bigmodel.commands.export import export

    task, adapter, base, archived = repretrained
    with pytest.raises(ValueError, match=f"bigmodel archived that base as {archived}: set --init_from {archived}$"):
        export(adapter, str(tmp_path / "x"))
    with pytest.raises(ValueError, match="is not the frozen base this checkpoint was trained on"):
        export(adapter, str(tmp_path / "x"), init_from=base)
    with pytest.raises(ValueError, match="holds all its weights: drop --init_from"):
        export(base, str(tmp_path / "x"), init_from=archived)
    with pytest.raises(ValueError, match="build a head from --init_from alone"):
        export(adapter, str(tmp_path / "x"), init_from=archived, class_names=["a", "b", "c"])
    main(["export", "--ckpt_path", adapter, "--init_from", archived, "--out", str(tmp_path / "merged")])
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    ids = torch.randint(5, hf_bert[1].config.vocab_size, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, _logits(task, ids), atol=1e-5, rtol=1e-5)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert capsys.readouterr().out.startswith("usage: bigmodel export ")


def test_a_given_base_is_read_even_where_the_recorded_one_still_is(lora_run, tmp_path):
    """The recorded base rewritten in place (as a re-pretraining does): the original, given, is used."""
    tmp, args, fit = lora_run
    original = shutil.copytree(tmp / "base", tmp_path / "original")
    changed = transformers.BertForMaskedLM.from_pretrained(original)
    with torch.no_grad():
        changed.bert.encoder.layer[0].attention.self.query.weight.add_(0.01)
    changed.save_pretrained(tmp / "base")
    try:
        test = BigModelCLI(args=["test", "-c", args[2], "-c", args[4], "--ckpt_path", "best",
                                 "--model.init_args.init_from", str(original), "--trainer.limit_test_batches", "1"])
        assert test.model.hparams.init_from == str(original) and 0 <= test.trainer.callback_metrics["test/acc"] <= 1
        with pytest.raises(ValueError, match="its frozen weights changed since.*--model.init_args.init_from PATH"):
            BigModelCLI(args=["test", "-c", args[2], "-c", args[4], "--ckpt_path", "best"])
    finally:
        shutil.rmtree(tmp / "base")
        shutil.copytree(original, tmp / "base")
