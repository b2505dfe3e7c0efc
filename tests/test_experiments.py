"""Every YAML in experiments/ is a valid config for the CLI (class paths import, keys and types check), so a
recipe that cannot run here (a GPU, CIFAR downloads) still cannot rot unnoticed."""

from pathlib import Path

import pytest
import yaml

from bigmodel.cli import BigModelCLI

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments").rglob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit:
        BigModelCLI(args=["fit", "-c", str(config), "--print_config"])
    assert exit.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("bigmodel.tasks.")
    assert printed["data"]["class_path"].startswith("bigmodel.data.")
