"""Old module paths keep working after the package was put in layers (bigmodel/utils/moved.py): committed run
configs name ``bigmodel.checkpoint_io.AtomicCheckpointIO``, users' notes say ``python -m bigmodel.bench``."""

import importlib
import json
import pickle
import re
import runpy
import sys
from pathlib import Path

import pytest

from bigmodel.commands.cli import main
from bigmodel.utils.moved import MOVED, new_name

ROOT = Path(__file__).resolve().parents[1]
SUMMARIES = sorted((ROOT / "experiments" / "results").rglob("summary.json"))


def _run_configs() -> list[str]:
    return [run["config"] for path in SUMMARIES for run in json.loads(path.read_text())["runs"] if run.get("config")]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_is_the_moved_module_itself(old):
    module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old]) and module.__name__ == MOVED[old]


def test_every_class_path_in_committed_run_configs_imports():
    configs = _run_configs()
    paths = {p for config in configs for p in re.findall(r"class_path: (\S+)", config)}
    assert "bigmodel.checkpoint_io.AtomicCheckpointIO" in paths  # configs written before the move are among them
    for path in sorted(paths):
        module, name = path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type), path
        if new_name(module):  # the same class as at its new home, not a copy
            assert cls is getattr(importlib.import_module(new_name(module)), name)


def test_a_run_config_written_before_the_move_runs(tmp_path, monkeypatch):
    """The committed digits CNN sweep's config (old class paths inside) validates with today's code."""
    summary = json.loads((ROOT / "experiments" / "results" / "digits_cnn" / "summary.json").read_text())
    config = summary["runs"][0]["config"]
    assert "bigmodel.checkpoint_io.AtomicCheckpointIO" in config
    (tmp_path / "config.yaml").write_text(config)
    monkeypatch.chdir(tmp_path)
    main(["validate", "-c", "config.yaml", "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
          "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"])


def test_a_pickle_naming_an_old_module_loads():
    """Checkpoints store classes by module path; one written before the move names the old module. (The checkpoints
    bigmodel wrote before the move name only nn, data and tasks paths, which did not move; this covers anything
    a lab pickled with them, e.g. a callback's state.)"""
    from bigmodel.run.checkpoint_io import AtomicCheckpointIO

    new = pickle.dumps({"io": AtomicCheckpointIO}, protocol=2)  # names a class as "module\nname\n"
    old = new.replace(b"bigmodel.run.checkpoint_io\n", b"bigmodel.checkpoint_io\n")
    assert old != new
    assert pickle.loads(old)["io"] is AtomicCheckpointIO


@pytest.mark.parametrize("old, prog", [("bigmodel.bench_lengths", "bigmodel.commands.bench.lengths"),
                                       ("bigmodel.bench", "bigmodel.commands.bench"),  # a package: its __main__
                                       ("bigmodel.commands.bench_suite", "bigmodel.commands.bench.suite")])
def test_python_dash_m_with_an_old_name_runs_the_new_module(old, prog, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [old, "--help"])
    monkeypatch.delitem(sys.modules, old, raising=False)  # as in a fresh `python -m`
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(old, run_name="__main__", alter_sys=True)
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m {prog} ")


def test_the_monitoring_callbacks_keep_their_stored_class_paths():
    """Configs name ``bigmodel.monitoring.ProgressLog`` or ``bigmodel.run.monitoring.AttentionMaps``; the callbacks
    now live in run/progress.py and run/figures.py, and each old path gives the class itself."""
    from bigmodel.run import figures, progress

    for old in ("bigmodel.monitoring", "bigmodel.run.monitoring"):
        module = importlib.import_module(old)
        assert module.ProgressLog is progress.ProgressLog and module.BestScoreHParam is progress.BestScoreHParam
        for name in ("AttentionMaps", "MaskedPredictions", "RetrievalExamples"):
            assert getattr(module, name) is getattr(figures, name)
