"""Images through the real ``bigmodel`` command: the offline digits quickstart learns, then tests from best.ckpt."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bigmodel", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_digits_cnn_quickstart_fits_and_tests_in_a_subprocess(tmp_path):
    config = str(ROOT / "experiments" / "quickstart" / "digits_cnn.yaml")
    common = ["--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
              "--trainer.accelerator", "cpu"]
    fit = run("fit", "-c", config, "--trainer.max_epochs", "4", *common)
    assert fit.returncode == 0, fit.stderr[-2000:]
    ckpt_dir = tmp_path / "digits-cnn" / "checkpoints"
    meta = torch.load(ckpt_dir / "best.ckpt", weights_only=True)["bigmodel"]
    assert meta["backbone"] == "bigmodel.nn.cnn.SmallCNN" and meta["class_names"][:2] == ["0", "1"]
    test = run("test", "-c", config, "--ckpt_path", str(ckpt_dir / "best.ckpt"), *common)
    assert test.returncode == 0, test.stderr[-2000:]
    matrix_file = next(tmp_path.glob("digits-cnn/version_*/confusion_matrix.csv"))
    rows = [list(map(int, r[1:])) for r in list(csv.reader(matrix_file.open()))[1:]]
    total, correct = sum(map(sum, rows)), sum(rows[i][i] for i in range(10))
    assert total == 360  # the fixed test split
    assert correct / total > 0.7, f"test accuracy {correct / total:.2f} after 4 epochs (chance 0.10)"
