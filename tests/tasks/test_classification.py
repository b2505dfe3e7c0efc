"""The one classification task with image backbones: metrics, soft targets, and init_from weights."""

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bigmodel.nn import ResNet18, SmallCNN, VisionTransformer
from bigmodel.tasks import ClassificationTask
from bigmodel.tasks.checkpoints import META_KEY


def cnn(num_classes: int) -> SmallCNN:
    return SmallCNN(num_classes, image_size=8)


def test_top5_accuracy_joins_the_metrics_above_ten_classes():
    logits, labels = torch.randn(20, 12), torch.randint(0, 12, (20,))
    values = ClassificationTask(num_classes=12, backbone=cnn).val_metrics(logits, labels)
    top5 = (logits.topk(5).indices == labels[:, None]).any(-1).float().mean()
    torch.testing.assert_close(values["val/acc_top5"], top5)
    assert "val/acc_top5" not in ClassificationTask(num_classes=10, backbone=cnn).val_metrics(logits[:, :10], labels % 10)


def test_soft_targets_from_mixup_train_with_label_smoothing():
    torch.manual_seed(0)
    task = ClassificationTask(num_classes=4, backbone=cnn, label_smoothing=0.1).eval()  # no dropout: one forward each
    batch = {"pixel_values": torch.randn(6, 1, 8, 8), "labels": torch.softmax(torch.randn(6, 4), -1)}
    logits = task(batch)
    expected = F.cross_entropy(logits, batch["labels"], label_smoothing=0.1)
    task.log = lambda *a, **k: None
    torch.testing.assert_close(task.training_step(batch, 0), expected)


def eval_data(n: int = 9) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    return [{"pixel_values": x, "labels": y} for x, y in zip(images, labels)]


def test_evaluation_loss_is_plain_cross_entropy_and_training_keeps_the_smoothing(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    task = ClassificationTask(num_classes=4, backbone=cnn, label_smoothing=0.1).eval()
    data = eval_data()
    batch = {k: torch.stack([item[k] for item in data]) for k in data[0]}
    logits = task(batch)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # where the test's confusion_matrix.csv goes
    val = trainer.validate(task, DataLoader(data, batch_size=4), verbose=False)[0]
    test = trainer.test(task, DataLoader(data, batch_size=4), verbose=False)[0]
    plain = F.cross_entropy(logits, batch["labels"]).item()
    assert val["val/loss"] == pytest.approx(plain, rel=1e-5) and test["test/loss"] == pytest.approx(plain, rel=1e-5)
    task.log = lambda *a, **k: None
    torch.testing.assert_close(task.training_step(batch, 0), F.cross_entropy(logits, batch["labels"],
                                                                              label_smoothing=0.1))


DDP_WORKER = textwrap.dedent("""
    import json, sys, lightning as L, torch
    from torch.utils.data import DataLoader
    from tests.tasks.test_classification import cnn, eval_data
    from bigmodel.tasks import ClassificationTask

    out = sys.argv[1]
    task = ClassificationTask(num_classes=4, backbone=cnn, label_smoothing=0.1)
    task.load_state_dict(torch.load(out + "/task.pt"))
    trainer = L.Trainer(strategy="ddp", devices=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out)
    metrics = trainer.validate(task, DataLoader(eval_data(), batch_size=2), verbose=False)[0]
    metrics |= trainer.test(task, DataLoader(eval_data(), batch_size=2), verbose=False)[0]
    if trainer.is_global_zero:
        metrics["confusion"] = task.confusion_matrix.tolist()
        json.dump(metrics, open(out + "/metrics.json", "w"))
""")


def test_two_ddp_ranks_on_an_uneven_set_count_each_example_once(tmp_path):
    """9 examples on 2 gloo ranks, batches of 2: Lightning's sampler gives rank 1 a copy of example 0 (alone in its
    last batch); validation and test give exactly the one-process numbers."""
    import lightning as L
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    task = ClassificationTask(num_classes=4, backbone=cnn, label_smoothing=0.1)
    torch.save(task.state_dict(), tmp_path / "task.pt")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    (tmp_path / "worker.py").write_text(DDP_WORKER)  # a file: Lightning starts rank 1 by running it again
    proc = subprocess.run([sys.executable, str(tmp_path / "worker.py"), str(tmp_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sync_dist=True" not in proc.stderr, proc.stderr[-3000:]  # global values: no advice to sync them again
    ddp = json.loads((tmp_path / "metrics.json").read_text())
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    one = trainer.validate(task, DataLoader(eval_data(), batch_size=2), verbose=False)[0]
    one |= trainer.test(task, DataLoader(eval_data(), batch_size=2), verbose=False)[0]
    assert ddp["confusion"] == task.confusion_matrix.tolist() and sum(map(sum, ddp["confusion"])) == 9
    assert set(ddp) - {"confusion"} == set(one)
    for key, value in one.items():
        assert ddp[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_init_from_a_torchvision_style_state_dict_keeps_the_body_and_makes_a_new_head(tmp_path):
    torch.manual_seed(0)
    source = ResNet18(1000, small_input=False)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    task = ClassificationTask(num_classes=10, backbone=functools.partial(ResNet18, small_input=False),
                              init_from=str(tmp_path / "resnet18.pth"))
    fc_before = task.net.fc.weight.clone()
    task.load_pretrained(task._pretrained)
    torch.testing.assert_close(task.net.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert torch.equal(task.net.fc.weight, fc_before) and task.net.fc.weight.shape == (10, 512)


def test_init_from_weights_of_another_architecture_is_a_clear_error(tmp_path):
    torch.save(SmallCNN(10).state_dict(), tmp_path / "cnn.pth")
    task = ClassificationTask(num_classes=10, backbone=ResNet18, init_from=str(tmp_path / "cnn.pth"))
    with pytest.raises(ValueError, match=r"weights do not fit ResNet18: unexpected \['features.0.weight'"):
        task.load_pretrained(task._pretrained)


def test_init_from_a_text_checkpoint_with_an_image_backbone_is_refused(tmp_path):
    torch.save({"state_dict": {}, META_KEY: {"task": "mlm"}}, tmp_path / "mlm.ckpt")
    with pytest.raises(ValueError, match="is a text model; a backbone needs an image classification"):
        ClassificationTask(num_classes=10, backbone=cnn, init_from=str(tmp_path / "mlm.ckpt"))
    with pytest.raises(FileNotFoundError, match="Hugging Face model directory"):
        ClassificationTask(num_classes=10, backbone=cnn, init_from=str(tmp_path / "google/vit-base"))


def test_vit_backbone_checkpoint_meta_names_the_backbone():
    task = ClassificationTask(num_classes=3, backbone=functools.partial(VisionTransformer, config="vit-cifar-tiny"))
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    assert checkpoint[META_KEY] == {"task": "classification", "class_names": ["0", "1", "2"],
                                    "backbone": "bigmodel.nn.vision.VisionTransformer"}


def test_a_backbone_given_in_python_is_saved_as_a_class_path_and_rebuilt(tmp_path):
    import lightning as L

    task = ClassificationTask(num_classes=3, backbone=functools.partial(SmallCNN, image_size=8, width=8))
    assert task.hparams.backbone == {"class_path": "bigmodel.nn.cnn.SmallCNN", "init_args": {"image_size": 8, "width": 8}}
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    loaded = ClassificationTask.load_from_checkpoint(tmp_path / "task.ckpt")  # weights_only: plain data only
    assert type(loaded.net) is SmallCNN and loaded.net.features[0].out_channels == 8
    for a, b in zip(task.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_a_fit_after_a_validate_on_the_same_trainer_trains_and_validates(tmp_path):
    """The metrics a validate resets (under inference mode) stay ordinary tensors: the fit that follows on the same
    Trainer updates them in its own validation."""
    import lightning as L
    from torch.utils.data import DataLoader

    task = ClassificationTask(num_classes=4, backbone=cnn)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        max_steps=2, val_check_interval=2, num_sanity_val_steps=0, default_root_dir=tmp_path)
    before = trainer.validate(task, DataLoader(eval_data(), batch_size=4), verbose=False)[0]
    trainer.fit(task, DataLoader(eval_data(), batch_size=4), DataLoader(eval_data(), batch_size=4))
    assert trainer.global_step == 2 and set(before) <= set(trainer.callback_metrics)
