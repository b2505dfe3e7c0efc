"""Bad input stops before training with one line, `bigmodel: error: ...`, that names the problem and the fix.

Every case runs through the real CLI in one subprocess (``tests/cli_cases.py``: ``bigmodel.commands.cli.main`` per command
line, Lightning imported once); the test checks the exit code 2, a single error line, no traceback, and the text.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bigmodel.commands.cli import BigModelCLI
from bigmodel.nn import SmallCNN
from tests.helpers import write_table
from tests.test_cli import finetune_config, mlm_config, write_yaml

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    "misspelled key": ["Option 'lrr' is not accepted; did you mean 'lr'?"],
    "missing text column": ["text column 'body' not found; columns are ['text']"],
    "missing label column": ["label column 'label' not found; columns are ['text', 'target']",
                             "set data.init_args.label_column"],
    "label id outside the classes": ["test file '", "test.csv' has label ids [7] outside 0..1"],
    "unknown label name": ["validation file '", "val.csv' has labels ['neutral'] that are not among the training "
                           "classes ['neg', 'pos']; add training examples of them, or list every class in "
                           "data.init_args.label_names"],
    "text not in UTF-8": ["train file '", "latin.csv' is not UTF-8 text: line 2 has the byte 0xe9",
                          "re-save the file as UTF-8"],
    "empty data file": ["is empty; give a file with data"],
    "empty split": ["the test split is empty:", "has no rows (only a header?); add data or leave test_files unset"],
    "init_from missing": ["missing.ckpt' does not exist; point it to a checkpoint (.ckpt), a state-dict file, a "
                          "Hugging Face model directory, or a hub name"],
    "init_from corrupt": ["broken.ckpt", "is not a readable checkpoint", "was it fully written?"],
    "init_from without a text encoder": ["cnn.pth' is a state_dict source without a text encoder",
                                         "or a Hugging Face BERT/RoBERTa directory or hub name"],
    "init_from other vocabulary": ["has a vocabulary of 1000 tokens but the tokenizer has",
                                   "use the model's own tokenizer"],
    "init_from other hidden size": ["encoder_config ['hidden_size'] cannot change a pretrained encoder"],
    "hub name without network": ["dataset 'imdb' is not a local path and the Hugging Face Hub cannot be reached",
                                 "train_files"],
    "init_from hub name without network": ["init_from 'bert-base-uncased' is not a local path and the Hugging Face Hub "
                                           "cannot be reached", "hf download NAME --local-dir DIR"],
    "accumulate_grad_batches 0": ["trainer.accumulate_grad_batches must be >= 1, got 0"],
    "batch_size 0": ["batch_size must be positive, got 0"],
    "bf16 without support": ["needs a GPU with bfloat16", "use --trainer.precision 16-mixed"],
    "no schedule length": ["the learning-rate schedule needs a length"],
    "val_check_interval beyond the epoch": ["`val_check_interval` (1000) must be less than or equal to the number of "
                                            "the training batches", "set `limit_val_batches` to 0.0"],
    "fsdp on a cpu": ["The strategy `fsdp` requires a GPU accelerator"],
    "devices -1 on a cpu": ["`devices` selected with `CPUAccelerator` should be an int > 0"],
    "image folder without images": ["has no images: expected", "/<class name>/<image> files with one of"],
    "image dataset unknown": ["is neither a known name (digits, cifar10", "nor an existing image folder"],
    "torchvision set offline": ["cifar10 is not in", "could not be downloaded", "use dataset: digits"],
    "labels mixing ids and names": ["label column 'label' mixes numbers ('0', '1' in train) and names ('positive' in "
                                    "train); use one kind"],
    "single training class": ["the training labels in column 'label' hold one value ('pos')",
                              "list every class in data.init_args.label_names"],
    "row without a label": ["has 2 rows with a text but no 'label' label (rows 2, 5, counted from 1 below the header)"],
    "headerless test file": ["text column 'text' not found in test file", "its columns are ['e f', '1'], while "
                             "train's are ['text', 'label']", "set data.init_args.column_names (e.g. [text, label])"],
    "directory for train_files": ["is a directory; give a file, or a glob of the files in it such as", "/*.csv'"],
    "tsv row with a tab": ["line 3 has 3 fields where 2 are expected; in .tsv files every tab separates fields and "
                           "quote characters are plain text"],
    "image weights that do not fit": ["weights do not fit ResNet18: unexpected ['features.0.weight'", "build the backbone as"],
}


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


def cases(tmp: Path, pydoc_text: Path, mlm_ckpt: str, cls_ckpt: str) -> list[dict]:
    def cls_args(name: str, **data) -> list[str]:
        config = finetune_config(tmp, mlm_ckpt, mlm_ckpt)
        config["trainer"].update(max_steps=1, limit_val_batches=1)
        if data:
            config["data"]["init_args"].pop("dataset")
            config["data"]["init_args"].update(data)
        return ["fit", "-c", write_yaml(tmp / f"{name}.yaml", config)]

    def image_args(name: str, backbone: dict | None = None, **data) -> list[str]:
        config = {
            "trainer": {"max_steps": 1, "limit_val_batches": 1, "accelerator": "cpu", "logger": False,
                        "enable_checkpointing": False, "default_root_dir": str(tmp / "runs")},
            "model": {"class_path": "bigmodel.tasks.ClassificationTask",
                      "init_args": {"backbone": backbone or {"class_path": "bigmodel.nn.SmallCNN",
                                                             "init_args": {"image_size": 8}}}},
            "data": {"class_path": "bigmodel.data.ImageDataModule", "init_args": data},
        }
        return ["fit", "-c", write_yaml(tmp / f"{name}.yaml", config)]

    mlm = ["fit", "-c", write_yaml(tmp / "mlm.yaml", mlm_config(tmp, pydoc_text))]
    bad_column = mlm_config(tmp, pydoc_text)
    bad_column["data"]["init_args"]["text_column"] = "body"
    (tmp / "broken.ckpt").write_bytes(b"\x00" * 100)
    (tmp / "empty.csv").write_text("")
    (tmp / "latin.csv").write_bytes("text,label\ncafé,0\nthé,1\n".encode("latin-1"))
    from bigmodel.data.tokenizer import train_wordpiece

    small_tokenizer = tmp / "small-tokenizer"  # fewer tokens than the checkpoint's 1000
    train_wordpiece(["the for statement", "a list of words"] * 50, vocab_size=900).save_pretrained(small_tokenizer)
    (tmp / "no-images" / "cat").mkdir(parents=True)
    (tmp / "no-images" / "cat" / "notes.txt").write_text("not an image")
    torch.save(SmallCNN(10).state_dict(), tmp / "cnn.pth")
    pairs = write_table(tmp / "pairs.csv", [("a b", 0), ("c d", 1)] * 4)
    (tmp / "tables").mkdir()
    write_table(tmp / "tables" / "part1.csv", [("a b", 0), ("c d", 1)])
    (tmp / "tab.tsv").write_text('text\tlabel\na "quoted" b\t0\nc\td\t1\n')
    return [
        {"name": "misspelled key", "args": mlm + ["--model.init_args.lrr", "3"]},
        {"name": "missing text column", "args": ["fit", "-c", write_yaml(tmp / "col.yaml", bad_column)]},
        {"name": "missing label column", "args": cls_args(
            "label", train_files=write_table(tmp / "t.csv", [("a b", 0), ("c d", 1)], header=("text", "target")))},
        {"name": "label id outside the classes", "args": cls_args(
            "outside", train_files=pairs, test_files=write_table(tmp / "test.csv", [("e f", 7)]))},
        {"name": "unknown label name", "args": cls_args(
            "names", train_files=write_table(tmp / "names.csv", [("a b", "neg"), ("c d", "pos")] * 4),
            validation_files=write_table(tmp / "val.csv", [("e f", "neutral")]))},
        {"name": "empty data file", "args": cls_args("empty", train_files=str(tmp / "empty.csv"))},
        {"name": "text not in UTF-8", "args": cls_args("latin", train_files=str(tmp / "latin.csv"))},
        {"name": "empty split", "args": cls_args(
            "empty-split", train_files=pairs, test_files=write_table(tmp / "header-only.csv", []))},
        {"name": "init_from missing", "args": cls_args("m") + ["--model.init_args.init_from", str(tmp / "missing.ckpt")]},
        {"name": "init_from corrupt", "args": cls_args("c") + ["--model.init_args.init_from", str(tmp / "broken.ckpt")]},
        {"name": "init_from without a text encoder",
         "args": cls_args("o") + ["--model.init_args.init_from", str(tmp / "cnn.pth")]},
        {"name": "init_from other vocabulary", "args": cls_args("v") + ["--data.init_args.tokenizer", str(small_tokenizer)]},
        {"name": "init_from other hidden size", "args": cls_args("h") + ["--model.init_args.encoder_config",
                                                                          "{hidden_size: 256}"]},
        {"name": "hub name without network", "args": cls_args("hub", dataset="imdb"),
         "env": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "https://hub.invalid"}},
        {"name": "init_from hub name without network", "env": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "https://hub.invalid"},
         "args": cls_args("hub-model") + ["--model.init_args.init_from", "bert-base-uncased"]},
        {"name": "accumulate_grad_batches 0", "args": mlm + ["--trainer.accumulate_grad_batches", "0"]},
        {"name": "batch_size 0", "args": mlm + ["--data.init_args.batch_size", "0"]},
        {"name": "bf16 without support", "no_bf16_gpu": True,
         "args": mlm + ["--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed"]},
        {"name": "no schedule length", "args": mlm + ["--trainer.max_epochs", "-1"]},
        {"name": "val_check_interval beyond the epoch", "args": mlm + ["--trainer.val_check_interval", "1000"]},
        {"name": "fsdp on a cpu", "args": mlm + ["-c", str(ROOT / "experiments" / "trainer" / "fsdp-bf16.yaml"),
                                                 "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                                                 "--trainer.precision", "32-true"]},
        {"name": "devices -1 on a cpu", "args": mlm + ["--trainer.accelerator", "cpu", "--trainer.devices", "-1"]},
        {"name": "labels mixing ids and names", "args": cls_args("mixed", train_files=write_table(
            tmp / "mixed.csv", [("a b", "0"), ("c d", "1"), ("e f", "positive")] * 3))},
        {"name": "single training class", "args": cls_args(
            "single", train_files=write_table(tmp / "single.csv", [("a b", "pos")] * 4))},
        {"name": "row without a label", "args": cls_args(
            "nolabel", train_files=write_table(tmp / "nolabel.csv", [("a b", 0), ("c d", ""), ("e f", 1)] * 2))},
        {"name": "headerless test file", "args": cls_args(
            "headerless", train_files=pairs, test_files=write_table(tmp / "nohead.csv", [("g h", 0)], ("e f", "1")))},
        {"name": "directory for train_files", "args": cls_args("dir", train_files=str(tmp / "tables"))},
        {"name": "tsv row with a tab", "args": cls_args("tsv", train_files=str(tmp / "tab.tsv"))},
        {"name": "image folder without images", "args": image_args("noimg", dataset=str(tmp / "no-images"))},
        {"name": "image dataset unknown", "args": image_args("unknown", dataset=str(tmp / "cifar-11"))},
        {"name": "torchvision set offline", "args": image_args("tv", dataset="cifar10", data_dir=str(tmp / "tv"))},
        {"name": "image weights that do not fit", "args": image_args(
            "weights", {"class_path": "bigmodel.nn.ResNet18", "init_args": {"in_channels": 1}}, dataset="digits")
            + ["--model.init_args.init_from", str(tmp / "cnn.pth")]},
    ]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, pydoc_text, checkpoints):
    tmp = tmp_path_factory.mktemp("bad-input")
    _, mlm_ckpt, cls_ckpt = checkpoints
    # two processes at once, one thread each (the suite's two cores), each in a directory of its own (runs' locks)
    for i in range(2):
        (tmp / str(i)).mkdir()
    made = [cases(tmp / str(i), pydoc_text, mlm_ckpt, cls_ckpt) for i in range(2)]
    assert {c["name"] for c in made[0]} == set(EXPECTED)
    halves = (made[0][0::2], made[1][1::2])
    for i, half in enumerate(halves):
        (tmp / f"cases{i}.json").write_text(json.dumps(half))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.cli_cases", str(tmp / f"cases{i}.json"),
                               str(tmp / f"results{i}.json")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        err = proc.communicate(timeout=600)[1]
        assert proc.returncode == 0, err[-3000:]
    return {k: v for i in range(2) for k, v in json.loads((tmp / f"results{i}.json").read_text()).items()}


@pytest.mark.parametrize("value, expected", [
    ("none", "model.init_args.quantize: 'none' is not one of ['int8']; use null to switch it off ('none' is a string; "
             "null, unquoted, is YAML's None)"),
    ("int9", "model.init_args.quantize: 'int9' is not one of ['int8'] or null; did you mean 'int8'?")])
def test_a_value_outside_an_options_choices_names_them_and_null(value, expected, capsys):
    """jsonargparse's report on an Optional[Literal] option, in-process (the parse fails before any data is read)."""
    from bigmodel.commands.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["test", "-c", str(ROOT / "experiments" / "quickstart" / "finetune_pydoc_topics.yaml"),
              "--model.init_args.quantize", value])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"bigmodel: error: {expected} -- see `bigmodel test --help`\n"


@pytest.mark.parametrize("option, expected", [
    ("--trainer.max_epoch", "--trainer.max_epoch 3; did you mean '--trainer.max_epochs'?"),  # a prefix is not taken
    ("--trainer.max_epohs", "--trainer.max_epohs 3; did you mean '--trainer.max_epochs'?"),
    ("--ckpt", "--ckpt 3; did you mean '--ckpt_path'?")])
def test_an_unknown_or_abbreviated_option_gets_a_did_you_mean(option, expected, capsys):
    """argparse's abbreviations are off: ``--trainer.max_epoch`` is an error naming max_epochs, as a typo is
    (in-process: the parse fails before anything is read; --print_config would print the config and exit 0)."""
    from bigmodel.commands.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["fit", "-c", str(ROOT / "experiments" / "quickstart" / "digits_cnn.yaml"), option, "3",
              "--print_config"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == \
        f"bigmodel: error: unrecognized arguments: {expected} -- see `bigmodel fit --help`\n"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_bad_input_is_one_line_naming_the_fix(outcomes, name):
    result = outcomes[name]
    assert result["code"] == 2 and result["lines"] == 1 and not result["traceback"], result
    line = result["last_line"]
    assert line.startswith("bigmodel: error: ")
    for part in EXPECTED[name]:
        assert part in line, f"{part!r} not in {line!r}"


def test_long_texts_are_truncated_with_a_count(tmp_path, checkpoints):
    from bigmodel.data import TextClassificationDataModule

    _, mlm_ckpt, _ = checkpoints
    long = " ".join(["statement"] * 300)
    train = write_table(tmp_path / "t.csv", [(long, 0), ("short text", 1)] * 5)
    dm = TextClassificationDataModule(mlm_ckpt, train_files=train, max_length=32, validation_fraction=0.2)
    with pytest.warns(UserWarning, match=r"4 of 8 train texts were longer than max_length=32 tokens and were truncated"):
        dm.setup("fit")
    assert max(len(x) for x in dm.datasets["train"]["input_ids"]) == 32


def test_checkpointing_can_be_off(tmp_path, pydoc_text):
    args = ["fit", "-c", write_yaml(tmp_path / "mlm.yaml", mlm_config(tmp_path, pydoc_text))]
    cli = BigModelCLI(args=args + ["--trainer.enable_checkpointing", "false", "--trainer.max_steps", "1",
                                   "--trainer.limit_val_batches", "1"])
    assert cli.trainer.checkpoint_callback is None and cli.trainer.global_step == 1
