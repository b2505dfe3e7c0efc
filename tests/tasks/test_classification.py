"""The one classification task with image backbones: metrics, soft targets, and init_from weights."""

import functools

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
