"""Every YAML in experiments/ is a valid config for the CLI (class paths import, keys and types check), so a
recipe that cannot run here (a GPU, CIFAR downloads) still cannot rot unnoticed."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bigmodel.commands.cli import BigModelCLI

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
EXTENDING = EXPERIMENTS / "extending"  # the extension example's package (my_lab) imports from here
FRAGMENTS = sorted((EXPERIMENTS / "trainer").glob("*.yaml"))  # trainer settings only, combined with an experiment
MODES = sorted((EXPERIMENTS / "finetune" / "modes").glob("*.yaml"))  # fine-tuning mode fragments
# whole experiments name their model's class; overlays (a distilled variant) and results.yaml do not
CONFIGS = sorted(p for p in set(EXPERIMENTS.rglob("*.yaml")) - set(FRAGMENTS) - set(MODES)
                 if "class_path" in (yaml.safe_load(p.read_text()).get("model") or {}))


OVERLAYS = {EXPERIMENTS / "finetune" / "few_shot.yaml": EXPERIMENTS / "finetune" / "sst2_bert_mini_cpu.yaml",
            EXPERIMENTS / "finetune" / "sst2_budget_cpu.yaml": EXPERIMENTS / "finetune" / "sst2_bert_mini_cpu.yaml",
            EXPERIMENTS / "quickstart" / "digits_vit_distilled.yaml": EXPERIMENTS / "quickstart" / "digits_vit.yaml"}


def _contains(printed, expected) -> bool:
    if isinstance(expected, dict):
        return all(key in printed and _contains(printed[key], value) for key, value in expected.items())
    return printed == expected


@pytest.mark.parametrize("overlay", sorted(OVERLAYS), ids=lambda p: p.name)
def test_each_overlay_composes_with_its_experiment(overlay, capsys):
    with pytest.raises(SystemExit):
        BigModelCLI(args=["fit", "-c", str(OVERLAYS[overlay]), "-c", str(overlay), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert _contains(printed, yaml.safe_load(overlay.read_text()))  # the overlay's settings win
    assert {p for p in set(EXPERIMENTS.rglob("*.yaml")) - set(FRAGMENTS) - set(MODES) - set(CONFIGS)} == \
        set(OVERLAYS) | {EXPERIMENTS / "results.yaml"}  # every file is tested one way or another


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_config_parses(config, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(EXTENDING))
    with pytest.raises(SystemExit) as exit:
        BigModelCLI(args=["fit", "-c", str(config), "--print_config"])
    assert exit.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith(("bigmodel.tasks.", "my_lab."))
    assert printed["data"]["class_path"].startswith(("bigmodel.data.", "my_lab."))


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda p: p.name)
def test_trainer_fragments_compose_with_any_experiment(fragment, capsys):
    """Later -c files override earlier ones: the experiment's trainer block gives way to the fragment's."""
    base = EXPERIMENTS / "finetune" / "sst2_from_bert.yaml"
    with pytest.raises(SystemExit):
        BigModelCLI(args=["fit", "-c", str(base), "-c", str(fragment), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    for key, value in yaml.safe_load(fragment.read_text())["trainer"].items():
        assert _contains(printed["trainer"][key], value), key
    assert printed["model"]["init_args"]["lr"] == 2.0e-5  # the experiment's own settings stay


def test_the_debug_fragment_smoke_tests_an_experiment_without_writing_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the experiment writes under runs/ of the working directory
    cli = BigModelCLI(args=["fit", "-c", str(EXPERIMENTS / "quickstart" / "digits_cnn.yaml"),
                            "-c", str(EXPERIMENTS / "trainer" / "debug.yaml"), "-c", str(FRAGMENTS[0])])
    assert cli.trainer.global_step == 2 and cli.trainer.fast_dev_run == 2
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("mode", MODES, ids=lambda p: p.name)
def test_each_fine_tuning_mode_fragment_trains_a_vit_and_composes_with_text(mode, tmp_path, monkeypatch, capsys):
    """One implementation for text and images: each mode runs on the digits ViT (2 steps) and sets the text recipe."""
    monkeypatch.chdir(tmp_path)
    settings = yaml.safe_load(mode.read_text())["model"]["init_args"]
    cli = BigModelCLI(args=["fit", "-c", str(EXPERIMENTS / "quickstart" / "digits_vit.yaml"), "-c", str(mode),
                            "-c", str(EXPERIMENTS / "trainer" / "debug.yaml")])
    finetune = settings.get("finetune", "full")
    assert cli.trainer.global_step == 2 and cli.model.hparams.finetune == finetune
    trainable = {n for n, p in cli.model.net.named_parameters() if p.requires_grad}
    optimized = {id(p) for group in cli.trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in cli.model.net.parameters() if p.requires_grad}
    assert "head.weight" in trainable
    assert (len(trainable) < len(dict(cli.model.net.named_parameters()))) == (finetune != "full")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        BigModelCLI(args=["fit", "-c", str(EXPERIMENTS / "finetune" / "sst2_bert_mini_cpu.yaml"), "-c", str(mode),
                          "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    for key, value in settings.items():  # dataclass settings print with their defaults
        assert {k: printed[key][k] for k in value} == value if isinstance(value, dict) else printed[key] == value


def test_the_fsdp_fragment_builds_lightnings_fsdp_with_a_unit_per_block_and_the_1b_encoder_is_1b():
    """What runs only on GPUs (Lightning's FSDP refuses a CPU accelerator), checked as far as a CPU can: the YAML
    becomes the intended strategy object, and the experiment's encoder has the size it claims."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy, Strategy
    from torch.distributed.fsdp import ShardingStrategy

    from bigmodel.nn import Block, EncoderConfig, MaskedLanguageModel, num_parameters

    trainer = yaml.safe_load((EXPERIMENTS / "trainer" / "fsdp-bf16.yaml").read_text())["trainer"]
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = parser.instantiate_classes(parser.parse_object({"strategy": trainer["strategy"]})).strategy
    assert isinstance(strategy, FSDPStrategy) and strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block} and strategy._state_dict_type == "sharded"
    assert trainer["precision"] == "bf16-mixed"
    model = yaml.safe_load((EXPERIMENTS / "pretrain" / "encoder_1b_fsdp.yaml").read_text())["model"]["init_args"]
    config = EncoderConfig.from_name(model["encoder"], vocab_size=32768, **model["encoder_config"])
    assert config.activation_checkpointing
    with torch.device("meta"):  # no memory for the weights
        assert 1.2e9 < num_parameters(MaskedLanguageModel(config)) < 1.35e9


def test_no_committed_summary_or_results_row_holds_an_absolute_path():
    """A reader runs a recorded command as written: paths in results are relative to the project."""
    import re

    absolute = re.compile(r"(?<![\w.\-/~:}])/(?:[\w.\-]+/)+[\w.\-]*")  # /home/x/..., not test/acc, https:// or {seed}/x
    from bigmodel.commands.results import BEGIN, END

    texts = {str(f.relative_to(EXPERIMENTS)): f.read_text(encoding="utf-8")
             for f in sorted((EXPERIMENTS / "results").rglob("summary.*"))}
    readme = (EXPERIMENTS / "README.md").read_text(encoding="utf-8")
    texts["experiments/README.md results table"] = readme[readme.index(BEGIN):readme.index(END)]
    assert len(texts) > 60
    found = {name: m.group() for name, text in texts.items() for m in [absolute.search(text)] if m}
    assert not found


def test_the_results_commands_in_its_help_run_as_written(monkeypatch, capsys):
    """`bigmodel results --help` shows these lines; a reader copies them (the --check one named the wrong file)."""
    from bigmodel.commands import results

    monkeypatch.chdir(EXPERIMENTS.parent)
    examples = [line.split("#")[0].split()[2:] for line in results.__doc__.splitlines()
                if line.strip().startswith("bigmodel results") and "--write" not in line]
    assert len(examples) == 2 and any("--check" in args for args in examples)
    for args in examples:
        results.main(args)  # --check exits 1 when the file has no table or a stale one
    assert "| " in capsys.readouterr().out


def test_the_results_table_renders_the_same_from_another_directory(monkeypatch, tmp_path):
    from bigmodel.commands import results

    monkeypatch.chdir(EXPERIMENTS.parent)
    table = results.render("experiments/results.yaml")
    monkeypatch.chdir(tmp_path)  # the spec's relative summary paths are found from the spec file's folders
    assert results.render(str(EXPERIMENTS / "results.yaml")) == table


def test_every_committed_summary_md_is_what_its_summary_json_renders_to():
    """summary.md is a view of summary.json: after a change of formatting they drifted apart (``1e+02 %``)."""
    import json

    from bigmodel.commands.results import summary_markdown

    stale = [str(path) for path in sorted(Path(__file__).parents[1].glob("experiments/results/*/summary.json"))
             if summary_markdown(json.loads(path.read_text())) != path.with_suffix(".md").read_text()]
    assert not stale, f"re-render these from their summary.json: {stale}"


def test_results_and_compare_run_without_importing_lightning_and_keep_one_line_errors(tmp_path):
    """They read summaries only: through the `bigmodel` command they took ~8 s, most of it importing Lightning (a new
    user's walk); a bad input still gets the one line every command gives."""
    script = ("import sys\nimport bigmodel.__main__ as command\nsys.argv = ['bigmodel'] + sys.argv[1:]\n"
              "try:\n    command.main()\nfinally:\n    print('lightning' in sys.modules)\n")
    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, *args], cwd=EXPERIMENTS.parent, capture_output=True, text=True,
                              timeout=120)

    checked = command("results", "experiments/results.yaml", "--check", "experiments/README.md")
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert checked.stdout == "the results table in experiments/README.md is up to date\nFalse\n"
    missing = command("compare", str(tmp_path / "none"), str(tmp_path))
    assert missing.returncode == 2 and missing.stdout == "False\n"
    assert missing.stderr == (f"bigmodel: error: {tmp_path / 'none'}: no summary.json there; give a sweep's --out or "
                              "--summary_dir directory, or its summary.json\n")
