"""Images through the real ``bigmodel`` command: the offline digits quickstart learns, tests from best.ckpt, and
labels image files."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

from bigmodel.data.sources.images import write_digit_images

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return together([*args])[0]


def together(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """``bigmodel`` commands run at the same time, one CPU thread each (they read the same checkpoint, and each
    claims its own version directory), as a user with two terminals would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": "1"} if len(commands) > 1 else {})}
    procs = [subprocess.Popen([sys.executable, "-m", "bigmodel", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for args in commands]
    outputs = [p.communicate(timeout=300) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def test_digits_cnn_quickstart_fits_tests_and_predicts_in_subprocesses(tmp_path):
    config = str(ROOT / "experiments" / "quickstart" / "digits_cnn.yaml")
    common = ["--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
              "--trainer.accelerator", "cpu"]
    fit = run("fit", "-c", config, "--trainer.max_epochs", "4", *common)
    assert fit.returncode == 0, fit.stderr[-2000:]
    ckpt_dir = tmp_path / "digits-cnn" / "checkpoints"
    meta = torch.load(ckpt_dir / "best.ckpt", weights_only=True)["bigmodel"]
    assert meta["backbone"] == "bigmodel.nn.cnn.SmallCNN" and meta["class_names"][:2] == ["0", "1"]
    from bigmodel.tasks import ClassificationTask  # rebuilt in Python from the checkpoint alone

    model = ClassificationTask.load_from_checkpoint(ckpt_dir / "best.ckpt").eval()
    assert type(model.net).__name__ == "SmallCNN" and model({"pixel_values": torch.zeros(2, 1, 8, 8)}).shape == (2, 10)
    photos = tmp_path / "photos"
    written = write_digit_images(photos)  # the README's way to get digits to predict
    out = tmp_path / "labels.csv"
    test, predict = together(["test", "-c", config, "--ckpt_path", str(ckpt_dir / "best.ckpt"), *common],
                             ["predict", "-c", config, "--ckpt_path", str(ckpt_dir / "best.ckpt"), *common,
                              "--data.init_args.predict_dir", str(photos), "--predictions.output", str(out)])
    assert test.returncode == 0, test.stderr[-2000:]
    matrix_file = next(tmp_path.glob("digits-cnn/version_*/confusion_matrix.csv"))
    rows = [list(map(int, r[1:])) for r in list(csv.reader(matrix_file.open()))[1:]]
    total, correct = sum(map(sum, rows)), sum(rows[i][i] for i in range(10))
    assert total == 360  # the fixed test split
    assert correct / total > 0.7, f"test accuracy {correct / total:.2f} after 4 epochs (chance 0.10)"
    assert predict.returncode == 0, predict.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in written)
    right = sum(Path(r["path"]).stem.endswith(f"label{r['class_name']}") for r in rows)
    assert right >= 6, f"{right} of 10 test digits right after 4 epochs (test accuracy > 0.7 above)"
    assert abs(sum(float(rows[0][f"prob_{d}"]) for d in range(10)) - 1) < 1e-4


class FakeCIFAR10:
    """CIFAR-10's shape and fields (uint8 HWC data, targets, classes) with random pixels: no download."""

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def __init__(self, root, train=True, download=False):
        g = torch.Generator().manual_seed(int(train))
        n = 200 if train else 40
        self.data = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g).numpy()
        self.targets = torch.randint(0, 10, (n,), generator=g).tolist()


def test_cifar10_vit_recipe_runs_end_to_end_on_cifar_shaped_data(tmp_path, monkeypatch):
    """The GPU recipe as committed (RandAugment on the device, erasing, MixUp/CutMix, held-out validation, the
    vit-cifar-small backbone), on CPU for two steps with CIFAR-10 replaced by random CIFAR-shaped images."""
    from bigmodel.commands.cli import BigModelCLI
    from bigmodel.data.sources import images as image_sources

    monkeypatch.setitem(image_sources._TORCHVISION, "cifar10", (FakeCIFAR10, *image_sources._TORCHVISION["cifar10"][1:]))
    cli = BigModelCLI(args=[
        "fit", "-c", str(ROOT / "experiments" / "vision" / "cifar10_vit.yaml"),
        "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.max_steps", "2",
        "--trainer.limit_val_batches", "1", "--trainer.check_val_every_n_epoch", "1", "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--model.init_args.compile", "false", "--data.init_args.batch_size", "16",
        "--data.init_args.validation_fraction", "0.1",
    ])
    assert cli.trainer.global_step == 2 and type(cli.model.net).__name__ == "VisionTransformer"
    assert cli.datamodule.mixer is not None and cli.datamodule.hparams.on_device
    assert {len(cli.datamodule.datasets[s]) for s in ("train", "validation", "test")} == {180, 20, 40}
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "val/acc" in metrics


def test_fine_tune_from_a_hugging_face_vit_directory_through_the_cli(tmp_path, capsys):
    """init_from a saved HF ViT (the Hub's layout) at another image size and class count: positions resampled,
    new head, every other tensor equal to the HF weights at fit start."""
    import transformers

    from bigmodel.commands.cli import BigModelCLI

    hf_config = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
                                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                       layer_norm_eps=1e-6, num_labels=3)
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(hf_config)
    hf.save_pretrained(tmp_path / "hf-vit")
    overrides = "{image_size: 16, patch_size: 2, num_channels: 1, hidden_size: 32, num_layers: 2, num_heads: 2, " \
                "intermediate_size: 64}"
    cli = BigModelCLI(args=[
        "fit", "--model", "bigmodel.tasks.ClassificationTask", "--model.backbone", "bigmodel.nn.VisionTransformer",
        "--model.backbone.config", "vit-tiny", "--model.backbone.overrides", overrides,
        "--model.init_from", str(tmp_path / "hf-vit"), "--model.lr", "1e-9",
        "--data", "bigmodel.data.ImageDataModule", "--data.dataset", "digits", "--data.image_size", "16",
        "--data.on_device", "true", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
    ])
    vit = cli.model.net
    assert vit.head.out_features == 10 and vit.encoder.embeddings.position_embeddings.shape == (1, 65, 32)
    hf_q = hf.state_dict()["vit.layers.1.attention.q_proj.weight"]
    torch.testing.assert_close(vit.encoder.layers[1].attn.qkv.weight[:32], hf_q, atol=1e-6, rtol=0)  # lr 1e-9
