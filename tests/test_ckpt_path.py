"""``--ckpt_path`` with a config of another model (``bigmodel/commands/ckpt_path.py``): an image classifier's
checkpoint with a config for text (or the reverse) is one line before anything is built; a checkpoint of another
architecture for the same kind of input runs (Lightning rebuilds the checkpoint's model from its hyper-parameters)
with a line naming the settings it replaces and where the results go. In-process, on one-step checkpoints."""

from pathlib import Path

import pytest

from bigmodel.commands import ckpt_path
from bigmodel.commands.cli import BigModelCLI
from tests.test_cli import write_yaml
from tests.test_run_safety import run_main

CNN = {"class_path": "bigmodel.nn.SmallCNN", "init_args": {"in_channels": 1, "image_size": 8, "width": 8, "hidden": 16}}
VIT = {"class_path": "bigmodel.nn.VisionTransformer",
       "init_args": {"config": "vit-cifar-tiny", "overrides": {"image_size": 8, "patch_size": 4, "num_channels": 1,
                                                               "num_layers": 1, "hidden_size": 32, "num_heads": 2,
                                                               "intermediate_size": 64}}}


def config(tmp: Path, name: str, model: dict, data: dict) -> dict:
    return {
        "seed_everything": 0,
        "trainer": {"max_steps": 1, "limit_val_batches": 1, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp / "runs"), "name": name}}},
        "model": {"class_path": "bigmodel.tasks.ClassificationTask", "init_args": model},
        "data": data,
    }


def image_config(tmp: Path, name: str, backbone: dict) -> str:
    data = {"class_path": "bigmodel.data.ImageDataModule", "init_args": {"dataset": "digits", "batch_size": 16}}
    return write_yaml(tmp / f"{name}.yaml", config(tmp, name, {"backbone": backbone}, data))


def text_config(tmp: Path) -> str:
    model = {"encoder_config": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}}
    data = {"class_path": "bigmodel.data.TextClassificationDataModule",
            "init_args": {"dataset": "builtin:pydoc-topics", "batch_size": 16, "max_length": 32,
                          "wordpiece_vocab_size": 500}}
    return write_yaml(tmp / "text.yaml", config(tmp, "text", model, data))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """One step of a digits CNN and of a text classifier (a second each): (folder, {name: config}), checkpoints
    at runs/<name>/checkpoints/last.ckpt."""
    tmp = tmp_path_factory.mktemp("ckpt-kinds")
    configs = {"cnn": image_config(tmp, "cnn", CNN), "text": text_config(tmp)}
    for path in configs.values():
        BigModelCLI(args=["fit", "-c", path])
    configs["vit"] = image_config(tmp, "vit", VIT)
    return tmp, configs


def last(tmp: Path, name: str) -> str:
    return str(tmp / "runs" / name / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("command, checkpoint, config, expected", [
    ("test", "text", "cnn", "is a text classifier but the config's data module bigmodel.data.ImageDataModule reads "
                            "images; use a config for text (such as the one it was trained with) or an image "
                            "classifier's checkpoint"),
    ("predict", "cnn", "text", "is an image classifier (backbone bigmodel.nn.cnn.SmallCNN) but the config's data "
                               "module bigmodel.data.TextClassificationDataModule reads text; use a config for images "
                               "(such as the one it was trained with) or a text classifier's checkpoint"),
])
def test_a_classifier_of_the_other_kind_is_one_line_before_anything_is_built(trained, capsys, command, checkpoint,
                                                                              config, expected):
    tmp, configs = trained
    code, line = run_main([command, "-c", configs[config], "--ckpt_path", last(tmp, checkpoint)], capsys)
    assert (code, line) == (2, f"bigmodel: error: --ckpt_path '{last(tmp, checkpoint)}' {expected}")
    assert sorted(p.name for p in (tmp / "runs" / config).iterdir()) == ["checkpoints", "version_0"]  # the fit's only


def test_another_architectures_checkpoint_says_what_it_replaces_and_where_results_go(trained, recwarn):
    tmp, configs = trained
    cli = BigModelCLI(args=["validate", "-c", configs["vit"], "--ckpt_path", last(tmp, "cnn")])
    assert type(cli.model.net).__name__ == "SmallCNN"  # Lightning's choice: the checkpoint's model runs
    said = [str(w.message) for w in recwarn if "replaces" in str(w.message)]
    assert said == [f"--ckpt_path '{last(tmp, 'cnn')}': the checkpoint's backbone bigmodel.nn.SmallCNN replaces the "
                    "config's bigmodel.nn.VisionTransformer; this validate runs the checkpoint's model and writes to "
                    f"{tmp / 'runs' / 'vit' / 'version_0'}"]
    assert (tmp / "runs" / "vit" / "version_0" / "validate_metrics.json").exists()

    recwarn.clear()  # the checkpoint's own config, and other optimiser settings, replace no architecture
    BigModelCLI(args=["validate", "-c", configs["cnn"], "--ckpt_path", last(tmp, "cnn"), "--model.init_args.lr",
                      "0.5"])
    assert not [w for w in recwarn if "replaces" in str(w.message)]


def test_replaced_settings_are_the_architecture_only():
    text = {"class_path": "bigmodel.tasks.ClassificationTask",
            "init_args": {"encoder": "bert-tiny", "encoder_config": {"hidden_size": 64, "hidden_dropout": 0.2},
                          "lr": 1e-3, "init_from": "a.ckpt", "backbone": None}}
    saved = {"class_path": "bigmodel.tasks.ClassificationTask",
             "init_args": {"encoder": "bert-small", "encoder_config": {"hidden_size": 32, "hidden_dropout": 0.1,
                                                                      "num_layers": 1},
                           "lr": 5e-4, "init_from": "b.ckpt", "backbone": None}}
    assert ckpt_path.replaced_settings(text, saved) == [
        "the checkpoint's encoder 'bert-small' replaces the config's 'bert-tiny'",
        "the checkpoint's encoder_config.hidden_size 32 replaces the config's 64"]
    wide = {"init_args": {"backbone": {**CNN, "init_args": {**CNN["init_args"], "width": 32}}}}
    saved = {"init_args": {"backbone": {**CNN, "class_path": "bigmodel.nn.cnn.SmallCNN"}}}  # the same class
    assert ckpt_path.replaced_settings(wide, saved) == ["the checkpoint's backbone.init_args.width 8 replaces the "
                                                        "config's 32"]
    assert ckpt_path.replaced_settings(text, text) == []
