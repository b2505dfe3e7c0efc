"""Bad input stops before training with one line, `bigmodel: error: ...`, that names the problem and the fix."""

import pytest
import torch

from bigmodel.cli import BigModelCLI, main
from tests.helpers import write_table
from tests.test_cli import finetune_config, mlm_config, write_yaml


def cli_error(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, pydoc_text):
    """A tiny MLM checkpoint and a classification checkpoint fine-tuned from it (a few steps each)."""
    tmp = tmp_path_factory.mktemp("ckpts")
    mlm = mlm_config(tmp, pydoc_text, max_steps=2, limit_val_batches=1)
    BigModelCLI(args=["fit", "-c", write_yaml(tmp / "mlm.yaml", mlm)])
    mlm_ckpt = str(tmp / "runs" / "mlm" / "checkpoints" / "last.ckpt")
    cls = finetune_config(tmp, mlm_ckpt, mlm_ckpt)
    cls["trainer"].update(max_steps=2, limit_val_batches=1)
    BigModelCLI(args=["fit", "-c", write_yaml(tmp / "cls.yaml", cls)])
    return tmp, mlm_ckpt, str(tmp / "runs" / "cls" / "checkpoints" / "last.ckpt")


table = write_table


def cls_args(tmp_path, mlm_ckpt, **data):
    config = finetune_config(tmp_path, mlm_ckpt, mlm_ckpt)
    config["trainer"].update(max_steps=1, limit_val_batches=1)
    config["data"]["init_args"].pop("dataset")
    config["data"]["init_args"].update(data)
    return ["fit", "-c", write_yaml(tmp_path / "cls.yaml", config)]


def test_missing_label_column_lists_the_columns(capsys, tmp_path, checkpoints):
    _, mlm_ckpt, _ = checkpoints
    train = table(tmp_path / "t.csv", [("a b", 0), ("c d", 1)], header=("text", "target"))
    err = cli_error(capsys, cls_args(tmp_path, mlm_ckpt, train_files=train))
    assert "label column 'label' not found; columns are ['text', 'target'] (set data.init_args.label_column)" in err


def test_labels_outside_the_classes_and_unknown_names(capsys, tmp_path, checkpoints):
    _, mlm_ckpt, _ = checkpoints
    train = table(tmp_path / "t.csv", [("a b", 0), ("c d", 1)] * 4)
    test = table(tmp_path / "test.csv", [("e f", 7)])
    err = cli_error(capsys, cls_args(tmp_path, mlm_ckpt, train_files=train, test_files=test))
    assert "test has label ids [7] outside 0..1" in err
    train = table(tmp_path / "names.csv", [("a b", "neg"), ("c d", "pos")] * 4)
    val = table(tmp_path / "val.csv", [("e f", "neutral")])
    err = cli_error(capsys, cls_args(tmp_path, mlm_ckpt, train_files=train, validation_files=val))
    assert "validation has labels ['neutral'] that are not among the classes ['neg', 'pos']" in err


def test_empty_data_file(capsys, tmp_path, checkpoints):
    _, mlm_ckpt, _ = checkpoints
    (tmp_path / "empty.csv").write_text("")
    err = cli_error(capsys, cls_args(tmp_path, mlm_ckpt, train_files=str(tmp_path / "empty.csv")))
    assert "is empty; give a file with data" in err


def test_init_from_problems(capsys, tmp_path, checkpoints):
    _, mlm_ckpt, cls_ckpt = checkpoints
    args = cls_args(tmp_path, mlm_ckpt, dataset="builtin:pydoc-topics")
    err = cli_error(capsys, args + ["--model.init_args.init_from", str(tmp_path / "missing.ckpt")])
    assert "init_from checkpoint" in err and "missing.ckpt' does not exist" in err
    err = cli_error(capsys, args + ["--model.init_args.init_from", cls_ckpt])
    assert "is a 'classification' checkpoint; expected a 'mlm' one" in err
    from bigmodel.data.tokenizer import train_wordpiece

    small = tmp_path / "small-tokenizer"  # fewer tokens than the checkpoint's 1000
    train_wordpiece(["the for statement", "a list of words"] * 50, vocab_size=900).save_pretrained(small)
    err = cli_error(capsys, args + ["--data.init_args.tokenizer", str(small)])
    assert "has a vocabulary of 1000 tokens but the tokenizer has" in err
    err = cli_error(capsys, args + ["--model.init_args.encoder_config", "{num_layers: 4}"])
    assert "cannot change a pretrained encoder loaded by init_from" in err


def test_hub_name_without_network(capsys, tmp_path, checkpoints, monkeypatch):
    from bigmodel.data import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    hub.hub_reachable.cache_clear()
    _, mlm_ckpt, _ = checkpoints
    err = cli_error(capsys, cls_args(tmp_path, mlm_ckpt, dataset="imdb"))
    hub.hub_reachable.cache_clear()
    assert "dataset 'imdb' is not a local path and the Hugging Face Hub cannot be reached" in err
    assert "train_files" in err


def test_trainer_values_checked_before_a_run(capsys, tmp_path, pydoc_text, monkeypatch):
    args = ["fit", "-c", write_yaml(tmp_path / "mlm.yaml", mlm_config(tmp_path, pydoc_text))]
    err = cli_error(capsys, args + ["--trainer.accumulate_grad_batches", "0"])
    assert "trainer.accumulate_grad_batches must be >= 1, got 0" in err
    err = cli_error(capsys, args + ["--data.init_args.batch_size", "0"])
    assert "batch_size must be positive, got 0" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    err = cli_error(capsys, args + ["--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed"])
    assert "needs a GPU with bfloat16" in err and "16-mixed" in err


def test_long_texts_are_truncated_with_a_count(tmp_path, checkpoints):
    from bigmodel.data import TextClassificationDataModule

    _, mlm_ckpt, _ = checkpoints
    long = " ".join(["statement"] * 300)
    train = table(tmp_path / "t.csv", [(long, 0), ("short text", 1)] * 5)
    dm = TextClassificationDataModule(mlm_ckpt, train_files=train, max_length=32, validation_fraction=0.2)
    with pytest.warns(UserWarning, match=r"4 of 8 train texts were longer than max_length=32 tokens and were truncated"):
        dm.setup("fit")
    assert max(len(x) for x in dm.datasets["train"]["input_ids"]) == 32


def test_endless_run_needs_a_schedule_length_and_checkpointing_can_be_off(capsys, tmp_path, pydoc_text):
    args = ["fit", "-c", write_yaml(tmp_path / "mlm.yaml", mlm_config(tmp_path, pydoc_text))]
    err = cli_error(capsys, args + ["--trainer.max_epochs", "-1"])
    assert "the learning-rate schedule needs a length" in err
    cli = BigModelCLI(args=args + ["--trainer.enable_checkpointing", "false", "--trainer.max_steps", "1",
                                   "--trainer.limit_val_batches", "1"])
    assert cli.trainer.checkpoint_callback is None and cli.trainer.global_step == 1
